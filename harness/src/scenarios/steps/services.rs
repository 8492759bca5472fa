//! Steps about models and services: creating, starting, stopping, deleting, and what the
//! service list, ports and containers show afterwards.

use super::*;

#[given(expr = "a registered model {string}")]
async fn registered_model(w: &mut AimaWorld, name: String) {
    register_model(w, name, &["--source", "ollama", "--repo", "tinyllama"]).await;
}

#[given(expr = "a registered model {string} from repo {string}")]
async fn registered_model_from(w: &mut AimaWorld, name: String, repo: String) {
    register_model(
        w,
        name,
        &["--source", "huggingface", "--repo", repo.as_str()],
    )
    .await;
}

#[given(expr = "a registered model {string} of {string} with a context of {int} tokens")]
async fn registered_model_sized(w: &mut AimaWorld, name: String, size: String, context: u32) {
    let context = context.to_string();
    register_model(
        w,
        name,
        &[
            "--source",
            "huggingface",
            "--repo",
            "org/model",
            "--size",
            size.as_str(),
            "--context",
            context.as_str(),
        ],
    )
    .await;
}

#[given(expr = "a registered local model {string}")]
async fn registered_local_model(w: &mut AimaWorld, name: String) {
    // Local weights must lie under the daemon's model root.
    let dir = w.home.path().join("models").join(&name);
    std::fs::create_dir_all(&dir).expect("create the model directory");
    // A tiny real model in Hugging Face's layout: AIMA reads its header at registration.
    let data = [0u8; 32];
    let view = safetensors::tensor::TensorView::new(safetensors::Dtype::F16, vec![4, 4], &data)
        .expect("tensor view");
    safetensors::tensor::serialize_to_file([("w", view)], None, &dir.join("model.safetensors"))
        .expect("write model.safetensors");
    std::fs::write(dir.join("config.json"), r#"{"model_type": "llama"}"#)
        .expect("write config.json");
    let path = dir.to_string_lossy().into_owned();
    register_model(w, name, &["--source", "local", "--path", path.as_str()]).await;
}

/// `aima model create --name NAME` with `source_args`, known to the scenario as `name`.
async fn register_model(w: &mut AimaWorld, name: String, source_args: &[&str]) {
    let mut args = vec!["model", "create", "--name", name.as_str()];
    args.extend(source_args);
    let model = w.aima_json(args).await;
    let id = model["id"].as_str().expect("model id").to_owned();
    w.note(format!("model \"{name}\" is {id}"));
    w.models.insert(name, id);
}

#[then(expr = "model {string} is listed")]
async fn model_listed(w: &mut AimaWorld, name: String) {
    let list = w.aima_json(["model", "list"]).await;
    let names: Vec<&str> = list["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|m| m["name"].as_str())
        .collect();
    w.note(format!("models listed: {names:?}"));
    assert!(
        names.contains(&name.as_str()),
        "model \"{name}\" missing from {names:?}"
    );
}

pub(super) async fn create_service(w: &mut AimaWorld, name: &str, model: &str, env: &[String]) {
    let flags: Vec<&str> = env.iter().flat_map(|e| ["--env", e.as_str()]).collect();
    create_service_with(w, name, model, &flags).await;
}

/// `aima service create` of a vLLM service for `model` with more `flags`, known to the
/// scenario as `name`; returns the created service as JSON.
pub(super) async fn create_service_with(
    w: &mut AimaWorld,
    name: &str,
    model: &str,
    flags: &[&str],
) -> Value {
    let model_id = w.model(model);
    let mut args = vec![
        "service",
        "create",
        "--model-id",
        model_id.as_str(),
        "--engine-type",
        "vllm",
    ];
    args.extend(flags);
    let service = w.aima_json(args).await;
    remember_service(w, name, &service);
    service
}

/// Knows the service `aima service create -o json` printed as the scenario's `name`.
pub(super) fn remember_service(w: &mut AimaWorld, name: &str, service: &Value) {
    let service_ref = ServiceRef {
        id: service["id"].as_str().expect("id").to_owned(),
        port: service["port"].as_u64().expect("port") as u16,
    };
    w.note(format!(
        "service \"{name}\" is {} on port {} ({})",
        service_ref.id, service_ref.port, service["engine"]
    ));
    w.services.insert(name.to_owned(), service_ref);
}

#[given(expr = "a service {string} for model {string}")]
#[when(expr = "I create service {string} for model {string}")]
async fn a_service(w: &mut AimaWorld, name: String, model: String) {
    create_service(w, &name, &model, &[]).await;
}

#[given(expr = "a service {string} for model {string} with env {string}")]
async fn a_service_with_env(w: &mut AimaWorld, name: String, model: String, env: String) {
    create_service(w, &name, &model, &[env]).await;
}

#[given(expr = "a service {string} for model {string} with env {string} and {string}")]
async fn a_service_with_two_env(
    w: &mut AimaWorld,
    name: String,
    model: String,
    first: String,
    second: String,
) {
    create_service(w, &name, &model, &[first, second]).await;
}

#[given(expr = "a running service {string} for model {string}")]
async fn a_running_service(w: &mut AimaWorld, name: String, model: String) {
    create_service(w, &name, &model, &[]).await;
    run_and_record(w, name).await;
}

#[given(expr = "a running service {string} for model {string} with env {string}")]
async fn a_running_service_with_env(w: &mut AimaWorld, name: String, model: String, env: String) {
    create_service(w, &name, &model, &[env]).await;
    run_and_record(w, name).await;
}

#[given(expr = "a running service {string} for model {string} with restart policy {string}")]
async fn a_running_service_with_restart(
    w: &mut AimaWorld,
    name: String,
    model: String,
    policy: String,
) {
    create_service_with(w, &name, &model, &["--restart", &policy]).await;
    run_and_record(w, name).await;
}

#[given(
    expr = "a running service {string} for model {string} with env {string} and restart policy {string}"
)]
async fn a_running_service_with_env_and_restart(
    w: &mut AimaWorld,
    name: String,
    model: String,
    env: String,
    policy: String,
) {
    create_service_with(w, &name, &model, &["--env", &env, "--restart", &policy]).await;
    run_and_record(w, name).await;
}

