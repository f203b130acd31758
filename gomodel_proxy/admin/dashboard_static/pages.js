// The pages that read and change the gateway's records: Usage & cost, Keys, Users & teams, Budgets.
// Each is one function that builds its page in ``view`` and loads only that page's data.

import {
  api, button, canChange, confirmDialog, dialog, fail, fields, fmtDate, fmtDateTime, fmtInt, fmtLimit, fmtUsd,
  formDialog, h, inlineForm, orNone, pageFrame, parseTime, readFields, say, seg, table, yesNo,
} from "./lib.js";

const DAY_MS = 86400e3;
const PRESETS = { "24h": ["Last 24 hours", DAY_MS], "7d": ["Last 7 days", 7 * DAY_MS], "30d": ["Last 30 days", 30 * DAY_MS] };
const GROUPS = { key: ["Key", "key_id"], user: ["User", "user_id"], team: ["Team", "team_id"],
  model: ["Model", "model"], provider: ["Provider", "provider"] };
const FILTERS = [["key", "Key id", "k_…"], ["user", "User id", ""], ["team", "Team id", ""],
  ["model", "Model", "e.g. gpt-4o-mini"], ["provider", "Provider", "e.g. openai"]];
const PERIODS = [["monthly", "Monthly"], ["weekly", "Weekly"], ["daily", "Daily"], ["total", "Total (never resets)"]];
const LIMIT_HINT = "Per minute; empty: no limit of its own (the defaults apply).";

