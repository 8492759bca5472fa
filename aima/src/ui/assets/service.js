// One service's page: its actions, phases, settings form, events and logs. Loaded after
// core.js.
"use strict";

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
