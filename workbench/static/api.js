// The v1 API over fetch (and XHR for upload progress). The token lives in sessionStorage and travels only
// in the Authorization header (on the WebSocket: in a subprotocol), never in a page URL.

const TOKEN_KEY = "workbench.token";
const listeners = { unauthorized: [], reachable: [] };

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

export const getToken = () => sessionStorage.getItem(TOKEN_KEY);
export const setToken = (token) => sessionStorage.setItem(TOKEN_KEY, token);
export const clearToken = () => sessionStorage.removeItem(TOKEN_KEY);

/** Called with a message when the server refuses the token (401). */
export const onUnauthorized = (listener) => listeners.unauthorized.push(listener);
/** Called with true or false when the server becomes reachable or unreachable; returns an unsubscribe. */
export function onReachable(listener) {
  listeners.reachable.push(listener);
  return () => listeners.reachable.splice(listeners.reachable.indexOf(listener), 1);
}

function reachable(yes) {
  for (const listener of listeners.reachable) listener(yes);
}

/** A workspace (or library) path as URL segments: every part percent-encoded, `/` kept. */
export const encodePath = (path) => path.split("/").map(encodeURIComponent).join("/");

export const sessionUrl = (id, rest = "") => `/api/v1/sessions/${encodeURIComponent(id)}${rest}`;

function authHeaders(token = getToken()) {
  return token ? { Authorization: `Bearer ${token}` } : {};
}

async function errorFrom(response) {
  let code = `http-${response.status}`;
  let message = `${response.status} ${response.statusText}`.trim();
  try {
    const body = await response.json();
    if (body && body.error) ({ code, message } = body.error);
  } catch {
    // not JSON: keep the status line
  }
  return new ApiError(response.status, code, message);
}

function refused(error) {
  if (error.status === 401) {
    for (const listener of listeners.unauthorized) listener(error.message);
  }
  return error;
}

/** `fetch` with the token; network failures become ApiError(0, "unreachable"). */
export async function request(method, path, { json, token, signal, quiet401 = false } = {}) {
  const headers = authHeaders(token);
  let body;
  if (json !== undefined) {
    headers["Content-Type"] = "application/json";
    body = JSON.stringify(json);
  }
  let response;
  try {
    response = await fetch(path, { method, headers, body, signal, cache: "no-store" });
  } catch (error) {
    if (error.name === "AbortError") throw error;
    reachable(false);
    throw new ApiError(0, "unreachable", "Cannot reach the Workbench server.");
  }
  reachable(true);
  if (!response.ok) {
    const error = await errorFrom(response);
    throw quiet401 ? error : refused(error);
  }
  return response;
}

/** The JSON answer of a request (null for 204). */
export async function api(method, path, options = {}) {
  const response = await request(method, path, options);
  return response.status === 204 ? null : response.json();
}

/** Fetch a file with the token, then save it under `name` through an object URL (no token in any URL). */
export async function download(path, name) {
  const response = await request("GET", path);
  const url = URL.createObjectURL(await response.blob());
  const link = Object.assign(document.createElement("a"), { href: url, download: name, hidden: true });
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 60_000);
}

/** Multipart upload of one file with progress: `onProgress(loaded, total)`; resolves to the answer. */
export function upload(path, file, onProgress) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open("POST", path);
    for (const [name, value] of Object.entries(authHeaders())) xhr.setRequestHeader(name, value);
    xhr.upload.onprogress = (event) => onProgress(event.loaded, event.lengthComputable ? event.total : file.size);
    xhr.onerror = () => {
      reachable(false);
      reject(new ApiError(0, "unreachable", "Cannot reach the Workbench server."));
    };
    xhr.onload = () => {
      reachable(true);
      let body = null;
      try {
        body = JSON.parse(xhr.responseText);
      } catch {
        // not JSON
      }
      if (xhr.status >= 200 && xhr.status < 300) return resolve(body);
      const detail = body && body.error ? body.error : { code: `http-${xhr.status}`, message: xhr.statusText };
      reject(refused(new ApiError(xhr.status, detail.code, detail.message)));
    };
    const form = new FormData();
    form.append("file", file, file.name);
    xhr.send(form);
  });
}

/** Base64url of a UTF-8 string, unpadded (the token subprotocol's form). */
function base64url(text) {
  let binary = "";
  for (const byte of new TextEncoder().encode(text)) binary += String.fromCharCode(byte);
  return btoa(binary).replaceAll("+", "-").replaceAll("/", "_").replace(/=+$/, "");
}

/** The session's WebSocket; the token is offered as a subprotocol, the server answers `workbench.v1`. */
export function openSocket(id) {
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  const url = `${scheme}//${location.host}${sessionUrl(id, "/ws")}`;
  return new WebSocket(url, ["workbench.v1", `workbench.bearer.${base64url(getToken() || "")}`]);
}
