// The session view: cells over the WebSocket, interrupt and restart, files, library and history.

import { ApiError, api, onReachable, sessionUrl } from "./api.js";
import { Notebook } from "./cells.js";
import { announce, confirmDialog, h, timeElement } from "./dom.js";
import { FilePanel, LibraryPanel } from "./files.js";
import { HistoryPanel } from "./history.js";
import { SessionSocket } from "./socket.js";

const POLL_MS = 10_000;
const KERNEL_NEWS = {
  died: "The kernel died; a fresh kernel was started (variables are gone, files are kept).",
  oom: "The kernel ran out of memory and was restarted (variables are gone, files are kept).",
  "idle-culled": "The kernel had been stopped while idle; a fresh one was started (variables are gone).",
};

export function limitsText(limits) {
  if (!limits) return "";
  return `${limits.memory_mb} MB · ${limits.cpus} CPU · idle ${Math.round(limits.idle_timeout / 60)} min`;
}

export function stateBadge(text, kind = text) {
  return h("span", { class: `badge state-${kind}` }, text);
}

export function renderSession(view, sessionId) {
  let row = null;
  let gone = false;
  let busy = false;
  let kernelNews = null;
  const meta = h("p", { class: "session-meta" }, "Loading…");
  const link = h("span", { class: "badge" }, "connecting");
  const notice = h("div", { class: "notice", role: "alert", hidden: true });
  const interrupt = h("button", { type: "button", onclick: () => doInterrupt() }, "Interrupt");
  const restart = h("button", { type: "button", onclick: () => doRestart() }, "Restart");
  const notebookColumn = h("section", { class: "notebook", "aria-label": "Code cells" });
  const side = h("aside", { class: "side", "aria-label": "Files and history" });
  view.append(
    h(
      "div",
      { class: "session-head" },
      h("a", { href: "#/", class: "back" }, "← Sessions"),
      h("h1", { tabindex: "-1" }, "Session ", h("code", { title: sessionId }, sessionId.replace(/^session-/, "").slice(0, 8))),
      meta,
      h("div", { class: "toolbar", role: "toolbar", "aria-label": "Kernel" }, interrupt, restart, link),
    ),
    notice,
    h("div", { class: "session-body" }, notebookColumn, side),
  );

  const say = (text) => {
    notice.hidden = !text;
    notice.textContent = text || "";
  };

  const socket = new SessionSocket(sessionId, {
    onEvent: (event) => onEvent(event),
    onState: (state, detail) => {
      link.textContent = state === "open" ? "live" : "reconnecting…";
      link.className = `badge state-${state === "open" ? "idle" : "restarting"}`;
      if (state === "open" && detail.reconnected) {
        notebook.expectReplay();
        setTimeout(poll, 1500);
      }
      if (state === "closed") poll();
    },
  });
  const notebook = new Notebook(notebookColumn, {
    send: (frame) => socket.send(frame),
    onBusy: (value) => {
      busy = value;
      drawMeta();
    },
    onDone: () => {
      files.refresh();
      history.refresh();
    },
  });
  const files = new FilePanel(side, sessionId);
  new LibraryPanel(side);
  const history = new HistoryPanel(side, sessionId, (code) => notebook.insert(code));

  function kernelState() {
    if (kernelNews) return kernelNews;
    if (busy) return "busy";
    return row ? row.kernel.state : "unknown";
  }

  function drawMeta() {
    if (!row) return;
    const state = kernelState();
    meta.replaceChildren(
      stateBadge(row.status),
      " kernel ",
      stateBadge(state),
      ` · ${limitsText(row.limits)} · expires `,
      timeElement(row.expires_at),
    );
    interrupt.disabled = gone;
    restart.disabled = gone;
  }

  function onEvent(event) {
    if (notebook.onEvent(event)) return;
    if (event.type === "kernel") {
      kernelNews = event.state === "idle" || event.state === "busy" ? null : event.state;
      if (KERNEL_NEWS[event.reason]) say(KERNEL_NEWS[event.reason]);
      drawMeta();
      if (event.state === "idle") poll();
    } else if (event.type === "expiring") {
      const what = event.action === "expire" ? "expire (kernel and files removed)" : "be stopped while idle";
      say(`This session will ${what} at ${new Date(event.at).toLocaleTimeString()} unless something runs.`);
    } else if (event.type === "error" && !event.id) {
      say(`The server refused a request: ${event.message}`);
    }
  }

  function sessionGone(message) {
    gone = true;
    socket.stop();
    clearInterval(pollTimer);
    say(message);
    drawMeta();
    for (const button of view.querySelectorAll(".cell button, .notebook-actions button")) button.disabled = true;
  }

  async function poll() {
    if (gone) return;
    try {
      row = await api("GET", sessionUrl(sessionId));
      if (row.kernel.state === "idle" && socket.open) notebook.settleMissed();
      if (["expired", "deleted", "failed"].includes(row.status)) {
        sessionGone(`This session is ${row.status}${row.status_reason ? `: ${row.status_reason}` : ""}. Go back to the sessions to start another.`);
      }
      drawMeta();
    } catch (error) {
      if (error instanceof ApiError && error.status === 404) {
        sessionGone("This session no longer exists: it expired or was deleted. Go back to the sessions to start another.");
      }
    }
  }

  async function doInterrupt() {
    try {
      await api("POST", sessionUrl(sessionId, "/interrupt"));
      announce("Interrupt sent");
    } catch (error) {
      say(`Interrupt failed: ${error.message}`);
    }
  }

  async function doRestart() {
    const sure = await confirmDialog("Restart the kernel", "Variables are lost; files are kept. Restart?", "Restart");
    if (!sure) return;
    restart.disabled = true;
    say("Restarting the kernel…");
    try {
      row = await api("POST", sessionUrl(sessionId, "/restart"));
      kernelNews = null;
      say("The kernel was restarted: variables are gone, files are kept.");
    } catch (error) {
      say(`Restart failed: ${error.message}`);
    }
    restart.disabled = gone;
    drawMeta();
  }

  const pollTimer = setInterval(poll, POLL_MS);
  const tickTimer = setInterval(() => notebook.tick(), 500);
  const unsubscribe = onReachable((yes) => yes && socket.retry());
  poll();
  notebook.cells[0].editor.focus();

  return {
    destroy() {
      socket.stop();
      clearInterval(pollTimer);
      clearInterval(tickTimer);
      unsubscribe();
    },
  };
}
