// Small DOM helpers. Text always goes in as text nodes: nothing here parses HTML.

/** An element: `h("button", {class: "x", onclick: f}, "text", child)`. */
export function h(tag, attrs = {}, ...children) {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith("on")) element.addEventListener(name.slice(2), value);
    else if (name in element && typeof value !== "string") element[name] = value;
    else element.setAttribute(name, value === true ? "" : value);
  }
  element.append(...children.flat().filter((child) => child !== null && child !== undefined && child !== false));
  return element;
}

const UNITS = ["B", "KB", "MB", "GB", "TB"];

export function formatBytes(bytes) {
  let value = Number(bytes) || 0;
  let unit = 0;
  while (value >= 1024 && unit < UNITS.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return `${unit === 0 ? value : value.toFixed(value < 10 ? 1 : 0)} ${UNITS[unit]}`;
}

export function formatDuration(ms) {
  if (ms < 1000) return `${Math.round(ms)} ms`;
  if (ms < 60_000) return `${(ms / 1000).toFixed(1)} s`;
  const minutes = Math.floor(ms / 60_000);
  return `${minutes} min ${Math.round((ms % 60_000) / 1000)} s`;
}

/** "3 min ago" / "in 2 h" for an ISO timestamp. */
export function relativeTime(iso, now = Date.now()) {
  const then = Date.parse(iso);
  if (Number.isNaN(then)) return "";
  const seconds = Math.round((then - now) / 1000);
  const size = Math.abs(seconds);
  const [value, unit] =
    size < 60 ? [size, "s"] : size < 3600 ? [Math.round(size / 60), "min"] : size < 86400 ? [Math.round(size / 3600), "h"] : [Math.round(size / 86400), "d"];
  if (size < 5) return "now";
  return seconds < 0 ? `${value} ${unit} ago` : `in ${value} ${unit}`;
}

/** A <time> showing relative time, the exact one as its title. */
export const timeElement = (iso) => h("time", { datetime: iso, title: new Date(iso).toLocaleString() }, relativeTime(iso));

/** Say something to screen readers (the polite live region). */
export function announce(message) {
  const region = document.getElementById("announce");
  if (region) region.textContent = message;
}

function modal(title, body, actions) {
  const dialog = h("dialog", { "aria-labelledby": "dialog-title" }, h("h2", { id: "dialog-title" }, title), body, actions.length ? h("div", { class: "actions" }, actions) : null);
  document.body.append(dialog);
  dialog.addEventListener("close", () => dialog.remove());
  dialog.showModal();
  return dialog;
}

/** A confirmation dialog; resolves true when confirmed (Escape or Cancel: false). */
export function confirmDialog(title, message, confirmLabel) {
  return new Promise((resolve) => {
    let answer = false;
    const cancel = h("button", { type: "button", onclick: () => dialog.close() }, "Cancel");
    const confirm = h("button", { type: "button", class: "danger", onclick: () => ((answer = true), dialog.close()) }, confirmLabel);
    const dialog = modal(title, h("p", {}, message), [cancel, confirm]);
    dialog.addEventListener("close", () => resolve(answer));
    cancel.focus();
  });
}

/** A dialog asking for one line of text; resolves to it, or null when cancelled. */
export function promptDialog(title, label, value, submitLabel) {
  return new Promise((resolve) => {
    let answer = null;
    const input = h("input", { id: "dialog-input", type: "text", value, required: true, autocomplete: "off", spellcheck: "false" });
    const form = h(
      "form",
      { method: "dialog", onsubmit: () => (answer = input.value) },
      h("label", { for: "dialog-input" }, label),
      input,
    );
    const cancel = h("button", { type: "button", onclick: () => dialog.close() }, "Cancel");
    const submit = h("button", { type: "submit", class: "primary" }, submitLabel);
    form.append(h("div", { class: "actions" }, cancel, submit));
    const dialog = modal(title, form, []);
    dialog.addEventListener("close", () => resolve(answer));
    input.focus();
    input.select();
  });
}
