// riskgate console: the overview and account pages, live from the event feed.
// Everything on the page is built with textContent (never HTML from data), and talks only to
// this origin's /api.
"use strict";

const state = {
  session: null,     // { operator, may_act, auth, csrf }
  view: null,        // "overview" | "account"
  account: null,     // the account shown on an account page
  overview: null,    // the last /api/overview answer
  detail: null,      // the last /api/accounts/{id} answer
  source: null,      // the EventSource of this view
  lastSeq: 0,        // the highest event sequence shown
  events: [],        // events shown in the tail, newest first
  refreshTimer: null,
  drawQueued: false,
  sort: "attention",
  stateFilter: "all",
  query: "",
  queryTimer: null,
};

const MAX_EVENTS = 200;

// ---------- small helpers ----------

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else if (key === "dataset") Object.assign(node.dataset, value);
    else node.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

const $ = (id) => document.getElementById(id);

function pad(n) { return String(n).padStart(2, "0"); }

// A time as the operator reads it: the local clock time today, the local date and time
// otherwise; the full UTC time on hover.
function clock(iso) {
  if (!iso) return "";
  const t = new Date(iso);
  const now = new Date();
  const hms = `${pad(t.getHours())}:${pad(t.getMinutes())}:${pad(t.getSeconds())}`;
  if (t.toDateString() === now.toDateString()) return hms;
  return `${t.getFullYear()}-${pad(t.getMonth() + 1)}-${pad(t.getDate())} ${hms}`;
}

function timeEl(iso) {
  return el("time", { datetime: iso, title: iso }, clock(iso));
}

function span(seconds) {
  seconds = Math.max(0, Math.floor(seconds));
  const d = Math.floor(seconds / 86400);
  const h = Math.floor((seconds % 86400) / 3600);
  const m = Math.floor((seconds % 3600) / 60);
  const s = seconds % 60;
  if (d > 0) return `${d}d ${h}h`;
  if (h > 0) return `${h}h ${m}m`;
  if (m > 0) return `${m}m ${pad(s)}s`;
  return `${s}s`;
}

// A countdown to `iso`, kept current by the ticker.
function countdown(iso) {
  return el("span", { class: "countdown", dataset: { until: iso } }, countdownText(iso));
}

function countdownText(iso) {
  const left = (new Date(iso).getTime() - Date.now()) / 1000;
  return left > 0 ? `in ${span(left)}` : "due";
}

function tick() {
  for (const node of document.querySelectorAll(".countdown")) {
    node.textContent = countdownText(node.dataset.until);
  }
}

function stateBadge(name) {
  return el("span", { class: `badge state-${name.toLowerCase()}` }, name);
}

function modeBadge(mode) {
  if (mode === "enforce") return null;
  const title = mode === "disabled"
    ? "disabled: no protection, every order is allowed"
    : "shadow: decisions are logged, every order is allowed";
  return el("span", { class: `badge mode-${mode}`, title }, mode);
}

function toast(message, isError) {
  const node = $("toast");
  node.textContent = message;
  node.className = isError ? "error" : "ok";
  node.hidden = false;
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => { node.hidden = true; }, isError ? 12000 : 6000);
}

// ---------- the API ----------

class ApiError extends Error {
  constructor(status, message) { super(message); this.status = status; }
}

async function api(method, path, body) {
  const headers = { "Accept": "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (method !== "GET" && state.session) headers["X-CSRF-Token"] = state.session.csrf;
  const response = await fetch(path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
    credentials: "same-origin",
  });
  let data = {};
  try { data = await response.json(); } catch (_) { data = {}; }
  if (!response.ok) {
    if (response.status === 401 && path !== "/api/session") {
      state.session = null;
      showSignIn(data.error);
    }
    throw new ApiError(response.status, data.error || `${response.status} ${response.statusText}`);
  }
  return data;
}

// ---------- signing in ----------

// The page reads its state again this often even without events: a backstop, and what keeps
// an open console's session alive.
const REFRESH_MS = 30000;

