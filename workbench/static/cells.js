// Code cells and the notebook that runs them over the session's WebSocket.

import { announce, formatDuration, h } from "./dom.js";
import { OutputArea } from "./outputs.js";

const OUTPUT_EVENTS = new Set(["stream", "display_data", "execute_result", "error", "clear_output", "input_request"]);
const DONE_LABELS = { ok: "done", error: "error", timeout: "timed out", aborted: "aborted" };
let cellCount = 0;

const randomKey = () => Math.random().toString(36).slice(2, 10);

/** Indentation for the line after `line`: the same, plus four spaces after a `:`. */
function nextIndent(line) {
  const indent = line.match(/^\s*/)[0];
  return line.trimEnd().endsWith(":") ? `${indent}    ` : indent;
}

class Cell {
  constructor(notebook, { code = "", remote = false } = {}) {
    cellCount += 1;
    this.notebook = notebook;
    this.key = `c${cellCount}-${randomKey()}`;
    this.runs = 0;
    this.requestId = null;
    this.startedAt = null;
    const label = remote ? "Run by another client" : `Code cell ${cellCount}`;
    this.prompt = h("span", { class: "prompt", "aria-hidden": "true" }, "[ ]");
    this.status = h("span", { class: "cell-status" });
    this.editor = h("textarea", {
      class: "code",
      "aria-label": label,
      spellcheck: "false",
      autocapitalize: "off",
      autocomplete: "off",
      rows: "2",
      readOnly: remote,
      onkeydown: (event) => this.onKey(event),
      oninput: () => this.grow(),
    });
    this.editor.value = code;
    this.runButton = h("button", { type: "button", class: "run", title: "Run (Shift+Enter)", onclick: () => this.run() }, "Run");
    const outputs = h("div", { class: "outputs", "aria-live": "polite" });
    this.outputs = new OutputArea(outputs);
    this.element = h(
      "section",
      { class: remote ? "cell remote" : "cell", "data-state": "new", "aria-label": label },
      h("div", { class: "cell-head" }, this.prompt, remote ? h("span", { class: "note" }, label) : null, this.status),
      h("div", { class: "cell-input" }, this.editor, remote ? null : this.runButton),
      outputs,
    );
    this.grow();
  }

  grow() {
    this.editor.rows = Math.max(2, Math.min(40, this.editor.value.split("\n").length));
  }

  onKey(event) {
    if (event.key !== "Enter" || event.isComposing) return;
    if (event.shiftKey) {
      event.preventDefault();
      this.run();
      this.notebook.focusAfter(this);
    } else if (event.ctrlKey || event.metaKey) {
      event.preventDefault();
      this.run();
    } else if (!event.altKey) {
      const { selectionStart: start, selectionEnd: end, value } = this.editor;
      const line = value.slice(value.lastIndexOf("\n", start - 1) + 1, start);
      const text = `\n${nextIndent(line)}`;
      event.preventDefault();
      // insertText keeps the browser's undo history; setRangeText where it is not supported
      if (!document.execCommand("insertText", false, text)) this.editor.setRangeText(text, start, end, "end");
      this.grow();
    }
  }

  run() {
    if (this.editor.readOnly || !this.editor.value.trim()) return;
    this.runs += 1;
    this.notebook.execute(this, `${this.key}.${this.runs}`, this.editor.value);
  }

  setState(state, text) {
    this.element.dataset.state = state;
    this.status.textContent = text;
  }

  queued(requestId) {
    this.requestId = requestId;
    this.startedAt = null;
    this.outputs.reset();
    this.prompt.textContent = "[*]";
    this.setState("queued", "queued");
  }

  running() {
    if (this.startedAt !== null) return;
    this.startedAt = performance.now();
    this.setState("running", "running");
  }

  tick(now) {
    if (this.startedAt !== null && this.element.dataset.state === "running") {
      this.status.textContent = `running ${formatDuration(now - this.startedAt)}`;
    }
  }

  finish(done) {
    this.startedAt = null;
    this.prompt.textContent = `[${done.execution_count ?? " "}]`;
    const label = DONE_LABELS[done.status] || done.status;
    const reason = done.reason && done.reason !== done.status ? ` (${done.reason})` : "";
    const duration = typeof done.duration_ms === "number" ? ` in ${formatDuration(done.duration_ms)}` : "";
    this.setState(done.status === "ok" ? "ok" : "failed", `${label}${reason}${duration}`);
    if (done.truncated) this.outputs.addNote("The server cut this execution's output (its limit per execution).");
    const shownError = this.outputs.element.querySelector(".traceback");
    if (done.status !== "ok" && !shownError && done.error && done.error.evalue) this.outputs.addNote(done.error.evalue);
    announce(`Cell ${label}${reason}`);
  }

