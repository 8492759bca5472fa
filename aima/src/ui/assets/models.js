// The models page: each model with its estimate, and forms to create, pull and delete
// models and give one a service. Loaded after core.js.
"use strict";

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