async function start() {
  setInterval(tick, 1000);
  setInterval(() => { if (state.session && state.view) reload(); }, REFRESH_MS);
  $("sign-out").addEventListener("click", signOut);
  $("home").addEventListener("click", (e) => { e.preventDefault(); go("/"); });
  window.addEventListener("popstate", route);
  $("confirm-cancel").addEventListener("click", () => $("confirm").close());
  try {
    state.session = await api("GET", "/api/session");
    signedIn();
  } catch (e) {
    if (e instanceof ApiError && e.status === 401) showSignIn();
    else toast(`cannot reach riskgate: ${e.message}`, true);
  }
}

function signedIn() {
  const s = state.session;
  $("who").textContent = s.may_act ? `${s.operator} (operator)` : `${s.operator} (monitor: read-only)`;
  $("sign-out").hidden = false;
  route();
}

async function showSignIn(why) {
  stopFeed();
  state.view = null;
  $("who").textContent = "";
  $("sign-out").hidden = true;
  $("halts").replaceChildren();
  // Already asking (a refresh that raced the sign-out): keep what is being typed.
  if ($("sign-in")) {
    if (why && why !== "not signed in") $("sign-in-error").textContent = why;
    return;
  }
  let auth = "token";
  try {
    const r = await fetch("/api/session", { credentials: "same-origin" });
    auth = (await r.json()).auth || auth;
  } catch (_) { /* keep the token form */ }
  if ($("sign-in")) return;
  const error = el("p", { class: "error", id: "sign-in-error" }, why && why !== "not signed in" ? why : "");
  const field = auth === "none"
    ? el("input", { id: "sign-in-name", name: "name", autocomplete: "username", required: true, maxlength: "128" })
    : el("input", { id: "sign-in-token", name: "token", type: "password", autocomplete: "current-password", required: true });
  const form = el("form", { id: "sign-in", class: "card narrow" },
    el("h1", {}, "Sign in"),
    auth === "none"
      ? el("p", { class: "warn" }, "Authentication is off on this riskgate. Give the name your actions are recorded under.")
      : el("p", {}, "Sign in with your riskgate token (a principal with the monitor or operator role)."),
    el("label", { for: field.id }, auth === "none" ? "Your name" : "Token"),
    field,
    error,
    el("div", { class: "buttons" }, el("button", { type: "submit", id: "sign-in-go" }, "Sign in")));
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    error.textContent = "";
    try {
      const body = auth === "none" ? { name: field.value } : { token: field.value };
      state.session = await api("POST", "/api/session", body);
      signedIn();
    } catch (err) {
      error.textContent = err.message;
    }
  });
  $("main").replaceChildren(form);
  field.focus();
}

async function signOut() {
  stopFeed();
  state.view = null;
  try { await api("DELETE", "/api/session"); } catch (_) { /* signed out anyway */ }
  state.session = null;
  showSignIn();
}

// ---------- routing ----------

function go(path) {
  history.pushState({}, "", path);
  route();
}

function link(path, text) {
  return el("a", { href: path, onclick: (e) => { e.preventDefault(); go(path); } }, text);
}

function accountPath(id) { return `/account/${encodeURIComponent(id)}`; }

function route() {
  if (!state.session) return;
  stopFeed();
  state.events = [];
  state.lastSeq = 0;
  const match = location.pathname.match(/^\/account\/(.+)$/);
  if (match) {
    state.view = "account";
    state.account = decodeURIComponent(match[1]);
    loadAccount(true);
  } else {
    state.view = "overview";
    state.account = null;
    loadOverview(true);
  }
}

// ---------- the live feed ----------

function stopFeed() {
  if (state.source) state.source.close();
  state.source = null;
  clearTimeout(state.refreshTimer);
  state.refreshTimer = null;
  setLive(false, "offline");
}

function setLive(on, text) {
  const node = $("live");
  node.textContent = text;
  node.className = on ? "live on" : "live off";
}

