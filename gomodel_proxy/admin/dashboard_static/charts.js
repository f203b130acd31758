// The Overview page: usage over time from /admin/usage/timeseries, charted as accessible inline SVG (each
// chart is focusable and read bucket by bucket with the keyboard, and carries its data as a hidden table).

import { api, fail, fmtDateTime, fmtInt, fmtMs, fmtUsd, h, pageFrame, parseTime, s, say } from "./lib.js";

const TIMESERIES_URL = "../usage/timeseries";
const RANGES = {
  "24h": { ms: 24 * 3600e3, bucket: "hour", label: "Last 24 hours" },
  "7d": { ms: 7 * 24 * 3600e3, bucket: "hour", label: "Last 7 days" },
  "30d": { ms: 30 * 24 * 3600e3, bucket: "day", label: "Last 30 days" },
};
const BUCKET_MS = { minute: 60e3, hour: 3600e3, day: 86400e3 };
let rangeChoice = "24h";

export function overviewPage(view) {
  let seq = 0;
  const radios = Object.entries(RANGES).map(([value, r]) => h("label", {}, [
    h("input", { type: "radio", name: "range", value, checked: value === rangeChoice }), ` ${r.label}`]));
  const refresh = h("button", { type: "button", id: "refresh", class: "button secondary" }, "Refresh");
  const { status } = pageFrame(view, {
    id: "overview", title: "Overview",
    tools: [h("fieldset", { class: "range" }, [h("legend", {}, "Period"), ...radios]), refresh],
  });
  const totals = h("dl", { id: "totals", class: "totals" });
  const charts = h("div", { id: "charts", class: "charts" });
  view.append(totals, charts);

  async function load() {
    const mine = ++seq;
    const range = RANGES[rangeChoice];
    const end = new Date();
    const start = new Date(end.getTime() - range.ms);
    const query = new URLSearchParams({ start: start.toISOString(), end: end.toISOString(), bucket: range.bucket });
    say(status, "Loading usage…");
    try {
      const data = await api(`${TIMESERIES_URL}?${query}`);
      if (mine !== seq) return;
      render(data, start, end, totals, charts);
      say(status, `Usage from ${fmtDateTime(start)} to ${fmtDateTime(end)}, per ${data.bucket}.`);
    } catch (error) {
      if (mine === seq) fail(status, "Could not load usage", error);
    }
  }
  refresh.addEventListener("click", load);
  for (const radio of view.querySelectorAll('input[name="range"]')) {
    radio.addEventListener("change", () => { rangeChoice = radio.value; load(); });
  }
  load();
  return () => { seq += 1; };
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

function fmtBucket(t, bucket) {
  const d = new Date(t);
  return bucket === "day"
    ? d.toLocaleDateString(undefined, { month: "short", day: "numeric" })
    : d.toLocaleString(undefined, { month: "short", day: "numeric", hour: "2-digit", minute: "2-digit" });
}

/** Where the x axis is labelled: hours over more than two days at local midnights (the date only), else
 * about five buckets, so that no two labels overlap. */
function xTicks(rows, bucket) {
  const n = rows.length;
  const ticks = [];
  if (bucket === "hour" && n > 48) {
    const stride = Math.max(1, Math.ceil(n / 24 / 7));
    let day = 0;
    rows.forEach((r, i) => {
      if (new Date(r.t).getHours() !== 0) return;
      if (day++ % stride === 0) ticks.push([i, fmtBucket(r.t, "day")]);
    });
    return ticks;
  }
  const every = Math.max(1, Math.ceil(n / 5));
  for (let i = 0; i < n; i += every) ticks.push([i, fmtBucket(rows[i].t, bucket)]);
  return ticks;
}

function render(data, start, end, totalsNode, chartsNode) {
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
  totalsNode.replaceChildren(...totals.map(([name, value]) => h("div", {}, [h("dt", {}, name), h("dd", {}, value)])));
  const bucket = data.bucket;
  const int = (v) => fmtInt.format(v);
  chartsNode.replaceChildren(
    chart({
      id: "requests", title: "Requests and errors", yLabel: "Requests", kind: "bar", rows, bucket, integer: true,
      series: [{ key: "requests", name: "Requests", cls: "s1" }, { key: "errors", name: "Errors", cls: "s2" }],
      format: int, total: true,
    }),
    chart({
      id: "tokens", title: "Tokens", yLabel: "Tokens", kind: "line", rows, bucket, integer: true,
      series: [
        { key: "input_tokens", name: "Input tokens", cls: "s1" },
        { key: "output_tokens", name: "Output tokens", cls: "s4", dashed: true },
      ],
      format: int, total: true,
    }),
    chart({
      id: "cost", title: "Cost (USD)", yLabel: "USD", kind: "bar", rows, bucket,
      series: [{ key: "cost_usd", name: "Cost", cls: "s3" }], format: fmtUsd, total: true,
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

/** The top of the y axis: four equal steps of 1, 2 or 5 times a power of ten (whole steps for counts). */
function niceMax(value, integer) {
  if (!(value > 0)) return integer ? 4 : 1;
  const raw = value / 4;
  const exp = 10 ** Math.floor(Math.log10(raw));
  let step = 10 * exp;
  for (const m of [1, 2, 2.5, 5]) {
    if (m * exp >= raw) { step = m * exp; break; }
  }
  if (integer) step = Math.max(1, Math.ceil(step));
  return step * 4;
}

/** A chart: a figure with a title, an SVG (keyboard: arrows move through the buckets), a legend, a live
 * readout of the focused bucket, and the same data as a visually hidden table. */
function chart({ id, title, yLabel, kind, rows, bucket, series, format, total, integer = false }) {
  const W = 640, H = 260, L = 80, R = 16, T = 12, B = 44;
  const plotW = W - L - R, plotH = H - T - B;
  const n = rows.length;
  const band = n ? plotW / n : plotW;
  const values = rows.flatMap((r) => series.map((sr) => r[sr.key]).filter((v) => v !== null));
  const yMax = niceMax(Math.max(0, ...values), integer);
  const x = (i) => L + (i + 0.5) * band;
  const y = (v) => T + plotH - (v / yMax) * plotH;
  const titleId = `${id}-title`, descId = `${id}-desc`, readoutId = `${id}-readout`;

  const svg = s("svg", {
    viewBox: `0 0 ${W} ${H}`, role: "img", tabindex: 0, "aria-labelledby": titleId,
    "aria-describedby": `${descId} ${id}-hint`, focusable: "true",
  });
  const axis = s("g", { class: "axis", "aria-hidden": "true" });
  for (let k = 0; k <= 4; k++) {
    const v = (yMax * k) / 4;
    axis.append(s("line", { class: "gridline", x1: L, x2: W - R, y1: y(v), y2: y(v) }));
    axis.append(s("text", { x: L - 6, y: y(v) + 4, "text-anchor": "end" }, format(v)));
  }
  const every = Math.max(1, Math.ceil(n / 6));
  for (const [i, label] of xTicks(rows, bucket)) {
    axis.append(s("text", { x: x(i), y: H - B + 16, "text-anchor": "middle" }, label));
  }
  axis.append(s("text", { class: "axis-title", x: L + plotW / 2, y: H - 6, "text-anchor": "middle" },
    `Time (per ${bucket}, local time)`));
  axis.append(s("text", {
    class: "axis-title", x: 10, y: T + plotH / 2, "text-anchor": "middle", transform: `rotate(-90 10 ${T + plotH / 2})`,
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
      const lone = (j) => j < 0 || j >= n || rows[j][sr.key] === null || rows[j][sr.key] === undefined;
      for (let i = 0; i < n; i++) {
        const v = rows[i][sr.key];
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
