// The Impetus dashboard: polls /v1/dashboard/state, follows the daemon's events
// over SSE, and chats through /v1/chat/completions. No libraries, no build step.
"use strict";

const $ = (id) => document.getElementById(id);
const KEY = "impetus.apiKey";
let state = null;
const WINDOW_S = 600; // the charts show the last 10 minutes
const cpu = [], mem = []; // {t, v}: seconds since the epoch, value
const rates = new Map(); // model -> [{t, v}]: decode tok/s of its finished requests
const PALETTE = ["#2f6fdb", "#d9480f", "#2b8a3e", "#ae3ec9", "#e67700", "#0b7285"];

function el(tag, props = {}, ...children) {
  const node = Object.assign(document.createElement(tag), props);
  for (const child of children) node.append(child);
  return node;
}

function bytes(n) {
  if (n == null) return "–";
  const units = ["B", "KB", "MB", "GB", "TB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return `${n.toFixed(i ? 1 : 0)} ${units[i]}`;
}

function duration(s) {
  if (s == null) return "–";
  if (s < 90) return `${Math.round(s)}s`;
  if (s < 5400) return `${Math.round(s / 60)}m`;
  return `${(s / 3600).toFixed(1)}h`;
}

const fixed = (x, d = 1) => (x == null ? "–" : Number(x).toFixed(d));

// --- talking to the shim -------------------------------------------------------------
function headers(json) {
  const h = {};
  const key = sessionStorage.getItem(KEY);
  if (key) h.Authorization = `Bearer ${key}`;
  if (json) h["Content-Type"] = "application/json";
  return h;
}

async function request(path, options = {}) {
  const response = await fetch(path, options);
  if (response.status === 401) {
    $("key-form").hidden = false;
    $("key-button").hidden = false;
    throw new Error("this shim needs its API key");
  }
  if (!response.ok) {
    let message = `${response.status} ${response.statusText}`;
    try { message = (await response.json()).error.message; } catch (e) { /* not JSON */ }
    throw new Error(message);
  }
  return response;
}

const get = async (path) => (await request(path, { headers: headers(false) })).json();

function post(path, body, signal) {
  return request(path, { method: "POST", headers: headers(true), body: JSON.stringify(body), signal });
}

function showError(err) {
  if (err && err.name === "AbortError") return;
  $("error").textContent = err ? String(err.message || err) : "";
  $("error").hidden = !err;
}

// Server-sent events from a fetch (EventSource cannot send the API key).
async function readEvents(response, onData) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += decoder.decode(value, { stream: true });
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      const data = block.split("\n").filter((l) => l.startsWith("data:")).map((l) => l.slice(5).trim()).join("\n");
      if (data === "[DONE]") return;
      if (data) onData(JSON.parse(data));
    }
  }
}

// --- state ----------------------------------------------------------------------------
let unreachable = false; // the error shown is the poll's own (cleared by the next good poll)

async function refresh() {
  try {
    state = await get("/v1/dashboard/state");
    if (unreachable) showError(null);
    unreachable = false;
    render();
  } catch (err) {
    $("status").textContent = "unreachable";
    $("status").className = "badge down";
    showError(err);
    unreachable = true;
  }
}

function render() {
  const { health, models, loaded } = state;
  const status = $("status");
  status.textContent = health.status;
  status.className = `badge ${health.status === "ok" ? "ok" : health.status === "degraded" ? "degraded" : "down"}`;
  const thermal = health.thermal ? health.thermal.level : "unknown";
  const failed = health.failures.map((f) => `${f.name} (${f.state})`).join(", ");
  $("facts").textContent = `v${state.version} · up ${duration(health.uptime_s)} · thermal ${thermal} · ${health.in_flight} in flight` + (failed ? ` · failed: ${failed}` : "");
  renderModels(models.models);
  renderLoaded(loaded);
  renderNodes(health.nodes || []);
  renderPicker(models.models);
  // until the user picks, the playground follows the first loaded model
  const select = $("chat-model");
  if (!select.dataset.picked && loaded.models.length) select.value = loaded.models[0].name;
}

// Rows and cards are rebuilt only when what they show changes, so a control
// keeps its focus between polls.
let modelsShown = "";

function renderModels(entries) {
  const available = entries.filter((m) => m.available);
  const signature = JSON.stringify(available.map((m) => [m.name, m.format, m.size_bytes, m.loaded]));
  if (signature === modelsShown) return;
  modelsShown = signature;
  $("models").replaceChildren(...available.map((m) => {
    const load = el("button", { type: "button", textContent: m.loaded ? "Loaded" : "Load", disabled: m.loaded });
    load.addEventListener("click", () => act("load", m.name, load));
    const remove = el("button", { type: "button", textContent: "Remove" });
    remove.addEventListener("click", () => { if (confirm(`Remove ${m.name} from disk?`)) act("remove", m.name, remove); });
    const row = el("tr", {}, el("td", { textContent: m.name }), el("td", { textContent: m.format || "–" }), el("td", { className: "num", textContent: bytes(m.size_bytes) }), el("td", {}, load, " ", remove));
    row.dataset.model = m.name;
    return row;
  }));
}