// Follows events: `start`, { after: N } to resume after sequence N, or { recent: N } for up to
// N of the latest events still retained; `fallback`, where to start if that is no longer
// retained.
function follow(start, fallback) {
  stopFeed();
  const params = new URLSearchParams(Object.fromEntries(Object.entries(start).map(([k, v]) => [k, String(v)])));
  if (state.view === "account") params.set("account", state.account);
  const source = new EventSource(`/api/events?${params}`);
  state.source = source;
  source.onopen = () => setLive(true, "live");
  source.onerror = () => {
    if (source.readyState === EventSource.CLOSED) {
      setLive(false, "disconnected");
      // Signed out, or the server refused the stream: find out which.
      setTimeout(() => { if (state.source === source) reload(); }, 3000);
    } else {
      setLive(false, "reconnecting…");
    }
  };
  source.addEventListener("breaker", (message) => {
    const event = JSON.parse(message.data);
    if (event.sequence <= state.lastSeq) return;
    state.lastSeq = event.sequence;
    state.events.unshift(event);
    state.events.length = Math.min(state.events.length, MAX_EVENTS);
    // A storm of events is drawn once a frame, not once an event.
    if (!state.drawQueued) {
      state.drawQueued = true;
      requestAnimationFrame(() => { state.drawQueued = false; drawEvents(); });
    }
    scheduleRefresh();
  });
  source.addEventListener("heartbeat", () => setLive(true, "live"));
  source.addEventListener("resync", () => {
    source.close();
    if (fallback !== undefined) {
      follow({ after: fallback });
    } else {
      state.events.unshift({ gap: true });
      reload();
    }
  });
  source.addEventListener("end", (message) => {
    const data = JSON.parse(message.data);
    setLive(false, `reconnecting (${data.message})`);
  });
}

// At most one refresh in flight and four a second, however many events arrive.
function scheduleRefresh() {
  if (state.refreshTimer) return;
  state.refreshTimer = setTimeout(() => { state.refreshTimer = null; reload(); }, 250);
}

function reload() {
  if (state.view === "account") loadAccount(false);
  else loadOverview(false);
}

// ---------- halts, node ----------

function drawHalts(halts) {
  const box = $("halts");
  box.replaceChildren(...halts.map((h) => {
    const scope = h.scope === "firm" ? "ALL TRADING HALTED" : `GROUP ${h.group} HALTED`;
    return el("div", { class: "banner halt", dataset: { scope: h.scope, group: h.group } },
      el("strong", {}, scope),
      ` by ${h.operator} since `, timeEl(h.since), ` (${span((Date.now() - new Date(h.since)) / 1000)} ago): `,
      el("q", {}, h.reason),
      h.group_undefined ? el("em", {}, ` — group ${h.group} is no longer configured; this halt holds no account`) : null,
      state.session && state.session.may_act
        ? el("button", { type: "button", class: "resume", onclick: () => confirmResume(h) },
          h.scope === "firm" ? "Resume all trading" : `Resume ${h.group}`)
        : null);
  }));
}

function drawNode(data) {
  const n = data.node;
  $("node").textContent = n.clustered
    ? `${n.node_id} (${n.role}${n.leader_id && n.role !== "leader" ? `, leader ${n.leader_id} at ${n.leader_address}` : ""}, epoch ${n.epoch})`
    : n.role;
  // Only a node that decides writes: a standby's store is the leader's concern.
  const decides = !n.clustered || n.role === "leader";
  $("store-failing").hidden = !decides || data.store_writable !== false;
}

// ---------- the overview ----------

async function loadOverview(first) {
  let data;
  try {
    data = await api("GET", `/api/overview?${new URLSearchParams({ q: state.query })}`);
  } catch (e) {
    if (e.status !== 401) toast(`cannot read the overview: ${e.message}`, true);
    return;
  }
  if (state.view !== "overview") return;
  state.overview = data;
  drawHalts(data.halts);
  drawNode(data);
  drawOverview();
  // The latest events still retained, then live.
  if (first) follow({ recent: 100 }, data.sequence);
}

