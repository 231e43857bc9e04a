// The session's execution history (newest first), when the server offers it; each entry's code can be
// copied into a new cell.

import { ApiError, api, sessionUrl } from "./api.js";
import { formatDuration, h, timeElement } from "./dom.js";

const LIMIT = 50;

/** The list in an answer, whatever it is called (`executions`, `items`, or the answer itself). */
const entriesOf = (answer) => (Array.isArray(answer) ? answer : answer.executions || answer.items || []);

export class HistoryPanel {
  /** `insert(code)` puts past code into a new cell. */
  constructor(container, sessionId, insert) {
    this.sessionId = sessionId;
    this.insert = insert;
    this.list = h("ol", { class: "history", "aria-label": "Past executions" });
    this.note = h("p", { class: "note" });
    this.section = h(
      "section",
      { class: "panel", "aria-labelledby": "history-title", hidden: true },
      h("div", { class: "panel-head" }, h("h2", { id: "history-title" }, "History")),
      this.list,
      this.note,
    );
    this.available = true;
    container.append(this.section);
    this.refresh();
  }

  async refresh() {
    if (!this.available) return;
    try {
      const answer = await api("GET", sessionUrl(this.sessionId, `/executions?limit=${LIMIT}`));
      this.show(entriesOf(answer));
    } catch (error) {
      if (error instanceof ApiError && error.code === "no-route") {
        this.available = false;
        this.section.hidden = true;
      }
    }
  }

  show(entries) {
    this.section.hidden = false;
    this.list.replaceChildren(...entries.map((entry) => this.row(entry)));
    this.note.textContent = entries.length ? "" : "Nothing has run yet.";
  }

  row(entry) {
    const code = typeof entry.code === "string" ? entry.code : "";
    const number = entry.execution_count ?? entry.n ?? entry.number ?? "";
    const details = [
      entry.reason && entry.reason !== entry.status ? `${entry.status} (${entry.reason})` : entry.status,
      typeof entry.duration_ms === "number" ? formatDuration(entry.duration_ms) : null,
    ].filter(Boolean);
    const when = entry.started_at || entry.created_at;
    return h(
      "li",
      { class: `history-entry ${entry.status || ""}` },
      h(
        "div",
        { class: "history-head" },
        h("span", { class: "prompt" }, `[${number}]`),
        h("span", {}, details.join(" · ")),
        when ? timeElement(when) : null,
        code ? h("button", { type: "button", "aria-label": `Copy execution ${number} into a new cell`, onclick: () => this.insert(code) }, "Copy to cell") : null,
      ),
      h("pre", { class: "history-code" }, code.length > 400 ? `${code.slice(0, 400)}…` : code),
    );
  }
}
