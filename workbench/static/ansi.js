// ANSI SGR escapes (colours, bold, italic, underline) to styled spans. Text is only ever set as text
// nodes, so nothing in kernel output is parsed as HTML. Other escape sequences are dropped.

// SGR, other CSI sequences, OSC sequences (hyperlinks, titles), and a lone escape before another char.
const ESCAPE = /\x1b\[([0-9;:]*)m|\x1b\[[0-9;:?<=>]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[@-Z\\-_]/g;
// An escape sequence cut at the end of a chunk: kept for the next chunk.
const PARTIAL = /\x1b(?:\[[0-9;:?<=>]*[ -/]*|\][^\x07\x1b]*)?$/;
const CUBE = [0, 95, 135, 175, 215, 255];

/** The colour of a 256-colour index: a class for the 16 base colours, else an rgb() value. */
function palette(index) {
  if (index < 16) return { cls: index };
  if (index < 232) {
    const n = index - 16;
    return { rgb: `rgb(${CUBE[Math.floor(n / 36)]}, ${CUBE[Math.floor(n / 6) % 6]}, ${CUBE[n % 6]})` };
  }
  const grey = 8 + 10 * (index - 232);
  return { rgb: `rgb(${grey}, ${grey}, ${grey})` };
}

/** An extended colour (`38;5;n` or `38;2;r;g;b`) starting at codes[i]; returns [colour, next index]. */
function extended(codes, i) {
  if (codes[i + 1] === 5 && codes[i + 2] >= 0 && codes[i + 2] <= 255) return [palette(codes[i + 2]), i + 3];
  if (codes[i + 1] === 2 && codes.length >= i + 5) {
    const [r, g, b] = codes.slice(i + 2, i + 5).map((c) => Math.max(0, Math.min(255, c || 0)));
    return [{ rgb: `rgb(${r}, ${g}, ${b})` }, i + 5];
  }
  return [null, codes.length];
}

/** The style after applying one SGR parameter list to `style` (a fresh object). */
export function applySgr(style, parameters) {
  const codes = parameters === "" ? [0] : parameters.split(/[;:]/).map((c) => (c === "" ? 0 : Number(c)));
  let next = { ...style };
  for (let i = 0; i < codes.length; ) {
    const code = codes[i];
    i += 1;
    if (code === 0) next = {};
    else if (code === 1) next.bold = true;
    else if (code === 2) next.dim = true;
    else if (code === 3) next.italic = true;
    else if (code === 4) next.underline = true;
    else if (code === 22) {
      delete next.bold;
      delete next.dim;
    }
    else if (code === 23) delete next.italic;
    else if (code === 24) delete next.underline;
    else if (code >= 30 && code <= 37) next.fg = { cls: code - 30 };
    else if (code >= 90 && code <= 97) next.fg = { cls: code - 90 + 8 };
    else if (code >= 40 && code <= 47) next.bg = { cls: code - 40 };
    else if (code >= 100 && code <= 107) next.bg = { cls: code - 100 + 8 };
    else if (code === 39) delete next.fg;
    else if (code === 49) delete next.bg;
    else if (code === 38 || code === 48) {
      const [colour, after] = extended(codes, i - 1);
      if (colour) next[code === 38 ? "fg" : "bg"] = colour;
      i = after;
    }
  }
  return next;
}

/**
 * Split `text` into `[{text, style}]` segments. `state` carries the style and any escape cut at the end
 * of the previous chunk; the returned state goes with the next chunk of the same stream.
 */
export function parseAnsi(text, state = { style: {}, pending: "" }) {
  let input = state.pending + text;
  let pending = "";
  const cut = PARTIAL.exec(input);
  if (cut) {
    pending = cut[0];
    input = input.slice(0, cut.index);
  }
  const segments = [];
  let style = state.style;
  let last = 0;
  for (const match of input.matchAll(ESCAPE)) {
    if (match.index > last) segments.push({ text: input.slice(last, match.index), style });
    if (match[1] !== undefined) style = applySgr(style, match[1]);
    last = match.index + match[0].length;
  }
  if (last < input.length) segments.push({ text: input.slice(last), style });
  return { segments, state: { style, pending } };
}

function classesOf(style) {
  const classes = [];
  if (style.bold) classes.push("ansi-bold");
  if (style.dim) classes.push("ansi-dim");
  if (style.italic) classes.push("ansi-italic");
  if (style.underline) classes.push("ansi-underline");
  if (style.fg && style.fg.cls !== undefined) classes.push(`ansi-fg-${style.fg.cls}`);
  if (style.bg && style.bg.cls !== undefined) classes.push(`ansi-bg-${style.bg.cls}`);
  return classes;
}

/** Nodes for the segments: plain text nodes, or spans with classes (and CSSOM colours for rgb). */
export function segmentNodes(segments) {
  return segments.map(({ text, style }) => {
    const classes = classesOf(style);
    const rgb = (style.fg && style.fg.rgb) || (style.bg && style.bg.rgb);
    if (!classes.length && !rgb) return document.createTextNode(text);
    const span = document.createElement("span");
    span.textContent = text;
    if (classes.length) span.className = classes.join(" ");
    if (style.fg && style.fg.rgb) span.style.color = style.fg.rgb;
    if (style.bg && style.bg.rgb) span.style.backgroundColor = style.bg.rgb;
    return span;
  });
}

/** Append `text` (with escapes) to `parent`; returns the state for the stream's next chunk. */
export function appendAnsi(parent, text, state) {
  const parsed = parseAnsi(text, state);
  parent.append(...segmentNodes(parsed.segments));
  return parsed.state;
}

/** Carriage returns roughly as a terminal shows them: each line keeps its last non-empty rewrite. */
export function collapseCarriageReturns(text) {
  return text
    .replaceAll("\r\n", "\n")
    .split("\n")
    .map((line) => line.split("\r").findLast((part) => part !== "") ?? "")
    .join("\n");
}
