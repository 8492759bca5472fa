// The AIMA dashboard: plain JavaScript over the daemon's public API (/api/v1, /v1). The
// event stream (GET /api/v1/events) keeps every view current without reloading; it is
// read with fetch, not EventSource, so the API token can go in the Authorization header.
"use strict";

const state = {
  token: sessionStorage.getItem("aima-token") || "",
  services: new Map(),
  models: [],
  devices: null,
  settings: null,
  traffic: new Map(),
  history: null,
  // What the gateway last said about each service's requests; a change reloads the charts.
  activity: "",
  page: "overview",
  serviceId: null,
  logAbort: null,
  // Which failure reasons have their details open ("list:<id>", "page:<id>"): the rows are
  // redrawn every few seconds, and an opened one stays open.
  openReasons: new Set(),
  // Pulls started from this page, per model id.
  pulls: new Map(),
  // The service and version the settings form shows, and whether it has unsaved edits.
  form: { id: null, updated: null, dirty: false },
};

const $ = (selector) => document.querySelector(selector);

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null) continue;
    if (key === "class") node.className = value;
    else if (key === "style") node.style.cssText = value;
    else if (key.startsWith("data-") || key.startsWith("aria-") || key === "role") node.setAttribute(key, value);
    else if (key === "text") node.textContent = value;
    else node[key] = value;
  }
  for (const child of children) {
    if (child !== null && child !== undefined) node.append(child);
  }
  return node;
}

function headers(extra = {}) {
  const all = { ...extra };
  if (state.token) all.Authorization = `Bearer ${state.token}`;
  return all;
}

class ApiError extends Error {
  constructor(message, status) {
    super(message);
    this.status = status;
  }
}

/** The error message of a failed response: the API's own words when it gave them. */
async function errorOf(response) {
  const text = await response.text().catch(() => "");
  let body = null;
  try {
    body = JSON.parse(text);
  } catch (e) {
    /* not JSON */
  }
  return new ApiError(body?.error?.message || `${response.status} ${response.statusText}`, response.status);
}

async function api(path, options = {}) {
  const response = await fetch(path, {
    ...options,
    headers: headers(options.body ? { "Content-Type": "application/json" } : {}),
  });
  if (response.status === 401) {
    askForToken();
    throw new ApiError("this daemon requires its API token", 401);
  }
  if (!response.ok) throw await errorOf(response);
  const text = await response.text();
  return text && response.headers.get("content-type")?.includes("json") ? JSON.parse(text) : text;
}

function askForToken() {
  $("#token-form").hidden = false;
  $("#token").focus();
}

function banner(message, bad = false) {
  const node = $("#banner");
  node.hidden = !message;
  node.textContent = message || "";
  node.classList.toggle("bad", bad);
}

/** Shows `text` in an inline message element: `bad` (a refusal), `good` (done), or neither (under way). */
function say(node, text, kind = "") {
  node.textContent = text || "";
  node.classList.toggle("bad", kind === "bad");
  node.classList.toggle("good", kind === "good");
}

function mib(n) {
  return n >= 1024 ? `${(n / 1024).toFixed(1)} GiB` : `${n} MiB`;
}

/** Bytes in IEC units with two decimals, as the CLI shows them. */
function bytes(n) {
  if (n >= 2 ** 30) return `${(n / 2 ** 30).toFixed(2)} GiB`;
  if (n >= 2 ** 20) return `${(n / 2 ** 20).toFixed(2)} MiB`;
  if (n >= 2 ** 10) return `${(n / 2 ** 10).toFixed(2)} KiB`;
  return `${n} B`;
}

function ago(time) {
  if (!time) return "-";
  const secs = Math.max(0, Math.round((Date.now() - Date.parse(time)) / 1000));
  if (secs < 60) return `${secs}s ago`;
  if (secs < 3600) return `${Math.floor(secs / 60)}m ago`;
  return `${Math.floor(secs / 3600)}h ago`;
}

const pad = (n) => String(n).padStart(2, "0");

/**
 * The one time format of the page: 24-hour local time (14:05:09), with the date in
 * front when the time is not today (2026-12-03 14:05:09).
 */
