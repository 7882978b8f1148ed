// The status page: one server-sent event stream (/api/events) keeps everything live.
"use strict";

const COLORS = {
  pending: "#d0d0d0", applying: "#6fa8dc", converged: "#93c47d", differs: "#ffd966",
  retrying: "#f6b26b", failed: "#e06666",
};
const MAX_EVENTS = 200;
const state = {
  vertices: new Map(), rows: new Map(), preds: new Map(), succs: new Map(),
  graphVersion: -1, scale: 1, x: 0, y: 0,
};
const SETTLED = new Set(["converged", "differs"]);
// Vertex updates are drawn in batches: a 1,000-resource graph converging sends thousands, and
// redrawing the counts and the search per update froze the page for seconds.
const pending = new Map();
let flushing = null;

function $(id) { return document.getElementById(id); }

function text(tag, content, cls) {
  const el = document.createElement(tag);
  el.textContent = content;
  if (cls) el.className = cls;
  return el;
}

function ago(seconds) {
  if (!seconds) return "";
  const d = Math.max(0, Date.now() / 1000 - seconds);
  if (d < 60) return `${d.toFixed(0)}s ago`;
  if (d < 3600) return `${(d / 60).toFixed(0)}min ago`;
  return `${(d / 3600).toFixed(1)}h ago`;
}

function ms(value) { return value === null || value === undefined ? "–" : `${value} ms`; }

// The picture ----------------------------------------------------------------------------

async function drawGraph(version) {
  if (version === state.graphVersion) return;
  state.graphVersion = version;
  const reply = await fetch("/graph.svg", { cache: "no-store" });
  const box = $("graph");
  if (!reply.ok) { box.textContent = await reply.text(); return; }
  box.innerHTML = await reply.text();
  for (const v of state.vertices.values()) paint(v);
  applySearch();
  if (state.scale === 1 && state.x === 0) fit();
}

function paint(v) {
  const node = document.getElementById(v.id);
  if (!node) return;
  node.setAttribute("data-state", v.state);
  for (const shape of node.querySelectorAll("polygon, path, ellipse")) {
    shape.setAttribute("fill", COLORS[v.state]);
  }
}

function transform() {
  $("graph").style.transform = `translate(${state.x}px, ${state.y}px) scale(${state.scale})`;
}

function zoom(factor) { state.scale = Math.min(8, Math.max(0.05, state.scale * factor)); transform(); }

function fit() {
  const svg = $("graph").querySelector("svg");
  const view = $("viewport");
  if (!svg) return;
  const w = svg.width.baseVal.value || 1, h = svg.height.baseVal.value || 1;
  state.scale = Math.min(1, view.clientWidth / w, view.clientHeight / h);
  state.x = 0; state.y = 0;
  transform();
}

function setupPanZoom() {
  const view = $("viewport");
  view.addEventListener("wheel", (e) => { e.preventDefault(); zoom(e.deltaY < 0 ? 1.15 : 1 / 1.15); }, { passive: false });
  let drag = null;
  view.addEventListener("mousedown", (e) => { drag = { x: e.clientX - state.x, y: e.clientY - state.y }; });
  window.addEventListener("mouseup", () => { drag = null; });
  window.addEventListener("mousemove", (e) => {
    if (!drag) return;
    state.x = e.clientX - drag.x; state.y = e.clientY - drag.y; transform();
  });
  $("zoom-in").onclick = () => zoom(1.25);
  $("zoom-out").onclick = () => zoom(0.8);
  $("zoom-fit").onclick = fit;
}

// Search: matching resources are outlined in the picture; the table shows only them.

function applySearch() {
  const q = $("search").value.trim().toLowerCase();
  for (const node of document.querySelectorAll("#graph g.node")) {
    const hit = q !== "" && node.id.toLowerCase().includes(q);
    node.classList.toggle("match", hit);
    node.classList.toggle("dim", q !== "" && !hit);
  }
  for (const row of $("vertices").children) {
    row.classList.toggle("hidden", q !== "" && !row.dataset.id.toLowerCase().includes(q));
  }
}

// Enter in the search box: the first match, centred at full size (a 1,000-resource graph
// fits the window only when small).
function focusFirstMatch() {
  const node = document.querySelector("#graph g.node.match");
  if (!node) return;
  const view = $("viewport").getBoundingClientRect();
  const box = $("graph").getBoundingClientRect(), r = node.getBoundingClientRect();
  const x = (r.left - box.left) / state.scale, y = (r.top - box.top) / state.scale;
  const w = r.width / state.scale, h = r.height / state.scale;
  state.scale = 1;
  state.x = view.width / 2 - x - w / 2;
  state.y = view.height / 2 - y - h / 2;
  transform();
}

