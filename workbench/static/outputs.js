// One cell's outputs as they stream in. Kernel output is never put into this page as markup: text is
// text nodes, images are <img> from data: URLs (SVG too, so its scripts never run), and HTML (DataFrames)
// goes into an <iframe sandbox=""> (no scripts, an opaque origin: no access to this page or its token).

import { appendAnsi, collapseCarriageReturns, parseAnsi, segmentNodes } from "./ansi.js";
import { h } from "./dom.js";

const MAX_TEXT = 2_000_000; // characters of stream text one cell shows; the rest is counted, not drawn
const BITMAPS = ["image/png", "image/jpeg", "image/gif", "image/webp"];
const LONE_CR = /\r(?!\n)/;

const joined = (value) => (Array.isArray(value) ? value.join("") : value);

function image(src, alt) {
  return h("img", { src, alt: alt || "image output", class: "image-output" });
}

/** HTML in a sandboxed frame: no `allow-scripts`, no `allow-same-origin`. */
function htmlFrame(html) {
  const rows = (html.match(/<tr[\s>]/gi) || []).length;
  const frame = h("iframe", {
    sandbox: "",
    class: "html-output",
    title: "HTML output (sandboxed)",
    referrerpolicy: "no-referrer",
    height: String(Math.min(520, Math.max(80, 48 + rows * 28))),
  });
  const style = `<link rel="stylesheet" href="${location.origin}/static/frame.css">`;
  frame.srcdoc = `<!doctype html><html><head><meta charset="utf-8">${style}</head><body>${html}</body></html>`;
  return frame;
}

/** The node for a mime bundle: the richest representation this page can show safely. */
export function richNode(data) {
  const text = joined(data["text/plain"]);
  for (const mime of BITMAPS) {
    if (typeof data[mime] === "string") return image(`data:${mime};base64,${data[mime].replace(/\s+/g, "")}`, text);
  }
  const svg = joined(data["image/svg+xml"]);
  if (typeof svg === "string") return image(`data:image/svg+xml;charset=utf-8,${encodeURIComponent(svg)}`, text);
  const html = joined(data["text/html"]);
  if (typeof html === "string") return htmlFrame(html);
  if (typeof text === "string") return h("pre", { class: "text-output" }, segmentNodes(parseAnsi(text).segments));
  const kinds = Object.keys(data).join(", ") || "nothing";
  return h("pre", { class: "text-output note" }, `[output of type ${kinds} not shown]`);
}

export class OutputArea {
  constructor(element) {
    this.element = element;
    this.reset();
  }

  reset() {
    this.element.replaceChildren();
    this.stream = null; // the block the next chunk of the same stream extends
    this.shown = 0;
    this.hidden = 0;
    this.notice = null;
    this.clearOnNext = false;
  }

  /** Render one event of the execution (stream, display_data, execute_result, error, clear_output). */
  add(event) {
    if (event.type === "clear_output") {
      if (event.wait) this.clearOnNext = true;
      else this.reset();
      return;
    }
    if (this.clearOnNext) this.reset();
    if (event.type === "stream") this.addStream(event.name === "stderr" ? "stderr" : "stdout", String(event.text ?? ""));
    else if (event.type === "display_data" || event.type === "execute_result") this.addNode(richNode(event.data || {}));
    else if (event.type === "error") this.addError(event);
  }

  addNode(node) {
    this.stream = null;
    this.element.append(node);
  }

  addStream(name, text) {
    const room = Math.max(0, MAX_TEXT - this.shown);
    if (text.length > room) {
      this.hidden += text.length - room;
      text = text.slice(0, room);
      this.showHiddenNotice();
    }
    if (!text) return;
    this.shown += text.length;
    let block = this.stream;
    if (!block || block.name !== name || this.element.lastChild !== block.pre) {
      block = { name, pre: h("pre", { class: `stream ${name}` }), raw: "", state: undefined, rewrites: false };
      this.addNode(block.pre);
      this.stream = block;
    }
    block.rewrites ||= LONE_CR.test(text);
    if (!block.rewrites) {
      block.state = appendAnsi(block.pre, text, block.state);
      block.raw += text;
      return;
    }
    // A progress bar rewriting its line: keep only what shows (and a trailing \r, which the next chunk
    // overwrites), so a long run of rewrites costs what the visible text costs.
    const raw = block.raw + text;
    block.raw = collapseCarriageReturns(raw) + (raw.endsWith("\r") ? "\r" : "");
    block.pre.replaceChildren(...segmentNodes(parseAnsi(block.raw).segments));
  }

  showHiddenNotice() {
    if (!this.notice) {
      this.notice = h("p", { class: "note" });
      this.element.append(this.notice);
    }
    this.notice.textContent = `… ${this.hidden.toLocaleString()} more characters of output not shown in the page`;
  }

  addError(event) {
    const traceback = Array.isArray(event.traceback) ? event.traceback.join("\n") : "";
    const pre = h("pre", { class: "traceback" });
    const summary = event.ename ? `${event.ename}: ${event.evalue}` : String(event.message ?? "error");
    appendAnsi(pre, traceback || summary);
    this.addNode(pre);
  }

  /** A line the page itself adds (an interrupt, a kernel restart); not kernel output. */
  addNote(text) {
    this.addNode(h("p", { class: "note" }, text));
  }
}
