// Shared helpers of the dashboard's pages: DOM building (text nodes only: nothing from the server is ever
// parsed as HTML), the admin API client, formatting, tables, forms and dialogs.

const SVG_NS = "http://www.w3.org/2000/svg";
const SAFE_METHODS = new Set(["GET", "HEAD", "OPTIONS"]);

/** What every page shares: the session, and what to do when it has ended (set by app.js). */
export const state = {
  session: null,
  onSignedOut: () => {},
};

export const $ = (id) => document.getElementById(id);

/** Whether this session may change anything (a read-only one sees every page and changes nothing). */
export const canChange = () => Boolean(state.session && state.session.role === "admin");

// -- DOM ------------------------------------------------------------------------------------------
function build(node, attrs, children) {
  for (const [name, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (name.startsWith("on") && typeof value === "function") node.addEventListener(name.slice(2), value);
    else node.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of [].concat(children)) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

/** An HTML element: attributes (``onclick``: a listener; true: present; null/false: absent) and children. */
export const h = (tag, attrs = {}, children = []) => build(document.createElement(tag), attrs, children);
/** An SVG element. */
export const s = (tag, attrs = {}, children = []) => build(document.createElementNS(SVG_NS, tag), attrs, children);

// -- the API --------------------------------------------------------------------------------------
export class ApiError extends Error {
  constructor(message, status, code) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

/** A JSON call to the gateway (relative URL); changes carry the session's CSRF token. */
export async function api(url, { method = "GET", body } = {}) {
  const headers = { Accept: "application/json" };
  const init = { method, headers, credentials: "same-origin", cache: "no-store" };
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  if (!SAFE_METHODS.has(method) && state.session) headers["X-CSRF-Token"] = state.session.csrf;
  let resp;
  try {
    resp = await fetch(url, init);
  } catch {
    throw new ApiError("The gateway could not be reached (network error).", 0, "network");
  }
  let data = null;
  if (resp.status !== 204) {
    try {
      data = await resp.json();
    } catch {
      data = null;
    }
  }
  if (!resp.ok) {
    const error = data && data.error ? data.error : {};
    const fallback = resp.status === 404 ? "This gateway does not serve that page's data (404)."
      : `The gateway answered ${resp.status}.`;
    throw new ApiError(error.message || fallback, resp.status, error.code);
  }
  return data;
}

/** A path segment of an id (ids are escaped, never trusted to be URL-safe). */
export const seg = (id) => encodeURIComponent(String(id));

// -- status regions ---------------------------------------------------------------------------------
/** Put ``text`` in a page's status region (``error``: styled and worded as one). */
export function say(region, text, error = false) {
  region.textContent = text;
  region.classList.toggle("error", error);
}

/** Report a failed call in ``region`` in words; a 401 ends the session (the sign-in form comes back). */
export function fail(region, what, error) {
  if (error instanceof ApiError && error.status === 401) {
    state.onSignedOut("Your session has ended: sign in again.");
    return;
  }
  const why = error instanceof ApiError && error.status === 403 && error.code === "read_only"
    ? "this session is read-only." : error.message;
  say(region, `${what}: ${why}`, true);
}

/** The frame of a page: its heading (focusable by script), an optional intro, and its status region. */
export function pageFrame(view, { id, title, intro, tools = [], changes = false }) {
  const heading = h("h1", { id: `${id}-title`, tabindex: -1 }, title);
  const status = h("p", { id: "status", class: "status", role: "status", "aria-live": "polite" });
  view.setAttribute("aria-labelledby", `${id}-title`);
  view.replaceChildren(...[
    h("div", { class: "page-head" }, [heading, ...tools]),
    intro ? h("p", { class: "muted intro" }, intro) : null,
    status,
    changes && !canChange() ? readOnlyNote() : null,
  ].filter(Boolean));
  return { heading, status };
}

/** A note shown on pages with change controls when the session is read-only. */
const readOnlyNote = () => h("p", { class: "note" },
  "This session is read-only: you can see everything and change nothing.");

// -- formatting ---------------------------------------------------------------------------------------
/** Epoch ms of an RFC 3339 time; the gateway's have microseconds, which not every Date.parse takes. */
export const parseTime = (text) => Date.parse(String(text).replace(/(\.\d{3})\d+/, "$1"));
export const fmtInt = new Intl.NumberFormat(undefined, { maximumFractionDigits: 0 });
/** USD: two decimals from a dollar up, four under it, six under a tenth of a cent (one call's cost). */
export const fmtUsd = (v) => {
  const n = Number(v) || 0;
  const a = Math.abs(n);
  if (a === 0 || a >= 1) return `$${n.toLocaleString(undefined, { minimumFractionDigits: 2, maximumFractionDigits: 2 })}`;
  return `$${n.toFixed(a < 0.001 ? 6 : 4)}`;
};
const fmtMs1 = new Intl.NumberFormat(undefined, { maximumFractionDigits: 1 });
const fmtMs2 = new Intl.NumberFormat(undefined, { maximumFractionDigits: 2 });
/** Milliseconds with the digits their size needs (a proxy's latencies are often under 1 ms). */
export const fmtMs = (v) => (v === null || v === undefined ? "no data"
  : `${(v < 10 ? fmtMs2 : v < 100 ? fmtMs1 : fmtInt).format(v)} ms`);
export const fmtDateTime = (value) => (value === null || value === undefined || value === "" ? "—"
  : new Date(typeof value === "string" ? parseTime(value) : value)
    .toLocaleString(undefined, { dateStyle: "medium", timeStyle: "short" }));
export const fmtDate = (value) => new Date(typeof value === "string" ? parseTime(value) : value)
  .toLocaleDateString(undefined, { dateStyle: "medium" });
export const fmtTime = (value) => new Date(typeof value === "string" ? parseTime(value) : value)
  .toLocaleTimeString(undefined, { hour: "2-digit", minute: "2-digit", second: "2-digit" });
export const orNone = (v, none = "—") => (v === null || v === undefined || v === "" ? none : String(v));
export const yesNo = (v) => (v ? "Yes" : "No");
/** A per-minute limit: its number, or that it has none of its own. */
export const fmtLimit = (v) => (v === null || v === undefined ? "default" : fmtInt.format(v));

// -- tables -----------------------------------------------------------------------------------------
/**
 * A data table: ``columns`` [{label, num}], ``rows`` arrays of cells (a Node or text; the first is the
 * row's header), optional ``foot`` (one row), ``rowAttrs(i)`` for each row's attributes.
 */
export function table({ caption, columns, rows, foot, empty = "Nothing to show.", rowAttrs, id }) {
  const cell = (value, k, header) => {
    const attrs = { class: columns[k] && columns[k].num ? "num" : null };
    return header ? h("th", { scope: "row", ...attrs }, value) : h("td", attrs, value);
  };
  const body = h("tbody", { id }, rows.length ? rows.map((r, i) => h("tr", rowAttrs ? rowAttrs(i) : {},
    r.map((v, k) => cell(v, k, k === 0))))
    : h("tr", {}, h("td", { colspan: columns.length, class: "empty-row" }, empty)));
  return h("div", { class: "table-wrap" }, h("table", { class: "data" }, [
    h("caption", {}, caption),
    h("thead", {}, h("tr", {}, columns.map((c) => h("th", { scope: "col", class: c.num ? "num" : null }, c.label)))),
    body,
    foot ? h("tfoot", {}, h("tr", {}, foot.map((v, k) => cell(v, k, k === 0)))) : null,
  ]));
}

/** ``wrap`` (a ``table()``) made a labelled, focusable region, so a table wider than the page scrolls
 * sideways inside its card by keyboard too. */
export function scrollRegion(wrap, label) {
  wrap.setAttribute("tabindex", "0");
  wrap.setAttribute("role", "region");
  wrap.setAttribute("aria-label", `${label} (scrolls sideways when wider than the page)`);
  return wrap;
}

/** A small button (``data`` attributes allowed through ``attrs``). */
export const button = (label, onclick, attrs = {}) =>
  h("button", { type: "button", class: "button small secondary", onclick, ...attrs }, label);

// -- forms ----------------------------------------------------------------------------------------------
let uid = 0;

/**
 * Labelled inputs from field specs: {name, label, type: text|number|checkbox|select|list|datetime|date|email,
 * required, options: [[value, label]], hint, placeholder, list (a datalist id), min, step}.
 */
export function fields(specs, values = {}) {
  return specs.map((f) => {
    const id = `f${++uid}-${f.name}`;
    const hintId = f.hint ? `${id}-hint` : null;
    const value = values[f.name];
    const common = { id, name: f.name, "aria-describedby": hintId, required: f.required || null };
    let input;
    if (f.type === "checkbox") {
      input = h("input", { ...common, type: "checkbox", checked: Boolean(value) });
      return h("div", { class: "field check" }, [input, h("label", { for: id }, f.label),
        f.hint ? h("p", { id: hintId, class: "hint" }, f.hint) : null]);
    }
    if (f.type === "select") {
      input = h("select", common, f.options.map(([v, label]) =>
        h("option", { value: v, selected: String(value ?? f.default ?? "") === String(v) }, label)));
    } else {
      const type = { number: "number", datetime: "datetime-local", date: "date", email: "email" }[f.type] || "text";
      let shown = value ?? "";
      if (f.type === "list") shown = Array.isArray(value) ? value.join(", ") : "";
      if (f.type === "datetime") shown = value ? toLocalInput(value) : "";
      input = h("input", {
        ...common, type, value: shown, list: f.list, min: f.min, step: f.step, placeholder: f.placeholder,
        inputmode: f.type === "number" ? (f.step ? "decimal" : "numeric") : null,
        autocomplete: "off", spellcheck: "false",
      });
    }
    return h("div", { class: "field" }, [h("label", { for: id }, f.label), input,
      f.hint ? h("p", { id: hintId, class: "hint" }, f.hint) : null]);
  });
}

/** A datetime-local input's value for an RFC 3339 time (local time, to the minute). */
function toLocalInput(value) {
  const d = new Date(typeof value === "string" ? parseTime(value) : value);
  const p = (n) => String(n).padStart(2, "0");
  return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())}T${p(d.getHours())}:${p(d.getMinutes())}`;
}

/** The body the fields of ``form`` make: empty optional fields are null (or left out with ``omitEmpty``). */
export function readFields(form, specs, { omitEmpty = false } = {}) {
  const body = {};
  for (const f of specs) {
    const input = form.elements.namedItem(f.name);
    let v;
    if (f.type === "checkbox") v = input.checked;
    else {
      const raw = input.value.trim();
      if (raw === "") v = null;
      else if (f.type === "number") v = Number(raw);
      else if (f.type === "list") v = raw.split(",").map((x) => x.trim()).filter(Boolean);
      else if (f.type === "datetime") v = new Date(raw).toISOString();
      else v = raw;
      if (Array.isArray(v) && !v.length) v = null;
    }
    if (v === null && (omitEmpty || f.omitEmpty)) continue;
    body[f.name] = v;
  }
  return body;
}

// -- dialogs -------------------------------------------------------------------------------------------
/** A modal dialog, removed from the page when it closes; focus goes back to where it was. */
export function dialog({ title, content, className = "" }) {
  const opener = document.activeElement;
  const titleId = `d${++uid}-title`;
  const node = h("dialog", { class: `dialog ${className}`, "aria-labelledby": titleId }, [
    h("h2", { id: titleId }, title), ...[].concat(content)]);
  node.addEventListener("close", () => {
    node.remove();
    if (opener && opener.isConnected) opener.focus();
    else {
      const heading = document.querySelector("main h1[tabindex]");
      if (heading) heading.focus();
    }
  });
  document.body.append(node);
  node.showModal();
  return node;
}

/** Ask before a change that cannot be undone: resolves true when confirmed. */
export function confirmDialog({ title, message, confirmLabel }) {
  return new Promise((resolve) => {
    let answer = false;
    const yes = h("button", { type: "button", class: "button danger" }, confirmLabel);
    const no = h("button", { type: "button", class: "button secondary" }, "Cancel");
    const node = dialog({ title, content: [h("p", {}, message), h("div", { class: "actions" }, [yes, no])] });
    yes.addEventListener("click", () => { answer = true; node.close(); });
    no.addEventListener("click", () => node.close());
    node.addEventListener("close", () => resolve(answer));
    no.focus();
  });
}

/** A form in a dialog: ``onSubmit(body)`` may throw (the error is shown in the dialog, which stays). */
export function formDialog({ title, specs, values = {}, submitLabel, onSubmit, omitEmpty = false }) {
  return new Promise((resolve) => {
    let done = false;
    const error = h("p", { class: "error", role: "alert" });
    const submit = h("button", { type: "submit", class: "button" }, submitLabel);
    const cancel = h("button", { type: "button", class: "button secondary" }, "Cancel");
    const form = h("form", { class: "form-grid", novalidate: true }, [
      ...fields(specs, values), h("div", { class: "actions" }, [submit, cancel]), error]);
    const node = dialog({ title, content: form });
    cancel.addEventListener("click", () => node.close());
    node.addEventListener("close", () => resolve(done));
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      submit.disabled = true;
      error.textContent = "";
      try {
        await onSubmit(readFields(form, specs, { omitEmpty }));
        done = true;
        node.close();
      } catch (e) {
        if (e instanceof ApiError && e.status === 401) {
          node.close();
          state.onSignedOut("Your session has ended: sign in again.");
          return;
        }
        error.textContent = `Not saved: ${e.message}`;
      } finally {
        submit.disabled = false;
      }
    });
    const first = form.querySelector("input, select");
    if (first) first.focus();
  });
}

/** A create form shown on the page (not in a dialog): labelled fields, a submit button, its own error line. */
export function inlineForm({ id, legend, specs, submitLabel, onSubmit }) {
  const error = h("p", { class: "error", role: "alert" });
  const submit = h("button", { type: "submit", class: "button" }, submitLabel);
  const form = h("form", { id, class: "card form-grid create", novalidate: true }, [
    h("h2", {}, legend), ...fields(specs), h("div", { class: "actions" }, submit), error]);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    submit.disabled = true;
    error.textContent = "";
    try {
      await onSubmit(readFields(form, specs, { omitEmpty: true }));
      form.reset();
    } catch (e) {
      if (e instanceof ApiError && e.status === 401) state.onSignedOut("Your session has ended: sign in again.");
      else error.textContent = `Not created: ${e.message}`;
    } finally {
      submit.disabled = false;
    }
  });
  return form;
}