function clock(time, now = new Date()) {
  const d = new Date(time);
  if (!time || Number.isNaN(d.getTime())) return "-";
  const hms = `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
  const today = d.getFullYear() === now.getFullYear() && d.getMonth() === now.getMonth() && d.getDate() === now.getDate();
  return today ? hms : `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${hms}`;
}

/** Hours and minutes of a time, for chart axes (14:05). */
function hhmm(ms) {
  const d = new Date(ms);
  return `${pad(d.getHours())}:${pad(d.getMinutes())}`;
}

/** `4GiB`, `4.5 GB`, `512MiB` or a number of bytes, as `aima model create --size` takes. */
function parseSize(text) {
  const m = text.replace(/\s+/g, "").match(/^(\d+(?:\.\d+)?)([a-z]*)$/i);
  if (!m) return null;
  const powers = {
    "": 1, b: 1,
    k: 1e3, kb: 1e3, ki: 2 ** 10, kib: 2 ** 10,
    m: 1e6, mb: 1e6, mi: 2 ** 20, mib: 2 ** 20,
    g: 1e9, gb: 1e9, gi: 2 ** 30, gib: 2 ** 30,
    t: 1e12, tb: 1e12, ti: 2 ** 40, tib: 2 ** 40,
  };
  const unit = m[2].toLowerCase();
  if (!(unit in powers)) return null;
  const n = Math.round(Number(m[1]) * powers[unit]);
  return n >= 1 ? n : null;
}

// ---------------------------------------------------------------- data

async function loadAll() {
  const [services, models, devices, status, settings] = await Promise.all([
    api("/api/v1/services"),
    api("/api/v1/models"),
    api("/api/v1/devices"),
    api("/api/v1/status"),
    // Only the engine links need these; the page works without them.
    api("/api/v1/settings").catch(() => null),
  ]);
  state.services = new Map(services.items.map((s) => [s.id, s]));
  state.models = models.items;
  state.devices = devices;
  state.settings = settings;
  const problems = [];
  if (!status.docker.reachable) {
    problems.push(`Docker at ${status.docker.address} does not answer${status.docker.error ? `: ${status.docker.error}` : ""}.`);
  }
  if (devices.simulated) problems.push("GPUs are simulated (AIMA_SIMULATE_GPUS): no real device is used.");
  banner(problems.join(" "), !status.docker.reachable);
  await Promise.all([loadTraffic(), loadHistory()]);
  render();
}

async function loadTraffic() {
  try {
    const loaded = await api("/api/v1/ps");
    state.traffic = new Map(loaded.items.map((t) => [t.id, t]));
  } catch (e) {
    state.traffic = new Map();
  }
}

/**
 * The last hour a minute at a time. The daemon's clock (the answer's Date header) places
 * the minutes, so a browser whose clock is off still draws them where they belong.
 */
async function loadHistory() {
  try {
    const response = await fetch("/api/v1/history", { headers: headers() });
    if (!response.ok) return;
    const body = await response.json();
    const serverNow = Date.parse(response.headers.get("date") || "");
    state.history = { minutes: body.minutes || [], now: Number.isNaN(serverNow) ? Date.now() : serverNow };
  } catch (e) {
    /* the next refresh tries again */
  }
  renderCharts();
}

async function refreshService(id) {
  try {
    state.services.set(id, await api(`/api/v1/services/${encodeURIComponent(id)}`));
  } catch (e) {
    state.services.delete(id);
  }
}

async function refreshServices() {
  try {
    const services = await api("/api/v1/services");
    state.services = new Map(services.items.map((s) => [s.id, s]));
  } catch (e) {
    /* the next event tries again */
  }
}

async function refreshModels() {
  try {
    state.models = (await api("/api/v1/models")).items;
  } catch (e) {
    /* the next event tries again */
  }
}

async function refreshDevices() {
  try {
    state.devices = await api("/api/v1/devices");
  } catch (e) {
    /* the next event tries again */
  }
}

// Calls `onLine` with each line of a streamed response body as it arrives.
async function eachLine(response, onLine) {
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) {
      if (buffer) await onLine(buffer);
      return;
    }
    buffer += value;
    let end;
    while ((end = buffer.indexOf("\n")) >= 0) {
      const line = buffer.slice(0, end);
      buffer = buffer.slice(end + 1);
      await onLine(line);
    }
  }
}

// The global event stream, read as server-sent events; it reconnects after the last id.
async function followEvents() {
  let lastId = "latest";
  for (;;) {
    try {
      const response = await fetch(`/api/v1/events?after=${lastId}`, { headers: headers() });
      if (response.status === 401) {
        askForToken();
        return;
      }
      $("#live").textContent = "live";
      // An event is its `id:` and `data:` lines, ended by an empty line.
      let data = "";
      await eachLine(response, async (line) => {
        if (line.startsWith("id:")) lastId = line.slice(3).trim();
        else if (line.startsWith("data:")) data += line.slice(5).trim();
        else if (line === "" && data) {
          const event = JSON.parse(data);
          data = "";
          await onEvent(event);
        }
      });
    } catch (e) {
      /* the daemon went away; try again below */
    }
    $("#live").textContent = "reconnecting…";
    await new Promise((resolve) => setTimeout(resolve, 1000));
  }
}

async function onEvent(event) {
  if (event.model_id) await refreshModels();
  if (event.service_id) {
    // The whole list (cached by the daemon) rather than the one service: a service
    // deleted meanwhile simply drops out instead of answering 404.
    await refreshServices();
    if (event.type === "status" || event.type === "deleted") {
      await Promise.all([refreshDevices(), loadTraffic()]);
    }
    if (state.page === "service" && state.serviceId === event.service_id) {
      addEvent(event);
      showPhase(event);
    }
  }
  render();
}

// ---------------------------------------------------------------- views

function route() {
  const hash = location.hash || "#/";
  const service = hash.match(/^#\/services\/(.+)$/);
  state.page = service ? "service" : hash === "#/models" ? "models" : hash === "#/gateway" ? "gateway" : "overview";
  const changed = state.serviceId !== (service ? decodeURIComponent(service[1]) : null);
  state.serviceId = service ? decodeURIComponent(service[1]) : null;
  for (const section of document.querySelectorAll("main > section")) {
    section.hidden = section.dataset.page !== state.page;
  }
  if (state.page === "service" && changed) openService();
  if (state.page !== "service" && state.logAbort) {
    state.logAbort.abort();
    state.logAbort = null;
  }
  if (state.page === "gateway") loadRequests();
  render();
}

function render() {
  renderServices();
  renderGpus();
  renderModels();
  if (state.page === "service") renderService();
  renderChatModels();
}

// ---------------------------------------------------------------- failure reasons

/**
 * A reason in one line: its first clause (up to the first "; "), cut at a word near
 * `max` characters, with an ellipsis when anything was left out.
 */
function shortReason(text, max = 90) {
  let line = text.split("\n")[0].split("; ")[0].trim();
  if (line.length > max) {
    line = line.slice(0, max);
    const space = line.lastIndexOf(" ");
    if (space > max / 2) line = line.slice(0, space);
  }
  line = line.replace(/[\s;:,.]+$/, "");
  return line === text.trim() ? line : `${line}…`;
}

/** A reason as one line, the full text behind a "details" toggle when it was shortened. */
function reasonNode(key, reason) {
  if (!reason) return null;
  const short = shortReason(reason);
  const box = el("div", { class: "reason-box" }, el("span", { class: "reason", text: short, title: reason }));
  if (short !== reason.trim()) {
    const details = el("details", { class: "reason-details" },
      el("summary", { text: "details" }),
      el("div", { class: "reason-full", text: reason }));
    details.open = state.openReasons.has(key);
    details.addEventListener("toggle", () => {
      if (details.open) state.openReasons.add(key);
      else state.openReasons.delete(key);
    });
    box.append(details);
  }
  return box;
}

function statusCell(service) {
  return el("td", { class: "status-cell" },
    el("span", { class: `status status-${service.status}`, text: service.status }),
    reasonNode(`list:${service.id}`, service.status_reason));
}

// ---------------------------------------------------------------- engine links

/** What each engine answers at a plain GET (vLLM, SGLang, llama.cpp: OpenAI's model list). */
const ENGINE_PATHS = { vllm: "/v1/models", sglang: "/v1/models", llamacpp: "/v1/models", ollama: "/api/tags" };

function bareHost(host) {
  return String(host || "").replace(/^\[|\]$/g, "").toLowerCase();
}

function isLoopback(host) {
  const h = bareHost(host);
  return h === "localhost" || h.endsWith(".localhost") || /^127\.\d+\.\d+\.\d+$/.test(h) || h === "::1";
}

/**
 * The address of a service's engine as this browser can open it, or null where that
 * would not work: the engine does not run, or its port is published on an address this
 * page's host is not (a loopback publish address answers only a browser on the daemon's
 * host; `0.0.0.0` answers wherever the page came from).
 */
function engineHref(service, publishAddr = state.settings?.publish_addr, hostname = location.hostname) {
  const path = ENGINE_PATHS[service.engine];
  if (!path || service.status !== "running" || !publishAddr) return null;
  let host;
  if (["0.0.0.0", "::"].includes(bareHost(publishAddr))) host = bareHost(hostname);
  else if (isLoopback(publishAddr)) {
    if (!isLoopback(hostname)) return null;
    host = bareHost(publishAddr);
  } else if (bareHost(hostname) === bareHost(publishAddr)) host = bareHost(publishAddr);
  else return null;
  return `http://${host.includes(":") ? `[${host}]` : host}:${service.port}${path}`;
}