const cards = new Map(); // model name -> its card's parts

function modelCard(name) {
  const unload = el("button", { type: "button", textContent: "Unload" });
  unload.addEventListener("click", () => act("unload", name, unload));
  const parts = { backend: el("span", { className: "muted" }), bar: el("progress", { className: "memory" }), info: el("div", { className: "muted" }) };
  parts.bar.setAttribute("aria-label", `${name} memory`);
  parts.card = el("div", { className: "model" }, el("div", { className: "head" }, el("span", { className: "name", textContent: name }), parts.backend, el("span", { className: "spacer" }), unload), parts.bar, parts.info);
  parts.card.dataset.model = name;
  return parts;
}

function renderLoaded(loaded) {
  const budget = loaded.memory ? loaded.memory.budget_bytes : 0;
  $("budget").textContent = loaded.memory ? `${bytes(loaded.memory.used_bytes)} of ${bytes(budget)} budget (${loaded.memory.source})` : "";
  const names = loaded.models.map((m) => m.name);
  for (const name of [...cards.keys()]) if (!names.includes(name)) { cards.get(name).card.remove(); cards.delete(name); }
  $("no-model").hidden = names.length > 0;
  for (const m of loaded.models) {
    if (!cards.has(m.name)) { cards.set(m.name, modelCard(m.name)); $("loaded").append(cards.get(m.name).card); }
    const parts = cards.get(m.name);
    parts.backend.textContent = `${m.backend} · pid ${m.pid}`;
    parts.bar.max = budget || m.memory_bytes || 1;
    parts.bar.value = m.memory_bytes;
    const expiry = m.keep_alive_s == null ? "stays loaded" : m.expires_in_s == null ? "busy" : `unloads in ${duration(m.expires_in_s)}`;
    const gpu = m.gpu_memory_bytes ? ` · GPU ${bytes(m.gpu_memory_bytes)}${m.estimate && m.estimate.gpu_layers ? ` (${m.estimate.gpu_layers} layers)` : ""}` : "";
    parts.info.textContent = `${bytes(m.memory_bytes)}${gpu} · ${m.in_flight} in flight · ${m.requests} requests · decode ${fixed(m.decode_tps)} tok/s · ${expiry}`;
  }
}

// Compute nodes (daemon.health's view: probed every 10 s; a port serving a model is not probed).
let nodesShown = "";

function renderNodes(nodes) {
  $("nodes-section").hidden = nodes.length === 0;
  const signature = JSON.stringify(nodes.map((n) => [n.name, n.address, n.clients, n.state, n.free_bytes, n.total_bytes, n.memory_limit_bytes, n.held_bytes, n.latency_ms, n.used_by, n.error]));
  if (signature === nodesShown) return;
  nodesShown = signature;
  $("nodes").replaceChildren(...nodes.map((n) => {
    const address = n.clients > 1 ? `${n.address} (+${n.clients - 1})` : n.address;
    const badge = el("span", { className: `badge ${n.state === "ready" ? "ok" : n.state === "busy" ? "degraded" : n.state === "unreachable" ? "down" : ""}`, textContent: n.state });
    if (n.error) badge.title = n.error;
    const limit = n.memory_limit_bytes != null ? ` · cap ${bytes(n.memory_limit_bytes)}` : "";
    const held = n.held_bytes ? ` · ${bytes(n.held_bytes)} held` : "";
    const memory = n.total_bytes != null ? `${bytes(n.free_bytes)} free of ${bytes(n.total_bytes)}${limit}${held}` : `–${limit}${held}`;
    const latency = n.latency_ms != null ? `${fixed(n.latency_ms)} ms` : "–";
    const row = el("tr", {},
      el("td", { textContent: n.name }), el("td", { textContent: address }), el("td", {}, badge),
      el("td", { className: "memory", textContent: memory }), el("td", { className: "num", textContent: latency }),
      el("td", { className: "used-by", textContent: (n.used_by || []).join(", ") || "–" }));
    row.dataset.node = n.name;
    return row;
  }));
}

