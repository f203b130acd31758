// gomodel-proxy dashboard: sign-in (a key, or single sign-on when the gateway offers it), the session, and
// hash routing between the pages. Vanilla ES modules, no build step, no external URL. Every URL is relative
// to the page (<base path>/admin/dashboard/), so the dashboard works behind a proxy under a prefix.

import { overviewPage } from "./charts.js";
import { $, ApiError, api, state } from "./lib.js";
import { auditPage, configPage, livePage, providersPage } from "./ops.js";
import { budgetsPage, keysPage, usagePage, usersPage } from "./pages.js";

const SESSION_URL = "session";
const SSO_URL = "sso";
const PAGES = {
  overview: { title: "Overview", render: overviewPage },
  usage: { title: "Usage & cost", render: usagePage },
  keys: { title: "Keys", render: keysPage },
  users: { title: "Users & teams", render: usersPage },
  budgets: { title: "Budgets", render: budgetsPage },
  providers: { title: "Providers", render: providersPage },
  live: { title: "Live log", render: livePage },
  audit: { title: "Audit trail", render: auditPage },
  config: { title: "Configuration", render: configPage },
};
const SSO_ERRORS = {
  denied: "Your account is not in a group allowed to use the dashboard.",
  state: "The sign-in expired or was interrupted; try again.",
  failed: "Single sign-on failed; try again or use a key.",
};

let expiryTimer = 0;
let current = { name: null, cleanup: null };
let ssoChecked = false;

// -- pages ------------------------------------------------------------------------------------------
function pageName() {
  const name = location.hash.replace(/^#/, "");
  return Object.hasOwn(PAGES, name) ? name : "overview";
}

function leavePage() {
  if (typeof current.cleanup === "function") {
    try {
      current.cleanup();
    } catch {
      // a page that fails to clean up must not keep the next one from showing
    }
  }
  current = { name: null, cleanup: null };
}

/** Show page ``name``: the last one cleaned up (its live connections closed), the nav updated, and, when
 * the user navigated, focus on the new page's heading. */
function showPage(name, focus) {
  leavePage();
  for (const link of document.querySelectorAll(".nav a")) {
    if (link.getAttribute("href") === `#${name}`) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  const view = $("view");
  view.className = `page page-${name}`;
  view.replaceChildren();
  document.title = `${PAGES[name].title} · gomodel-proxy dashboard`;
  current = { name, cleanup: PAGES[name].render(view) };
  if (focus) {
    const heading = view.querySelector("h1");
    if (heading) heading.focus();
  }
}

function onHashChange() {
  if (!state.session) return;
  const raw = location.hash.replace(/^#/, "");
  if (raw && !Object.hasOwn(PAGES, raw)) return; // an in-page anchor, not a page
  showPage(pageName(), true);
}

// -- session ----------------------------------------------------------------------------------------
function showSignIn(message = "") {
  state.session = null;
  leavePage();
  clearTimeout(expiryTimer);
  $("loading").hidden = true;
  $("topbar").hidden = true;
  $("view").hidden = true;
  $("view").replaceChildren();
  for (const open of document.querySelectorAll("dialog")) open.remove();
  $("signin").hidden = false;
  $("signin-error").textContent = message;
  $("key").value = "";
  $("key").setAttribute("aria-invalid", message ? "true" : "false");
  $("key").focus();
  offerSso();
}

function showApp(focus) {
  const { session } = state;
  $("loading").hidden = true;
  $("signin").hidden = true;
  $("topbar").hidden = false;
  $("view").hidden = false;
  const who = session.name || session.subject;
  $("who").textContent = session.subject === "master" && !session.name ? "Signed in with the master key"
    : `Signed in as ${who}`;
  $("role").textContent = session.role === "admin" ? "Admin" : "Read-only";
  document.body.classList.toggle("read-only", session.role !== "admin");
  clearTimeout(expiryTimer);
  const left = Date.parse(String(session.expires_at).replace(/(\.\d{3})\d+/, "$1")) - Date.now();
  if (left > 0 && left < 2 ** 31) {
    expiryTimer = setTimeout(() => showSignIn("Your session has expired: sign in again."), left);
  }
  showPage(pageName(), focus);
}

async function signIn(event) {
  event.preventDefault();
  const input = $("key");
  const button = event.target.querySelector("button[type=submit]");
  const key = input.value.trim();
  if (!key) {
    $("signin-error").textContent = "Enter the master key or an admin's key.";
    input.setAttribute("aria-invalid", "true");
    input.focus();
    return;
  }
  button.disabled = true;
  $("signin-error").textContent = "";
  try {
    state.session = await api(SESSION_URL, { method: "POST", body: { key } });
    input.value = "";
    showApp(true);
  } catch (error) {
    input.setAttribute("aria-invalid", "true");
    $("signin-error").textContent =
      error.status === 401 ? "That key is not valid for this gateway."
      : error.status === 403 ? "That key is valid but is not an admin key."
      : error.message;
    input.select();
  } finally {
    button.disabled = false;
  }
}

async function signOut() {
  try {
    await api(SESSION_URL, { method: "DELETE" });
  } catch {
    // The cookie is gone or expired already: signed out either way.
  }
  showSignIn("");
  $("signin-error").textContent = "You have signed out.";
}

/** "Sign in with …" under the key form, when the gateway has single sign-on on (else nothing). */
async function offerSso() {
  if (ssoChecked) return;
  ssoChecked = true;
  let info = null;
  try {
    info = await api(SSO_URL);
  } catch {
    return; // no SSO here (or it cannot say): the key form is the way in
  }
  if (!info || info.enabled !== true) return;
  const link = document.createElement("a");
  link.id = "sso-link";
  link.className = "button secondary sso";
  link.href = "sso/login";
  link.textContent = `Sign in with ${info.name || "SSO"}`;
  $("sso").replaceChildren(link);
  $("sso").hidden = false;
}

/** A ``#sso-error=<code>`` the SSO callback sent the browser back with: its message, the hash cleared. */
function takeSsoError() {
  const match = /^#sso-error=([A-Za-z0-9_-]*)/.exec(location.hash);
  if (!match) return "";
  history.replaceState(null, "", location.pathname + location.search);
  return SSO_ERRORS[match[1]] || SSO_ERRORS.failed;
}

// -- start ------------------------------------------------------------------------------------------
async function start() {
  state.onSignedOut = showSignIn;
  $("signin-form").addEventListener("submit", signIn);
  $("sign-out").addEventListener("click", signOut);
  $("skip-link").addEventListener("click", (event) => {
    event.preventDefault();
    const heading = $("view").hidden ? $("signin-title") : $("view").querySelector("h1");
    (heading || $("main")).focus();
  });
  window.addEventListener("hashchange", onHashChange);
  const ssoError = takeSsoError();
  try {
    state.session = await api(SESSION_URL);
    showApp(false);
  } catch (error) {
    showSignIn(ssoError || (error instanceof ApiError && error.status === 401 ? "" : error.message));
  }
}

start();