#[given(
    expr = "a service {string} for model {string} with restart policy {string} and env {string}"
)]
async fn a_service_with_restart_and_env(
    w: &mut AimaWorld,
    name: String,
    model: String,
    policy: String,
    env: String,
) {
    create_service_with(w, &name, &model, &["--restart", &policy, "--env", &env]).await;
}

#[given(expr = "a running service {string} for model {string} using {float} of the GPU memory")]
async fn a_running_gpu_service(w: &mut AimaWorld, name: String, model: String, fraction: f64) {
    create_gpu_service(w, &name, &model, fraction).await;
    run_and_record(w, name).await;
}

#[when(expr = "I create service {string} for model {string} using {float} of the GPU memory")]
async fn create_gpu_service_step(w: &mut AimaWorld, name: String, model: String, fraction: f64) {
    create_gpu_service(w, &name, &model, fraction).await;
}

pub(super) async fn create_gpu_service(w: &mut AimaWorld, name: &str, model: &str, fraction: f64) {
    create_gpu_service_with(w, name, model, fraction, &[]).await;
}

#[given(expr = "a service {string} for model {string} using {float} of the GPU memory")]
async fn a_gpu_service(w: &mut AimaWorld, name: String, model: String, fraction: f64) {
    create_gpu_service(w, &name, &model, fraction).await;
}

#[given(expr = "a pinned service {string} for model {string} using {float} of the GPU memory")]
async fn a_pinned_gpu_service(w: &mut AimaWorld, name: String, model: String, fraction: f64) {
    create_gpu_service_with(w, &name, &model, fraction, &["--pinned"]).await;
}

