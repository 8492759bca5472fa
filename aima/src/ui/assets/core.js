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