function portCell(service) {
  const href = engineHref(service);
  if (href) return el("td", { class: "port-cell" }, el("a", { class: "engine-link", href, text: String(service.port), rel: "noopener", title: `the engine itself: ${href}` }));
  const why = service.status !== "running" ? "the engine does not run"
    : state.settings ? `published on ${state.settings.publish_addr}, which this browser does not reach as ${location.hostname}` : "";
  return el("td", { class: "port-cell", text: String(service.port), title: why });
}

// ---------------------------------------------------------------- overview

const CAN_START = (s) => !["running", "starting", "stopping"].includes(s.status);
const CAN_STOP = (s) => !["stopped", "creating"].includes(s.status);

function quickActions(s) {
  const start = el("button", { type: "button", class: "small", text: "Start", "data-action": "start", disabled: !CAN_START(s), "aria-label": `start ${s.name}` });
  const stop = el("button", { type: "button", class: "small", text: "Stop", "data-action": "stop", disabled: !CAN_STOP(s), "aria-label": `stop ${s.name}` });
  start.addEventListener("click", () => act(s.id, "start", banner));
  stop.addEventListener("click", () => act(s.id, "stop", banner));
  return el("td", { class: "row-actions" }, start, " ", stop);
}

function renderServices() {
  const body = $("#services tbody");
  const rows = [...state.services.values()].map((s) => {
    const traffic = state.traffic.get(s.id);
    const claim = traffic?.gpu_memory_mib ? `${mib(traffic.gpu_memory_mib)} on GPU ${traffic.gpu}`
      : traffic?.host_memory_mib ? `${mib(traffic.host_memory_mib)} of host RAM` : "-";
    const last = traffic?.last_request_at;
    return el("tr", { "data-service": s.id },
      el("td", {}, el("a", { href: `#/services/${encodeURIComponent(s.id)}`, text: s.name })),
      el("td", { text: modelName(s.model_id) }),
      el("td", { text: s.engine }),
      portCell(s),
      statusCell(s),
      el("td", { class: "claim-cell", text: claim }),
      el("td", { class: "restarts", text: String(s.restarts) }),
      el("td", { text: traffic ? String(traffic.in_flight) : "-" }),
      el("td", { class: "last-request", text: last ? clock(last) : "-", title: last ? ago(last) : undefined }),
      quickActions(s));
  });
  body.replaceChildren(...rows);
  $("#no-services").hidden = rows.length > 0;
}

function modelName(id) {
  return state.models.find((m) => m.id === id)?.name || id;
}

function renderGpus() {
  const box = $("#gpus");
  const devices = state.devices;
  if (!devices) return;
  if (devices.gpus.length === 0) {
    box.replaceChildren(el("p", { class: "muted", text: `No GPU: ${devices.none_reason || "none found"}.` }));
    return;
  }
  box.replaceChildren(...devices.gpus.map((gpu) => {
    const claims = [...state.traffic.values()].filter((t) => t.gpu === gpu.index && t.gpu_memory_mib);
    const claimed = claims.reduce((sum, t) => sum + t.gpu_memory_mib, 0);
    // Memory in use that no AIMA claim explains (another process, or an engine still freeing it).
    const other = Math.max(0, gpu.memory_used_mib - claimed);
    const free = Math.max(0, gpu.memory_total_mib - claimed - other);
    const pct = (n) => `${(100 * n / gpu.memory_total_mib).toFixed(2)}%`;
    const bar = el("div", { class: "bar", role: "img", "aria-label": `GPU ${gpu.index}: ${mib(claimed)} claimed, ${mib(gpu.memory_free_mib)} free of ${mib(gpu.memory_total_mib)}` },
      ...claims.map((t) => el("span", { class: "claim", "data-service": t.id, "data-mib": String(t.gpu_memory_mib), title: `${t.name}: ${mib(t.gpu_memory_mib)}`, style: `width:${pct(t.gpu_memory_mib)}` })),
      other ? el("span", { class: "other", "data-mib": String(other), title: `in use outside AIMA's claims: ${mib(other)}`, style: `width:${pct(other)}` }) : null,
      el("span", { class: "free", "data-mib": String(free), style: `width:${pct(free)}` }));
    return el("div", { class: "gpu", "data-gpu": String(gpu.index), "data-total-mib": String(gpu.memory_total_mib), "data-free-mib": String(gpu.memory_free_mib) },
      el("div", { text: `GPU ${gpu.index} · ${gpu.name}${gpu.simulated ? " (simulated)" : ""} · ${mib(gpu.memory_total_mib)}` }),
      bar,
      el("div", { class: "legend", text: `claimed ${mib(claimed)}${claims.length ? ` (${claims.map((t) => `${t.name} ${mib(t.gpu_memory_mib)}`).join(", ")})` : ""} · measured free ${mib(gpu.memory_free_mib)}` }));
  }));
}

// ---------------------------------------------------------------- charts