pub(super) async fn create_gpu_service_with(
    w: &mut AimaWorld,
    name: &str,
    model: &str,
    fraction: f64,
    extra: &[&str],
) {
    let fraction = fraction.to_string();
    let mut flags = vec!["--gpu-memory-utilization", fraction.as_str()];
    flags.extend(extra);
    create_service_with(w, name, model, &flags).await;
    w.note(format!(
        "service \"{name}\" claims {fraction} of the GPU memory"
    ));
}

/// Starts a service, expects it running, and remembers its container.
pub(super) async fn run_and_record(w: &mut AimaWorld, name: String) {
    let run = start_and_wait(w, &name).await;
    assert_eq!(
        run.code,
        0,
        "service \"{name}\" did not start: {}",
        run.stderr.trim()
    );
    let state = w.service_state(&name).await;
    let container = state["container_id"]
        .as_str()
        .expect("a running service has a container")
        .to_owned();
    w.note(format!(
        "service \"{name}\" runs in container {}",
        &container[..12]
    ));
    w.containers.insert(name, container);
}

pub(super) async fn start_and_wait(
    w: &mut AimaWorld,
    name: &str,
) -> crate::scenarios::world::CliRun {
    let id = w.service(name).id;
    let run = w
        .aima([
            "service",
            "start",
            id.as_str(),
            "--wait",
            "--timeout",
            WAIT_TIMEOUT,
        ])
        .await;
    w.note(format!(
        "`aima service start {id} --wait` exited {} after {} ms{}",
        run.code,
        run.elapsed.as_millis(),
        run.stderr
            .lines()
            .next()
            .map(|l| format!(": {l}"))
            .unwrap_or_default()
    ));
    run
}

#[given(expr = "I start service {string} and wait")]
#[when(expr = "I start service {string} and wait")]
async fn start_service_and_wait(w: &mut AimaWorld, name: String) {
    let run = start_and_wait(w, &name).await;
    w.starts.push(run);
}

#[when(expr = "I stop service {string}")]
async fn stop_service(w: &mut AimaWorld, name: String) {
    let id = w.service(&name).id;
    let run = w.aima(["service", "stop", id.as_str()]).await;
    w.note(format!(
        "`aima service stop {id}` exited {} after {} ms",
        run.code,
        run.elapsed.as_millis()
    ));
    assert_eq!(run.code, 0, "stop failed: {}", run.stderr.trim());
    w.stops.push(run);
}

#[when(expr = "I delete service {string}")]
async fn delete_service(w: &mut AimaWorld, name: String) {
    let id = w.service(&name).id;
    let run = w.aima(["service", "delete", id.as_str()]).await;
    assert_eq!(run.code, 0, "delete failed: {}", run.stderr.trim());
    w.note(format!("deleted {id}"));
}

