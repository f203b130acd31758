// The pages that watch the running gateway: Providers (circuit breakers and keys), the Live log (a server-sent
// event stream), the Audit trail (a search over /admin/audit) and the Configuration (masked by the server).

import {
  api, fail, fields, fmtDateTime, fmtInt, fmtMs, fmtTime, fmtUsd, h, orNone, pageFrame, readFields, say, scrollRegion, table,
} from "./lib.js";

// -- shared -------------------------------------------------------------------------------------------
/** ``text`` that wraps only between its parts: after each ``/``, ``.``, ``?`` and ``&`` (a ``<wbr>``), never
 * inside one (each part a ``nowrap`` span: not even at a hyphen, as browsers otherwise do). */
function breakable(text) {
  const parts = String(text).split(/(?<=[/.?&])/);
  return parts.flatMap((part, i) => {
    const piece = h("span", { class: "seg" }, part);
    return i ? [h("wbr"), piece] : [piece];
  });
}

/** An endpoint as people read it: ``admin GET /admin/keys/{key_id}`` is the admin API's route (method and
 * route template), ``dashboard`` this dashboard's own pages and sign-in, anything else a client endpoint. */
function endpointLabel(endpoint, stream = false) {
  const text = String(endpoint ?? "");
  const more = stream ? h("span", { class: "muted" }, " (stream)") : null;
  if (!text) return "—";
  if (text === "dashboard") return h("span", { class: "endpoint" }, [h("span", { class: "tag" }, "Dashboard"), more]);
  const admin = /^admin(?:\s+(\S+)\s+(.+))?$/.exec(text);
  if (admin) {
    return h("span", { class: "endpoint" }, [h("span", { class: "tag" }, "Admin API"),
      admin[1] ? h("code", {}, [`${admin[1]} `, ...breakable(admin[2])]) : null, more]);
  }
  return h("span", { class: "endpoint" }, [h("code", {}, breakable(text)), more]);
}

// -- providers ----------------------------------------------------------------------------------------
const BREAKER = {
  closed: ["Closed", "healthy: requests go through"],
  open: ["Open", "failing: requests skip it"],
  half_open: ["Half-open", "testing with a few requests"],
};
const REFRESH_MS = 15e3;

/** What each key state means (the keyring's words), and how its ``cooldown_until`` reads. */
const KEY_STATES = {
  active: ["active", null],
  rate_limited: ["at its own rpm/tpm limit (the gateway's, from the configuration)", "until"],
  resting: ["resting: the provider rate limited it (429)", "until"],
  circuit_open: ["its circuit breaker is open", "next try at"],
  revoked: ["revoked: the provider refused it (401/403); out until the gateway restarts", null],
};

const sumOf = (counts) => Object.values(counts || {}).reduce((a, n) => a + (Number(n) || 0), 0);

function breakerBadge(breaker) {
  const stateName = breaker && breaker.state ? String(breaker.state) : "unknown";
  const [label, meaning] = BREAKER[stateName] || [stateName, "state not known"];
  const notes = [];
  if (breaker && breaker.enabled === false) notes.push("No breaker configured.");
  else if (breaker) {
    const n = Number(breaker.failures) || 0;
    const threshold = breaker.failure_threshold ? fmtInt.format(breaker.failure_threshold) : null;
    const limit = !threshold ? "" : stateName === "open" ? ` (it opened at ${threshold})` : ` (it opens at ${threshold})`;
    if (n || stateName !== "closed") notes.push(`${fmtInt.format(n)} ${n === 1 ? "failure" : "failures"} in a row${limit}.`);
    if (breaker.opened_at) notes.push(`Opened at ${fmtTime(breaker.opened_at)}.`);
    if (breaker.retry_at) notes.push(`Next try at ${fmtTime(breaker.retry_at)}.`);
  }
  return h("div", {}, [
    h("span", { class: `badge breaker-${Object.hasOwn(BREAKER, stateName) ? stateName : "unknown"}` },
      [h("span", { class: "badge-dot", "aria-hidden": "true" }), `${label}: ${meaning}`]),
    notes.length ? h("span", { class: "breaker-note" }, notes.join(" ")) : null,
  ]);
}