const SVG_NS = "http://www.w3.org/2000/svg";
// The drawing area of each chart, in the SVG's own units (it scales with its box).
const CHART = { width: 420, height: 150, left: 46, right: 12, top: 10, bottom: 22 };
const MINUTES = 60;

function svg(tag, attrs = {}, ...children) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null) continue;
    if (key === "text") node.textContent = value;
    else node.setAttribute(key, String(value));
  }
  for (const child of children) if (child !== null && child !== undefined) node.append(child);
  return node;
}

/** A round number at or above `n` for the top of an axis (1, 2, 5 × 10^k). */
function niceMax(n) {
  if (!(n > 0)) return 1;
  const power = 10 ** Math.floor(Math.log10(n));
  return [1, 2, 2.5, 5, 10].map((f) => f * power).find((v) => v >= n);
}

/**
 * The frame every chart shares: the last hour left to right (one slot per minute, the
 * current minute last), value labels at 0 and the top, time labels under the axis.
 */
function chartFrame(label, top, format) {
  const { width, height, left, right, top: pad0, bottom } = CHART;
  const plotBottom = height - bottom;
  const root = svg("svg", { viewBox: `0 0 ${width} ${height}`, role: "img", "aria-label": label, preserveAspectRatio: "xMidYMid meet" },
    svg("title", { text: label }),
    svg("line", { class: "grid", x1: left, x2: width - right, y1: pad0, y2: pad0 }),
    svg("line", { class: "axis", x1: left, x2: width - right, y1: plotBottom, y2: plotBottom }),
    svg("text", { class: "tick", x: left - 4, y: pad0 + 4, "text-anchor": "end", text: format(top) }),
    svg("text", { class: "tick", x: left - 4, y: plotBottom, "text-anchor": "end", text: format(0) }));
  return root;
}

/** Where minute `time` goes: its slot 0..59 in the hour ending at `now`, or null. */
function slotOf(time, now) {
  const end = Math.floor(now / 60000) * 60000;
  const slot = MINUTES - 1 - Math.round((end - Date.parse(time)) / 60000);
  return slot >= 0 && slot < MINUTES ? slot : null;
}

function timeAxis(root, now) {
  const { width, height, left, right } = CHART;
  const end = Math.floor(now / 60000) * 60000;
  const plot = width - left - right;
  for (const [slot, anchor] of [[0, "start"], [30, "middle"], [MINUTES - 1, "end"]]) {
    const x = left + plot * (slot + (anchor === "start" ? 0 : anchor === "end" ? 1 : 0.5)) / MINUTES;
    root.append(svg("text", { class: "tick", x, y: height - 6, "text-anchor": anchor, text: hhmm(end - (MINUTES - 1 - slot) * 60000) }));
  }
}

function emptyNote(root) {
  const { width, height, left, right, top, bottom } = CHART;
  root.append(svg("text", { class: "empty", x: left + (width - left - right) / 2, y: top + (height - top - bottom) / 2, "text-anchor": "middle", text: "nothing in the last hour yet" }));
}

function setChart(id, root, value) {
  const figure = $(`#${id}`);
  figure.querySelector("svg")?.remove();
  figure.append(root);
  figure.querySelector(".chart-value").textContent = value;
}

function renderCharts() {
  const history = state.history;
  if (!history) return;
  const minutes = history.minutes
    .map((m) => ({ ...m, slot: slotOf(m.time, history.now) }))
    .filter((m) => m.slot !== null);
  renderRequestsChart(minutes, history.now);
  renderTokensChart(minutes, history.now);
  renderMemoryChart(minutes, history.now);
}

function renderRequestsChart(minutes, now) {
  const total = minutes.reduce((n, m) => n + m.requests, 0);
  const errors = minutes.reduce((n, m) => n + m.errors, 0);
  const top = niceMax(Math.max(...minutes.map((m) => m.requests), 1));
  const label = `Gateway requests per minute over the last hour: ${total} in all, ${errors} of them errors`;
  const root = chartFrame(label, top, String);
  const { width, height, left, right, top: plotTop, bottom } = CHART;
  const slotWidth = (width - left - right) / MINUTES;
  const plotHeight = height - plotTop - bottom;
  const y = (n) => plotHeight * n / top;
  for (const m of minutes.filter((m) => m.requests > 0)) {
    const x = left + m.slot * slotWidth + 0.5;
    const w = Math.max(1, slotWidth - 1);
    const good = m.requests - m.errors;
    const base = height - bottom;
    root.append(svg("g", { class: "minute", "data-time": m.time, "data-requests": m.requests, "data-errors": m.errors },
      svg("title", { text: `${hhmm(Date.parse(m.time))}: ${m.requests} requests${m.errors ? `, ${m.errors} errors` : ""}` }),
      good > 0 ? svg("rect", { class: "bar-ok", x, width: w, y: base - y(good), height: y(good) }) : null,
      m.errors > 0 ? svg("rect", { class: "bar-error", x, width: w, y: base - y(m.requests), height: y(m.errors) }) : null));
  }
  timeAxis(root, now);
  if (total === 0) emptyNote(root);
  const current = minutes.find((m) => m.slot === MINUTES - 1)?.requests || 0;
  setChart("chart-requests", root, `${current} this minute · ${total} in the hour${errors ? ` · ${errors} errors` : ""}`);
}

/** Lines through consecutive minutes and a dot on each, for one series. */
function series(root, points, cls, y) {
  const { width, left, right } = CHART;
  const slotWidth = (width - left - right) / MINUTES;
  const x = (slot) => left + (slot + 0.5) * slotWidth;
  const group = svg("g", { class: `series ${cls}` });
  let run = [];
  const flush = () => {
    if (run.length > 1) group.append(svg("polyline", { points: run.map((p) => `${x(p.slot).toFixed(1)},${y(p.value).toFixed(1)}`).join(" ") }));
    run = [];
  };
  for (const p of points) {
    if (run.length && p.slot !== run[run.length - 1].slot + 1) flush();
    run.push(p);
    group.append(svg("circle", { cx: x(p.slot).toFixed(1), cy: y(p.value).toFixed(1), r: 2.2, "data-value": p.value }));
  }
  flush();
  root.append(group);
}