function drawOverview() {
  const data = state.overview;
  const main = $("main");
  let table = $("accounts");
  if (!table) {
    main.replaceChildren(overviewFrame());
    table = $("accounts");
  }
  const c = data.counts;
  $("counts").replaceChildren(
    count("accounts", c.total, ""),
    count("OPEN", c.open, c.open ? "state-open" : ""),
    count("HALF_OPEN", c.half_open, c.half_open ? "state-half_open" : ""),
    count("CLOSED", c.closed, ""),
    count("tripped by an operator", c.tripped, c.tripped ? "state-open" : ""),
    count("shadow", c.shadow, c.shadow ? "mode-shadow" : ""),
    count("disabled", c.disabled, c.disabled ? "mode-disabled" : ""));
  const groups = $("group-select");
  if (groups) {
    const chosen = groups.value;
    groups.replaceChildren(...data.groups.map((g) => el("option", { value: g }, g)));
    if (data.groups.includes(chosen)) groups.value = chosen;
    $("group-actions").hidden = data.groups.length === 0;
  }
  let rows = [...data.attention, ...data.closed];
  if (state.stateFilter === "attention") rows = data.attention;
  else if (state.stateFilter !== "all") rows = rows.filter((b) => b.state === state.stateFilter);
  rows.sort(sorter(state.sort));
  table.replaceChildren(
    el("thead", {}, el("tr", {},
      ["Account", "State", "Mode", "Failures", "Opened by", "Recovery", "Note"].map((h) => el("th", {}, h)))),
    el("tbody", {}, rows.length ? rows.map(accountRow)
      : el("tr", {}, el("td", { colspan: "7", class: "muted" },
        data.counts.total ? "no account matches" : "no breakers yet: a breaker is created on an account's first CheckTrade"))));
  $("hidden-note").textContent = data.closed_hidden
    ? `${data.closed_hidden} more CLOSED accounts not shown: filter by account to find them.`
    : "";
}

function count(label, value, cls) {
  return el("div", { class: `count ${cls}`, dataset: { count: label } },
    el("span", { class: "value" }, String(value)), el("span", { class: "label" }, label));
}

const STATE_ORDER = { OPEN: 0, HALF_OPEN: 1, CLOSED: 2, UNKNOWN: 3 };

function sorter(key) {
  const byId = (a, b) => a.account_id.localeCompare(b.account_id);
  switch (key) {
    case "account": return byId;
    case "failures": return (a, b) => b.failure_count - a.failure_count || byId(a, b);
    case "recovery": return (a, b) => (a.recovery_at || "~").localeCompare(b.recovery_at || "~") || byId(a, b);
    default: return (a, b) => STATE_ORDER[a.state] - STATE_ORDER[b.state]
      || (a.mode === "enforce") - (b.mode === "enforce")
      || b.failure_count - a.failure_count || byId(a, b);
  }
}

// Why orders of `b` are refused beyond its own state: a firm or group halt in force.
function haltedBy(b) {
  const halts = (state.overview && state.overview.halts) || [];
  if (halts.some((h) => h.scope === "firm")) return "halted: firm-wide";
  const group = halts.find((h) => h.scope === "group" && b.groups.includes(h.group));
  return group ? `halted with group ${group.group}` : "";
}

function note(b) {
  const halted = haltedBy(b);
  const own = ownNote(b);
  return halted && own ? `${halted}; ${own}` : halted || own;
}

function ownNote(b) {
  if (b.tripped_by_operator && !b.recovery_at) return "held open by an operator until reset";
  if (b.tripped_by_operator) return "tripped by an operator";
  if (b.state === "HALF_OPEN") return `${b.probes_in_flight} probes out, ${b.probe_successes}/${b.half_open_max_tries} succeeded`;
  if (b.open_streak > 1) return `opened ${b.open_streak} times in a row`;
  return "";
}