/** A local calendar day (YYYY-MM-DD) of a time. */
function isoDay(t) {
  const d = new Date(t);
  const p = (n) => String(n).padStart(2, "0");
  return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())}`;
}

/** Local midnight of a YYYY-MM-DD day, ``plus`` days later. */
function dayStart(day, plus = 0) {
  const [y, m, d] = day.split("-").map(Number);
  return new Date(y, m - 1, d + plus);
}

// -- usage & cost -------------------------------------------------------------------------------------
const usageChoice = { group: "model", preset: "7d", from: "", to: "", filters: {} };

export function usagePage(view) {
  let seq = 0;
  const { status } = pageFrame(view, {
    id: "usage", title: "Usage & cost",
    intro: "Requests, tokens and cost per group, added up by the gateway over the period (dates in local time).",
  });
  const group = h("select", { id: "usage-group", name: "group_by" }, Object.entries(GROUPS).map(([v, [label]]) =>
    h("option", { value: v, selected: v === usageChoice.group }, label)));
  const from = h("input", { id: "usage-from", type: "date", name: "from", value: usageChoice.from });
  const to = h("input", { id: "usage-to", type: "date", name: "to", value: usageChoice.to });
  const presetButtons = Object.entries(PRESETS).map(([value, [label]]) => h("button", {
    type: "button", class: "button small secondary", "data-preset": value,
    "aria-pressed": String(value === usageChoice.preset),
  }, label));
  const filterSpecs = FILTERS.map(([name, label, placeholder]) => ({ name, label, type: "text", placeholder }));
  const filterBox = h("details", { class: "filters", open: Object.keys(usageChoice.filters).length > 0 }, [
    h("summary", {}, "Filters (optional)"), h("div", { class: "form-grid" }, fields(filterSpecs, usageChoice.filters))]);
  const exportLink = h("a", { id: "usage-csv", class: "button secondary", href: "../usage?format=csv", download: "" }, "Export CSV");
  const form = h("form", { class: "toolbar card", novalidate: true }, [
    h("div", { class: "field" }, [h("label", { for: "usage-group" }, "Group by"), group]),
    h("fieldset", { class: "presets" }, [h("legend", {}, "Period"), ...presetButtons]),
    h("div", { class: "field" }, [h("label", { for: "usage-from" }, "From"), from]),
    h("div", { class: "field" }, [h("label", { for: "usage-to" }, "To (inclusive)"), to]),
    h("div", { class: "actions" }, [h("button", { type: "submit", class: "button" }, "Show"), exportLink]),
    filterBox,
  ]);
  const result = h("div", { class: "result" });
  view.append(form, result);

  const setPreset = (value) => {
    usageChoice.preset = value;
    const now = Date.now();
    if (value) {
      from.value = isoDay(now - PRESETS[value][1]);
      to.value = isoDay(now);
    }
    for (const b of presetButtons) b.setAttribute("aria-pressed", String(b.dataset.preset === value));
  };
  if (!from.value || !to.value) setPreset(usageChoice.preset || "7d");

  function query() {
    let start, end;
    if (usageChoice.preset) {
      end = new Date();
      start = new Date(end.getTime() - PRESETS[usageChoice.preset][1]);
    } else {
      start = dayStart(from.value);
      end = dayStart(to.value, 1);
    }
    const q = new URLSearchParams({ group_by: group.value, start: start.toISOString(), end: end.toISOString() });
    const filters = readFields(form, filterSpecs, { omitEmpty: true });
    for (const [k, v] of Object.entries(filters)) q.set(k, v);
    Object.assign(usageChoice, { group: group.value, from: from.value, to: to.value, filters });
    return { q, start, end };
  }

  async function load() {
    if (!usageChoice.preset && (!from.value || !to.value || from.value > to.value)) {
      say(status, "Choose a start date on or before the end date.", true);
      return;
    }
    const mine = ++seq;
    const { q, start, end } = query();
    exportLink.href = `../usage?${q}&format=csv`;
    say(status, "Loading usage…");
    try {
      const report = await api(`../usage?${q}`);
      if (mine !== seq) return;
      renderUsage(result, report, group.value, start, end);
      say(status, `${fmtInt.format(report.data.length)} ${GROUPS[group.value][0].toLowerCase()} groups from ${fmtDateTime(start)} to ${fmtDateTime(end)}.`);
    } catch (error) {
      if (mine === seq) fail(status, "Could not load usage", error);
    }
  }

  for (const b of presetButtons) b.addEventListener("click", () => { setPreset(b.dataset.preset); load(); });
  for (const input of [from, to]) input.addEventListener("change", () => setPreset(""));
  group.addEventListener("change", load);
  form.addEventListener("submit", (event) => { event.preventDefault(); load(); });
  load();
  return () => { seq += 1; };
}

function renderUsage(container, report, groupBy, start, end) {
  const [label, column] = GROUPS[groupBy];
  const rows = [...report.data].sort((a, b) => (b.cost || 0) - (a.cost || 0));
  const sum = (k) => rows.reduce((acc, r) => acc + (Number(r[k]) || 0), 0);
  const numbers = (r) => [fmtInt.format(r.requests), fmtInt.format(r.input_tokens), fmtInt.format(r.output_tokens),
    fmtInt.format(r.errors), fmtUsd(r.cost)];
  container.replaceChildren(table({
    id: "usage-rows",
    caption: `Usage by ${label.toLowerCase()}, ${fmtDateTime(start)} to ${fmtDateTime(end)}, most expensive first`,
    columns: [{ label }, { label: "Requests", num: true }, { label: "Input tokens", num: true },
      { label: "Output tokens", num: true }, { label: "Errors", num: true }, { label: "Cost (USD)", num: true }],
    rows: rows.map((r) => [orNone(r[column], "(none)"), ...numbers(r)]),
    foot: rows.length ? ["Total", ...numbers({ requests: sum("requests"), input_tokens: sum("input_tokens"),
      output_tokens: sum("output_tokens"), errors: sum("errors"), cost: sum("cost") })] : null,
    empty: "No usage in this period.",
  }));
}

// -- keys -----------------------------------------------------------------------------------------------
const KEY_LIMITS = [
  { name: "rpm", label: "Requests per minute (rpm)", type: "number", min: 0, hint: LIMIT_HINT },
  { name: "tpm", label: "Tokens per minute (tpm)", type: "number", min: 0, hint: LIMIT_HINT },
  { name: "allowed_models", label: "Allowed models", type: "list", placeholder: "gpt-4o, openai/*",
    hint: "Comma-separated ids or patterns; empty: every model." },
  { name: "expires_at", label: "Expires (local time)", type: "datetime", hint: "Empty: never." },
];
const KEY_CREATE = [
  { name: "name", label: "Name", type: "text", placeholder: "e.g. billing-service" },
  { name: "user_id", label: "User id", type: "text", list: "user-ids", hint: "Optional: the user it belongs to." },
  { name: "team_id", label: "Team id", type: "text", list: "team-ids", hint: "Optional: the team it belongs to." },
  ...KEY_LIMITS,
  { name: "max_budget", label: "Budget (USD per period)", type: "number", min: 0, step: "0.01",
    hint: "Optional: creates the budget key:<id>." },
  { name: "budget_period", label: "Budget period", type: "select", options: PERIODS },
  { name: "is_admin", label: "Admin key (may use the admin API and this dashboard)", type: "checkbox" },
];
let showRevoked = false;

function keyStatus(k) {
  if (k.revoked_at) return `Revoked ${fmtDateTime(k.revoked_at)}`;
  if (k.expires_at && parseTime(k.expires_at) <= Date.now()) return "Expired";
  return "Active";
}

export function keysPage(view) {
  let seq = 0;
  const { status } = pageFrame(view, {
    id: "keys", title: "Keys", changes: true,
    intro: "Virtual keys: who owns them, their limits and models. A key's secret is shown once, when it is created.",
  });
  const revokedToggle = h("input", { id: "show-revoked", type: "checkbox", checked: showRevoked });
  const list = h("div", { class: "result" });
  const datalists = [h("datalist", { id: "user-ids" }), h("datalist", { id: "team-ids" })];
  view.append(h("div", { class: "toolbar plain" }, h("div", { class: "field check" }, [
    revokedToggle, h("label", { for: "show-revoked" }, "Show revoked keys")])), list, ...datalists);
  if (canChange()) {
    view.append(inlineForm({
      id: "key-form", legend: "Create a key", specs: KEY_CREATE, submitLabel: "Create key",
      onSubmit: async (body) => {
        if (body.max_budget === undefined) delete body.budget_period;
        const created = await api("../keys", { method: "POST", body });
        showSecret(created.key, created.name || created.id);
        load(`Key ${created.name || created.id} created.`);
      },
    }));
    // Suggestions for the owner fields (not needed to show the page: loaded after it, failures ignored).
    Promise.all([api("../users").catch(() => null), api("../teams").catch(() => null)]).then(([users, teams]) => {
      if (users) datalists[0].replaceChildren(...users.data.map((u) => h("option", { value: u.id }, u.name || u.email || u.id)));
      if (teams) datalists[1].replaceChildren(...teams.data.map((t) => h("option", { value: t.id }, t.name)));
    });
  }

  async function load(note = "") {
    const mine = ++seq;
    say(status, "Loading keys…");
    try {
      const keys = (await api(`../keys${showRevoked ? "?include_revoked=true" : ""}`)).data;
      if (mine !== seq) return;
      list.replaceChildren(keysTable(keys, { edit, revoke }));
      say(status, `${note ? `${note} ` : ""}${fmtInt.format(keys.length)} ${keys.length === 1 ? "key" : "keys"}${showRevoked ? ", revoked ones included" : ""}.`);
    } catch (error) {
      if (mine === seq) fail(status, "Could not load the keys", error);
    }
  }

  async function edit(k) {
    const saved = await formDialog({
      title: `Edit key ${k.name || k.id}`, specs: KEY_LIMITS, values: k, submitLabel: "Save",
      onSubmit: (body) => api(`../keys/${seg(k.id)}`, { method: "PATCH", body }),
    });
    if (saved) { load(`Key ${k.name || k.id} saved.`); }
  }

  async function revoke(k) {
    const yes = await confirmDialog({
      title: `Revoke key ${k.name || k.id}?`, confirmLabel: "Revoke",
      message: "Every request made with it fails from now on. A revoked key cannot be restored.",
    });
    if (!yes) return;
    try {
      await api(`../keys/${seg(k.id)}`, { method: "DELETE" });
      load(`Key ${k.name || k.id} revoked.`);
    } catch (error) {
      fail(status, "Could not revoke the key", error);
    }
  }

  revokedToggle.addEventListener("change", () => { showRevoked = revokedToggle.checked; load(); });
  load();
  return () => { seq += 1; };
}

function keysTable(keys, { edit, revoke }) {
  const actions = canChange();
  const owner = (k) => (k.user_id || k.team_id ? h("span", { class: "owner" }, [
    k.user_id ? h("span", {}, `User ${k.user_id}`) : null, k.team_id ? h("span", {}, `Team ${k.team_id}`) : null])
    : "—");
  return table({
    caption: "Virtual keys",
    columns: [{ label: "Name" }, { label: "Id (prefix)" }, { label: "Owner" }, { label: "Admin" },
      { label: "RPM", num: true }, { label: "TPM", num: true }, { label: "Allowed models" }, { label: "Expires" },
      { label: "Status" }, ...(actions ? [{ label: "Actions" }] : [])],
    rows: keys.map((k) => {
      const name = k.name || "(unnamed)";
      const controls = !actions ? [] : [k.revoked_at ? "—" : h("div", { class: "row-actions" }, [
        button("Edit", () => edit(k), { "aria-label": `Edit key ${name}` }),
        button("Revoke", () => revoke(k), { class: "button small danger", "data-key-id": k.id, "aria-label": `Revoke key ${name}` }),
      ])];
      return [name, h("span", {}, [h("code", {}, k.id), h("br"), h("span", { class: "muted" }, `${k.key_prefix}…`)]),
        owner(k), yesNo(k.is_admin), fmtLimit(k.rpm), fmtLimit(k.tpm),
        k.allowed_models ? k.allowed_models.join(", ") : "Every model",
        k.expires_at ? fmtDate(k.expires_at) : "Never", keyStatus(k), ...controls];
    }),
    rowAttrs: (i) => ({ "data-key-row": keys[i].id, class: keys[i].revoked_at ? "revoked" : null }),
    empty: "No keys yet.",
  });
}

/** The new key's secret, shown once in a dialog with a copy button; gone from the page when it closes. */
function showSecret(secret, name) {
  const code = h("code", { id: "new-key-secret", class: "secret" }, secret);
  const copied = h("p", { class: "status", role: "status", "aria-live": "polite" });
  const copy = h("button", { type: "button", class: "button" }, "Copy key");
  const done = h("button", { type: "button", class: "button secondary" }, "Done: I have stored it");
  const node = dialog({
    title: `Key ${name} created`, className: "secret-dialog",
    content: [
      h("p", { class: "warning" }, "Copy the key now and store it safely: you will not see it again."),
      h("p", {}, code), h("div", { class: "actions" }, [copy, done]), copied],
  });
  copy.addEventListener("click", async () => {
    try {
      await navigator.clipboard.writeText(code.textContent);
      copied.textContent = "Copied to the clipboard.";
    } catch {
      const range = document.createRange();
      range.selectNodeContents(code);
      getSelection().removeAllRanges();
      getSelection().addRange(range);
      copied.textContent = "Selected: press Ctrl+C (⌘C) to copy.";
    }
  });
  done.addEventListener("click", () => node.close());
  node.addEventListener("close", () => {
    code.textContent = "";
    getSelection().removeAllRanges();
  });
  copy.focus();
}

// -- users & teams ------------------------------------------------------------------------------------
const TEAM_FIELDS = [
  { name: "name", label: "Name", type: "text", required: true },
  { name: "rpm", label: "Requests per minute (rpm)", type: "number", min: 0, hint: LIMIT_HINT },
  { name: "tpm", label: "Tokens per minute (tpm)", type: "number", min: 0, hint: LIMIT_HINT },
];
const ID_FIELD = { name: "id", label: "Id", type: "text", hint: "Optional: letters, digits, . _ @ -; chosen for you when empty." };

function userFields(teams) {
  return [
    { name: "name", label: "Name", type: "text" },
    { name: "email", label: "Email", type: "email" },
    { name: "team_id", label: "Team", type: "select", options: [["", "(no team)"], ...teams.map((t) => [t.id, `${t.name} (${t.id})`])] },
    TEAM_FIELDS[1], TEAM_FIELDS[2],
    { name: "is_admin", label: "Admin (may use the admin API)", type: "checkbox" },
  ];
}

export function usersPage(view) {
  let seq = 0;
  const { status } = pageFrame(view, { id: "users", title: "Users & teams", changes: true,
    intro: "Users and teams own keys, carry their own limits and budgets." });
  const usersBox = h("section", { class: "block", "aria-labelledby": "users-h" }, h("h2", { id: "users-h" }, "Users"));
  const teamsBox = h("section", { class: "block", "aria-labelledby": "teams-h" }, h("h2", { id: "teams-h" }, "Teams"));
  const usersList = h("div"), teamsList = h("div");
  usersBox.append(usersList);
  teamsBox.append(teamsList);
  view.append(usersBox, teamsBox);
  let teams = [];
  let userForm = null;
  if (canChange()) {
    teamsBox.append(inlineForm({
      id: "team-form", legend: "Create a team", specs: [{ ...ID_FIELD }, ...TEAM_FIELDS], submitLabel: "Create team",
      onSubmit: async (body) => {
        const t = await api("../teams", { method: "POST", body });
        load(`Team ${t.name} created.`);
      },
    }));
  }

  async function remove(kind, row) {
    const label = row.name || row.email || row.id;
    const yes = await confirmDialog({
      title: `Delete ${kind} ${label}?`, confirmLabel: "Delete",
      message: kind === "team" ? "Its users and keys lose the team; its budget is deleted."
        : "Its keys lose the user; its budget is deleted.",
    });
    if (!yes) return;
    try {
      await api(`../${kind}s/${seg(row.id)}`, { method: "DELETE" });
      load(`${kind === "team" ? "Team" : "User"} ${label} deleted.`);
    } catch (error) {
      fail(status, `Could not delete the ${kind}`, error);
    }
  }

  async function edit(kind, row, specs) {
    const label = row.name || row.email || row.id;
    const saved = await formDialog({
      title: `Edit ${kind} ${label}`, specs, values: row, submitLabel: "Save",
      onSubmit: (body) => {
        if (kind === "team" && body.name === null) delete body.name;
        return api(`../${kind}s/${seg(row.id)}`, { method: "PATCH", body });
      },
    });
    if (saved) { load(`${kind === "team" ? "Team" : "User"} ${label} saved.`); }
  }

  const actionCell = (kind, row, specs) => h("div", { class: "row-actions" }, [
    button("Edit", () => edit(kind, row, specs), { "aria-label": `Edit ${kind} ${row.name || row.id}` }),
    button("Delete", () => remove(kind, row), { class: "button small danger", "aria-label": `Delete ${kind} ${row.name || row.id}` }),
  ]);

  async function load(note = "") {
    const mine = ++seq;
    say(status, "Loading users and teams…");
    try {
      const [users, teamList] = await Promise.all([api("../users"), api("../teams")]);
      if (mine !== seq) return;
      teams = teamList.data;
      const actions = canChange();
      const specs = userFields(teams);
      const teamName = new Map(teams.map((t) => [t.id, t.name]));
      usersList.replaceChildren(table({
        caption: "Users",
        columns: [{ label: "Id" }, { label: "Name" }, { label: "Email" }, { label: "Team" }, { label: "Admin" },
          { label: "RPM", num: true }, { label: "TPM", num: true }, ...(actions ? [{ label: "Actions" }] : [])],
        rows: users.data.map((u) => [u.id, orNone(u.name), orNone(u.email),
          u.team_id ? `${teamName.get(u.team_id) || "?"} (${u.team_id})` : "—", yesNo(u.is_admin), fmtLimit(u.rpm),
          fmtLimit(u.tpm), ...(actions ? [actionCell("user", u, specs)] : [])]),
        empty: "No users yet.",
      }));
      teamsList.replaceChildren(table({
        caption: "Teams",
        columns: [{ label: "Id" }, { label: "Name" }, { label: "RPM", num: true }, { label: "TPM", num: true },
          { label: "Created" }, ...(actions ? [{ label: "Actions" }] : [])],
        rows: teams.map((t) => [t.id, t.name, fmtLimit(t.rpm), fmtLimit(t.tpm), fmtDateTime(t.created_at),
          ...(actions ? [actionCell("team", t, TEAM_FIELDS)] : [])]),
        empty: "No teams yet.",
      }));
      if (actions) {
        const form = inlineForm({
          id: "user-form", legend: "Create a user", specs: [{ ...ID_FIELD }, ...specs], submitLabel: "Create user",
          onSubmit: async (body) => {
            const u = await api("../users", { method: "POST", body });
            load(`User ${u.name || u.email || u.id} created.`);
          },
        });
        // The team choices change with the teams: the form is rebuilt unless the user is typing in it.
        if (!userForm || !userForm.contains(document.activeElement)) {
          if (userForm) userForm.replaceWith(form);
          else usersBox.append(form);
          userForm = form;
        }
      }
      say(status, `${note ? `${note} ` : ""}${fmtInt.format(users.data.length)} users, ${fmtInt.format(teams.length)} teams.`);
    } catch (error) {
      if (mine === seq) fail(status, "Could not load users and teams", error);
    }
  }
  load();
  return () => { seq += 1; };
}

// -- budgets --------------------------------------------------------------------------------------------
const BUDGET_SET = [
  { name: "scope", label: "Applies to", type: "select",
    options: [["key", "A key"], ["user", "A user"], ["team", "A team"], ["global", "Everyone (global)"]] },
  { name: "subject_id", label: "Key, user or team id", type: "text", hint: "Empty for a global budget." },
  { name: "max_budget", label: "Maximum (USD)", type: "number", min: 0, step: "0.01", required: true,
    hint: "Per period." },
  { name: "period", label: "Period", type: "select", options: PERIODS },
];

function usedCell(b) {
  if (b.used === null || b.used === undefined) return h("span", { class: "muted" }, "Unknown");
  const used = Number(b.used);
  const max = Number(b.max_budget);
  const pct = max > 0 ? (used / max) * 100 : (used > 0 ? 100 : 0);
  const text = `${fmtUsd(used)} of ${fmtUsd(max)} (${pct.toFixed(pct < 10 ? 1 : 0)}%)${used > max ? ", over budget" : ""}`;
  return h("div", { class: "used" }, [
    h("meter", { min: 0, max: max || 1, value: Math.min(used, max || 1), low: (max || 1) * 0.75,
      high: (max || 1) * 0.9, optimum: 0, "aria-label": `Used: ${pct.toFixed(0)}%` }),
    h("span", { class: pct >= 90 ? "used-text high" : "used-text" }, text),
  ]);
}

export function budgetsPage(view) {
  let seq = 0;
  const { status } = pageFrame(view, { id: "budgets", title: "Budgets", changes: true,
    intro: "Spending limits per key, user, team or for everyone; requests are refused once a budget is spent." });
  const list = h("div", { class: "result" });
  view.append(list);

  async function save(body, replacing) {
    const id = body.scope === "global" ? "global" : `${body.scope}:${body.subject_id || ""}`;
    if (body.scope !== "global" && !body.subject_id) throw new Error("give the key's, user's or team's id.");
    if (body.max_budget === null || body.max_budget === undefined) throw new Error("give the maximum in USD.");
    await api(`../budgets/${seg(id)}`, { method: "PUT", body: { max_budget: body.max_budget, period: body.period } });
    load(`Budget ${id} ${replacing ? "saved" : "set"}.`);
  }

  async function remove(b) {
    const yes = await confirmDialog({ title: `Delete budget ${b.id}?`, confirmLabel: "Delete",
      message: "Its subject then spends without this limit." });
    if (!yes) return;
    try {
      await api(`../budgets/${seg(b.id)}`, { method: "DELETE" });
      load(`Budget ${b.id} deleted.`);
    } catch (error) {
      fail(status, "Could not delete the budget", error);
    }
  }

  async function edit(b) {
    const saved = await formDialog({
      title: `Edit budget ${b.id}`, specs: BUDGET_SET.slice(2), values: b, submitLabel: "Save",
      onSubmit: (body) => save({ ...body, scope: b.scope, subject_id: b.subject_id }, true),
    });
    if (!saved) return;
  }

  if (canChange()) {
    view.append(inlineForm({ id: "budget-form", legend: "Set a budget", specs: BUDGET_SET, submitLabel: "Set budget",
      onSubmit: (body) => save(body, false) }));
  }

  async function load(note = "") {
    const mine = ++seq;
    say(status, "Loading budgets…");
    try {
      const budgets = (await api("../budgets")).data;
      if (mine !== seq) return;
      const actions = canChange();
      list.replaceChildren(table({
        caption: "Budgets and what they have used this period",
        columns: [{ label: "Budget" }, { label: "Scope" }, { label: "Subject" }, { label: "Period" },
          { label: "Maximum", num: true }, { label: "Used" }, ...(actions ? [{ label: "Actions" }] : [])],
        rows: budgets.map((b) => [b.id, b.scope, b.scope === "global" ? "everyone" : b.subject_id,
          (PERIODS.find(([v]) => v === b.period) || [b.period, b.period])[1], fmtUsd(b.max_budget), usedCell(b),
          ...(actions ? [h("div", { class: "row-actions" }, [
            button("Edit", () => edit(b), { "aria-label": `Edit budget ${b.id}` }),
            button("Delete", () => remove(b), { class: "button small danger", "aria-label": `Delete budget ${b.id}` }),
          ])] : [])]),
        empty: "No budgets yet.",
      }));
      say(status, `${note ? `${note} ` : ""}${fmtInt.format(budgets.length)} ${budgets.length === 1 ? "budget" : "budgets"}.`);
    } catch (error) {
      if (mine === seq) fail(status, "Could not load the budgets", error);
    }
  }
  load();
  return () => { seq += 1; };
}
