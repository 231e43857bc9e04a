// Entry point: sign-in, the hash router (#/ sessions, #/s/<id> one session), the unreachable banner.

import { ApiError, api, clearToken, getToken, onReachable, onUnauthorized, setToken } from "./api.js";
import { h } from "./dom.js";
import { renderSession } from "./session.js";
import { renderSessions } from "./sessions.js";

const view = document.getElementById("view");
const banner = document.getElementById("banner");
const signOut = document.getElementById("sign-out");
let current = null;

function renderSignIn(reason) {
  const error = h("p", { class: "error-text", role: "alert" }, reason || "");
  const input = h("input", { id: "token", name: "token", type: "password", autocomplete: "off", spellcheck: "false", required: true });
  const submit = h("button", { type: "submit", class: "primary" }, "Sign in");
  const form = h(
    "form",
    { class: "sign-in", "aria-labelledby": "sign-in-title" },
    h("h1", { id: "sign-in-title" }, "Sign in"),
    h("p", {}, "Paste your Workbench API token. It is kept in this browser tab only (session storage)."),
    h("label", { for: "token" }, "API token"),
    input,
    submit,
    error,
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const token = input.value.trim();
    submit.disabled = true;
    error.textContent = "";
    try {
      await api("GET", "/api/v1/sessions", { token, quiet401: true });
      setToken(token);
      route();
    } catch (failure) {
      const refused = failure instanceof ApiError && failure.status === 401;
      error.textContent = refused ? "This token was refused by the server: check it and try again." : failure.message;
      input.focus();
      input.select();
    } finally {
      submit.disabled = false;
    }
  });
  view.append(form);
  input.focus();
  return null;
}

function route(reason) {
  if (current) current.destroy();
  current = null;
  view.replaceChildren();
  signOut.hidden = !getToken();
  if (!getToken()) {
    document.title = "Sign in · Workbench";
    current = renderSignIn(reason);
    return;
  }
  const match = location.hash.match(/^#\/s\/([A-Za-z0-9_-]{1,64})$/);
  document.title = match ? "Session · Workbench" : "Sessions · Workbench";
  current = match ? renderSession(view, match[1]) : renderSessions(view);
  if (!match) view.querySelector("h1").focus();
}

onUnauthorized(() => {
  if (!getToken()) return;
  clearToken();
  route("The server no longer accepts your token (revoked or changed): sign in again.");
});

onReachable((yes) => {
  banner.hidden = yes;
  banner.textContent = yes ? "" : "Cannot reach the Workbench server. Retrying… (is it running, and is this machine on its network?)";
});

signOut.addEventListener("click", () => {
  clearToken();
  route("Signed out.");
});

window.addEventListener("hashchange", () => route());
route();