function keyCounts(k) {
  const failures = k.failures && typeof k.failures === "object" ? k.failures : {};
  const total = sumOf(failures);
  const reasons = Object.entries(failures).filter(([, n]) => n).map(([why, n]) => `${why.replaceAll("_", " ")} ${fmtInt.format(n)}`);
  const requests = Number(k.requests) || 0;
  return `${fmtInt.format(requests)} ${requests === 1 ? "request" : "requests"}, ${fmtInt.format(total)} ${total === 1 ? "failure" : "failures"}${reasons.length ? ` (${reasons.join(", ")})` : ""}`;
}

function keyList(keys) {
  if (!Array.isArray(keys) || !keys.length) return h("span", { class: "muted" }, "none");
  return h("ul", { class: "plain-list keys" }, keys.map((k) => {
    const stateName = String(k.state || "unknown");
    const known = Object.hasOwn(KEY_STATES, stateName);
    const [label, when] = known ? KEY_STATES[stateName] : [stateName, "until"];
    const until = k.cooldown_until && when ? `${when === "until" ? " " : "; "}${when} ${fmtTime(k.cooldown_until)}` : "";
    return h("li", { "data-fingerprint": orNone(k.fingerprint, "") }, [h("code", {}, orNone(k.fingerprint)), " ",
      h("span", { class: `key-state state-${known ? stateName : "unknown"}` }, `${label}${until}`),
      h("span", { class: "key-counts" }, keyCounts(k))]);
  }));
}

export function providersPage(view) {
  let seq = 0;
  const refresh = h("button", { type: "button", class: "button secondary" }, "Refresh");
  const { status } = pageFrame(view, { id: "providers", title: "Providers", tools: [refresh],
    intro: "Each provider's circuit breaker and keys (by fingerprint, never the key), refreshed every 15 seconds. "
      + "Counts are since the gateway started." });
  const list = h("div", { class: "result" });
  view.append(list);

  async function load() {
    const mine = ++seq;
    try {
      const providers = (await api("../providers")).data;
      if (mine !== seq) return;
      const wrap = table({
        caption: "Providers, their circuit breakers and keys",
        columns: [{ label: "Provider" }, { label: "Type" }, { label: "Base URL" }, { label: "Circuit breaker" },
          { label: "Keys (fingerprint, state, counts)" }, { label: "Models", num: true }],
        rows: providers.map((p) => [p.name, orNone(p.type), p.base_url ? h("code", { class: "url" }, breakable(p.base_url)) : "—",
          breakerBadge(p.breaker), keyList(p.keys), p.models === null || p.models === undefined ? "—" : fmtInt.format(p.models)]),
        empty: "No providers configured.",
      });
      wrap.classList.add("providers");
      list.replaceChildren(wrap);
      const open = providers.filter((p) => p.breaker && p.breaker.state !== "closed").length;
      say(status, `${providers.length} providers; ${open ? `${open} with the breaker not closed` : "every breaker closed"}. Updated ${fmtTime(Date.now())}.`);
    } catch (error) {
      if (mine === seq) fail(status, "Could not load the providers", error);
    }
  }
  refresh.addEventListener("click", load);
  say(status, "Loading providers…");
  load();
  const timer = setInterval(load, REFRESH_MS);
  return () => { seq += 1; clearInterval(timer); };
}

// -- live log -----------------------------------------------------------------------------------------
const LIVE_URL = "../requests/live";
const MAX_ROWS = 500;
const LIVE_COLUMNS = [{ label: "Time" }, { label: "Endpoint" }, { label: "Model" }, { label: "Provider" },
  { label: "Status", num: true }, { label: "Outcome" }, { label: "Latency", num: true },
  { label: "TTFB", num: true }, { label: "Tokens in / out", num: true }, { label: "Cost", num: true }, { label: "Key" }];