function renderPicker(entries) {
  const names = entries.filter((m) => m.available).map((m) => m.name);
  for (const [id, blank] of [["chat-model", false], ["chat-model2", true]]) {
    const select = $(id);
    const current = [...select.options].map((o) => o.value).filter((v) => v);
    if (current.join("\n") === names.join("\n")) continue;
    const chosen = select.value;
    select.replaceChildren(...(blank ? [el("option", { value: "", textContent: "—" })] : []), ...names.map((n) => el("option", { value: n, textContent: n })));
    if (names.includes(chosen)) select.value = chosen;
  }
}

async function act(what, model, button) {
  button.disabled = true;
  try {
    await post(`/v1/dashboard/${what}`, { model });
    showError(null);
  } catch (err) {
    showError(err);
  }
  await refresh();
}

// --- events: the request feed and the charts ----------------------------------------
function onEvent(note) {
  const event = note.event;
  if (!event) return;
  if (event.kind === "request.finished") addRequest(event);
  else if (event.kind === "hardware.sample") addSample(event.data);
  else if (event.kind.startsWith("model.") || event.kind.startsWith("thermal.")) refresh();
}

function addRequest(event) {
  const u = event.data.usage || {}, t = event.data.timings || {};
  const cells = [new Date(event.time * 1000).toLocaleTimeString(), event.model, u.prompt_tokens, u.completion_tokens, u.cached_tokens ?? 0, t.ttft_ms == null ? "–" : `${fixed(t.ttft_ms, 0)} ms`, fixed(t.decode_tps), event.data.finish_reason];
  const row = el("tr", {}, ...cells.map((c, i) => el("td", { className: i > 1 && i < 7 ? "num" : "", textContent: c ?? "–" })));
  $("feed").prepend(row);
  while ($("feed").rows.length > 50) $("feed").deleteRow(-1);
  if (t.decode_tps != null) {
    if (!rates.has(event.model)) rates.set(event.model, []);
    rates.get(event.model).push({ t: event.time, v: t.decode_tps });
    drawCharts();
  }
}

function addSample(snapshot) {
  const monitors = Object.values(snapshot.monitors || {});
  const m = monitors.find((x) => x && x.cpu_percent != null) || monitors.find((x) => x && x.memory_percent != null);
  if (!m) return;
  const t = snapshot.time || Date.now() / 1000;
  if (m.cpu_percent != null) cpu.push({ t, v: m.cpu_percent });
  if (m.memory_percent != null) mem.push({ t, v: m.memory_percent });
  $("cpu-now").textContent = cpu.length ? `${fixed(cpu[cpu.length - 1].v, 0)} %` : "";
  $("mem-now").textContent = mem.length ? `${fixed(mem[mem.length - 1].v, 0)} %` : "";
  drawCharts();
}

function trim(series, now) {
  while (series.length && series[0].t < now - WINDOW_S) series.shift();
}

function drawCharts() {
  const now = Date.now() / 1000;
  for (const series of [cpu, mem, ...rates.values()]) trim(series, now);
  for (const [model, series] of rates) if (!series.length) rates.delete(model);
  drawChart($("cpu-chart"), [{ series: cpu }], 100, now);
  drawChart($("mem-chart"), [{ series: mem }], 100, now);
  const lines = [...rates].map(([model, series], i) => ({ model, series, color: PALETTE[i % PALETTE.length] }));
  const top = Math.max(1, ...lines.flatMap((l) => l.series.map((p) => p.v)));
  drawChart($("tps-chart"), lines, top * 1.1, now);
  $("tps-legend").replaceChildren(
    ...lines.map((l) => {
      const item = el("span", { className: "legend", textContent: `${l.model} ${fixed(l.series[l.series.length - 1].v)} tok/s` });
      item.style.setProperty("--swatch", l.color); // CSSOM, which the page's CSP allows
      return item;
    }),
  );
}

// One line per series over the last WINDOW_S seconds; x is time, y runs 0..top.
function drawChart(canvas, lines, top, now) {
  const ctx = canvas.getContext("2d"), w = canvas.width, h = canvas.height;
  const style = getComputedStyle(document.documentElement);
  ctx.clearRect(0, 0, w, h);
  ctx.lineWidth = 2;
  for (const line of lines) {
    ctx.strokeStyle = line.color || style.getPropertyValue("--accent").trim() || "#2f6fdb";
    ctx.fillStyle = ctx.strokeStyle;
    ctx.beginPath();
    line.series.forEach((p, i) => {
      const x = w - ((now - p.t) / WINDOW_S) * w, y = h - (Math.min(p.v, top) / top) * (h - 4) - 2;
      i ? ctx.lineTo(x, y) : ctx.moveTo(x, y);
    });
    ctx.stroke();
    if (line.series.length === 1) {
      const p = line.series[0];
      ctx.fillRect(w - ((now - p.t) / WINDOW_S) * w - 2, h - (Math.min(p.v, top) / top) * (h - 4) - 4, 4, 4);
    }
  }
}

