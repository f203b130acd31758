// gomodel-proxy dashboard: sign-in, session, and the Overview page (usage charts as inline SVG).
// Vanilla ES module, no build step, no external URL. Every URL is relative to the page
// (<base path>/admin/dashboard/), so the dashboard works behind a proxy that serves the gateway under a prefix.

const SESSION_URL = "session";
const TIMESERIES_URL = "../usage/timeseries";
const SAFE_METHODS = new Set(["GET", "HEAD", "OPTIONS"]);
const SVG_NS = "http://www.w3.org/2000/svg";
const RANGES = {
  "24h": { ms: 24 * 3600e3, bucket: "hour" },
  "7d": { ms: 7 * 24 * 3600e3, bucket: "hour" },
  "30d": { ms: 30 * 24 * 3600e3, bucket: "day" },
};
const BUCKET_MS = { minute: 60e3, hour: 3600e3, day: 86400e3 };

let session = null;
let expiryTimer = 0;
let loadSeq = 0;

const $ = (id) => document.getElementById(id);

// -- DOM helpers (text only: nothing from the server is ever parsed as HTML) ----------------------------
function h(tag, attrs = {}, children = []) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value !== null && value !== undefined && value !== false) node.setAttribute(name, String(value));
  }
  for (const child of [].concat(children)) {
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function s(tag, attrs = {}, children = []) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value !== null && value !== undefined) node.setAttribute(name, String(value));
  }
  for (const child of [].concat(children)) {
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

// -- the API --------------------------------------------------------------------------------------
class ApiError extends Error {
  constructor(message, status, code) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

async function api(url, { method = "GET", body } = {}) {
  const headers = { Accept: "application/json" };
  const init = { method, headers, credentials: "same-origin", cache: "no-store" };
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  if (!SAFE_METHODS.has(method) && session) headers["X-CSRF-Token"] = session.csrf;
  const resp = await fetch(url, init);
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
    throw new ApiError(error.message || `The gateway answered ${resp.status}.`, resp.status, error.code);
  }
  return data;
}

// -- session ----------------------------------------------------------------------------------------
function showSignIn(message = "") {
  session = null;
  clearTimeout(expiryTimer);
  $("loading").hidden = true;
  $("topbar").hidden = true;
  $("overview").hidden = true;
  $("signin").hidden = false;
  $("signin-error").textContent = message;
  $("key").value = "";
  $("key").setAttribute("aria-invalid", message ? "true" : "false");
  $("key").focus();
}

function showApp(focus) {
  $("loading").hidden = true;
  $("signin").hidden = true;
  $("topbar").hidden = false;
  $("overview").hidden = false;
  $("who").textContent = session.subject === "master" ? "Signed in with the master key" : `Signed in as ${session.subject}`;
  $("role").textContent = session.role === "admin" ? "Admin" : "Read-only";
  clearTimeout(expiryTimer);
  const left = parseTime(session.expires_at) - Date.now();
  if (left > 0 && left < 2 ** 31) {
    expiryTimer = setTimeout(() => showSignIn("Your session has expired: sign in again."), left);
  }
  if (focus) {
    $("overview-title").setAttribute("tabindex", "-1");
    $("overview-title").focus();
  }
  loadOverview();
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
    session = await api(SESSION_URL, { method: "POST", body: { key } });
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

function onApiError(error) {
  if (error instanceof ApiError && error.status === 401) {
    showSignIn("Your session has ended: sign in again.");
    return true;
  }
  return false;
}

// -- overview --------------------------------------------------------------------------------------
function selectedRange() {
  const checked = document.querySelector('input[name="range"]:checked');
  return checked ? checked.value : "24h";
}

async function loadOverview() {
  const seq = ++loadSeq;
  const range = RANGES[selectedRange()];
  const end = new Date();
  const start = new Date(end.getTime() - range.ms);
  const query = new URLSearchParams({ start: start.toISOString(), end: end.toISOString(), bucket: range.bucket });
  $("status").textContent = "Loading usage…";
  try {
    const data = await api(`${TIMESERIES_URL}?${query}`);
    if (seq !== loadSeq) return;
    renderOverview(data, start, end);
    $("status").textContent = `Usage from ${fmtDateTime(start)} to ${fmtDateTime(end)}, per ${data.bucket}.`;
  } catch (error) {
    if (seq !== loadSeq || onApiError(error)) return;
    $("status").textContent = `Could not load usage: ${error.message}`;
  }
}

/** Epoch ms of an RFC 3339 time; the gateway's have microseconds, which not every browser's Date.parse takes. */
function parseTime(text) {
  return Date.parse(String(text).replace(/(\.\d{3})\d+/, "$1"));
}

/** One row per bucket from start to end: missing buckets count zero (latency: no value). */
function fillBuckets(data, start, end) {
  const step = BUCKET_MS[data.bucket] || BUCKET_MS.hour;
  const byTime = new Map(data.points.map((p) => [parseTime(p.t), p]));
  const rows = [];
  const first = Math.floor(start.getTime() / step) * step;
  for (let t = first; t < end.getTime() && rows.length < 2000; t += step) {
    const p = byTime.get(t) || {};
    rows.push({
      t,
      requests: p.requests || 0,
      errors: p.errors || 0,
      input_tokens: p.input_tokens || 0,
      output_tokens: p.output_tokens || 0,
      cost_usd: p.cost_usd ? Number(p.cost_usd) : 0,
      latency_ms_p50: p.latency_ms_p50 ?? null,
      latency_ms_p99: p.latency_ms_p99 ?? null,
      ttfb_ms_p50: p.ttfb_ms_p50 ?? null,
      ttfb_ms_p99: p.ttfb_ms_p99 ?? null,
    });
  }
  return rows;
}

const fmtInt = new Intl.NumberFormat(undefined, { maximumFractionDigits: 0 });
const fmtCompact = new Intl.NumberFormat(undefined, { notation: "compact", maximumFractionDigits: 1 });
const fmtUsd = (v) => `$${v < 1 && v > 0 ? v.toFixed(4) : v.toFixed(2)}`;
const fmtMs1 = new Intl.NumberFormat(undefined, { maximumFractionDigits: 1 });
const fmtMs2 = new Intl.NumberFormat(undefined, { maximumFractionDigits: 2 });
/** Milliseconds with the digits their size needs (a proxy's latencies are often under 1 ms). */
const fmtMs = (v) => (v === null ? "no data" : `${(v < 10 ? fmtMs2 : v < 100 ? fmtMs1 : fmtInt).format(v)} ms`);

function fmtDateTime(date) {
  return new Date(date).toLocaleString(undefined, { dateStyle: "medium", timeStyle: "short" });
}

function fmtBucket(t, bucket) {
  const d = new Date(t);
  return bucket === "day"
    ? d.toLocaleDateString(undefined, { month: "short", day: "numeric" })
    : d.toLocaleString(undefined, { month: "short", day: "numeric", hour: "2-digit", minute: "2-digit" });
}

function renderOverview(data, start, end) {
  const rows = fillBuckets(data, start, end);
  const sum = (key) => rows.reduce((acc, r) => acc + (r[key] || 0), 0);
  const requests = sum("requests");
  const errors = sum("errors");
  const totals = [
    ["Requests", fmtInt.format(requests)],
    ["Errors", `${fmtInt.format(errors)}${requests ? ` (${((errors / requests) * 100).toFixed(1)}%)` : ""}`],
    ["Input tokens", fmtInt.format(sum("input_tokens"))],
    ["Output tokens", fmtInt.format(sum("output_tokens"))],
    ["Cost", fmtUsd(sum("cost_usd"))],
  ];
  $("totals").replaceChildren(...totals.map(([name, value]) => h("div", {}, [h("dt", {}, name), h("dd", {}, value)])));
  const bucket = data.bucket;
  $("charts").replaceChildren(
    chart({
      id: "requests", title: "Requests and errors", yLabel: "Requests", kind: "bar", rows, bucket,
      series: [
        { key: "requests", name: "Requests", cls: "s1" },
        { key: "errors", name: "Errors", cls: "s2" },
      ],
      format: (v) => fmtInt.format(v), total: true,
    }),
    chart({
      id: "tokens", title: "Tokens", yLabel: "Tokens", kind: "line", rows, bucket,
      series: [
        { key: "input_tokens", name: "Input tokens", cls: "s1" },
        { key: "output_tokens", name: "Output tokens", cls: "s4", dashed: true },
      ],
      format: (v) => fmtInt.format(v), total: true,
    }),
    chart({
      id: "cost", title: "Cost (USD)", yLabel: "USD", kind: "bar", rows, bucket,
      series: [{ key: "cost_usd", name: "Cost", cls: "s3" }],
      format: fmtUsd, total: true,
    }),
    chart({
      id: "latency", title: "Latency and time to first byte", yLabel: "Milliseconds", kind: "line", rows, bucket,
      series: [
        { key: "latency_ms_p50", name: "Latency p50", cls: "s1" },
        { key: "latency_ms_p99", name: "Latency p99", cls: "s1", dashed: true },
        { key: "ttfb_ms_p50", name: "TTFB p50", cls: "s4" },
        { key: "ttfb_ms_p99", name: "TTFB p99", cls: "s4", dashed: true },
      ],
      format: fmtMs, total: false,
    }),
  );
}

function niceMax(value) {
  if (!(value > 0)) return 1;
  const exp = 10 ** Math.floor(Math.log10(value));
  for (const m of [1, 2, 2.5, 5, 10]) if (m * exp >= value) return m * exp;
  return 10 * exp;
}

/** A chart: a figure with a title, an SVG (keyboard: arrows move through the buckets), a legend, a live
 * readout of the focused bucket, and the same data as a visually hidden table. */
function chart({ id, title, yLabel, kind, rows, bucket, series, format, total }) {
  const W = 640, H = 260, L = 64, R = 16, T = 12, B = 44;
  const plotW = W - L - R, plotH = H - T - B;
  const n = rows.length;
  const band = n ? plotW / n : plotW;
  const values = rows.flatMap((r) => series.map((sr) => r[sr.key]).filter((v) => v !== null));
  const yMax = niceMax(Math.max(0, ...values));
  const x = (i) => L + (i + 0.5) * band;
  const y = (v) => T + plotH - (v / yMax) * plotH;
  const titleId = `${id}-title`, descId = `${id}-desc`, readoutId = `${id}-readout`;

  const svg = s("svg", {
    viewBox: `0 0 ${W} ${H}`, role: "img", tabindex: 0, "aria-labelledby": titleId,
    "aria-describedby": `${descId} ${id}-hint`, focusable: "true",
  });
  // Grid and y axis.
  const axis = s("g", { class: "axis", "aria-hidden": "true" });
  for (let k = 0; k <= 4; k++) {
    const v = (yMax * k) / 4;
    axis.append(s("line", { class: "gridline", x1: L, x2: W - R, y1: y(v), y2: y(v) }));
    axis.append(s("text", { x: L - 6, y: y(v) + 4, "text-anchor": "end" }, format(v)));
  }
  // X labels: about six.
  const every = Math.max(1, Math.ceil(n / 6));
  for (let i = 0; i < n; i += every) {
    axis.append(s("text", { x: x(i), y: H - B + 16, "text-anchor": "middle" }, fmtBucket(rows[i].t, bucket)));
  }
  axis.append(s("text", { class: "axis-title", x: L + plotW / 2, y: H - 6, "text-anchor": "middle" },
    `Time (per ${bucket}, local time)`));
  axis.append(s("text", {
    class: "axis-title", x: 14, y: T + plotH / 2, "text-anchor": "middle", transform: `rotate(-90 14 ${T + plotH / 2})`,
  }, yLabel));
  svg.append(axis);

  const marks = s("g", { "aria-hidden": "true" });
  if (kind === "bar") {
    series.forEach((sr, k) => {
      const width = band * (k === 0 ? 0.8 : 0.4);
      for (let i = 0; i < n; i++) {
        const v = rows[i][sr.key] || 0;
        if (v <= 0) continue;
        marks.append(s("rect", {
          class: `bar ${sr.cls}${k ? " overlay" : ""}`, x: x(i) - width / 2, y: y(v), width: Math.max(1, width),
          height: Math.max(1, T + plotH - y(v)),
        }));
      }
    });
  } else {
    for (const sr of series) {
      let d = "", pen = false;
      for (let i = 0; i < n; i++) {
        const v = rows[i][sr.key];
        if (v === null || v === undefined) { pen = false; continue; }
        d += `${pen ? "L" : "M"}${x(i).toFixed(1)},${y(v).toFixed(1)}`;
        pen = true;
      }
      if (d) marks.append(s("path", { class: `line ${sr.cls}${sr.dashed ? " dashed" : ""}`, d }));
      // A value with no neighbour draws no line: a dot shows it.
      for (let i = 0; i < n; i++) {
        const v = rows[i][sr.key];
        const lone = (j) => j < 0 || j >= n || rows[j][sr.key] === null || rows[j][sr.key] === undefined;
        if (v !== null && v !== undefined && lone(i - 1) && lone(i + 1)) {
          marks.append(s("circle", { class: `dot ${sr.cls}`, cx: x(i).toFixed(1), cy: y(v).toFixed(1), r: 3.5 }));
        }
      }
    }
  }
  svg.append(marks);
  if (!values.some((v) => v > 0)) {
    svg.append(s("text", { class: "empty", x: L + plotW / 2, y: T + plotH / 2, "text-anchor": "middle" }, "No usage in this period"));
  }
  const cursor = s("line", { class: "cursor", y1: T, y2: T + plotH, x1: -10, x2: -10, "aria-hidden": "true" });
  svg.append(cursor);

  // Summary (the SVG's description) and the readout of one bucket.
  const summary = series.map((sr) => {
    const vals = rows.map((r) => r[sr.key]).filter((v) => v !== null);
    if (!vals.length) return `${sr.name}: no data.`;
    const peak = Math.max(...vals);
    const at = rows.find((r) => r[sr.key] === peak);
    const tot = total ? `total ${format(vals.reduce((a, b) => a + b, 0))}, ` : "";
    return `${sr.name}: ${tot}highest ${format(peak)} at ${fmtBucket(at.t, bucket)}.`;
  }).join(" ");
  const readout = h("p", { id: readoutId, class: "readout", "aria-live": "polite" });
  let index = -1;
  const show = (i) => {
    if (!n) return;
    index = Math.max(0, Math.min(n - 1, i));
    cursor.setAttribute("x1", x(index));
    cursor.setAttribute("x2", x(index));
    const r = rows[index];
    readout.textContent = `${fmtBucket(r.t, bucket)}: ` + series.map((sr) => `${sr.name} ${format(r[sr.key])}`).join(", ");
  };
  svg.addEventListener("keydown", (event) => {
    const moves = { ArrowRight: index + 1, ArrowLeft: index - 1, Home: 0, End: n - 1, PageUp: index - every, PageDown: index + every };
    if (event.key in moves) {
      event.preventDefault();
      show(index < 0 && (event.key === "ArrowRight" || event.key === "ArrowLeft") ? n - 1 : moves[event.key]);
    } else if (event.key === "Escape") {
      index = -1;
      cursor.setAttribute("x1", -10);
      cursor.setAttribute("x2", -10);
      readout.textContent = "";
    }
  });
  svg.addEventListener("pointermove", (event) => {
    const box = svg.getBoundingClientRect();
    const px = ((event.clientX - box.left) / box.width) * W;
    show(Math.floor((px - L) / band));
  });

  const legend = h("ul", { class: "legend", "aria-hidden": "true" }, series.map((sr) => {
    const swatch = s("svg", { viewBox: "0 0 24 10" }, [kind === "bar"
      ? s("rect", { class: `bar ${sr.cls}`, x: 0, y: 0, width: 24, height: 10 })
      : s("path", { class: `line ${sr.cls}${sr.dashed ? " dashed" : ""}`, d: "M0,5L24,5" })]);
    return h("li", {}, [swatch, sr.name]);
  }));

  const table = h("table", { class: "visually-hidden" }, [
    h("caption", {}, `${title}, per ${bucket}`),
    h("thead", {}, h("tr", {}, [h("th", { scope: "col" }, "Time"), ...series.map((sr) => h("th", { scope: "col" }, sr.name))])),
    h("tbody", {}, rows.map((r) => h("tr", {}, [
      h("th", { scope: "row" }, fmtBucket(r.t, bucket)), ...series.map((sr) => h("td", {}, format(r[sr.key]))),
    ]))),
  ]);

  return h("figure", { class: "chart", "aria-labelledby": titleId }, [
    h("h2", { id: titleId }, title),
    h("p", { id: descId, class: "visually-hidden" }, summary),
    svg,
    legend,
    h("p", { id: `${id}-hint`, class: "hint" }, "Focus the chart and use the arrow keys (Home, End) to read each bucket."),
    readout,
    table,
  ]);
}

// -- start ------------------------------------------------------------------------------------------
async function start() {
  $("signin-form").addEventListener("submit", signIn);
  $("sign-out").addEventListener("click", signOut);
  $("refresh").addEventListener("click", loadOverview);
  for (const radio of document.querySelectorAll('input[name="range"]')) radio.addEventListener("change", loadOverview);
  try {
    session = await api(SESSION_URL);
    showApp(false);
  } catch (error) {
    showSignIn(error instanceof ApiError && error.status === 401 ? "" : error.message);
  }
}

start();