function renderTokensChart(minutes, now) {
  const points = minutes.filter((m) => m.tokens_per_second !== null && m.tokens_per_second !== undefined)
    .map((m) => ({ slot: m.slot, value: m.tokens_per_second }));
  const top = niceMax(Math.max(...points.map((p) => p.value), 1));
  const last = points.length ? points[points.length - 1].value : null;
  const label = `Completion tokens per second over the last hour${last === null ? ": none yet" : `, latest ${last}`}`;
  const root = chartFrame(label, top, (v) => String(Math.round(v * 10) / 10));
  const { height, top: plotTop, bottom } = CHART;
  const y = (v) => height - bottom - (height - plotTop - bottom) * v / top;
  series(root, points, "tokens", y);
  timeAxis(root, now);
  if (!points.length) emptyNote(root);
  setChart("chart-tokens", root, last === null ? "no tokens yet" : `latest ${last} tokens/s`);
}

function renderMemoryChart(minutes, now) {
  const gpus = [...new Set(minutes.flatMap((m) => Object.keys(m.gpu_claimed_mib || {})))].sort((a, b) => a - b);
  const lines = gpus.map((g, i) => ({ name: `GPU ${g}`, cls: `gpu${i % 4}`, points: minutes.map((m) => ({ slot: m.slot, value: m.gpu_claimed_mib?.[g] || 0 })) }));
  if (minutes.some((m) => m.host_claimed_mib)) {
    lines.push({ name: "host", cls: "host", points: minutes.map((m) => ({ slot: m.slot, value: m.host_claimed_mib || 0 })) });
  }
  // The top in round GiB (1, 2, 2.5, 5, 10…), at least 1 GiB.
  const top = 1024 * niceMax(Math.max(...lines.flatMap((l) => l.points.map((p) => p.value)), 1024) / 1024);
  const latest = lines.map((l) => `${l.name} ${mib(l.points[l.points.length - 1].value)}`);
  const label = `Memory claimed by services over the last hour${latest.length ? `; now ${latest.join(", ")}` : ": nothing yet"}`;
  const root = chartFrame(label, top, (v) => (v === 0 ? "0" : v % 1024 === 0 ? `${v / 1024} GiB` : mib(v)));
  const { height, top: plotTop, bottom } = CHART;
  const y = (v) => height - bottom - (height - plotTop - bottom) * v / top;
  for (const line of lines) series(root, line.points, line.cls, y);
  timeAxis(root, now);
  if (!lines.length) emptyNote(root);
  const figure = $("#chart-memory");
  setChart("chart-memory", root, "");
  figure.querySelector(".chart-value").replaceChildren(...lines.map((l) => el("span", { class: "key", "data-series": l.name },
    el("span", { class: `swatch ${l.cls}`, "aria-hidden": "true" }), `${l.name} ${mib(l.points[l.points.length - 1].value)}`)));
}

// ---------------------------------------------------------------- models

/** A model's estimate: its total on an engine, its parts and assumptions in the title. */
function estimateCell(m) {
  const e = m.estimate;
  if (!e) return el("td", { class: "muted", text: "unknown", title: "AIMA could not read the weights; give the size when you create the model" });
  const parts = `weights ${bytes(e.weights)} + KV cache ${bytes(e.kv_cache)} (${e.context_length} tokens) + overhead ${bytes(e.overhead)}`;
  const measured = e.measured ? ` · measured ${bytes(e.measured)}` : "";
  return el("td", { "data-total": String(e.total), title: [parts, ...e.assumptions].join("\n"), text: `${bytes(e.total)} on ${e.engine}${measured}` });
}

function pullNode(id) {
  const pull = state.pulls.get(id);
  if (!pull) return null;
  const progress = el("progress", { max: pull.total || 1, value: pull.total ? pull.completed : 0, "aria-label": "pull progress" });
  if (pull.running && !pull.total) progress.removeAttribute("value");
  return el("div", { class: `pull${pull.bad ? " bad" : ""}`, "data-pull": id }, progress, " ", el("span", { class: "pull-text", text: pull.text }));
}

function renderModels() {
  const body = $("#models tbody");
  body.replaceChildren(...state.models.map((m) => {
    const services = [...state.services.values()].filter((s) => s.model_id === m.id);
    const engine = el("select", { "aria-label": `engine for ${m.name}` },
      ...["vllm", "sglang", "llamacpp", "ollama"].map((e) => el("option", { value: e, text: e })));
    const create = el("button", { type: "button", class: "create-service", text: "Create" });
    create.addEventListener("click", async () => {
      create.disabled = true;
      try {
        const service = await api("/api/v1/services", { method: "POST", body: JSON.stringify({ model_id: m.id, engine_type: engine.value }) });
        state.services.set(service.id, service);
        location.hash = `#/services/${encodeURIComponent(service.id)}`;
      } catch (e) {
        say($("#model-message"), e.message, "bad");
      } finally {
        create.disabled = false;
      }
    });
    const remove = el("button", { type: "button", class: "danger delete-model", text: "Delete", "aria-label": `delete model ${m.name}` });
    remove.addEventListener("click", () => deleteModel(m));
    let pull = null;
    if (m.source === "huggingface") {
      pull = el("button", { type: "button", class: "pull-model", text: "Pull", "aria-label": `pull ${m.name}'s files`, disabled: !!state.pulls.get(m.id)?.running });
      pull.addEventListener("click", () => pullModel(m));
    }
    return el("tr", { "data-model": m.id },
      el("td", { text: m.name }),
      el("td", { text: m.source }),
      el("td", { text: m.repo || m.path || "" }),
      el("td", { text: m.size_bytes ? bytes(m.size_bytes) : "" }),
      estimateCell(m),
      el("td", {}, ...services.map((s, i) => [i ? ", " : "", el("a", { href: `#/services/${encodeURIComponent(s.id)}`, text: s.name })]).flat()),
      el("td", {}, engine, " ", create),
      el("td", { class: "row-actions" }, pull, pull ? " " : null, remove, pullNode(m.id)));
  }));
  $("#no-models").hidden = state.models.length > 0;
}