function recovery(b) {
  if (!b.recovery_at) return "";
  return el("span", {}, timeEl(b.recovery_at), " ", countdown(b.recovery_at));
}

function accountRow(b) {
  return el("tr", { dataset: { account: b.account_id, state: b.state } },
    el("td", {}, link(accountPath(b.account_id), b.account_id)),
    el("td", {}, stateBadge(b.state)),
    el("td", {}, modeBadge(b.mode) || el("span", { class: "muted" }, "enforce")),
    el("td", { class: "num" }, String(b.failure_count)),
    el("td", {}, b.opened_by_text || ""),
    el("td", {}, recovery(b)),
    el("td", {}, note(b)));
}

function overviewFrame() {
  const mayAct = state.session.may_act;
  const search = el("input", { id: "filter", type: "search", placeholder: "filter accounts", value: state.query });
  const filter = () => {
    if (state.query === search.value) return;
    state.query = search.value;
    clearTimeout(state.queryTimer);
    state.queryTimer = setTimeout(() => loadOverview(false), 250);
  };
  for (const type of ["input", "change", "search"]) search.addEventListener(type, filter);
  const stateSelect = el("select", { id: "state-filter" },
    [["all", "every state"], ["attention", "needs attention"], ["OPEN", "OPEN"], ["HALF_OPEN", "HALF_OPEN"], ["CLOSED", "CLOSED"]]
      .map(([v, t]) => el("option", { value: v }, t)));
  stateSelect.value = state.stateFilter;
  stateSelect.addEventListener("change", () => { state.stateFilter = stateSelect.value; drawOverview(); });
  const sortSelect = el("select", { id: "sort" },
    [["attention", "not CLOSED first"], ["account", "by account"], ["failures", "most failures"], ["recovery", "soonest recovery"]]
      .map(([v, t]) => el("option", { value: v }, t)));
  sortSelect.value = state.sort;
  sortSelect.addEventListener("change", () => { state.sort = sortSelect.value; drawOverview(); });
  const killSwitch = mayAct
    ? el("section", { class: "card actions", id: "kill-switch" },
      el("h2", {}, "Halts"),
      el("div", { class: "row" },
        el("button", { type: "button", id: "halt-all", class: "danger big", onclick: confirmHaltAll }, "Halt all trading"),
        el("span", { id: "group-actions", class: "row" },
          el("label", { for: "group-select" }, "Group"),
          el("select", { id: "group-select" }),
          el("button", { type: "button", id: "halt-group", class: "danger", onclick: () => confirmHaltGroup($("group-select").value) }, "Halt group"),
          el("button", { type: "button", id: "resume-group", onclick: () => confirmResumeGroup($("group-select").value) }, "Resume group"))))
    : el("p", { class: "muted" }, "Read-only: actions need the operator role.");
  return el("div", { class: "overview" },
    killSwitch,
    el("section", { id: "counts", class: "counts" }),
    el("section", { class: "card" },
      el("div", { class: "row toolbar" }, search, stateSelect, sortSelect),
      el("table", { id: "accounts", class: "grid" }),
      el("p", { id: "hidden-note", class: "muted" })),
    el("section", { class: "card" },
      el("h2", {}, "Events"),
      el("ol", { id: "events", class: "events" })));
}

function drawEvents() {
  const list = $("events");
  if (!list) return;
  list.replaceChildren(...(state.events.length ? state.events.map(eventLine)
    : [el("li", { class: "muted" }, "no events yet")]));
}