const LIVE_CLASSES = [null, "wrap", "wrap", null, "num", null, "num", "num", "num", "num", "wrap"];

function liveRow(e) {
  const bad = Number(e.status) >= 400 || (e.outcome && e.outcome !== "ok" && e.outcome !== "cached");
  const cells = [fmtTime(e.time || Date.now()), endpointLabel(e.endpoint, e.stream),
    e.model ? breakable(e.model) : "—", orNone(e.provider), orNone(e.status),
    h("span", {}, [`${orNone(e.outcome)}${e.cached ? " (cached)" : ""}`,
      e.error_code ? h("span", { class: "error-code" }, e.error_code) : null]), fmtMs(e.latency_ms ?? null),
    e.ttfb_ms === null || e.ttfb_ms === undefined ? "—" : fmtMs(e.ttfb_ms),
    `${fmtInt.format(e.input_tokens || 0)} / ${fmtInt.format(e.output_tokens || 0)}`,
    e.cost_usd === null || e.cost_usd === undefined ? "—" : fmtUsd(e.cost_usd),
    e.key_id ? h("code", {}, breakable(e.key_id)) : "—"];
  return h("tr", { "data-request-id": orNone(e.request_id, ""), class: bad ? "failed" : null },
    cells.map((v, k) => (k === 0 ? h("th", { scope: "row" }, v)
      : h("td", { class: [LIVE_CLASSES[k], k === 5 && bad ? "bad" : null].filter(Boolean).join(" ") || null }, v))));
}

let includeOperators = false;

export function livePage(view) {
  const pause = h("button", { type: "button", class: "button secondary", "aria-pressed": "false" }, "Pause");
  const reconnect = h("button", { type: "button", class: "button secondary", hidden: true }, "Reconnect");
  const clear = h("button", { type: "button", class: "button secondary" }, "Clear");
  const { status } = pageFrame(view, { id: "live", title: "Live log", tools: [pause, reconnect, clear],
    intro: `Requests as the gateway finishes them, newest on top (the last ${MAX_ROWS} kept).` });
  const operators = h("input", { id: "live-operators", type: "checkbox", checked: includeOperators,
    "aria-describedby": "live-operators-hint" });
  const waiting = h("p", { class: "muted", "aria-live": "polite" });
  const wrap = table({ id: "live-rows", caption: "Latest requests, newest first", columns: LIVE_COLUMNS, rows: [],
    empty: "Waiting for requests…" });
  const body = wrap.querySelector("tbody");
  wrap.classList.add("live");
  scrollRegion(wrap, "Latest requests");
  view.append(h("div", { class: "toolbar plain" }, h("div", { class: "field check" }, [operators,
    h("label", { for: "live-operators" }, "Include the admin API and this dashboard's own calls"),
    h("p", { id: "live-operators-hint", class: "hint" },
      "Off: only the clients' requests (the /v1 API and the others), refused ones included.")])),
  waiting, wrap);
  let paused = false;
  let held = [];
  let source = null;

  const shown = (id) => Boolean(id) && body.querySelector(`tr[data-request-id="${CSS.escape(id)}"]`) !== null;
  const add = (events) => {
    const fresh = events.filter((e) => !shown(e.request_id)); // a reconnection's backlog repeats some
    if (!fresh.length) return;
    const empty = body.querySelector(".empty-row");
    if (empty) empty.parentElement.remove();
    const frag = document.createDocumentFragment();
    for (const e of fresh.slice(-MAX_ROWS).reverse()) frag.append(liveRow(e));
    body.prepend(frag);
    while (body.rows.length > MAX_ROWS) body.lastElementChild.remove();
  };
  const onRequest = (message) => {
    let event;
    try {
      event = JSON.parse(message.data);
    } catch {
      return;
    }
    if (paused) {
      held.push(event);
      if (held.length > MAX_ROWS) held = held.slice(-MAX_ROWS);
      waiting.textContent = `Paused: ${fmtInt.format(held.length)} new requests waiting.`;
    } else add([event]);
  };
  const emptyTable = (text) => {
    body.replaceChildren(h("tr", {}, h("td", { colspan: LIVE_COLUMNS.length, class: "empty-row" }, text)));
  };
  const connect = () => {
    if (source) source.close();
    say(status, "Connecting…");
    reconnect.hidden = true;
    const current = new EventSource(includeOperators ? `${LIVE_URL}?admin=true` : LIVE_URL);
    source = current;
    current.addEventListener("open", () => say(status, includeOperators
      ? "Connected, with the admin API and this dashboard's calls: new requests appear at the top."
      : "Connected: new requests appear at the top."));
    current.addEventListener("request", onRequest);
    current.addEventListener("dropped", (message) => {
      let n = 0;
      try { n = Number(JSON.parse(message.data).count) || 0; } catch { /* a malformed notice: count unknown */ }
      say(status, `Connected; ${fmtInt.format(n)} requests were not shown (the log fell behind).`);
    });
    current.addEventListener("error", () => {
      if (current !== source) return;
      if (current.readyState === EventSource.CONNECTING) say(status, "Reconnecting…");
      else {
        say(status, "Disconnected: the live log could not be opened (signed out, or not served by this gateway).", true);
        reconnect.hidden = false;
      }
    });
  };
  operators.addEventListener("change", () => {
    includeOperators = operators.checked;
    // What is shown follows the new choice from the start: the table and anything held start over, and
    // the reconnection's backlog fills them again.
    held = [];
    if (paused) waiting.textContent = "Paused: new requests are held until you resume.";
    emptyTable("Waiting for requests…");
    connect();
  });
  pause.addEventListener("click", () => {
    paused = !paused;
    pause.textContent = paused ? "Resume" : "Pause";
    pause.setAttribute("aria-pressed", String(paused));
    if (!paused) {
      add(held);
      held = [];
      waiting.textContent = "";
    } else waiting.textContent = "Paused: new requests are held until you resume.";
  });
  reconnect.addEventListener("click", connect);
  clear.addEventListener("click", () => emptyTable("Cleared: waiting for requests…"));
  connect();
  return () => { if (source) source.close(); source = null; };
}