async function deleteModel(m) {
  const message = $("#model-message");
  if (!confirm(`Delete model ${m.name}?`)) return;
  say($("#model-form-message"), "");
  try {
    await api(`/api/v1/models/${encodeURIComponent(m.id)}`, { method: "DELETE" });
    state.models = state.models.filter((x) => x.id !== m.id);
    state.pulls.delete(m.id);
    say(message, `Deleted model ${m.name}.`, "good");
  } catch (e) {
    say(message, e.message, "bad");
  }
  renderModels();
}

/** Pulls a Hugging Face model's files, its progress read line by line (NDJSON). */
async function pullModel(m) {
  const pull = { running: true, completed: 0, total: 0, text: "asking the hub…", bad: false };
  state.pulls.set(m.id, pull);
  const show = () => {
    const row = document.querySelector(`#models tr[data-model="${CSS.escape(m.id)}"]`);
    const node = row?.querySelector(".pull");
    if (node) node.replaceWith(pullNode(m.id));
    else renderModels();
  };
  renderModels();
  try {
    const response = await fetch(`/api/v1/models/${encodeURIComponent(m.id)}/pull`, { method: "POST", headers: headers() });
    if (response.status === 401) askForToken();
    if (!response.ok) throw await errorOf(response);
    let finished = false;
    await eachLine(response, (line) => {
      if (!line.trim()) return;
      const p = JSON.parse(line);
      if (p.status === "downloading") {
        pull.completed = p.all_completed;
        pull.total = p.all_total;
        pull.text = `${p.file}: ${bytes(p.all_completed)} of ${bytes(p.all_total)}`;
      } else if (p.status === "success") {
        finished = true;
        pull.completed = pull.total = p.all_total || pull.total || 1;
        pull.text = `pulled ${bytes(p.all_total || 0)} to ${p.path}`;
      } else if (p.status === "failed") {
        finished = true;
        pull.bad = true;
        pull.text = `pull failed: ${p.error}`;
      }
      show();
    });
    if (!finished) {
      pull.bad = true;
      pull.text = "the pull broke off; pull again to resume";
    }
  } catch (e) {
    pull.bad = true;
    pull.text = `pull failed: ${e.message}`;
  }
  pull.running = false;
  renderModels();
}

function showSourceFields() {
  const local = $("#model-source").value === "local";
  $("#model-repo-field").hidden = local;
  $("#model-path-field").hidden = !local;
}

async function createModel(event) {
  event.preventDefault();
  const message = $("#model-form-message");
  const source = $("#model-source").value;
  const body = { name: $("#model-name").value.trim(), source };
  const where = (local) => $(local ? "#model-path" : "#model-repo").value.trim() || undefined;
  if (source === "local") body.path = where(true);
  else body.repo = where(false);
  const size = $("#model-size").value.trim();
  if (size) {
    body.size_bytes = parseSize(size);
    if (body.size_bytes === null) {
      say(message, `'${size}' is not a size; write it like 16GiB, 4.5GB or 1073741824`, "bad");
      return;
    }
  }
  const context = $("#model-context").value.trim();
  if (context) body.context_length = /^\d+$/.test(context) ? Number(context) : context;
  const button = $("#model-form button[type=submit]");
  button.disabled = true;
  say(message, `creating ${body.name || "the model"}…`);
  say($("#model-message"), "");
  try {
    const model = await api("/api/v1/models", { method: "POST", body: JSON.stringify(body) });
    await refreshModels();
    say(message, `Created model ${model.name} (${model.id}).`, "good");
    $("#model-form").reset();
    showSourceFields();
    renderModels();
  } catch (e) {
    say(message, e.message, "bad");
  } finally {
    button.disabled = false;
  }
}

// ---------------------------------------------------------------- one service

const PHASES = ["validate", "gpu", "cleanup", "port_check", "image", "create", "start", "health"];

async function openService() {
  const id = state.serviceId;
  $("#events").replaceChildren();
  $("#logs").textContent = "";
  $("#phases").replaceChildren();
  say($("#action-message"), "");
  say($("#settings-message"), "");
  state.form = { id: null, updated: null, dirty: false };
  $("#settings-form button[type=submit]").disabled = false;
  await refreshService(id);
  renderService();
  try {
    const history = await fetch(`/api/v1/services/${encodeURIComponent(id)}/events?follow=false`, { headers: headers() });
    const text = await history.text();
    for (const block of text.split("\n\n")) {
      const data = block.split("\n").filter((l) => l.startsWith("data:")).map((l) => l.slice(5).trim()).join("\n");
      if (data) addEvent(JSON.parse(data));
    }
  } catch (e) {
    /* the live stream still adds new events */
  }
  followLogs();
}

function addEvent(event) {
  const list = $("#events");
  const what = event.phase || (event.status ? `status ${event.status}` : event.type);
  list.append(el("li", { "data-type": event.type, "data-status": event.status, "data-phase": event.phase },
    el("time", { class: "muted", dateTime: event.time, text: `${clock(event.time)} ` }),
    el("strong", { text: what }), event.message ? `: ${event.message}` : ""));
  list.scrollTop = list.scrollHeight;
}

// The start's phases light up as their events arrive, as `aima service start --wait` prints them.
function showPhase(event) {
  const list = $("#phases");
  if (event.type === "phase") {
    if (event.phase === "validate") list.replaceChildren(...PHASES.map((p) => el("li", { "data-phase": p, text: p })));
    let seen = false;
    for (const item of list.children) {
      if (item.dataset.phase === event.phase) {
        item.className = "current";
        seen = true;
      } else if (!seen) {
        item.className = "done";
      }
    }
  } else if (event.type === "status" && ["running", "failed", "stopped"].includes(event.status)) {
    for (const item of list.children) if (item.className === "current") item.className = event.status === "running" ? "done" : "";
  }
}

