// The sessions view: the caller's sessions (polled, so kernel states stay live), create, open, delete.

import { api, sessionUrl } from "./api.js";
import { announce, confirmDialog, h, timeElement } from "./dom.js";
import { limitsText, stateBadge } from "./session.js";

const POLL_MS = 5_000;

function numberField(id, label, { min, step, placeholder }) {
  const input = h("input", { id, name: id, type: "number", min, step, placeholder, inputmode: "decimal" });
  return [h("label", { for: id }, label), input];
}

export function sessionName(session) {
  const name = session.metadata && typeof session.metadata.name === "string" ? session.metadata.name : "";
  return name || session.id.replace(/^session-/, "").slice(0, 8);
}

/** Delete a session after a confirmation; resolves true when it is gone. */
export async function deleteSession(session, onError) {
  const question = `Delete ${sessionName(session)}? Its kernel stops and its files are wiped.`;
  if (!(await confirmDialog("Delete session", question, "Delete session"))) return false;
  try {
    await api("DELETE", sessionUrl(session.id));
    announce(`Deleted session ${sessionName(session)}`);
    return true;
  } catch (error) {
    onError(error);
    return false;
  }
}

export function renderSessions(view) {
  const message = h("p", { class: "error-text", role: "alert" });
  const status = h("p", { class: "note", role: "status" });
  const body = h("tbody");
  const create = h("button", { type: "submit", class: "primary" }, "Create session");
  const form = h(
    "form",
    { class: "create-form", "aria-labelledby": "create-title" },
    h("h2", { id: "create-title" }, "New session"),
    h(
      "div",
      { class: "fields" },
      h("div", {}, h("label", { for: "new-name" }, "Name"), h("input", { id: "new-name", name: "name", type: "text", placeholder: "optional", maxlength: "200" })),
      h("div", {}, ...numberField("new-memory", "Memory (MB)", { min: "64", step: "64", placeholder: "server default" })),
      h("div", {}, ...numberField("new-cpus", "CPUs", { min: "0.1", step: "0.1", placeholder: "server default" })),
      h("div", {}, ...numberField("new-idle", "Idle timeout (s)", { min: "1", step: "60", placeholder: "server default" })),
    ),
    create,
  );
  const table = h(
    "table",
    { class: "sessions" },
    h("caption", { class: "visually-hidden" }, "Your sessions"),
    h("thead", {}, h("tr", {}, ...["Session", "Status", "Kernel", "Limits", "Last activity", "Expires", "Actions"].map((t) => h("th", { scope: "col" }, t)))),
    body,
  );
  const empty = h("p", { class: "note", hidden: true }, "No sessions yet: create one above.");
  view.append(h("h1", { tabindex: "-1" }, "Sessions"), form, message, status, table, empty);

  function row(session) {
    const open = h("a", { href: `#/s/${session.id}`, class: "button" }, "Open");
    open.setAttribute("aria-label", `Open ${sessionName(session)}`);
    const remove = h("button", { type: "button", class: "danger", "aria-label": `Delete ${sessionName(session)}` }, "Delete");
    remove.addEventListener("click", async () => {
      if (await deleteSession(session, (error) => (message.textContent = error.message))) refresh();
    });
    const cell = (label, ...content) => h("td", { "data-label": label }, ...content);
    return h(
      "tr",
      { "data-session": session.id },
      cell("Session", h("a", { href: `#/s/${session.id}`, title: session.id }, sessionName(session))),
      cell("Status", stateBadge(session.status)),
      cell("Kernel", stateBadge(session.kernel.state)),
      cell("Limits", limitsText(session.limits)),
      cell("Last activity", timeElement(session.last_activity_at)),
      cell("Expires", timeElement(session.expires_at)),
      cell("Actions", h("span", { class: "row-actions" }, open, remove)),
    );
  }

  async function refresh() {
    try {
      const { sessions } = await api("GET", "/api/v1/sessions");
      sessions.sort((a, b) => b.created_at.localeCompare(a.created_at));
      body.replaceChildren(...sessions.map(row));
      empty.hidden = sessions.length > 0;
      table.hidden = sessions.length === 0;
    } catch (error) {
      if (error.status !== 401 && error.status !== 0) message.textContent = error.message; // 0: the banner says it
    }
  }

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const data = new FormData(form);
    const request = {};
    const number = (field, key, parse) => {
      const value = String(data.get(field) || "").trim();
      if (value) request[key] = parse(value);
    };
    number("new-memory", "memory_mb", (v) => parseInt(v, 10));
    number("new-cpus", "cpus", Number);
    number("new-idle", "idle_timeout", (v) => parseInt(v, 10));
    const name = String(data.get("name") || "").trim();
    if (name) request.metadata = { name };
    create.disabled = true;
    message.textContent = "";
    status.textContent = "Starting a kernel…";
    try {
      const session = await api("POST", "/api/v1/sessions", { json: request });
      status.textContent = "";
      location.hash = `#/s/${session.id}`;
    } catch (error) {
      status.textContent = "";
      message.textContent = `Could not create the session: ${error.message}`;
    } finally {
      create.disabled = false;
    }
  });

  refresh();
  const timer = setInterval(refresh, POLL_MS);
  return { destroy: () => clearInterval(timer) };
}