  /** An `input()` prompt answered in the page. */
  askInput(event, reply) {
    const id = `input-${this.key}-${randomKey()}`;
    const field = h("input", { id, type: event.password ? "password" : "text", autocomplete: "off" });
    const form = h(
      "form",
      { class: "input-request" },
      h("label", { for: id }, event.prompt || "Input:"),
      field,
      h("button", { type: "submit" }, "Send"),
    );
    form.addEventListener("submit", (submit) => {
      submit.preventDefault();
      reply(field.value);
      form.replaceWith(h("pre", { class: "stream stdout" }, `${event.prompt || ""}${event.password ? "••••••" : field.value}`));
      this.editor.focus();
    });
    this.outputs.addNode(form);
    field.focus();
  }
}

export class Notebook {
  /** `send(frame)` writes to the socket; `onDone(event)` hears every finished execution. */
  constructor(container, { send, onDone, onBusy }) {
    this.list = h("div", { class: "cells" });
    this.send = send;
    this.onDone = onDone;
    this.onBusy = onBusy;
    this.byRequest = new Map();
    this.pending = [];
    this.replayed = new Set();
    const add = h("button", { type: "button", onclick: () => this.addCell().editor.focus() }, "Add cell");
    container.append(this.list, h("div", { class: "notebook-actions" }, add));
    this.addCell();
  }

  get cells() {
    return [...this.list.children].map((element) => element.cell);
  }

  addCell(code = "", { after = null, remote = false } = {}) {
    const cell = new Cell(this, { code, remote });
    cell.element.cell = cell;
    if (after) after.element.after(cell.element);
    else this.list.append(cell.element);
    return cell;
  }

  /** Shift+Enter: the next editable cell gets the focus (a new one after the last). */
  focusAfter(cell) {
    const cells = this.cells;
    const next = cells.slice(cells.indexOf(cell) + 1).find((c) => !c.editor.readOnly);
    (next || this.addCell()).editor.focus();
  }

  execute(cell, requestId, code) {
    if (cell.requestId) this.byRequest.delete(cell.requestId);
    this.byRequest.set(requestId, cell);
    cell.queued(requestId);
    this.pending.push(requestId);
    this.send({ type: "execute", id: requestId, code });
    this.advance();
  }

  /** The first execution still waiting is the one the kernel runs (the session runs them in order). */
  advance() {
    const head = this.byRequest.get(this.pending[0]);
    if (head) head.running();
    this.onBusy(this.pending.length > 0);
  }

  /** After a reconnect the server repeats what the running execution said so far: draw it afresh. */
  expectReplay() {
    this.replayed = new Set(this.pending);
  }

  /**
   * The kernel is idle after a reconnect: executions that said nothing since then ended while the page
   * was away (their `done` went to nobody). Their results are in the history.
   */
  settleMissed() {
    for (const id of this.replayed) {
      const cell = this.byRequest.get(id);
      if (cell && this.pending.includes(id)) {
        cell.startedAt = null;
        cell.prompt.textContent = "[?]";
        cell.setState("failed", "ended while the page was disconnected");
      }
      this.pending = this.pending.filter((pending) => pending !== id);
    }
    this.replayed.clear();
    this.advance();
  }

  onEvent(event) {
    if (!event.id || !(OUTPUT_EVENTS.has(event.type) || event.type === "done")) return false;
    let cell = this.byRequest.get(event.id);
    if (!cell) {
      if (event.type === "done") return true;
      cell = this.addCell("", { remote: true });
      cell.requestId = event.id;
      this.byRequest.set(event.id, cell);
      cell.running();
    }
    if (this.replayed.delete(event.id)) cell.outputs.reset();
    if (event.type === "done") {
      cell.finish(event);
      this.pending = this.pending.filter((id) => id !== event.id);
      this.advance();
      this.onDone(event);
    } else if (event.type === "input_request") {
      cell.running();
      cell.askInput(event, (value) => this.send({ type: "input_reply", id: event.id, value }));
    } else {
      cell.running();
      cell.outputs.add(event);
    }
    return true;
  }

  tick() {
    const now = performance.now();
    for (const cell of this.cells) cell.tick(now);
  }

  /** A past execution's code (from the history) in the last cell if it is blank, else in a new one. */
  insert(code) {
    const last = this.cells.at(-1);
    const blank = last && !last.editor.readOnly && !last.requestId && !last.editor.value.trim();
    const cell = blank ? last : this.addCell();
    cell.editor.value = code;
    cell.grow();
    cell.editor.focus();
    return cell;
  }
}