async function followEvents() {
  for (;;) {
    try {
      const response = await request("/v1/dashboard/events", { headers: headers(false) });
      await readEvents(response, onEvent);
    } catch (err) { /* the daemon or the shim went away: try again shortly */ }
    await new Promise((r) => setTimeout(r, 3000));
  }
}

// --- the playground ---------------------------------------------------------------------
let running = null;

async function chatInto(model, out, stats, signal) {
  const messages = [];
  if ($("system").value.trim()) messages.push({ role: "system", content: $("system").value });
  messages.push({ role: "user", content: $("prompt").value });
  const body = { model, messages, stream: true, stream_options: { include_usage: true }, temperature: Number($("temperature").value), max_tokens: Number($("max-tokens").value) };
  out.textContent = "";
  const started = performance.now();
  let first = null, pieces = 0;
  const response = await post("/v1/chat/completions", body, signal);
  await readEvents(response, (chunk) => {
    if (chunk.error) throw new Error(chunk.error.message);
    const delta = chunk.choices && chunk.choices[0] && chunk.choices[0].delta;
    if (delta && delta.content) {
      first = first ?? performance.now();
      pieces++;
      out.textContent += delta.content;
      const secs = (performance.now() - first) / 1000;
      stats(`${model}: TTFT ${fixed(first - started, 0)} ms · ${secs > 0 ? fixed(pieces / secs) : "–"} tok/s`);
    }
    if (chunk.impetus && chunk.impetus.timings) stats(`${model}: TTFT ${fixed(chunk.impetus.timings.ttft_ms, 0)} ms · ${fixed(chunk.impetus.timings.decode_tps)} tok/s (daemon) · ${chunk.choices[0].finish_reason}`);
  });
}

async function send() {
  const models = [$("chat-model").value, $("chat-model2").value].filter((m) => m);
  if (!models.length) { $("chat-stats").textContent = "error: pick a model first"; return; }
  running = new AbortController();
  $("send").disabled = true;
  $("stop").disabled = false;
  $("answer2").hidden = models.length < 2;
  const lines = models.map(() => "");
  const stats = (i) => (text) => { lines[i] = text; $("chat-stats").textContent = lines.filter((l) => l).join(" | "); };
  try {
    await Promise.all(models.map((m, i) => chatInto(m, $(i ? "answer2" : "answer"), stats(i), running.signal)));
  } catch (err) {
    $("chat-stats").textContent += err.name === "AbortError" ? " · stopped" : ` · error: ${err.message}`;
  } finally {
    running = null;
    $("send").disabled = false;
    $("stop").disabled = true;
  }
}

// --- pull ---------------------------------------------------------------------------------
async function pull(event) {
  event.preventDefault();
  const bar = $("pull-progress"), status = $("pull-status");
  bar.hidden = false;
  bar.removeAttribute("value");
  status.textContent = "starting…";
  try {
    const response = await post("/v1/dashboard/pull", { model: $("pull-name").value });
    await readEvents(response, (note) => {
      if (note.error) throw new Error(note.error.message || note.error);
      if (note.final) { status.textContent = note.result ? note.result.status : ""; return; }
      if (note.total) { bar.max = note.total; bar.value = note.done; }
      status.textContent = `${note.status} ${bytes(note.done)} / ${bytes(note.total)} · ${bytes(note.rate_bps)}/s`;
    });
  } catch (err) {
    status.textContent = "";
    showError(err);
  }
  bar.hidden = true;
  refresh();
}

// --- theme and key ------------------------------------------------------------------------
function toggleTheme() {
  const root = document.documentElement;
  const dark = root.dataset.theme ? root.dataset.theme === "dark" : matchMedia("(prefers-color-scheme: dark)").matches;
  root.dataset.theme = dark ? "light" : "dark";
  localStorage.setItem("impetus.theme", root.dataset.theme);
  drawCharts();
}

document.addEventListener("DOMContentLoaded", () => {
  const theme = localStorage.getItem("impetus.theme");
  if (theme) document.documentElement.dataset.theme = theme;
  $("theme").addEventListener("click", toggleTheme);
  $("key-button").addEventListener("click", () => { $("key-form").hidden = false; $("key").focus(); });
  $("key-form").addEventListener("submit", (e) => {
    e.preventDefault();
    sessionStorage.setItem(KEY, $("key").value);
    $("key-form").hidden = true;
    refresh();
  });
  $("chat-model").addEventListener("change", (e) => { e.target.dataset.picked = "yes"; });
  $("send").addEventListener("click", send);
  $("stop").addEventListener("click", () => running && running.abort());
  $("pull-form").addEventListener("submit", pull);
  refresh();
  setInterval(refresh, 1000);
  followEvents();
});