#[when(expr = "I start and stop service {string} {int} times")]
async fn start_stop_cycles(w: &mut AimaWorld, name: String, times: usize) {
    let service = w.service(&name);
    for _ in 0..times {
        let start = w
            .aima([
                "service",
                "start",
                service.id.as_str(),
                "--wait",
                "--timeout",
                WAIT_TIMEOUT,
            ])
            .await;
        let after_start = w.service_state(&name).await;
        let stop = w.aima(["service", "stop", service.id.as_str()]).await;
        let after_stop = w.service_state(&name).await;
        let container = after_start["container_id"].as_str().map(str::to_owned);
        let alive = container.as_deref().is_some_and(|c| {
            Command::new("docker")
                .args(["inspect", c])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        });
        w.note(format!(
            "cycle {}: start exit {} in {} ms ({}), container {}, stop exit {} in {} ms ({})",
            w.cycles.len() + 1,
            start.code,
            start.elapsed.as_millis(),
            after_start["status"].as_str().unwrap_or("?"),
            container
                .as_deref()
                .map(|c| &c[..12.min(c.len())])
                .unwrap_or("-"),
            stop.code,
            stop.elapsed.as_millis(),
            after_stop["status"].as_str().unwrap_or("?"),
        ));
        w.cycles.push(Cycle {
            status_after_start: after_start["status"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
            port: after_start["port"].as_u64().unwrap_or_default() as u16,
            container,
            status_after_stop: after_stop["status"].as_str().unwrap_or_default().to_owned(),
            container_alive_after_stop: alive,
            start,
            stop,
        });
    }
}

#[then(expr = "every start and every stop of service {string} succeeded")]
async fn every_cycle_succeeded(w: &mut AimaWorld, _name: String) {
    assert!(!w.cycles.is_empty(), "no cycles ran");
    for (i, cycle) in w.cycles.iter().enumerate() {
        assert_eq!(
            cycle.start.code,
            0,
            "cycle {}: start failed: {}",
            i + 1,
            cycle.start.stderr.trim()
        );
        assert_eq!(
            cycle.stop.code,
            0,
            "cycle {}: stop failed: {}",
            i + 1,
            cycle.stop.stderr.trim()
        );
    }
}

#[then(expr = "each start of service {string} ran in a new container")]
async fn fresh_containers(w: &mut AimaWorld, _name: String) {
    let ids: Vec<String> = w
        .cycles
        .iter()
        .map(|c| c.container.clone().expect("a container after start"))
        .collect();
    let unique: std::collections::BTreeSet<_> = ids.iter().collect();
    w.note(format!(
        "{} starts, {} distinct containers",
        ids.len(),
        unique.len()
    ));
    assert_eq!(unique.len(), ids.len(), "a container was reused: {ids:?}");
}

#[then(expr = "no container of service {string} outlived its stop")]
async fn no_container_outlived_stop(w: &mut AimaWorld, _name: String) {
    for (i, cycle) in w.cycles.iter().enumerate() {
        assert!(
            !cycle.container_alive_after_stop,
            "cycle {}: the container still existed after stop",
            i + 1
        );
    }
}

#[then(expr = "service {string} was {string} after every start and {string} after every stop")]
async fn statuses_per_cycle(
    w: &mut AimaWorld,
    _name: String,
    after_start: String,
    after_stop: String,
) {
    for (i, cycle) in w.cycles.iter().enumerate() {
        assert_eq!(
            cycle.status_after_start,
            after_start,
            "cycle {}: status after start",
            i + 1
        );
        assert_eq!(
            cycle.status_after_stop,
            after_stop,
            "cycle {}: status after stop",
            i + 1
        );
    }
}

#[then(expr = "service {string} used the same port in every cycle")]
async fn same_port(w: &mut AimaWorld, name: String) {
    let expected = w.service(&name).port;
    let ports: Vec<u16> = w.cycles.iter().map(|c| c.port).collect();
    w.note(format!("ports per cycle: {ports:?}"));
    assert!(
        ports.iter().all(|p| *p == expected),
        "ports changed: {ports:?}, expected {expected}"
    );
}

#[then(expr = "the port of service {string} is free on the host")]
async fn port_free(w: &mut AimaWorld, name: String) {
    let port = w.service(&name).port;
    let free = port_is_free(port);
    w.note(format!("port {port} bindable: {free}"));
    assert!(free, "port {port} is still bound");
}

#[then("no container of this run is left")]
async fn no_containers_left(w: &mut AimaWorld) {
    let label = w.instance_label();
    let left = containers_with_label(&label, false);
    w.note(format!("containers with {label}: {}", left.len()));
    assert!(left.is_empty(), "containers left behind: {left:?}");
}

#[then(expr = "only the container of service {string} is left")]
async fn only_container_of(w: &mut AimaWorld, name: String) {
    let id = w.service(&name).id;
    let ours = containers_with_label(&w.instance_label(), false);
    let its = containers_with_label(&format!("aima.service={id}"), false);
    w.note(format!(
        "containers of this run: {}, of {id}: {}",
        ours.len(),
        its.len()
    ));
    assert_eq!(ours.len(), 1, "expected one container, found {ours:?}");
    assert_eq!(ours, its, "the remaining container is not {id}'s");
}

#[then(expr = "services {string} and {string} have different ports inside the daemon's port range")]
async fn different_ports(w: &mut AimaWorld, a: String, b: String) {
    let (pa, pb) = (w.service(&a).port, w.service(&b).port);
    let range = w.port_range;
    w.note(format!(
        "ports: {a}={pa}, {b}={pb}, range {}-{}",
        range.0, range.1
    ));
    assert_ne!(pa, pb, "both services got port {pa}");
    for p in [pa, pb] {
        assert!(
            (range.0..=range.1).contains(&p),
            "port {p} is outside {}-{}",
            range.0,
            range.1
        );
    }
}

#[then(expr = "the service list shows {string} as {string}")]
async fn list_shows(w: &mut AimaWorld, name: String, status: String) {
    let id = w.service(&name).id;
    let list = w.aima(["service", "list"]).await;
    assert_eq!(list.code, 0, "{}", list.stderr);
    let row = list
        .stdout
        .lines()
        .find(|l| l.starts_with(&id))
        .unwrap_or_default()
        .to_owned();
    w.note(format!("service list row: {row}"));
    assert!(
        row.split_whitespace().any(|cell| cell == status),
        "service list shows {id} as {row:?}, expected {status}"
    );
}

#[then(expr = "service {string} is {string}")]
async fn service_is(w: &mut AimaWorld, name: String, status: String) {
    let state = w.service_state(&name).await;
    w.note(format!(
        "{name}: {} ({})",
        state["status"], state["status_reason"]
    ));
    assert_eq!(state["status"], status.as_str(), "{state}");
}

#[then(expr = "service {string} is {string} with a reason mentioning {string}")]
async fn service_is_with_reason(w: &mut AimaWorld, name: String, status: String, needle: String) {
    let state = w.service_state(&name).await;
    let reason = state["status_reason"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    w.note(format!("{name}: {} - {reason}", state["status"]));
    assert_eq!(state["status"], status.as_str(), "{state}");
    assert!(
        reason.contains(&needle),
        "reason {reason:?} does not mention {needle:?}"
    );
}

#[then(expr = "service {string} is {string} on its port")]
async fn service_on_its_port(w: &mut AimaWorld, name: String, status: String) {
    let expected = w.service(&name).port;
    let state = w.service_state(&name).await;
    w.note(format!(
        "{name}: {} on port {}",
        state["status"], state["port"]
    ));
    assert_eq!(state["status"], status.as_str());
    assert_eq!(state["port"], u64::from(expected));
}

#[then(expr = "service {string} answers inference requests")]
async fn answers_inference(w: &mut AimaWorld, name: String) {
    let port = w.service(&name).port;
    // As a client does: ask the engine which model it serves, then chat with that one.
    let models: Value = reqwest::get(format!("http://127.0.0.1:{port}/v1/models"))
        .await
        .expect("engine lists its models")
        .json()
        .await
        .expect("JSON model list");
    let served = models["data"][0]["id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let response: Value = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{port}/v1/chat/completions"))
        .json(
            &serde_json::json!({"model": served, "messages": [{"role": "user", "content": "hi"}]}),
        )
        .send()
        .await
        .expect("engine answers")
        .json()
        .await
        .expect("JSON completion");
    let content = response["choices"][0]["message"]["content"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    w.note(format!("chat completion on port {port}: {content:?}"));
    assert!(!content.is_empty(), "no completion: {response}");
}

#[then(expr = "service {string} got the port service {string} had")]
async fn port_reused(w: &mut AimaWorld, new: String, old: String) {
    let (pn, po) = (w.service(&new).port, w.service(&old).port);
    w.note(format!("{new} got port {pn}; {old} had {po}"));
    assert_eq!(pn, po);
}

#[then(expr = "the id of service {string} has the form svc-vllm-<8 hex digits>")]
async fn id_form(w: &mut AimaWorld, name: String) {
    let id = w.service(&name).id;
    w.note(format!("id: {id}"));
    let hex = id
        .strip_prefix("svc-vllm-")
        .unwrap_or_else(|| panic!("{id} does not start with svc-vllm-"));
    assert!(
        hex.len() == 8
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)),
        "{id}"
    );
}
