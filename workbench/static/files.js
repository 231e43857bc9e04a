// The session's workspace (list, drag-and-drop upload with progress, download, rename, delete) and the
// tenant's library (list and download), when the server offers it.

import { ApiError, api, download, encodePath, sessionUrl, upload } from "./api.js";
import { announce, confirmDialog, formatBytes, h, promptDialog, timeElement } from "./dom.js";

const PAGE = 500;

function fileRow(entry, actions) {
  const name = entry.type === "directory" ? `${entry.path}/` : entry.path;
  return h(
    "li",
    { class: `file ${entry.type}` },
    h("span", { class: "file-name", title: name }, name),
    h("span", { class: "file-size" }, entry.type === "directory" ? "" : formatBytes(entry.size)),
    entry.modified ? h("span", { class: "file-time" }, timeElement(entry.modified)) : null,
    h("span", { class: "file-actions" }, actions(entry)),
  );
}

function listInto(list, note, answer) {
  const files = answer.files || [];
  list.replaceChildren(...files);
  note.textContent = answer.total > files.length ? `Showing ${files.length} of ${answer.total} entries.` : files.length ? "" : "No files yet.";
}

export class FilePanel {
  constructor(container, sessionId) {
    this.sessionId = sessionId;
    this.list = h("ul", { class: "file-list", "aria-label": "Workspace files" });
    this.note = h("p", { class: "note" });
    this.message = h("p", { class: "error-text", role: "alert" });
    this.uploads = h("ul", { class: "uploads", "aria-label": "Uploads" });
    const picker = h("input", {
      id: "upload-input",
      type: "file",
      multiple: true,
      class: "visually-hidden",
      onchange: () => {
        this.uploadAll([...picker.files]);
        picker.value = "";
      },
    });
    this.section = h(
      "section",
      { class: "panel files-panel", "aria-labelledby": "files-title" },
      h(
        "div",
        { class: "panel-head" },
        h("h2", { id: "files-title" }, "Files"),
        h("button", { type: "button", onclick: () => this.refresh() }, "Refresh"),
      ),
      h(
        "div",
        { class: "drop-zone" },
        picker,
        h("label", { for: "upload-input", class: "button" }, "Upload files…"),
        h("span", { class: "note" }, " or drop them here"),
      ),
      this.uploads,
      this.message,
      this.list,
      this.note,
    );
    for (const [type, handler] of Object.entries({
      dragover: (event) => this.dragOver(event),
      dragleave: () => this.section.classList.remove("dragging"),
      drop: (event) => this.drop(event),
    })) {
      this.section.addEventListener(type, handler);
    }
    container.append(this.section);
    this.refresh();
  }

  url(path = "") {
    return sessionUrl(this.sessionId, path ? `/files/${encodePath(path)}` : "/files");
  }

  fail(error) {
    this.message.textContent = error.message;
  }

  async refresh() {
    try {
      listInto(this.list, this.note, await this.page());
    } catch (error) {
      if (error instanceof ApiError && ![0, 401, 404].includes(error.status)) this.fail(error); // said elsewhere
    }
  }

  async page() {
    const answer = await api("GET", `${this.url()}?recursive=true&limit=${PAGE}`);
    return { ...answer, files: answer.files.map((entry) => fileRow(entry, (e) => this.actions(e))) };
  }

  actions(entry) {
    const label = (verb) => `${verb} ${entry.path}`;
    const buttons = [];
    if (entry.type === "file") {
      buttons.push(h("button", { type: "button", "aria-label": label("Download"), onclick: () => this.download(entry) }, "Download"));
    }
    buttons.push(
      h("button", { type: "button", "aria-label": label("Rename"), onclick: () => this.rename(entry) }, "Rename"),
      h("button", { type: "button", class: "danger", "aria-label": label("Delete"), onclick: () => this.remove(entry) }, "Delete"),
    );
    return buttons;
  }

  async download(entry) {
    this.message.textContent = "";
    try {
      await download(this.url(entry.path), entry.name);
      announce(`Downloaded ${entry.name}`);
    } catch (error) {
      this.fail(error);
    }
  }

