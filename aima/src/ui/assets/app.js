// The AIMA dashboard: plain JavaScript over the daemon's public API (/api/v1, /v1). The
// event stream (GET /api/v1/events) keeps every view current without reloading; it is
// read with fetch, not EventSource, so the API token can go in the Authorization header.
"use strict";

const state = {
  token: sessionStorage.getItem("aima-token") || "",
  services: new Map(),
  models: [],
  devices: null,
  traffic: new Map(),
  page: "overview",
  serviceId: null,
  logAbort: null,
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

class ApiError extends Error {}

async function api(path, options = {}) {
  const response = await fetch(path, {
    ...options,
    headers: headers(options.body ? { "Content-Type": "application/json" } : {}),
  });
  if (response.status === 401) {
    askForToken();
    throw new ApiError("this daemon requires its API token");
  }
  const text = await response.text();
  const body = text && response.headers.get("content-type")?.includes("json") ? JSON.parse(text) : text;
  if (!response.ok) {
    throw new ApiError(body?.error?.message || `${response.status} ${response.statusText}`);
  }
  return body;
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

function mib(n) {
  return n >= 1024 ? `${(n / 1024).toFixed(1)} GiB` : `${n} MiB`;
}

function ago(time) {
  if (!time) return "-";
  const secs = Math.max(0, Math.round((Date.now() - Date.parse(time)) / 1000));
  if (secs < 60) return `${secs}s ago`;
  if (secs < 3600) return `${Math.floor(secs / 60)}m ago`;
  return `${Math.floor(secs / 3600)}h ago`;
}

// ---------------------------------------------------------------- data

async function loadAll() {
  const [services, models, devices, status] = await Promise.all([
    api("/api/v1/services"),
    api("/api/v1/models"),
    api("/api/v1/devices"),
    api("/api/v1/status"),
  ]);
  state.services = new Map(services.items.map((s) => [s.id, s]));
  state.models = models.items;
  state.devices = devices;
  const problems = [];
  if (!status.docker.reachable) {
    problems.push(`Docker at ${status.docker.address} does not answer${status.docker.error ? `: ${status.docker.error}` : ""}.`);
  }
  if (devices.simulated) problems.push("GPUs are simulated (AIMA_SIMULATE_GPUS): no real device is used.");
  banner(problems.join(" "), !status.docker.reachable);
  await loadTraffic();
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
    if (done) return;
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
  if (event.model_id) {
    state.models = (await api("/api/v1/models")).items;
  }
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

function statusCell(service) {
  return el("td", { class: "status-cell" },
    el("span", { class: `status status-${service.status}`, text: service.status }),
    service.status_reason ? el("span", { class: "reason", text: service.status_reason }) : null);
}

function renderServices() {
  const body = $("#services tbody");
  const rows = [...state.services.values()].map((s) => {
    const traffic = state.traffic.get(s.id);
    const claim = traffic?.gpu_memory_mib ? `${mib(traffic.gpu_memory_mib)} on GPU ${traffic.gpu}`
      : traffic?.host_memory_mib ? `${mib(traffic.host_memory_mib)} of host RAM` : "-";
    return el("tr", { "data-service": s.id },
      el("td", {}, el("a", { href: `#/services/${encodeURIComponent(s.id)}`, text: s.name })),
      el("td", { text: modelName(s.model_id) }),
      el("td", { text: s.engine }),
      el("td", {}, el("a", { href: `http://${location.hostname}:${s.port}/`, text: String(s.port), rel: "noopener" })),
      statusCell(s),
      el("td", { class: "claim-cell", text: claim }),
      el("td", { class: "restarts", text: String(s.restarts) }),
      el("td", { text: traffic ? String(traffic.in_flight) : "-" }),
      el("td", { text: ago(traffic?.last_request_at) }));
  });
  body.replaceChildren(...rows);
  $("#no-services").hidden = rows.length > 0;
}

function modelName(id) {
  return state.models.find((m) => m.id === id)?.name || id;
}

function serviceName(id) {
  return state.services.get(id)?.name || id;
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

/** Bytes as GiB with two decimals, as the CLI shows model sizes. */
function gib(bytes) {
  return `${(bytes / 2 ** 30).toFixed(2)} GiB`;
}

/** A model's estimate: its total on an engine, its parts and assumptions in the title. */
function estimateCell(m) {
  const e = m.estimate;
  if (!e) return el("td", { class: "muted", text: "unknown", title: "AIMA could not read the weights; state them with aima model create --size" });
  const parts = `weights ${gib(e.weights)} + KV cache ${gib(e.kv_cache)} (${e.context_length} tokens) + overhead ${gib(e.overhead)}`;
  const measured = e.measured ? ` · measured ${gib(e.measured)}` : "";
  return el("td", { "data-total": String(e.total), title: [parts, ...e.assumptions].join("\n"), text: `${gib(e.total)} on ${e.engine}${measured}` });
}

function renderModels() {
  const body = $("#models tbody");
  body.replaceChildren(...state.models.map((m) => {
    const services = [...state.services.values()].filter((s) => s.model_id === m.id);
    const engine = el("select", { "aria-label": `engine for ${m.name}` },
      ...["vllm", "sglang", "llamacpp", "ollama"].map((e) => el("option", { value: e, text: e })));
    const create = el("button", { type: "button", text: "Create" });
    create.addEventListener("click", async () => {
      create.disabled = true;
      try {
        const service = await api("/api/v1/services", { method: "POST", body: JSON.stringify({ model_id: m.id, engine_type: engine.value }) });
        state.services.set(service.id, service);
        location.hash = `#/services/${encodeURIComponent(service.id)}`;
      } catch (e) {
        banner(e.message, true);
      } finally {
        create.disabled = false;
      }
    });
    return el("tr", { "data-model": m.id },
      el("td", { text: m.name }),
      el("td", { text: m.source }),
      el("td", { text: m.repo || m.path || "" }),
      el("td", { text: m.size_bytes ? gib(m.size_bytes) : "" }),
      estimateCell(m),
      el("td", {}, ...services.map((s, i) => [i ? ", " : "", el("a", { href: `#/services/${encodeURIComponent(s.id)}`, text: s.name })]).flat()),
      el("td", {}, engine, " ", create));
  }));
}

// ---------------------------------------------------------------- one service

const PHASES = ["validate", "gpu", "cleanup", "port_check", "image", "create", "start", "health"];

async function openService() {
  const id = state.serviceId;
  $("#events").replaceChildren();
  $("#logs").textContent = "";
  $("#phases").replaceChildren();
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
  const time = new Date(event.time).toLocaleTimeString();
  list.append(el("li", { "data-type": event.type }, el("span", { class: "muted", text: `${time} ` }), el("strong", { text: what }), event.message ? `: ${event.message}` : ""));
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
    $("#service-reason").textContent = "";
    for (const id of ["#start", "#stop", "#delete"]) $(id).disabled = true;
    return;
  }
  $("#service-title").textContent = `${s.name} (${s.id})`;
  const status = $("#service-status");
  status.textContent = s.status;
  status.className = `status status-${s.status}`;
  $("#service-reason").textContent = s.status_reason || "";
  $("#start").disabled = ["running", "starting", "stopping"].includes(s.status);
  $("#stop").disabled = ["stopped", "creating"].includes(s.status);
  $("#delete").disabled = false;
  const settings = [
    ["Model", modelName(s.model_id)], ["Engine", s.engine], ["Port", s.port],
    ["Restart", `${s.restart} (${s.restarts} restarts)`],
    ["Health", `every ${s.health_interval}, ${s.health_retries} misses`],
    ["Start timeout", s.start_timeout || "engine default"],
    ["GPU share", s.gpu_memory_utilization ?? "engine default"],
    ["Idle timeout", s.idle_timeout || "never"], ["Load timeout", s.load_timeout],
    ["Max concurrency", s.max_concurrency ?? "no limit"], ["Pinned", s.pinned ? "yes" : "no"],
    ["Container", s.container_id ? s.container_id.slice(0, 12) : "-"],
  ];
  $("#settings").replaceChildren(...settings.flatMap(([k, v]) => [el("dt", { text: k }), el("dd", { text: String(v) })]));
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

async function act(path, options = {}) {
  try {
    await api(path, { method: "POST", body: "{}", ...options });
  } catch (e) {
    banner(e.message, true);
  }
}

// ---------------------------------------------------------------- gateway

async function loadRequests() {
  try {
    const recent = await api("/api/v1/requests");
    $("#requests tbody").replaceChildren(...recent.items.map((r) => el("tr", {},
      el("td", { text: new Date(r.time).toLocaleTimeString() }),
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
  $("#start").addEventListener("click", () => act(`/api/v1/services/${encodeURIComponent(state.serviceId)}/start`));
  $("#stop").addEventListener("click", () => act(`/api/v1/services/${encodeURIComponent(state.serviceId)}/stop`));
  $("#delete").addEventListener("click", async () => {
    const s = state.services.get(state.serviceId);
    if (!s || !confirm(`Delete service ${s.name}? Its engine is stopped and its port freed.`)) return;
    try {
      await api(`/api/v1/services/${encodeURIComponent(s.id)}?force=true`, { method: "DELETE" });
      state.services.delete(s.id);
      location.hash = "#/";
    } catch (e) {
      banner(e.message, true);
    }
  });
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
  // Times shown as "ago" and the gateway's in-flight counts move without events.
  setInterval(async () => {
    await loadTraffic();
    renderServices();
    renderGpus();
  }, 2000);
}