function renderService() {
  const s = state.services.get(state.serviceId);
  if (!s) {
    $("#service-title").textContent = "This service no longer exists.";
    $("#service-status").textContent = "";
    $("#service-reason").replaceChildren();
    $("#service-reason").dataset.shown = "";
    for (const id of ["#start", "#stop", "#restart", "#delete"]) $(id).disabled = true;
    $("#settings-form button[type=submit]").disabled = true;
    return;
  }
  $("#service-title").textContent = `${s.name} (${s.id})`;
  const status = $("#service-status");
  status.textContent = s.status;
  status.className = `status status-${s.status}`;
  const reason = $("#service-reason");
  const shown = `${s.id}\n${s.status_reason || ""}`;
  if (reason.dataset.shown !== shown) {
    reason.dataset.shown = shown;
    reason.replaceChildren(reasonNode(`page:${s.id}`, s.status_reason) || "");
  }
  const busy = state.acting === s.id;
  $("#start").disabled = busy || !CAN_START(s);
  $("#stop").disabled = busy || !CAN_STOP(s);
  $("#restart").disabled = busy || s.status !== "running";
  $("#delete").disabled = busy;
  const href = engineHref(s);
  const settings = [
    ["Model", modelName(s.model_id)], ["Engine", s.engine],
    ["Port", href ? el("a", { class: "engine-link", href, text: `${s.port} (${href})`, rel: "noopener" }) : String(s.port)],
    ["GPU", s.gpu ?? "any (where its model fits)"],
    ["Restart", `${s.restart} (${s.restarts} restarts)`],
    ["Health", `every ${s.health_interval}, ${s.health_retries} misses`],
    ["Start timeout", s.start_timeout || "engine default"],
    ["GPU share", s.gpu_memory_utilization ?? "engine default"],
    ["Idle timeout", s.idle_timeout || "never"], ["Load timeout", s.load_timeout],
    ["Max concurrency", s.max_concurrency ?? "no limit"], ["Pinned", s.pinned ? "yes" : "no"],
    ["Default", s.default ? "yes" : "no"],
    ["Container", s.container_id ? s.container_id.slice(0, 12) : "-"],
    ["Created", clock(s.created_at)], ["Updated", clock(s.updated_at)],
  ];
  $("#settings").replaceChildren(...settings.flatMap(([k, v]) => [el("dt", { text: k }), el("dd", {}, typeof v === "object" ? v : String(v))]));
  renderSettingsForm(s);
}

/** The GPU choices: any, or one of the host's GPUs (and the current pin, if that one is gone). */
function gpuChoices(s) {
  const indices = new Set((state.devices?.gpus || []).map((g) => g.index));
  if (s.gpu !== null && s.gpu !== undefined) indices.add(s.gpu);
  return ["any", ...[...indices].sort((a, b) => a - b).map(String)];
}

// The port changes only while no engine holds it.
const PORT_EDITABLE = ["stopped", "failed", "creating"];

/** Fills the form from the service, unless the user is editing it; keeps the port's lock current. */
function renderSettingsForm(s) {
  const form = state.form;
  const stale = form.id !== s.id || form.updated !== s.updated_at;
  if (stale && !form.dirty) {
    const gpu = $("#set-gpu");
    const choices = gpuChoices(s);
    gpu.replaceChildren(...choices.map((c) => el("option", { value: c, text: c === "any" ? "any" : `GPU ${c}` })));
    gpu.value = s.gpu === null || s.gpu === undefined ? "any" : String(s.gpu);
    $("#set-gpu-share").value = s.gpu_memory_utilization ?? "";
    $("#set-idle").value = s.idle_timeout || "never";
    $("#set-load").value = s.load_timeout || "";
    $("#set-concurrency").value = s.max_concurrency ?? "";
    $("#set-restart").value = s.restart;
    $("#set-port").value = String(s.port);
    $("#set-pinned").checked = !!s.pinned;
    $("#set-default").checked = !!s.default;
    state.form = { id: s.id, updated: s.updated_at, dirty: false };
  }
  const editable = PORT_EDITABLE.includes(s.status);
  $("#set-port").disabled = !editable;
  $("#set-port-hint").textContent = editable ? "a free port in the daemon's range" : "stop the service to change it";
}

/** The changed fields of the settings form, as `PATCH /api/v1/services/{id}` takes them. */
function settingsChanges(s) {
  const body = {};
  const number = (text) => (/^-?\d+(\.\d+)?$/.test(text) ? Number(text) : text);
  const share = $("#set-gpu-share").value.trim();
  if (share && number(share) !== s.gpu_memory_utilization) body.gpu_memory_utilization = number(share);
  const idle = $("#set-idle").value.trim() || "never";
  if (idle !== (s.idle_timeout || "never")) body.idle_timeout = idle;
  const load = $("#set-load").value.trim();
  if (load && load !== s.load_timeout) body.load_timeout = load;
  const concurrency = $("#set-concurrency").value.trim();
  if (concurrency && number(concurrency) !== s.max_concurrency) body.max_concurrency = number(concurrency);
  const restart = $("#set-restart").value.trim();
  if (restart && restart !== s.restart) body.restart = restart;
  if ($("#set-pinned").checked !== !!s.pinned) body.pinned = $("#set-pinned").checked;
  if ($("#set-default").checked !== !!s.default) body.default = $("#set-default").checked;
  const port = $("#set-port").value.trim();
  if (!$("#set-port").disabled && port && number(port) !== s.port) body.port = number(port);
  const gpu = $("#set-gpu").value;
  if (gpu !== (s.gpu === null || s.gpu === undefined ? "any" : String(s.gpu))) body.gpu = gpu;
  return body;
}

async function saveSettings(event) {
  event.preventDefault();
  const message = $("#settings-message");
  const s = state.services.get(state.serviceId);
  if (!s) return;
  const body = settingsChanges(s);
  if (Object.keys(body).length === 0) {
    say(message, "Nothing to save: no setting differs from the service's.");
    return;
  }
  const button = $("#settings-form button[type=submit]");
  button.disabled = true;
  say(message, "saving…");
  delete message.dataset.later;
  try {
    const updated = await api(`/api/v1/services/${encodeURIComponent(s.id)}`, { method: "PATCH", body: JSON.stringify(body) });
    state.services.set(s.id, updated.service);
    state.form.dirty = false;
    const later = updated.applies_at_next_start || [];
    say(message, `Saved ${Object.keys(body).join(", ")}.${later.length ? ` At the next start (restart to apply now): ${later.join(", ")}.` : ""}`, "good");
    message.dataset.later = later.join(",");
    renderService();
  } catch (e) {
    say(message, e.message, "bad");
  } finally {
    button.disabled = false;
  }
}