function eventLine(e) {
  if (e.gap) return el("li", { class: "warn" }, "some events were no longer retained: the state above was read again");
  let what;
  if (e.layer === "firm") what = [el("strong", {}, "FIRM")];
  else if (e.layer === "group") what = [el("strong", {}, `GROUP ${e.group}`)];
  else what = [link(accountPath(e.account_id), e.account_id), " ", stateBadge(e.from_state), " → ", stateBadge(e.to_state)];
  // The reason names the rule, or the operator and theirs.
  return el("li", { dataset: { sequence: String(e.sequence), account: e.account_id || "", layer: e.layer } },
    timeEl(e.time), el("span", { class: "seq" }, `#${e.sequence}`), ...what,
    el("span", { class: "reason" }, ` ${e.reason || e.cause_text}`));
}

// ---------- an account ----------

async function loadAccount(first) {
  let data;
  try {
    data = await api("GET", `/api/accounts/${encodeURIComponent(state.account)}`);
  } catch (e) {
    if (e.status !== 401) {
      $("main").replaceChildren(el("p", { class: "error" }, `cannot read ${state.account}: ${e.message}`));
    }
    return;
  }
  if (state.view !== "account" || data.account_id !== state.account) return;
  state.detail = data;
  drawHalts(data.halts);
  drawNode(data);
  drawAccount();
  // Its history still retained, then live.
  if (first) follow({ recent: 1000000 }, data.sequence);
}

function fact(label, ...value) {
  return [el("dt", {}, label), el("dd", {}, ...value)];
}

function drawAccount() {
  const d = state.detail;
  const b = d.breaker;
  if (!$("account-facts")) $("main").replaceChildren(accountFrame());
  const trip = d.audit.find((r) => r.action === "trip");
  $("account-title").replaceChildren(d.account_id, " ", b ? stateBadge(b.state) : "", " ", (b && modeBadge(b.mode)) || "");
  $("account-facts").replaceChildren(b ? el("dl", { class: "facts" },
    fact("state", stateBadge(b.state), b.tripped_by_operator ? " tripped by an operator" : ""),
    fact("mode", b.mode, b.mode_set_by_operator ? " (set by an operator)" : "", " ", modeBadge(b.mode)),
    b.groups.length ? fact("groups", b.groups.join(", ")) : null,
    fact("failures", `${b.failure_count} in the window`),
    b.opened_by_text ? fact("opened by", b.opened_by_text) : null,
    b.opened_at ? fact("opened at", timeEl(b.opened_at)) : null,
    b.recovery_at ? fact("recovery", timeEl(b.recovery_at), " ", countdown(b.recovery_at))
      : (b.tripped_by_operator ? fact("recovery", "none: held open until reset") : null),
    b.tripped_by_operator && trip ? fact("tripped", `by ${trip.operator} at `, timeEl(trip.time), " ", el("q", {}, trip.reason)) : null,
    b.state === "HALF_OPEN" ? fact("probes", `${b.probes_in_flight} out, ${b.probe_successes}/${b.half_open_max_tries} succeeded`) : null,
    b.open_streak > 1 ? fact("backoff", `opened ${b.open_streak} times in a row`) : null,
    fact("generation", String(b.generation)))
    : el("p", { class: "banner warn", id: "never-seen" },
      `riskgate has never seen ${d.account_id}: no order has been checked for it. Acting on it creates its breaker (check the spelling).`));
  $("account-failures").replaceChildren(b && b.failures.length
    ? el("table", { class: "grid", id: "failures" },
      el("thead", {}, el("tr", {}, ["Time", "Kind", "Order", "Detail"].map((h) => el("th", {}, h)))),
      el("tbody", {}, b.failures.map((f) => el("tr", {},
        el("td", {}, timeEl(f.time)), el("td", {}, f.kind), el("td", {}, f.order_id), el("td", {}, f.detail)))))
    : el("p", { class: "muted" }, "no failures in the window"));
  $("account-audit").replaceChildren(d.audit.length
    ? el("table", { class: "grid", id: "audit" },
      el("thead", {}, el("tr", {}, ["Time", "Action", "Operator", "Before", "After", "Reason", "From"].map((h) => el("th", {}, h)))),
      el("tbody", {}, d.audit.map((r) => el("tr", { dataset: { action: r.action } },
        el("td", {}, timeEl(r.time)), el("td", {}, r.action + (r.detail ? ` (${r.detail})` : "")), el("td", {}, r.operator),
        el("td", {}, r.state_before), el("td", {}, r.state_after), el("td", {}, r.reason), el("td", { class: "muted" }, r.peer)))))
    : el("p", { class: "muted" }, "no operator actions on this account"));
  const settings = b && b.settings.length
    ? el("table", { class: "grid compact", id: "settings" },
      el("thead", {}, el("tr", {}, ["Setting", "Value", "From"].map((h) => el("th", {}, h)))),
      el("tbody", {}, b.settings.map((s) => el("tr", { class: s.source === "operator" ? "operator-set" : "" },
        el("td", {}, s.key), el("td", {}, s.value), el("td", {}, s.source)))))
    : el("p", { class: "muted" }, "none yet: the account has no breaker");
  $("account-settings").replaceChildren(settings);
  const mode = $("mode-select");
  if (mode && b && document.activeElement !== mode) mode.value = b.mode;
  drawEvents();
}

