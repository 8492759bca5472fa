// The dashboard's overview and gateway views, and its start. Loaded last, after core.js,
// charts.js, models.js and service.js, whose functions it calls.
"use strict";

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