// Tables and lists -----------------------------------------------------------------------

function row(v) {
  let tr = state.rows.get(v.id);
  if (!tr) {
    tr = document.createElement("tr");
    tr.dataset.id = v.id;
    state.rows.set(v.id, tr);
    $("vertices").appendChild(tr);
  }
  tr.dataset.state = v.state;
  const waits = v.state === "pending" ? waitsFor(v.id) : "";
  tr.replaceChildren(
    text("td", v.id), text("td", v.unwatched ? `${v.state}, unwatched` : v.state, `state ${v.state}`), text("td", ago(v.since)),
    text("td", waits || v.last_change || ""), text("td", nextTry(v) + (v.error || "")),
  );
}

// A retrying resource's next attempt and how many are left, as `mgmt status` says them.
function nextTry(v) {
  if (!v.next_try) return "";
  const left = v.tries_left < 0 ? "retrying for ever" : `${v.tries_left} left`;
  return `next try ${new Date(v.next_try * 1000).toLocaleTimeString()} (${left}); `;
}

// What a pending resource waits for: its dependencies not converged, with their states.
function waitsFor(id) {
  const waits = (state.preds.get(id) || []).map((p) => state.vertices.get(p))
    .filter((p) => p && !SETTLED.has(p.state)).map((p) => `${p.id} (${p.state})`);
  return waits.length ? `waits for ${waits.join(", ")}` : "";
}

function counts() {
  const tally = { pending: 0, applying: 0, converged: 0, differs: 0, retrying: 0, failed: 0 };
  for (const v of state.vertices.values()) tally[v.state] += 1;
  $("counts").replaceChildren(...Object.entries(tally).map(([k, n]) => {
    const li = text("li", `${k}: ${n}`);
    li.dataset.state = k; li.dataset.count = String(n);
    return li;
  }));
}

function addEvent(e) {
  const time = new Date(e.time * 1000).toLocaleTimeString();
  const latency = e.latency_ms === null ? "" : ` (${e.latency_ms} ms after the event)`;
  const li = text("li", `${time} ${e.id}: ${e.what}: ${e.message}${latency}`, e.what);
  li.dataset.id = e.id; li.dataset.what = e.what;
  const list = $("events");
  list.insertBefore(li, list.firstChild);
  while (list.children.length > MAX_EVENTS) list.removeChild(list.lastChild);
}

function kinds(data) {
  $("kinds").querySelector("tbody").replaceChildren(...Object.entries(data).sort().map(([kind, s]) => {
    const tr = document.createElement("tr");
    tr.append(text("td", kind), text("td", String(s.count)), text("td", ms(s.p50_ms)),
      text("td", ms(s.p90_ms)), text("td", ms(s.p99_ms)));
    return tr;
  }));
}

// Every host of the cluster (absent when the agent is not clustered).
function hosts(rows) {
  $("cluster").hidden = rows.length === 0;
  $("hosts").replaceChildren(...rows.map((h) => {
    const tr = document.createElement("tr");
    tr.dataset.host = h.host; tr.dataset.state = h.state;
    const since = h.since ? ` (since ${new Date(h.since * 1000).toLocaleTimeString()})` : "";
    tr.append(
      text("td", h.host), text("td", h.state, `state ${h.state}`),
      text("td", h.stale ? "?" : h.converged && h.alive ? `yes${since}` : "no"),
      // An unsigned or unverified deploy (--allow-unsigned-deploys) says so, as in the table.
      text("td", h.running ? `${h.running}${h.warning ? ` (${h.warning})` : ""}` : "–",
        h.warning ? "unsigned" : ""),
      text("td", h.reports ? String(h.resources) : "–"),
      text("td", h.reports ? String(h.failed) : "–"),
      text("td", [h.refused ? `refused ${h.refused}: ${h.error}` : h.error,
        h.program_error ? `program: ${h.program_error}` : "", h.last_error].filter(Boolean).join("; ")),
    );
    return tr;
  }));
}

// Meta reverse of resources that left the graph and failed: `retrying` (a retry is due) or
// `failed` (kept for the next run, SIGHUP retries), coloured as a resource in that state.
function reversals(rows) {
  $("reversals").hidden = rows.length === 0;
  $("unreversed").replaceChildren(...rows.map((r) => {
    const tr = document.createElement("tr");
    tr.dataset.id = r.id; tr.dataset.state = r.state;
    tr.append(text("td", r.id), text("td", r.state, `state ${r.state}`), text("td", r.error));
    return tr;
  }));
}

// The cluster has no quorum ("": it has): the rows are as this host's member last knew them.
function clusterNote(note) {
  $("clusternote").hidden = !note;
  $("clusternote").textContent = note;
}