// The account page's frame, built once per account: the sections are filled on every
// refresh, the actions (and what an operator is typing in them) stay.
function accountFrame() {
  const mayAct = state.session.may_act;
  return el("div", { class: "account" },
    el("p", {}, link("/", "← overview")),
    el("h1", { id: "account-title" }),
    el("div", { class: "columns" },
      el("section", { class: "card" }, el("h2", {}, "State"), el("div", { id: "account-facts" })),
      el("section", { class: "card actions" }, el("h2", {}, "Actions"),
        mayAct ? accountActions() : el("p", { class: "muted" }, "Read-only: actions need the operator role."))),
    el("section", { class: "card" }, el("h2", {}, "Failures that count"), el("div", { id: "account-failures" })),
    el("section", { class: "card" }, el("h2", {}, "Events"), el("ol", { id: "events", class: "events" })),
    el("section", { class: "card" }, el("h2", {}, "Audit"), el("div", { id: "account-audit" })),
    el("section", { class: "card" }, el("h2", {}, "Settings in force"), el("div", { id: "account-settings" })));
}

function accountActions() {
  const until = el("input", { id: "trip-until", type: "datetime-local" });
  const mode = el("select", { id: "mode-select" },
    ["enforce", "shadow", "disabled"].map((m) => el("option", { value: m }, m)));
  return el("div", { class: "stack" },
    el("div", { class: "row" },
      el("button", { type: "button", id: "trip", class: "danger", onclick: () => confirmTrip(state.detail, until.value) }, "Trip"),
      el("label", { for: "trip-until" }, "until"), until,
      el("span", { class: "muted" }, "(empty: until reset)")),
    el("div", { class: "row" },
      el("button", { type: "button", id: "reset", onclick: () => confirmReset(state.detail) }, "Reset")),
    el("div", { class: "row" },
      el("label", { for: "mode-select" }, "Mode"), mode,
      el("button", { type: "button", id: "set-mode", onclick: () => confirmMode(state.detail, mode.value) }, "Set mode")));
}

// ---------- confirmations: exactly what will happen ----------

function confirmAction(title, lines, button, send) {
  const dialog = $("confirm");
  $("confirm-title").textContent = title;
  $("confirm-what").replaceChildren(...lines.filter(Boolean).map((l) => el("p", {}, l)));
  $("confirm-error").textContent = "";
  const reason = $("confirm-reason");
  reason.value = "";
  const go = $("confirm-go");
  go.textContent = button;
  const form = $("confirm-form");
  form.onsubmit = async (e) => {
    e.preventDefault();
    if (!reason.value.trim()) {
      $("confirm-error").textContent = "a reason is required";
      return;
    }
    go.disabled = true;
    try {
      const answer = await send(reason.value.trim());
      dialog.close();
      toast(answer.message, false);
      reload();
    } catch (err) {
      $("confirm-error").textContent = err.message;
    } finally {
      go.disabled = false;
    }
  };
  dialog.showModal();
  reason.focus();
}