// -- audit ------------------------------------------------------------------------------------------------
const AUDIT_FIELDS = [
  { name: "start", label: "From (local time)", type: "datetime" },
  { name: "end", label: "Before (local time)", type: "datetime" },
  { name: "key_id", label: "Key id", type: "text" },
  { name: "model", label: "Model (asked for or answered)", type: "text" },
  { name: "status", label: "HTTP status", type: "number", min: 0 },
  { name: "kind", label: "Kind", type: "select",
    options: [["", "Any"], ["request", "Request"], ["attempt", "Attempt"], ["step", "Step"], ["response", "Response"]] },
  { name: "request_id", label: "Request id", type: "text" },
  { name: "limit", label: "Per page", type: "select", options: [["10", "10"], ["50", "50"], ["100", "100"], ["250", "250"]], default: "50" },
];
const AUDIT_COLUMNS = [{ label: "Time" }, { label: "Kind" }, { label: "Request id" }, { label: "Endpoint" },
  { label: "Key" }, { label: "Model asked" }, { label: "Model" }, { label: "Provider (key)" },
  { label: "Status", num: true }, { label: "Entry" }];
const KIND_ORDER = { request: 0, attempt: 1, step: 2, response: 3 };
let auditValues = {};

/** The page's entries with each request's own right under it: the request, its attempts by number, then its
 * steps and response; requests in the order the server gave (newest first). */
function auditOrder(entries) {
  const groups = new Map();
  entries.forEach((e, i) => {
    const group = e.request_id ? `r:${e.request_id}` : `e:${e.id ?? i}`;
    if (!groups.has(group)) groups.set(group, []);
    groups.get(group).push(e);
  });
  const rank = (e) => KIND_ORDER[e.kind] ?? 4;
  return [...groups.values()].flatMap((list) => list.sort((a, b) => rank(a) - rank(b)
    || (Number(a.attempt) || 0) - (Number(b.attempt) || 0) || (Number(a.ts) || 0) - (Number(b.ts) || 0)));
}