// Resources the kernel's inotify limit leaves unwatched (0: none): their drift goes unseen.
// `limit`: the sysctl that does it (fs.inotify.max_user_instances: no instance at all).
function unwatched(count, limit) {
  const out = limit === "fs.inotify.max_user_instances" ? "no inotify instance left, until the agent restarts" : "out of inotify watches";
  $("unwatched").hidden = !count;
  $("unwatched").textContent = count ? `${count} resource${count === 1 ? "" : "s"} unwatched: ${out}, their drift is unseen until they are checked again (the agent's log says which limit to raise)` : "";
}

// What is wrong with the program ("": nothing): the host does not run what it was asked to.
function program(error) {
  $("program").hidden = !error;
  $("program").textContent = error ? `program error: ${error}` : "";
}

// The deploy the host runs, and a newer one it refused (null: it runs no deploys).
function deploy(d) {
  const el = $("deploy");
  el.hidden = !d;
  if (!d) return;
  let line = d.running ? `deploy ${d.running}${d.warning ? ` (${d.warning})` : ""}` : "no deploy yet: waiting for the first";
  if (d.refused) line += `; refused deploy ${d.refused}: ${d.error}`;
  el.dataset.refused = String(Boolean(d.refused));
  el.textContent = line;
}

function converged(flag, since) {
  const el = $("converged");
  el.dataset.converged = String(flag);
  el.textContent = flag ? `converged (since ${new Date(since * 1000).toLocaleTimeString()})` : "converging";
}

// The stream -----------------------------------------------------------------------------

function onSnapshot(s) {
  $("host").textContent = s.host;
  state.vertices = new Map(s.vertices.map((v) => [v.id, v]));
  state.preds = new Map(); state.succs = new Map();
  for (const e of s.edges) {
    if (!state.preds.has(e.to)) state.preds.set(e.to, []);
    state.preds.get(e.to).push(e.from);
    if (!state.succs.has(e.from)) state.succs.set(e.from, []);
    state.succs.get(e.from).push(e.to);
  }
  pending.clear();
  state.rows.clear();
  $("vertices").replaceChildren();
  for (const v of state.vertices.values()) row(v);
  $("events").replaceChildren();
  for (const e of s.events) addEvent(e);
  kinds(s.kinds);
  counts();
  converged(s.converged, s.converged_since);
  program(s.program_error);
  unwatched(s.unwatched, s.unwatched_limit);
  reversals(s.reversals);
  deploy(s.deploy);
  hosts(s.hosts);
  clusterNote(s.cluster_note);
  drawGraph(s.graph_version);
}

function onUpdate(u) {
  if (u.type === "snapshot") return onSnapshot(u);
  if (u.type === "vertex") {
    state.vertices.set(u.id, u);
    pending.set(u.id, u);
    flushing ??= setTimeout(flush, 20);
  } else if (u.type === "event") {
    addEvent(u);
  } else if (u.type === "hosts") {
    hosts(u.hosts);
  } else if (u.type === "cluster") {
    clusterNote(u.note);
  } else if (u.type === "program") {
    program(u.error);
  } else if (u.type === "reversals") {
    reversals(u.reversals);
  } else if (u.type === "deploy") {
    deploy(u.deploy);
  } else if (u.type === "converged") {
    converged(u.converged, u.since);
  } else if (u.type === "graph" || u.type === "unwatched") {  // (which ones: in the rows)
    fetch("/api/status", { cache: "no-store" }).then((r) => r.json()).then(onSnapshot);
  }
}

function flush() {
  flushing = null;
  const waiting = new Set();  // pending dependents of a changed vertex: what they wait for changed
  for (const v of pending.values()) {
    row(v); paint(v);
    for (const id of state.succs.get(v.id) || []) waiting.add(id);
  }
  for (const id of waiting) {
    const v = state.vertices.get(id);
    if (v && v.state === "pending" && !pending.has(id)) row(v);
  }
  pending.clear();
  counts();
  applySearch();
}

function connect() {
  const source = new EventSource("/api/events");
  source.onmessage = (m) => onUpdate(JSON.parse(m.data));
  source.onerror = () => { $("converged").textContent = "disconnected: reconnecting…"; };
}

window.addEventListener("DOMContentLoaded", () => {
  setupPanZoom();
  $("search").addEventListener("input", applySearch);
  $("search").addEventListener("keydown", (e) => { if (e.key === "Enter") focusFirstMatch(); });
  connect();
  setInterval(() => { for (const tr of $("vertices").children) { const v = state.vertices.get(tr.dataset.id); if (v) tr.children[2].textContent = ago(v.since); } }, 5000);
});