async function followLogs() {
  if (state.logAbort) state.logAbort.abort();
  const abort = new AbortController();
  state.logAbort = abort;
  const id = state.serviceId;
  const follow = $("#follow").checked;
  const pre = $("#logs");
  pre.textContent = "";
  try {
    const response = await fetch(`/api/v1/services/${encodeURIComponent(id)}/logs?tail=200&follow=${follow}`, { headers: headers(), signal: abort.signal });
    if (!response.ok) return;
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      const atEnd = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
      pre.textContent += value;
      if (atEnd) pre.scrollTop = pre.scrollHeight;
    }
  } catch (e) {
    /* aborted, or the container went away */
  }
}

/** Starts or stops a service; `report` shows a refusal (the banner, or the page's line). */
async function act(id, verb, report) {
  try {
    await api(`/api/v1/services/${encodeURIComponent(id)}/${verb}`, { method: "POST", body: "{}" });
    return true;
  } catch (e) {
    report(e.message, true);
    return false;
  }
}

/** The service page's buttons: their refusals show beside them. */
async function pageAction(what) {
  const id = state.serviceId;
  const message = $("#action-message");
  const report = (text, bad) => say(message, text, bad ? "bad" : "");
  say(message, "");
  state.acting = id;
  renderService();
  try {
    if (what === "restart") {
      say(message, "stopping…");
      if (await act(id, "stop", report)) {
        say(message, "starting…");
        if (await act(id, "start", report)) say(message, "");
      }
    } else {
      await act(id, what, report);
    }
  } finally {
    state.acting = null;
    await refreshService(id);
    render();
  }
}

// ---------------------------------------------------------------- gateway

async function loadRequests() {
  try {
    const recent = await api("/api/v1/requests");
    $("#requests tbody").replaceChildren(...recent.items.map((r) => el("tr", {},
      el("td", {}, el("time", { dateTime: r.time, text: clock(r.time) })),
      el("td", { text: r.model }), el("td", { text: r.service || "-" }),
      el("td", { text: String(r.status) }),
      el("td", { text: `${r.duration_ms} ms` }),
      el("td", { text: r.time_to_first_token_ms === null ? "-" : `${r.time_to_first_token_ms} ms` }),
      el("td", { text: r.prompt_tokens === null ? "-" : `${r.prompt_tokens} + ${r.completion_tokens}` }))));
  } catch (e) {
    /* shown again on the next visit */
  }
}

function renderChatModels() {
  const select = $("#chat-model");
  const names = [...new Set(state.models.map((m) => m.name))];
  if (select.options.length === names.length && [...select.options].every((o, i) => o.value === names[i])) return;
  const current = select.value;
  select.replaceChildren(...names.map((n) => el("option", { value: n, text: n })));
  if (names.includes(current)) select.value = current;
}

async function chat(event) {
  event.preventDefault();
  const answer = $("#chat-answer");
  answer.textContent = "";
  const response = await fetch("/v1/chat/completions", {
    method: "POST",
    headers: headers({ "Content-Type": "application/json" }),
    body: JSON.stringify({ model: $("#chat-model").value, stream: true, stream_options: { include_usage: true }, messages: [{ role: "user", content: $("#chat-input").value }] }),
  });
  if (!response.ok) {
    const body = await response.json().catch(() => ({}));
    answer.textContent = `error: ${body?.error?.message || response.status}`;
    return;
  }
  await eachLine(response, (raw) => {
    const line = raw.trim();
    if (line.startsWith(": loading")) answer.textContent = `(${line.slice(2)})`;
    if (!line.startsWith("data:") || line === "data: [DONE]") return;
    const chunk = JSON.parse(line.slice(5));
    if (answer.textContent.startsWith("(loading")) answer.textContent = "";
    answer.textContent += chunk.choices?.[0]?.delta?.content || "";
  });
  loadRequests();
  loadHistory();
}

// ---------------------------------------------------------------- start

document.addEventListener("DOMContentLoaded", () => {
  $("#token-form").addEventListener("submit", (event) => {
    event.preventDefault();
    state.token = $("#token").value.trim();
    sessionStorage.setItem("aima-token", state.token);
    $("#token-form").hidden = true;
    start();
  });
  $("#start").addEventListener("click", () => pageAction("start"));
  $("#stop").addEventListener("click", () => pageAction("stop"));
  $("#restart").addEventListener("click", () => pageAction("restart"));
  $("#delete").addEventListener("click", async () => {
    const s = state.services.get(state.serviceId);
    if (!s) return;
    const running = !["stopped", "creating", "failed"].includes(s.status);
    if (!confirm(`Delete service ${s.name}?${running ? " Its engine is stopped and its port freed." : " Its port is freed."}`)) return;
    try {
      await api(`/api/v1/services/${encodeURIComponent(s.id)}${running ? "?force=true" : ""}`, { method: "DELETE" });
      state.services.delete(s.id);
      location.hash = "#/";
    } catch (e) {
      say($("#action-message"), e.message, "bad");
    }
  });
  for (const type of ["input", "change"]) {
    $("#settings-form").addEventListener(type, () => {
      state.form.dirty = true;
    });
  }
  $("#settings-form").addEventListener("submit", saveSettings);
  $("#model-source").addEventListener("change", showSourceFields);
  $("#model-form").addEventListener("submit", createModel);
  $("#follow").addEventListener("change", followLogs);
  $("#chat").addEventListener("submit", chat);
  window.addEventListener("hashchange", route);
  start();
});

async function start() {
  try {
    await loadAll();
  } catch (e) {
    if (!(e instanceof ApiError)) banner(`The daemon does not answer: ${e.message}`, true);
    else if (!$("#token-form").hidden) return;
    else banner(e.message, true);
  }
  route();
  followEvents();
  // The gateway's in-flight counts and last requests move without events; new gateway
  // activity also redraws the charts at once.
  setInterval(async () => {
    await loadTraffic();
    const activity = [...state.traffic.values()].map((t) => `${t.id}:${t.last_request_at}:${t.in_flight}`).join(",");
    if (activity !== state.activity) {
      state.activity = activity;
      loadHistory();
    }
    renderServices();
    renderGpus();
  }, 2000);
  // Memory is sampled every 10 s; the charts catch up every 15 s.
  setInterval(loadHistory, 15000);
}