function auditRow(e, index) {
  const attempt = e.kind === "attempt";
  const kind = attempt
    ? h("span", { class: "sub" }, [h("span", { "aria-hidden": "true" }, "↳ "), `attempt ${orNone(e.attempt, "")}`.trim()])
    : orNone(e.kind);
  const provider = e.provider ? h("span", {}, [String(e.provider),
    e.provider_key ? h("span", { class: "provider-key" }, [" key ", h("code", {}, String(e.provider_key))]) : null]) : "—";
  const status = h("span", {}, [orNone(e.status), e.error ? h("span", { class: "error-code" }, String(e.error)) : null]);
  const detailId = `audit-entry-${index}`;
  const show = h("button", { type: "button", class: "button small secondary", "aria-expanded": "false",
    "aria-controls": detailId }, "Show");
  const cells = [fmtDateTime(e.time || e.ts * 1000), kind, h("code", {}, orNone(e.request_id)), endpointLabel(e.endpoint, e.stream),
    e.key_id ? h("code", {}, String(e.key_id)) : "—", orNone(e.model_requested),
    orNone(e.model || (attempt ? e.model_requested : null)), provider, status, show];
  const row = h("tr", { class: attempt ? "attempt" : null, "data-kind": orNone(e.kind, "") },
    cells.map((v, k) => (k === 0 ? h("th", { scope: "row" }, v)
      : h("td", { class: [AUDIT_COLUMNS[k].num ? "num" : null, k === 3 ? "wrap" : null].filter(Boolean).join(" ") || null }, v))));
  show.addEventListener("click", () => {
    const open = show.getAttribute("aria-expanded") === "true";
    if (open) {
      const detail = document.getElementById(detailId);
      if (detail) detail.remove();
    } else {
      row.after(h("tr", { id: detailId, class: "entry-detail" }, h("td", { colspan: AUDIT_COLUMNS.length },
        h("pre", { class: "json", tabindex: 0, role: "region", "aria-label": "The entry as JSON" }, JSON.stringify(e, null, 2)))));
    }
    show.setAttribute("aria-expanded", String(!open));
    show.textContent = open ? "Show" : "Hide";
  });
  return row;
}

export function auditPage(view) {
  let seq = 0;
  const { status } = pageFrame(view, { id: "audit", title: "Audit trail",
    intro: "What the gateway did with each request (secrets are never in it), newest first; each request's "
      + "attempts at a provider right under it." });
  const form = h("form", { class: "toolbar card form-grid audit-form", novalidate: true }, [
    ...fields(AUDIT_FIELDS, auditValues),
    h("div", { class: "actions" }, [h("button", { type: "submit", class: "button" }, "Search")])]);
  const newer = h("button", { type: "button", class: "button secondary", disabled: true }, "Newer");
  const older = h("button", { type: "button", class: "button secondary", disabled: true }, "Older");
  const pageNote = h("span", { class: "muted" });
  const list = h("div", { class: "result" });
  view.append(form, list, h("nav", { class: "pager", "aria-label": "Audit pages" }, [newer, pageNote, older]));
  let cursors = [null]; // the cursor of each page shown so far (the first has none)
  let nextCursor = null;

  async function load(pageIndex) {
    const mine = ++seq;
    const params = readFields(form, AUDIT_FIELDS, { omitEmpty: true });
    auditValues = { ...params };
    const q = new URLSearchParams();
    for (const [k, v] of Object.entries(params)) q.set(k, String(v));
    if (cursors[pageIndex]) q.set("cursor", cursors[pageIndex]);
    say(status, "Searching the audit trail…");
    try {
      const found = await api(`../audit?${q}`);
      if (mine !== seq) return;
      cursors = cursors.slice(0, pageIndex + 1);
      nextCursor = found.has_more ? found.next_cursor : null;
      newer.disabled = pageIndex === 0;
      older.disabled = !nextCursor;
      newer.onclick = () => load(pageIndex - 1);
      older.onclick = () => { cursors[pageIndex + 1] = nextCursor; load(pageIndex + 1); };
      pageNote.textContent = `Page ${pageIndex + 1}`;
      const wrap = table({
        caption: `Audit entries, newest first (page ${pageIndex + 1})`,
        columns: AUDIT_COLUMNS, rows: [], empty: "No entries match.",
      });
      wrap.classList.add("audit");
      scrollRegion(wrap, "Audit entries");
      const entries = auditOrder(found.data);
      if (entries.length) wrap.querySelector("tbody").replaceChildren(...entries.map((e, i) => auditRow(e, i)));
      list.replaceChildren(wrap);
      say(status, `${found.data.length} entries${found.has_more ? ", more on the next page" : ""}.`);
    } catch (error) {
      if (mine === seq) fail(status, "Could not read the audit trail", error);
    }
  }
  form.addEventListener("submit", (event) => { event.preventDefault(); cursors = [null]; load(0); });
  load(0);
  return () => { seq += 1; };
}