  async rename(entry) {
    const target = await promptDialog(`Rename ${entry.name}`, "New path in the workspace", entry.path, "Rename");
    if (!target || target === entry.path) return;
    this.message.textContent = "";
    try {
      await api("PATCH", this.url(entry.path), { json: { new_path: target } });
      announce(`Renamed to ${target}`);
    } catch (error) {
      this.fail(error);
    }
    this.refresh();
  }

  async remove(entry) {
    const folder = entry.type === "directory";
    const question = folder ? `Delete the folder ${entry.path} and everything in it?` : `Delete ${entry.path}?`;
    if (!(await confirmDialog("Delete", question, "Delete"))) return;
    this.message.textContent = "";
    try {
      await api("DELETE", `${this.url(entry.path)}${folder ? "?recursive=true" : ""}`);
      announce(`Deleted ${entry.path}`);
    } catch (error) {
      this.fail(error);
    }
    this.refresh();
  }

  dragOver(event) {
    if (![...event.dataTransfer.types].includes("Files")) return;
    event.preventDefault();
    event.dataTransfer.dropEffect = "copy";
    this.section.classList.add("dragging");
  }

  drop(event) {
    this.section.classList.remove("dragging");
    if (!event.dataTransfer.files.length) return;
    event.preventDefault();
    this.uploadAll([...event.dataTransfer.files]);
  }

  async uploadAll(files) {
    this.message.textContent = "";
    for (const file of files) await this.uploadOne(file);
    this.refresh();
  }

  async uploadOne(file) {
    const progress = h("progress", { max: "100", value: "0", "aria-label": `Uploading ${file.name}` });
    const status = h("span", { class: "upload-status" }, "0 %");
    const item = h("li", {}, h("span", { class: "file-name" }, file.name), progress, status);
    this.uploads.append(item);
    try {
      await upload(this.url(), file, (loaded, total) => {
        const percent = total ? Math.round((100 * loaded) / total) : 100;
        progress.value = percent;
        status.textContent = `${percent} %`;
      });
      item.remove();
      announce(`Uploaded ${file.name}`);
    } catch (error) {
      progress.remove();
      item.classList.add("refused");
      status.textContent = `${file.name}: ${error.message}`;
      status.setAttribute("role", "alert");
      item.append(h("button", { type: "button", "aria-label": `Dismiss the error about ${file.name}`, onclick: () => item.remove() }, "Dismiss"));
    }
  }
}

/** The tenant's library (`/library` in every session), read here; hidden when the server has none. */
export class LibraryPanel {
  constructor(container) {
    this.list = h("ul", { class: "file-list", "aria-label": "Library files" });
    this.note = h("p", { class: "note" });
    this.section = h(
      "section",
      { class: "panel", "aria-labelledby": "library-title", hidden: true },
      h(
        "div",
        { class: "panel-head" },
        h("h2", { id: "library-title" }, "Library"),
        h("button", { type: "button", onclick: () => this.refresh() }, "Refresh"),
      ),
      h("p", { class: "note" }, "Shared files, read-only at /library in every session."),
      this.list,
      this.note,
    );
    container.append(this.section);
    this.refresh();
  }

  async refresh() {
    try {
      const answer = await api("GET", `/api/v1/library?recursive=true&limit=${PAGE}`);
      const rows = (answer.files || []).map((entry) => fileRow(entry, (e) => this.actions(e)));
      listInto(this.list, this.note, { ...answer, files: rows });
      this.section.hidden = false;
    } catch (error) {
      const missing = error instanceof ApiError && error.code === "no-route";
      this.section.hidden = missing;
      if (!missing) this.note.textContent = error.message;
    }
  }

  actions(entry) {
    if (entry.type !== "file") return [];
    const path = `/api/v1/library/${encodePath(entry.path)}`;
    const fetchIt = () => download(path, entry.name).catch((error) => (this.note.textContent = error.message));
    return [h("button", { type: "button", "aria-label": `Download ${entry.path}`, onclick: fetchIt }, "Download")];
  }
}