function breakerCount() {
  return state.overview ? state.overview.counts.total : null;
}

function confirmHaltAll() {
  const n = breakerCount();
  confirmAction("Halt all trading", [
    `Every order of every account${n !== null ? ` (${n} known)` : ""} is refused, new accounts included, until someone resumes all trading.`,
    "Breakers keep their own state; resuming returns every account to its breaker's decision.",
  ], "Halt all trading", (reason) => api("POST", "/api/actions/halt", { reason }));
}

function confirmHaltGroup(group) {
  if (!group) return;
  confirmAction(`Halt group ${group}`, [
    `Every order of the accounts in group ${group} is refused until someone resumes the group.`,
  ], `Halt ${group}`, (reason) => api("POST", "/api/actions/halt", { group, reason }));
}

function confirmResumeGroup(group) {
  if (!group) return;
  confirmResume({ scope: "group", group });
}

function confirmResume(h) {
  const firm = h.scope === "firm";
  const what = firm ? "all trading" : `group ${h.group}`;
  confirmAction(`Resume ${what}`, [
    h.operator ? `Ends the halt of ${what} by ${h.operator} (${h.reason}).` : `Ends the halt of ${what}, if one is in force.`,
    firm ? "Orders are decided by each account's breaker again; halted groups stay halted."
      : `Orders of group ${h.group}'s accounts are decided by their breakers again (a firm-wide halt, if any, still holds).`,
  ], `Resume ${what}`, (reason) => api("POST", "/api/actions/resume", firm ? { reason } : { group: h.group, reason }));
}

function neverSeen(d) {
  return d.known ? null
    : `riskgate has never seen ${d.account_id}: this creates its breaker before its first order. Check the spelling: a typo leaves the real account trading.`;
}

function confirmTrip(d, untilLocal) {
  const b = d.breaker;
  let untilIso = "";
  let held = "until an operator resets it (no recovery test)";
  if (untilLocal) {
    const at = new Date(untilLocal);
    if (Number.isNaN(at.getTime()) || at.getTime() <= Date.now()) {
      toast("the trip's end must be a time in the future", true);
      return;
    }
    untilIso = at.toISOString();
    held = `until ${at.toLocaleString()} (${countdownText(untilIso)}), when recovery is tested`;
  }
  confirmAction(`Trip ${d.account_id}`, [
    neverSeen(d),
    `${d.account_id} goes from ${b ? b.state : "(new)"} to OPEN: every order is refused ${held}.`,
  ], "Trip", (reason) => api("POST", "/api/actions/trip", { account_id: d.account_id, reason, until: untilIso, new: !d.known }));
}

function confirmReset(d) {
  const b = d.breaker;
  confirmAction(`Reset ${d.account_id}`, [
    neverSeen(d),
    b ? `${d.account_id} goes from ${b.state} to CLOSED and its ${b.failure_count} failures are cleared: orders are allowed again (unless a halt holds it).`
      : `${d.account_id} starts CLOSED.`,
  ], "Reset", (reason) => api("POST", "/api/actions/reset", { account_id: d.account_id, reason, new: !d.known }));
}

const MODE_MEANING = {
  enforce: "the breaker decides every order again",
  shadow: "decisions are logged but every order is allowed",
  disabled: "NO protection: every order is allowed whatever happens",
};

function confirmMode(d, mode) {
  const b = d.breaker;
  confirmAction(`Set ${d.account_id} to ${mode}`, [
    neverSeen(d),
    `${d.account_id}'s mode goes from ${b ? b.mode : "(new)"} to ${mode}: ${MODE_MEANING[mode]}. It outlasts configuration changes until an operator sets it again.`,
  ], `Set ${mode}`, (reason) => api("POST", "/api/actions/mode", { account_id: d.account_id, mode, reason, new: !d.known }));
}

document.addEventListener("DOMContentLoaded", start);