// -- configuration -------------------------------------------------------------------------------------
function tree(name, value, depth) {
  if (value !== null && typeof value === "object") {
    const entries = Array.isArray(value) ? value.map((v, i) => [String(i), v]) : Object.entries(value);
    const size = Array.isArray(value) ? `${entries.length} items` : `${entries.length} keys`;
    return h("li", {}, h("details", { open: depth < 1 }, [
      h("summary", {}, [h("span", { class: "k" }, name), h("span", { class: "muted" }, ` (${size})`)]),
      entries.length ? h("ul", { class: "tree" }, entries.map(([k, v]) => tree(k, v, depth + 1))) : null,
    ]));
  }
  const type = value === null ? "null" : typeof value;
  return h("li", {}, [h("span", { class: "k" }, name), ": ",
    h("span", { class: `v v-${type}` }, type === "string" ? JSON.stringify(value) : String(value))]);
}

export function configPage(view) {
  let seq = 0;
  const expand = h("button", { type: "button", class: "button secondary" }, "Expand all");
  const collapse = h("button", { type: "button", class: "button secondary" }, "Collapse all");
  const asJson = h("button", { type: "button", class: "button secondary", "aria-pressed": "false" }, "Show as JSON");
  const { status } = pageFrame(view, { id: "config", title: "Configuration", tools: [expand, collapse, asJson],
    intro: "The running configuration, secrets masked by the gateway." });
  const box = h("div", { class: "card config" });
  view.append(box);
  let data = null;
  let json = false;

  const render = () => {
    if (!data) return;
    box.replaceChildren(json ? h("pre", { class: "json", tabindex: 0, role: "region", "aria-label": "Configuration as JSON" },
      JSON.stringify(data.config, null, 2))
      : h("ul", { class: "tree root" }, Object.entries(data.config || {}).map(([k, v]) => tree(k, v, 0))));
  };
  expand.addEventListener("click", () => { for (const d of box.querySelectorAll("details")) d.open = true; });
  collapse.addEventListener("click", () => { for (const d of box.querySelectorAll("details")) d.open = false; });
  asJson.addEventListener("click", () => {
    json = !json;
    asJson.setAttribute("aria-pressed", String(json));
    expand.disabled = collapse.disabled = json;
    render();
  });

  (async () => {
    const mine = ++seq;
    say(status, "Loading the configuration…");
    try {
      data = await api("../config");
      if (mine !== seq) return;
      render();
      say(status, data.source ? `Loaded from ${data.source}.` : "Built from defaults and the environment (no file).");
    } catch (error) {
      if (mine === seq) fail(status, "Could not load the configuration", error);
    }
  })();
  return () => { seq += 1; };
}
