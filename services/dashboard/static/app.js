// lorafleet dashboard: each page renders its /api twin, refreshes on the live feed (server-sent events),
// and says so when NATS is unreachable. No framework: a small h() helper and uPlot (vendored) for plots.
"use strict";

const page = document.body.dataset.page;
const actionsOn = document.body.dataset.actions === "on";
const app = document.getElementById("app");
const feed = document.getElementById("feed-list");
const banner = document.getElementById("banner");
const busBadge = document.getElementById("bus");
const plots = [];

// ------------------------------------------------------------------ helpers

function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "cls") el.className = v;
    else el.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat(9)) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}
const fmt = (x, d = 3) => (x === null || x === undefined || Number.isNaN(x)) ? "–" : (typeof x === "number" ? (Number.isInteger(x) ? String(x) : x.toFixed(d)) : String(x));
const fixed = (x, d = 3) => (x === null || x === undefined) ? "–" : Number(x).toFixed(d);
const pct = (x, d = 1) => (x === null || x === undefined) ? "–" : (100 * x).toFixed(d) + "%";
const secs = (s) => s === null || s === undefined ? "–" : s < 90 ? s.toFixed(1) + " s" : s < 5400 ? (s / 60).toFixed(1) + " min" : (s / 3600).toFixed(1) + " h";
const when = (iso) => iso ? new Date(iso).toLocaleString([], { hour12: false }) : "–";
const clock = (iso) => iso ? new Date(iso).toLocaleTimeString([], { hour12: false }) : "–";
const pill = (text, cls) => h("span", { cls: "pill " + (cls || text) }, text);
const vlink = (name) => h("a", { href: "/adapters/" + encodeURIComponent(name) }, name);
const rlink = (rid) => h("a", { href: "/runs/" + encodeURIComponent(rid), cls: "mono" }, rid.slice(0, 8));
const card = (title, ...body) => h("section", { cls: "card" }, title ? h("h2", {}, title) : null, ...body);
const table = (head, rows, attrs) => h("table", attrs || {},
  h("thead", {}, h("tr", {}, head.map((c) => h("th", { cls: /^(#|n|pending|in flight|redeliv|replicas|DLQ|lost|requests|rate|pass|base|adapter|Δ|lora|rank|latency|seconds|problems)/.test(c) ? "num" : "" }, c)))),
  h("tbody", {}, rows));
const td = (v, cls, attrs) => h("td", { cls, ...(attrs || {}) }, v);
const tdn = (v, attrs) => td(v, "num", attrs);

async function getJSON(url) {
  const resp = await fetch(url, { headers: { Accept: "application/json" } });
  const body = await resp.json().catch(() => ({ error: resp.statusText }));
  if (!resp.ok) { const e = new Error(body.error || resp.statusText); e.status = resp.status; throw e; }
  return body;
}

// ------------------------------------------------------------------ plots (uPlot)

function plot(target, title, series, data, opts = {}) {
  const width = Math.max(320, target.clientWidth || 600);
  const u = new uPlot({
    title, width, height: opts.height || 220,
    scales: { x: opts.xrange ? { time: false, range: opts.xrange } : { time: false }, y: opts.y || {} },
    axes: [{ label: opts.xlabel || "" }, { label: opts.ylabel || "", size: 56 }],
    series: [{ label: opts.xlabel || "x" }, ...series],
    legend: { live: false },
    bands: opts.bands,
    cursor: { drag: { x: false, y: false } },
  }, data, target);
  plots.push([u, target]);
  return u;
}
window.addEventListener("resize", () => { for (const [u, t] of plots) u.setSize({ width: Math.max(320, t.clientWidth), height: u.height }); });
function clearPlots() { for (const [u] of plots.splice(0)) u.destroy(); }

// ------------------------------------------------------------------ actions

// Controls the user types into survive the page's live re-renders: they are built once and moved back in.
const kept = {};
function once(key, make) { return (kept[key] ||= make()); }

function token() { return sessionStorage.getItem("lorafleet-token") || ""; }

async function act(kind, body, msgEl) {
  msgEl.className = "msg"; msgEl.textContent = "…";
  try {
    const resp = await fetch("/api/actions/" + kind, {
      method: "POST", headers: { "Content-Type": "application/json", "X-Lorafleet-Token": token() },
      body: JSON.stringify(body),
    });
    const out = await resp.json().catch(() => ({ error: resp.statusText }));
    msgEl.className = "msg " + (resp.ok ? "ok" : "err");
    msgEl.textContent = resp.ok ? out.message : `${resp.status}: ${out.error}`;
    if (resp.ok) refresh();
  } catch (e) { msgEl.className = "msg err"; msgEl.textContent = String(e); }
}

function tokenBox() { return once("token", makeTokenBox); }
function makeTokenBox() {
  if (!actionsOn) return h("p", { cls: "note", id: "readonly-note" }, "Read-only: this dashboard was started without LORAFLEET_DASHBOARD_TOKEN, so it offers no actions.");
  const input = h("input", { type: "password", placeholder: "token", id: "token", value: token() });
  input.addEventListener("change", () => sessionStorage.setItem("lorafleet-token", input.value));
  return h("span", {}, "Token ", input);
}

// ------------------------------------------------------------------ live feed

let es = null, refreshTimer = null, inflight = false, again = false, lastCost = 0;

function feedLine(ev) {
  const li = h("li", { cls: "new", "data-type": ev.type },
    h("span", { cls: "muted" }, clock(ev.at), " "), h("span", { cls: "t" }, ev.type), " ",
    ev.adapter_name ? h("span", {}, ev.adapter_name, " ") : null,
    ev.summary ? h("span", { cls: "muted" }, ev.summary) : null);
  feed.prepend(li);
  while (feed.children.length > 200) feed.lastChild.remove();
}

function setBus(status) {
  if (status.connected) {
    busBadge.className = "bus ok"; busBadge.textContent = "NATS " + (status.servers || []).join(", ");
    if (banner.classList.contains("down")) { banner.hidden = true; banner.classList.remove("down"); refresh(); }
  } else {
    busBadge.className = "bus down"; busBadge.textContent = "NATS unreachable";
    banner.hidden = false; banner.className = "banner down";
    banner.textContent = `The bus is unreachable (${(status.servers || []).join(", ") || "no server configured"}): ${status.error || ""}. Reconnecting by itself; this page refreshes when it is back.`;
  }
}

function relevant(ev) {
  const d = document.body.dataset;
  if (page === "run") return ev.request_id === d.rid;
  if (page === "adapter") return ev.adapter_name === d.name;
  return true;
}

function connectFeed() {
  es = new EventSource("/api/stream");
  es.addEventListener("status", (m) => setBus(JSON.parse(m.data)));
  es.addEventListener("bus", (m) => { const ev = JSON.parse(m.data); feedLine(ev); if (relevant(ev)) schedule(); });
  es.addEventListener("registry", (m) => { const ev = JSON.parse(m.data); if (page !== "run" && relevant(ev)) schedule(); });
  es.onerror = () => { busBadge.className = "bus down"; busBadge.textContent = "dashboard unreachable"; };
  es.onopen = () => schedule();
}

function schedule() {
  if (refreshTimer || !RENDER[page]) return;  // a 404 page has nothing to re-read (it would wipe its listing)
  // Under heavy traffic a page re-reads at most every ~3x what a read costs, so it never keeps the server busy.
  refreshTimer = setTimeout(() => { refreshTimer = null; refresh(); }, Math.max(250, 2 * lastCost));
}

async function refresh() {
  if (!RENDER[page]) return;
  if (inflight) { again = true; return; }
  inflight = true;
  const started = performance.now();
  try {
    const data = await getJSON(API[page]());
    lastCost = performance.now() - started;
    const scroll = window.scrollY;
    clearPlots(); app.replaceChildren(...RENDER[page](data)); drawPlots(data);
    window.scrollTo(0, scroll);
    app.dataset.loaded = String(Date.now());
  } catch (e) {
    if (e.status === 503) setBus({ connected: false, servers: [], error: e.message });
    else app.replaceChildren(card("Could not load this page", h("p", { cls: "msg err" }, e.message)));
  } finally {
    inflight = false;
    if (again) { again = false; schedule(); }
  }
}

const API = {
  overview: () => "/api/overview",
  services: () => "/api/services",
  adapter: () => "/api/adapters/" + encodeURIComponent(document.body.dataset.name),
  run: () => "/api/runs/" + encodeURIComponent(document.body.dataset.rid),
};
let pending = [];  // plots to draw once the elements are in the document (uPlot measures them)
function later(fn) { pending.push(fn); }
function drawPlots() { const p = pending; pending = []; for (const fn of p) fn(); }

// ------------------------------------------------------------------ overview

function stagesCell(stages) {
  return h("span", { cls: "stages", title: stages.map((s) => `${s.service}: ${s.state}${s.seconds != null ? " " + secs(s.seconds) : ""}`).join("\n") },
    stages.map((s) => h("span", { cls: s.state })));
}

function abCell(a) {
  if (!a.ab) return h("span", { cls: "muted" }, "–");
  const s = a.ab.statistics || {};
  const ctrl = a.ab.control == null ? "base" : "v" + a.ab.control;
  return h("span", {}, `v${a.ab.candidate} vs ${ctrl} · ${pct(a.ab.traffic, 0)} · `,
    h("span", { "data-testid": `ab-counts-${a.name}` }, `${s.candidate_successes}/${s.candidate_n} vs ${s.control_successes}/${s.control_n}`),
    " ", pill(s.decision || "continue"));
}

function renderOverview(d) {
  const svc = d.services;
  const dead = svc ? svc.services.reduce((n, s) => n + s.dead_letters, 0) : null;
  const busy = svc ? svc.services.reduce((n, s) => n + s.pending + s.ack_pending, 0) : null;
  const running = d.runs.filter((r) => r.state.endsWith("running")).length;
  return [
    h("h1", {}, "Fleet overview"),
    h("p", { cls: "sub" }, "Adapters in the registry, pipeline runs on the bus, and the services' queues: live."),
    h("div", { cls: "kpis" },
      kpi(d.adapters.length, "adapters"), kpi(d.adapters.filter((a) => a.ab).length, "A/B tests running"),
      kpi(d.runs.length, "recent runs"), kpi(running, "runs in progress"),
      kpi(busy ?? "–", "messages queued or in flight"), kpi(dead ?? "–", "dead letters", dead ? "bad" : "")),
    card("Adapters", d.adapters.length ? table(["adapter", "active", "active success", "A/B test (successes/n: candidate vs control)", "versions", "latest"],
      d.adapters.map((a) => h("tr", { "data-adapter": a.name },
        td(vlink(a.name)), td(a.active ? pill("v" + a.active, "active") : h("span", { cls: "muted" }, "base model")),
        tdn(a.active_metrics.requests ? `${pct(a.active_metrics.successes / a.active_metrics.requests)} (${a.active_metrics.successes}/${a.active_metrics.requests})` : "–"),
        td(abCell(a)), tdn(a.versions), td(a.latest ? h("span", {}, "v" + a.latest + " ", pill(a.latest_status)) : "–")))) :
      h("p", { cls: "empty" }, "Nothing registered yet: an adapter appears here when its first version passes evaluation.")),
    card("Pipeline runs", d.runs.length ? table(["run", "adapter", "reason", "requested", "stages (ingest → enrich → train → eval → registry)", "state", "took"],
      d.runs.map((r) => h("tr", { "data-run": r.request_id },
        td(rlink(r.request_id)), td(r.adapter_name), td(r.reason), td(when(r.requested_at)),
        td(h("span", {}, stagesCell(r.stages), r.training && r.state.startsWith("trainer") ? h("span", { cls: "muted" }, ` step ${r.training.step}/${r.training.total_steps}`) : null)),
        td(pill(r.state, r.state.split(" ").pop() === "running" ? "running" : r.state.endsWith("failed") ? "failed" : r.state)),
        tdn(secs(r.seconds))))) :
      h("p", { cls: "empty" }, "No runs yet: `lorafleet train CONFIG` publishes one.")),
    svc ? card("Services", servicesTable(svc.services, false), h("p", { cls: "note" }, h("a", { href: "/services" }, "queues over time and dead letters →"))) : null,
  ];
}
function kpi(v, label, cls) { return h("div", { cls: "kpi " + (cls || "") }, h("div", { cls: "v" }, v), h("div", { cls: "l" }, label)); }

// ------------------------------------------------------------------ adapter

function renderAdapter(d) {
  const reg = d.registry;
  const out = [
    h("h1", {}, d.name, " ", d.active ? pill("active v" + d.active, "active") : pill("no active version", "waiting")),
    h("p", { cls: "sub" }, `${d.versions.length} version(s) · base model ${reg.versions[String(d.versions[0]?.version)]?.base_model ?? "–"}`),
  ];
  out.push(actionsCard(d));
  out.push(card("Versions", table(["version", "status", "lora_int_id", "rank", "created", "gate", "pass@1 (adapter)", "base pass@1", "Δ pass@1 [CI]", "requests", "success rate", "latency ms"],
    d.versions.map((v) => h("tr", { "data-version": v.version },
      td("v" + v.version), td(pill(v.status)), tdn(v.lora_int_id ?? "–"), tdn(v.rank), td(when(v.created_at)),
      td(v.gate_passed ? pill("passed") : h("span", { title: v.reasons.join("; ") }, pill("failed"))),
      tdn(fixed(v.pass_at_1), { "data-testid": `pass1-v${v.version}` }), tdn(fixed(v.base_pass_at_1)),
      tdn(v.delta_pass_at_1 == null ? "–" : `${fixed(v.delta_pass_at_1)} [${fixed(v.delta_ci[0])}, ${fixed(v.delta_ci[1])}]`),
      tdn(v.requests, { "data-testid": `requests-v${v.version}` }), tdn(v.success_rate == null ? "–" : pct(v.success_rate)),
      tdn(fmt(v.mean_latency_ms, 1)))))));
  out.push(card("Rollback chain", d.rollback_chain.length ? h("div", { cls: "chain" },
    d.rollback_chain.map((v, i) => [i ? h("span", { cls: "arrow" }, "← rollback restores") : null, pill("v" + v, i === 0 ? "active" : "retired")])) :
    h("p", { cls: "empty" }, "No active version yet: requests go to the base model."),
    h("p", { cls: "note" }, "Each rollback retires the active version and re-activates the one it replaced.")));
  out.push(abCard(d.ab));
  if (d.retrain) out.push(card("Retraining from production", h("div", {},
    stat(d.retrain.pool_size, "pool entries"), stat(d.retrain.new_since_last, "new since last retrain"),
    stat(d.retrain.threshold, "threshold"), stat(d.retrain.triggers, "retrains so far")),
    h("p", { cls: "note" }, `next scheduled ${when(d.retrain.next_scheduled)} · last trigger ${d.retrain.last_trigger ? when(d.retrain.last_trigger) + " (" + d.retrain.last_trigger_kind + ")" : "never"}`,
      d.retrain.last_request_id ? [" · ", rlink(d.retrain.last_request_id)] : null)));
  out.push(card("History", table(["when", "action", "version", "detail"],
    d.history.map((e) => h("tr", {}, td(when(e.at)), td(e.action), td(e.version ? "v" + e.version : ""), td(e.detail))))));
  return out;
}
function stat(v, label, attrs) { return h("span", { cls: "stat", ...(attrs || {}) }, h("span", { cls: "v" }, v), h("span", { cls: "l" }, label)); }

function actionsCard(d) { return once("actions", () => makeActionsCard(d)); }
function makeActionsCard(d) {
  const msg = h("div", { cls: "msg", id: "action-msg" });
  if (!actionsOn) return card("Actions", tokenBox());
  const ab = d.registry.ab;
  const traffic = h("input", { type: "number", min: 0, max: 1, step: 0.05, value: ab ? ab.traffic : 0.1, id: "traffic" });
  const version = h("input", { type: "number", min: 1, step: 1, placeholder: "version", id: "promote-version" });
  return card("Actions", h("div", { cls: "actions" }, tokenBox(),
    version, h("button", { cls: "primary", id: "promote", onclick: () => act("promote", { adapter: d.name, version: version.value ? Number(version.value) : null }, msg) }, "Promote"),
    h("button", { cls: "danger", id: "rollback", onclick: () => act("rollback", { adapter: d.name }, msg) }, "Roll back"),
    h("span", {}, "A/B traffic "), traffic, h("button", { id: "set-traffic", onclick: () => act("ab", { adapter: d.name, traffic: Number(traffic.value) }, msg) }, "Set"),
    h("button", { id: "stop-ab", onclick: () => act("ab", { adapter: d.name, stop: true }, msg) }, "Stop A/B"),
    h("button", { id: "retrain", onclick: () => act("retrain", { adapter: d.name }, msg) }, "Request retrain")),
    h("p", { cls: "note" }, "Promote without a version promotes the A/B candidate. Every action goes through the registry's compare-and-set, like the CLI."), msg);
}

function abCard(ab) {
  if (!ab) return card("A/B test", h("p", { cls: "empty" }, "No A/B test has run for this adapter yet."));
  const s = ab.ab_statistics;
  const ctrl = ab.control == null ? "base model" : "v" + ab.control;
  const last = (k) => ab.series[k].length ? ab.series[k][ab.series[k].length - 1] : null;
  const body = [
    h("p", { cls: "sub" }, `v${ab.candidate} (candidate) against ${ctrl} (control) · ${pct(ab.traffic, 0)} of requests to the candidate · started ${when(ab.started_at)} · ${ab.running ? "running" : "ended"}`),
    s ? h("div", { id: "ab-stats" },
      stat(`${s.candidate_successes}/${s.candidate_n}`, "candidate successes/n", { "data-testid": "ab-candidate" }),
      stat(`${s.control_successes}/${s.control_n}`, "control successes/n", { "data-testid": "ab-control" }),
      stat(pct(s.candidate_rate), "candidate rate"), stat(pct(s.control_rate), "control rate"),
      stat(fmt(s.p_better), "p (better)"), stat(fmt(s.p_worse), "p (worse)"),
      stat(pill(s.decision), `decision (α=${s.alpha}, ≥${s.min_samples}/arm)`, { "data-testid": "ab-decision" })) : null,
    ab.decision ? h("div", { cls: "decision " + (ab.decision.type === "adapter.promoted" ? "promote" : "rollback") },
      h("b", {}, ab.decision.type === "adapter.promoted" ? `Promoted v${ab.candidate}` : `Rolled back v${ab.candidate}`),
      ` at ${when(ab.decision.at)}: ${ab.decision.reason}`) : null,
    h("div", { cls: "legend" }, h("span", { cls: "sw", style: "background:var(--cand)" }), "candidate ",
      h("span", { cls: "sw", style: "background:var(--ctrl)" }), "control · ",
      `${ab.series.outcomes.length ? last("candidate_n") + last("control_n") : 0} outcomes since the test started; ${ab.interval}`),
    h("div", { cls: "grid" }, h("div", { id: "ab-rates", cls: "plot" }), h("div", { id: "ab-diff", cls: "plot" })),
  ];
  later(() => {
    const x = ab.series.outcomes;
    if (!x.length) { document.getElementById("ab-rates").append(h("p", { cls: "empty" }, "No outcomes yet.")); return; }
    plot(document.getElementById("ab-rates"), "success rate as outcomes arrive", [
      { label: "candidate", stroke: "#e8590c", width: 2 }, { label: "control", stroke: "#3b5bdb", width: 2 }],
      [x, ab.series.candidate_rate, ab.series.control_rate], { xlabel: "outcomes", y: { range: [0, 1] } });
    const zero = x.map(() => 0);
    plot(document.getElementById("ab-diff"), "difference (candidate − control) and its interval", [
      { label: "high", stroke: "#ffa94d", width: 1 }, { label: "low", stroke: "#ffa94d", width: 1 },
      { label: "0", stroke: "#868e96", dash: [4, 4], width: 1 }],
      [x, ab.series.diff_high, ab.series.diff_low, zero],
      { xlabel: "outcomes", bands: [{ series: [1, 2], fill: "rgba(255,169,77,0.25)" }] });
  });
  return card("A/B test", ...body);
}

// ------------------------------------------------------------------ run

function renderRun(d) {
  const t0 = Date.parse(d.requested_at);
  const ends = d.stages.map((s) => s.ended_at ? Date.parse(s.ended_at) : (s.started_at ? Date.now() : t0));
  const span = Math.max(1, Math.max(...ends) - t0);
  const timeline = h("div", { cls: "timeline" }, d.stages.map((s) => {
    const a = s.started_at ? Date.parse(s.started_at) - t0 : 0;
    const b = (s.ended_at ? Date.parse(s.ended_at) : Date.now()) - t0;
    const bar = s.started_at ? h("div", { cls: "bar " + s.state, style: `left:${100 * a / span}%;width:${Math.max(0.4, 100 * (b - a) / span)}%` }) : null;
    return [h("div", {}, s.service, s.shards ? h("span", { cls: "muted" }, ` ${s.shards.done}/${s.shards.total} shards`) : null),
      h("div", { cls: "track", title: s.failures.map((f) => f.error).join("\n") }, bar),
      h("div", { "data-stage": s.service }, pill(s.state), " ", s.seconds != null ? secs(s.seconds) : "",
        s.started_at ? h("span", { cls: "muted" }, ` · ${clock(s.started_at)}`) : null,
        s.failures.length ? h("span", { cls: "msg err" }, ` ${s.failures.length} failure(s)`) : null)];
  }));
  const tr = d.training;
  const out = [
    h("h1", {}, "Run ", h("span", { cls: "mono" }, d.request_id)),
    h("p", { cls: "sub" }, vlink(d.adapter_name), ` · ${d.reason} · requested ${when(d.requested_at)} · `, pill(d.row.state, d.row.state.endsWith("running") ? "running" : d.row.state.endsWith("failed") ? "failed" : d.row.state)),
    card("Stages", timeline, h("p", { cls: "note" }, "From each stage's input event to its output event (the time is when it started); failures are the stage's .failed events, dead letters are listed under Events.")),
    card("Training", tr.step.length ? h("div", {},
      h("div", {}, stat(`${tr.last.step}/${tr.last.total_steps}`, "step", { "data-testid": "train-step" }),
        stat(fmt(tr.last.loss), "loss", { "data-testid": "train-loss" }), stat(fmt(tr.last.tokens_per_second, 0), "tokens/s"),
        stat(tr.last.eta_seconds != null ? secs(tr.last.eta_seconds) : "–", "eta")),
      h("div", { cls: "grid" }, h("div", { id: "loss-plot", cls: "plot" }), h("div", { id: "pass-plot", cls: "plot" }))) :
      h("p", { cls: "empty" }, "No training progress yet.")),
  ];
  if (tr.step.length) later(() => {
    plot(document.getElementById("loss-plot"), "loss", [
      { label: "train loss", stroke: "#3b5bdb", width: 2, spanGaps: true },
      { label: "eval loss", stroke: "#e8590c", width: 2, spanGaps: true, points: { show: true } }],
      [tr.step, tr.loss, tr.eval_loss], { xlabel: "step" });
    plot(document.getElementById("pass-plot"), "eval pass@1 (generation, validation subset)", [
      { label: "pass@1", stroke: "#2b8a3e", width: 2, spanGaps: true, points: { show: true } }],
      [tr.step, tr.eval_pass_at_1], { xlabel: "step", y: { range: [0, 1] } });
  });
  out.push(evaluationCard(d.evaluation, d.report_url));
  out.push(card("Events", table(["time", "event", "detail"],
    d.events.map((e) => h("tr", {}, td(clock(e.at)), td(h("span", { cls: "mono" }, e.type)), td(e.summary)))),
    h("p", { cls: "note" }, `plus ${d.progress_events} training.progress events (the curves above)`)));
  return out;
}

function evaluationCard(ev, url) {
  if (!ev) return card("Evaluation", h("p", { cls: "empty" }, "Not evaluated yet."));
  const vs = ev.variants;
  const dl = ev["delta_pass@1"];
  return card("Evaluation", h("div", {},
    h("p", {}, `v${ev.version} · gate `, pill(ev.gate_passed ? "passed" : "failed"), " · from ", ev.source,
      url ? [" · ", h("a", { href: url, id: "report-link" }, "full HTML report")] : null),
    dl ? h("p", { id: "delta" }, h("b", {}, "Δ pass@1 (adapter − base) = "), h("span", { "data-testid": "delta-mean" }, fixed(dl.mean, 4)),
      ` ${Math.round(100 * dl.confidence)}% bootstrap CI [`, h("span", { "data-testid": "delta-low" }, fixed(dl.low, 4)), ", ",
      h("span", { "data-testid": "delta-high" }, fixed(dl.high, 4)), `] over ${dl.problems} problems`) : null,
    h("div", { cls: "grid" },
      h("div", {}, h("h2", {}, "Scores"), table(["metric", ...vs], ev.scores.map((r) => h("tr", {}, td(r.metric), vs.map((v) => tdn(fmt(r[v], 4), { "data-testid": `score-${r.metric}-${v}` })))))),
      h("div", {}, h("h2", {}, "Gate"), table(["criterion", "measured", "threshold", "result"], ev.gate.map((c) => h("tr", {},
        td(c.name), tdn(fmt(c.measured, 4)), tdn(`${c.comparison} ${fmt(c.threshold, 4)}`), td(pill(c.passed ? "passed" : "failed"))))))),
    h("div", { cls: "grid" },
      h("div", {}, h("h2", {}, "pass@1 by source"), table(["source", "problems", ...vs], ev.by_source.map((r) => h("tr", {}, td(r.source), tdn(r.problems), vs.map((v) => tdn(fmt(r[v], 4))))))),
      Object.keys(ev.latency).length ? h("div", {}, h("h2", {}, "Latency"), table(["metric", ...Object.keys(ev.latency)],
        ["ttft_s_median", "tpot_s_median", "output_tokens_mean", "requests"].map((k) => h("tr", {}, td(k), Object.keys(ev.latency).map((v) => tdn(fmt(ev.latency[v][k], 4)))))),
        h("p", { cls: "note" }, `latency increase ${ev.latency_increase == null ? "–" : pct(ev.latency_increase)}`)) : null)));
}

// ------------------------------------------------------------------ services

const PALETTE = ["#3b5bdb", "#e8590c", "#2b8a3e", "#c2255c", "#7048e8", "#0c8599", "#f08c00", "#495057"];

function servicesTable(rows, withPlots) {
  return table(["service", "pending", "in flight", "redelivered", "replicas waiting", "DLQ", "lost"],
    rows.map((s) => h("tr", { "data-service": s.service },
      td(s.service), tdn(s.pending), tdn(s.ack_pending), tdn(s.redelivered), tdn(s.waiting_pulls),
      tdn(s.dead_letters ? h("b", { style: "color:var(--bad)" }, s.dead_letters) : 0), tdn(s.max_delivery_advisories))));
}

function renderServices(d) {
  const now = Date.now() / 1000;
  const letters = d.dead_letters;
  const msg = once("services-msg", () => h("div", { cls: "msg", id: "action-msg" }));
  const out = [
    h("h1", {}, "Services"),
    h("p", { cls: "sub" }, `stream ${d.stream.name}: ${d.stream.messages} events, ${(d.stream.bytes / 1e6).toFixed(1)} MB (seq ${d.stream.first_seq}..${d.stream.last_seq}) on ${d.servers.join(", ")}`),
    card("Consumers", servicesTable(d.services, true),
      h("p", { cls: "note" }, "pending: not yet delivered · in flight: delivered, not acked · replicas waiting: pull requests waiting for work (one per idle replica) · DLQ: dead letters · lost: max-delivery advisories")),
    card("Queues over the last minutes", h("div", { cls: "grid", id: "svc-plots" }),
      h("p", { cls: "note" }, "Sampled every 5 s by this dashboard process and kept in its memory for 10 minutes (a restarted dashboard starts a new plot).")),
    card(`Dead letters (${letters.length})`, letters.length ? table(["seq", "service", "reason", "error", "subject", "deliveries", "when", ""],
      letters.map((l) => h("tr", { "data-dlq": l.seq }, tdn(l.seq), td(l.service), td(pill(l.reason, "failed")), td(h("span", { cls: "mono", title: l.error_detail }, l.error)),
        td(h("span", { cls: "mono" }, l.subject)), tdn(l.num_delivered ?? "–"), td(when(l.at)),
        td(actionsOn ? h("button", { onclick: (e) => act("replay", { seq: l.seq }, msg) }, "Replay") : "")))) :
      h("p", { cls: "empty" }, "No dead letters."), actionsOn ? h("div", { cls: "actions" }, tokenBox()) : tokenBox(), msg),
  ];
  later(() => {
    const box = document.getElementById("svc-plots");
    const hist = d.history || { t: [], services: {} };
    const names = Object.keys(hist.services);
    if (!hist.t.length) { box.append(h("p", { cls: "empty" }, "The first sample comes within 5 s.")); return; }
    const x = hist.t.map((t) => Math.round(t - now));
    const series = names.map((n, i) => ({ label: n, stroke: PALETTE[i % PALETTE.length], width: 2, spanGaps: true }));
    const xr = [Math.min(-60, x[0]), 0];
    const yr = { range: (u, lo, hi) => [0, Math.max(1, hi)] };
    const waiting = names.map((n) => hist.services[n].pending.map((v, j) => v === null ? null : v + hist.services[n].ack_pending[j]));
    const a = h("div", { cls: "plot" }), b = h("div", { cls: "plot" });
    box.append(a, b);
    plot(a, "pending + in flight, per service", series, [x, ...waiting], { xlabel: "seconds ago", height: 200, xrange: xr, y: yr });
    plot(b, "redelivered (cumulative), per service", series, [x, ...names.map((n) => hist.services[n].redelivered)], { xlabel: "seconds ago", height: 200, xrange: xr, y: yr });
  });
  return out;
}

// ------------------------------------------------------------------ start

const RENDER = { overview: renderOverview, adapter: renderAdapter, run: renderRun, services: renderServices };
if (RENDER[page]) {
  refresh();
  connectFeed();
  if (page === "services" || page === "overview") setInterval(schedule, 2000);
  // Pages refresh on events; while the bus is down the health check notices its return.
  setInterval(async () => { try { setBus(await getJSON("/api/health")); } catch (e) { /* dashboard itself down: EventSource retries */ } }, 5000);
} else {
  connectFeed();
}
