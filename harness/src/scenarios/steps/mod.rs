//! Steps in the operator's words. Given steps set up, When steps act (and record what
//! happened), Then steps check and fail with the evidence when the check does not hold.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use cucumber::{given, then, when};
use futures::StreamExt;
use nix::sys::signal::Signal;
use serde_json::Value;

use super::world::{AimaWorld, Cycle, InFlight, ServiceRef, containers_with_label};

mod gateway;

const WAIT_TIMEOUT: &str = "60";

fn port_is_free(port: u16) -> bool {
    TcpListener::bind((Ipv4Addr::UNSPECIFIED, port)).is_ok()
}

/// Polls `check` every few milliseconds until it holds or `deadline` passes.
async fn eventually(deadline: Duration, mut check: impl FnMut() -> bool) -> bool {
    let until = Instant::now() + deadline;
    let mut pause = Duration::from_millis(5);
    loop {
        if check() {
            return true;
        }
        if Instant::now() >= until {
            return false;
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(100));
    }
}

// ---------------------------------------------------------------- the daemon

#[given("a running AIMA daemon")]
async fn running_daemon(w: &mut AimaWorld) {
    w.start_daemon();
    w.learn_instance().await;
    let addr = w.addr();
    w.note(format!(
        "daemon on {addr}, home {}, service ports {}-{}",
        w.home.path().display(),
        w.port_range.0,
        w.port_range.1
    ));
}

#[given(expr = "the daemon is restarted with {word}={word}")]
async fn restart_with_setting(w: &mut AimaWorld, key: String, value: String) {
    let note = format!("daemon restarted with {key}={value}");
    restart_daemon(w, |w| w.daemon_env.push((key, value)), note);
}

/// Stops the daemon (it must exit cleanly), changes its settings, starts it again.
fn restart_daemon(w: &mut AimaWorld, change: impl FnOnce(&mut AimaWorld), note: String) {
    w.signal(Signal::SIGTERM);
    let status = w.wait_daemon_exit(Duration::from_secs(15));
    assert!(
        status.success(),
        "the daemon did not stop cleanly: {status}"
    );
    change(w);
    w.start_daemon();
    w.note(note);
}

#[given(expr = "the daemon is restarted with DOCKER_HOST {string}")]
async fn restart_with_docker_host(w: &mut AimaWorld, host: String) {
    let note = format!("daemon restarted with DOCKER_HOST={host}");
    restart_daemon(w, |w| w.docker_host = Some(host), note);
}

#[when("I start the daemon again")]
async fn start_again(w: &mut AimaWorld) {
    w.start_daemon();
    w.note("daemon started again on the same home");
}

#[when(expr = "I send {word} to the daemon")]
async fn send_signal(w: &mut AimaWorld, name: String) {
    let signal = match name.as_str() {
        "SIGTERM" => Signal::SIGTERM,
        "SIGKILL" => Signal::SIGKILL,
        "SIGINT" => Signal::SIGINT,
        other => panic!("unknown signal {other}"),
    };
    w.signal(signal);
    w.note(format!(
        "sent {name} to pid {}",
        w.daemon.as_ref().expect("daemon").child.id()
    ));
    if signal == Signal::SIGKILL {
        let status = w.wait_daemon_exit(Duration::from_secs(10));
        w.note(format!("daemon ended: {status}"));
    }
}

#[when(expr = "the daemon exits with code {int}")]
#[then(expr = "the daemon exits with code {int}")]
async fn daemon_exits(w: &mut AimaWorld, code: i32) {
    let started = Instant::now();
    let status = w.wait_daemon_exit(Duration::from_secs(40));
    w.note(format!(
        "daemon exited with {status} after {:?}",
        started.elapsed()
    ));
    assert_eq!(status.code(), Some(code), "daemon exit status");
}

#[given("a request is in flight")]
async fn request_in_flight(w: &mut AimaWorld) {
    let body = serde_json::json!({"name": "in-flight", "source": "ollama", "repo": "tinyllama"})
        .to_string();
    let half = body.len() / 2;
    // Earlier requests (the Background's) logged too: wait for one more line than now.
    let before = w.daemon_log_count("started processing request");
    let mut stream = TcpStream::connect(w.addr()).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    write!(
        stream,
        "POST /api/v1/models HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{}",
        body.len(),
        &body[..half]
    )
    .expect("send the first half");
    // The trace layer logs the request once its handler runs: from then on it is in flight.
    let logged = eventually(Duration::from_secs(10), || {
        w.daemon_log_count("started processing request") > before
    })
    .await;
    assert!(logged, "the daemon never started processing the request");
    w.in_flight = Some(InFlight {
        stream,
        rest: body[half..].to_owned(),
    });
    w.note("a model create is in flight: headers and half the body sent");
}

#[when("the in-flight request finishes sending")]
async fn finish_in_flight(w: &mut AimaWorld) {
    let in_flight = w.in_flight.as_mut().expect("a request in flight");
    in_flight
        .stream
        .write_all(in_flight.rest.as_bytes())
        .expect("send the rest of the body");
}

#[then(expr = "new connections are refused within {int} ms")]
async fn new_connections_refused(w: &mut AimaWorld, ms: u64) {
    let addr = w.addr();
    let started = Instant::now();
    let refused = eventually(Duration::from_millis(ms), || {
        TcpStream::connect_timeout(&addr, Duration::from_millis(50)).is_err()
    })
    .await;
    w.note(format!(
        "new connections refused after {:?}",
        started.elapsed()
    ));
    assert!(
        refused,
        "{addr} still accepted connections {ms} ms after SIGTERM"
    );
}

#[then("the in-flight request completes successfully")]
async fn in_flight_completes(w: &mut AimaWorld) {
    let mut in_flight = w.in_flight.take().expect("a request in flight");
    let mut response = String::new();
    in_flight
        .stream
        .read_to_string(&mut response)
        .expect("read the response");
    let status_line = response.lines().next().unwrap_or_default().to_owned();
    w.note(format!("in-flight request answered: {status_line}"));
    assert!(
        status_line.starts_with("HTTP/1.1 201"),
        "in-flight request got: {response}"
    );
}

#[then("the database passes the integrity check")]
async fn database_integrity(w: &mut AimaWorld) {
    let path = w.home.path().join("data/aima.db");
    let conn = integrity_check(&path);
    w.note(format!(
        "PRAGMA integrity_check on {}: {conn}",
        path.display()
    ));
    assert_eq!(conn, "ok", "integrity check of {}", path.display());
}

/// Runs `PRAGMA integrity_check` on the database file directly (the daemon may be down).
/// Opening it performs SQLite's own crash recovery of the WAL, as the next daemon would.
fn integrity_check(path: &std::path::Path) -> String {
    let conn =
        rusqlite::Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE)
            .unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    conn.query_row("PRAGMA integrity_check", [], |row| row.get(0))
        .unwrap_or_else(|e| panic!("integrity_check on {}: {e}", path.display()))
}

// ---------------------------------------------------------------- models and services

#[given(expr = "a registered model {string}")]
async fn registered_model(w: &mut AimaWorld, name: String) {
    let model = w
        .aima_json([
            "model",
            "create",
            "--name",
            name.as_str(),
            "--source",
            "ollama",
            "--repo",
            "tinyllama",
        ])
        .await;
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

async fn create_service(w: &mut AimaWorld, name: &str, model: &str, env: &[String]) {
    let flags: Vec<&str> = env.iter().flat_map(|e| ["--env", e.as_str()]).collect();
    create_service_with(w, name, model, &flags).await;
}

/// `aima service create` of a vLLM service for `model` with more `flags`, known to the
/// scenario as `name`; returns the created service as JSON.
async fn create_service_with(w: &mut AimaWorld, name: &str, model: &str, flags: &[&str]) -> Value {
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
    let service_ref = ServiceRef {
        id: service["id"].as_str().expect("id").to_owned(),
        port: service["port"].as_u64().expect("port") as u16,
    };
    w.note(format!(
        "service \"{name}\" is {} on port {}",
        service_ref.id, service_ref.port
    ));
    w.services.insert(name.to_owned(), service_ref);
    service
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

#[given(expr = "a running service {string} for model {string} using {float} of the GPU memory")]
async fn a_running_gpu_service(w: &mut AimaWorld, name: String, model: String, fraction: f64) {
    create_gpu_service(w, &name, &model, fraction).await;
    run_and_record(w, name).await;
}

#[when(expr = "I create service {string} for model {string} using {float} of the GPU memory")]
async fn create_gpu_service_step(w: &mut AimaWorld, name: String, model: String, fraction: f64) {
    create_gpu_service(w, &name, &model, fraction).await;
}

async fn create_gpu_service(w: &mut AimaWorld, name: &str, model: &str, fraction: f64) {
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

async fn create_gpu_service_with(
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
async fn run_and_record(w: &mut AimaWorld, name: String) {
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

async fn start_and_wait(w: &mut AimaWorld, name: &str) -> super::world::CliRun {
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
    let response: Value = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{port}/v1/chat/completions"))
        .json(&serde_json::json!({"model": "tinyllama", "messages": [{"role": "user", "content": "hi"}]}))
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

// ---------------------------------------------------------------- monitoring

fn last_start(w: &AimaWorld) -> &super::world::CliRun {
    w.starts.last().expect("a start was run")
}

#[then(regex = r"^the start output shows the phases (.+) in order$")]
async fn phases_in_order(w: &mut AimaWorld, phases: String) {
    let expected: Vec<String> = phases.split(',').map(|p| p.trim().to_owned()).collect();
    let output = last_start(w).stdout.clone();
    let seen: Vec<String> = output
        .lines()
        .filter_map(|l| l.split_whitespace().nth(2))
        .map(|w| w.trim_end_matches(':').to_owned())
        .filter(|p| expected.contains(p))
        .collect();
    w.note(format!("phases shown: {}", seen.join(" → ")));
    assert_eq!(seen, expected, "start output:\n{output}");
}

#[then(expr = "the start output ends with service {string} running")]
async fn start_output_ends_running(w: &mut AimaWorld, name: String) {
    let id = w.service(&name).id;
    let last = last_start(w)
        .stdout
        .trim_end()
        .lines()
        .last()
        .unwrap_or_default()
        .to_owned();
    w.note(format!("last line: {last}"));
    assert!(last.starts_with(&format!("{id} running on port")), "{last}");
}

#[then(expr = "the logs of service {string} contain {string}")]
async fn logs_contain(w: &mut AimaWorld, name: String, needle: String) {
    let id = w.service(&name).id;
    let logs = w
        .aima(["service", "logs", id.as_str(), "--tail", "50"])
        .await;
    assert_eq!(logs.code, 0, "{}", logs.stderr);
    let line = logs
        .stdout
        .lines()
        .find(|l| l.contains(&needle))
        .unwrap_or_default()
        .to_owned();
    w.note(format!("log line: {}", line.trim()));
    assert!(!line.is_empty(), "logs lack {needle:?}:\n{}", logs.stdout);
}

#[then("the start fails")]
async fn start_fails(w: &mut AimaWorld) {
    let run = last_start(w).clone();
    assert_ne!(run.code, 0, "the start succeeded: {}", run.stdout);
    assert_eq!(
        run.stderr.lines().count(),
        1,
        "one error line expected: {:?}",
        run.stderr
    );
    assert!(run.stderr.starts_with("error: "), "{:?}", run.stderr);
}

#[then(expr = "the start fails within {int} ms")]
async fn start_fails_within(w: &mut AimaWorld, ms: u64) {
    start_fails(w).await;
    let elapsed = last_start(w).elapsed;
    w.note(format!(
        "failed after {} ms (limit {ms} ms)",
        elapsed.as_millis()
    ));
    assert!(elapsed <= Duration::from_millis(ms), "took {elapsed:?}");
}

#[when(expr = "I follow the event stream of service {string}")]
async fn follow_events(w: &mut AimaWorld, name: String) {
    let id = w.service(&name).id;
    let response = reqwest::get(w.url(&format!("/api/v1/services/{id}/events?after=latest")))
        .await
        .expect("subscribe to events");
    assert_eq!(response.status(), 200);
    let events = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = events.clone();
    tokio::spawn(async move {
        let mut body = response.bytes_stream();
        let mut buffer = String::new();
        while let Some(Ok(chunk)) = body.next().await {
            buffer.push_str(&String::from_utf8_lossy(&chunk));
            while let Some(end) = buffer.find("\n\n") {
                let block: String = buffer.drain(..end + 2).collect();
                for data in block.lines().filter_map(|l| l.strip_prefix("data:")) {
                    if let Ok(event) = serde_json::from_str::<Value>(data.trim_start()) {
                        sink.lock().expect("lock").push(event);
                    }
                }
            }
        }
    });
    w.events = Some(events);
}

#[then(expr = "the event stream delivered the phases and the statuses {string} then {string}")]
async fn events_delivered(w: &mut AimaWorld, first: String, second: String) {
    let events = w.events.clone().expect("following the event stream");
    let arrived = eventually(Duration::from_secs(5), || {
        events
            .lock()
            .expect("lock")
            .iter()
            .any(|e| e["status"] == second.as_str())
    })
    .await;
    let events = events.lock().expect("lock").clone();
    let summary: Vec<String> = events
        .iter()
        .map(|e| {
            e["phase"]
                .as_str()
                .or(e["status"].as_str())
                .unwrap_or("note")
                .to_owned()
        })
        .collect();
    w.note(format!("events: {}", summary.join(" → ")));
    assert!(arrived, "no \"{second}\" status event arrived");
    let statuses: Vec<&str> = events.iter().filter_map(|e| e["status"].as_str()).collect();
    assert_eq!(statuses, [first.as_str(), second.as_str()], "status events");
    for phase in [
        "cleanup",
        "port_check",
        "image",
        "create",
        "start",
        "health",
    ] {
        assert!(summary.iter().any(|s| s == phase), "no {phase} phase event");
    }
}

#[then(expr = "the CLI and the HTTP API report the same status for service {string}")]
async fn cli_matches_http(w: &mut AimaWorld, name: String) {
    let id = w.service(&name).id;
    let cli = w.aima_json(["service", "status", id.as_str()]).await;
    let http: Value = reqwest::get(w.url(&format!("/api/service/status?service_id={id}")))
        .await
        .expect("GET status")
        .json()
        .await
        .expect("JSON");
    w.note(format!("CLI: {}, HTTP: {}", cli["status"], http["status"]));
    assert_eq!(cli, http, "CLI and HTTP disagree");
}

// ---------------------------------------------------------------- faults

#[given(expr = "an external process holds the port of service {string}")]
async fn external_process_holds(w: &mut AimaWorld, name: String) {
    let port = w.service(&name).port;
    // The stub engine binary run on the host: a real, separate process with a name.
    let child = Command::new(&w.config().stub_binary)
        .args(["--port", &port.to_string(), "--host", "0.0.0.0"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn the port blocker");
    let pid = child.id();
    w.blockers.push(child);
    let bound = eventually(Duration::from_secs(10), || !port_is_free(port)).await;
    assert!(bound, "the blocker did not bind port {port}");
    w.note(format!("blocker pid {pid} holds port {port}"));
}

#[when("the external process releases the port")]
async fn blocker_releases(w: &mut AimaWorld) {
    for mut blocker in w.blockers.drain(..) {
        let _ = blocker.kill();
        let _ = blocker.wait();
    }
    w.note("blocker stopped");
}

#[given(expr = "a foreign container publishes the port of service {string}")]
async fn foreign_container_holds(w: &mut AimaWorld, name: String) {
    let port = w.service(&name).port;
    let container = format!("foreign-{}-{port}", std::process::id());
    let out = Command::new("docker")
        .args([
            "run",
            "-d",
            "--name",
            &container,
            "--label",
            "aima.test=foreign",
            "-p",
        ])
        .arg(format!("{port}:8000"))
        .arg(&w.config().engine_image)
        .output()
        .expect("docker run");
    assert!(
        out.status.success(),
        "docker run failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    w.foreign_containers.push(container.clone());
    w.note(format!(
        "foreign container {container} publishes port {port}"
    ));
}

#[then(expr = "the error names the port of service {string} and the blocking process")]
async fn error_names_process(w: &mut AimaWorld, name: String) {
    let port = w.service(&name).port;
    let pid = w.blockers.first().map(|b| b.id()).expect("a blocker");
    let error = last_start(w).stderr.clone();
    for needle in [
        format!("port {port}"),
        format!("pid {pid}"),
        "aima-stub-engine".to_owned(),
    ] {
        assert!(error.contains(&needle), "{error:?} does not name {needle}");
    }
}

#[then(expr = "the error names the port of service {string} and the foreign container")]
async fn error_names_container(w: &mut AimaWorld, name: String) {
    let port = w.service(&name).port;
    let container = w
        .foreign_containers
        .first()
        .expect("a foreign container")
        .clone();
    let error = last_start(w).stderr.clone();
    assert!(error.contains(&format!("port {port}")), "{error:?}");
    assert!(
        error.contains(&format!("container '{container}'")),
        "{error:?}"
    );
}

#[then(expr = "the error says Docker at {string} is unreachable")]
async fn error_docker_unreachable(w: &mut AimaWorld, address: String) {
    let error = last_start(w).stderr.clone();
    assert!(
        error.contains(&format!("docker at {address} is unreachable")),
        "{error:?}"
    );
}

#[then(expr = "the error lists {int} attempts, each with its reason")]
async fn error_lists_attempts(w: &mut AimaWorld, attempts: usize) {
    let error = last_start(w).stderr.clone();
    assert!(
        error.contains(&format!("after {attempts} attempts")),
        "{error:?}"
    );
    for n in 1..=attempts {
        let marker = format!("{n}) docker at");
        assert!(
            error.contains(&marker),
            "attempt {n} has no reason in {error:?}"
        );
    }
}

#[when(expr = "I start service {string} {int} times while the port is held")]
async fn start_repeatedly(w: &mut AimaWorld, name: String, times: usize) {
    for _ in 0..times {
        let run = start_and_wait(w, &name).await;
        w.starts.push(run);
    }
}

#[then(expr = "every start of service {string} failed on its port")]
async fn every_start_failed_on_port(w: &mut AimaWorld, name: String) {
    let port = w.service(&name).port;
    assert!(!w.starts.is_empty());
    for (i, run) in w.starts.iter().enumerate() {
        assert_ne!(run.code, 0, "start {} succeeded", i + 1);
        assert!(
            run.stderr
                .contains(&format!("port {port} is already in use")),
            "start {}: {}",
            i + 1,
            run.stderr
        );
    }
}

#[then("no other port of the daemon's range is in use")]
async fn no_port_leaks(w: &mut AimaWorld) {
    let held: std::collections::BTreeSet<u16> = w.services.values().map(|s| s.port).collect();
    let busy: Vec<u16> = (w.port_range.0..=w.port_range.1)
        .filter(|p| !held.contains(p) && !port_is_free(*p))
        .collect();
    w.note(format!(
        "ports of {}-{} bound outside the services' own: {busy:?}",
        w.port_range.0, w.port_range.1
    ));
    assert!(busy.is_empty(), "ports leaked: {busy:?}");
}

#[then(expr = "service {string} still holds exactly one port")]
async fn holds_one_port(w: &mut AimaWorld, name: String) {
    let id = w.service(&name).id;
    let list = w.aima_json(["service", "list"]).await;
    let ports: Vec<u64> = list["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter(|s| s["id"] == id.as_str())
        .filter_map(|s| s["port"].as_u64())
        .collect();
    w.note(format!("{id} holds ports {ports:?}"));
    assert_eq!(ports.len(), 1, "{ports:?}");
}

#[then(expr = "service {string} is {string} in the same container")]
async fn same_container(w: &mut AimaWorld, name: String, status: String) {
    let before = w
        .containers
        .get(&name)
        .cloned()
        .expect("the container it ran in");
    let state = w.service_state(&name).await;
    w.note(format!(
        "{name}: {} in container {}",
        state["status"], state["container_id"]
    ));
    assert_eq!(state["status"], status.as_str(), "{state}");
    assert_eq!(
        state["container_id"],
        before.as_str(),
        "the service was not adopted in place"
    );
}

#[then(expr = "the container of service {string} is still running")]
async fn container_still_running(w: &mut AimaWorld, name: String) {
    let id = w.service(&name).id;
    let running = containers_with_label(&format!("aima.service={id}"), true);
    w.note(format!(
        "running containers of {id} after the daemon exited: {}",
        running.len()
    ));
    assert_eq!(
        running.len(),
        1,
        "the engine container did not survive the daemon"
    );
}

// ---------------------------------------------------------------- GPU

#[given("a real NVIDIA GPU")]
async fn real_gpu(w: &mut AimaWorld) {
    let out = Command::new("nvidia-smi")
        .args(["--query-gpu=name,memory.total", "--format=csv,noheader"])
        .output();
    let listing = match out {
        Ok(out) if out.status.success() => String::from_utf8_lossy(&out.stdout).trim().to_owned(),
        Ok(out) => panic!(
            "no NVIDIA GPU found: nvidia-smi failed: {}; run @gpu scenarios only on a GPU runner",
            String::from_utf8_lossy(&out.stderr).trim()
        ),
        Err(e) => panic!(
            "no NVIDIA GPU found: cannot run nvidia-smi ({e}); run @gpu scenarios only on a GPU runner"
        ),
    };
    assert!(
        !listing.is_empty(),
        "no NVIDIA GPU found: nvidia-smi lists none"
    );
    w.note(format!("GPUs: {listing}"));
}

#[then("the GPU's name and memory are known")]
async fn gpu_known(w: &mut AimaWorld) {
    let gpus = w
        .evidence
        .iter()
        .find(|e| e.starts_with("GPUs: "))
        .cloned()
        .expect("GPU listing");
    assert!(gpus.contains("MiB"), "no memory size in {gpus}");
}

#[when(expr = "someone removes the container of service {string} with docker")]
async fn remove_behind_back(w: &mut AimaWorld, name: String) {
    let id = w.service(&name).id;
    let out = Command::new("docker")
        .args(["rm", "-f", &format!("aima-{id}")])
        .output()
        .expect("docker rm");
    assert!(
        out.status.success(),
        "docker rm -f failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    w.removed_at = Some(Instant::now());
    w.note(format!("docker rm -f aima-{id}"));
}

#[then(expr = "within {int} ms service {string} is {string} with a reason mentioning {string}")]
async fn within_status(w: &mut AimaWorld, ms: u64, name: String, status: String, needle: String) {
    let since = w.removed_at.unwrap_or_else(Instant::now);
    let id = w.service(&name).id;
    let url = w.url(&format!("/api/v1/services/{id}"));
    let mut seen = Value::Null;
    let until = since + Duration::from_millis(ms);
    while Instant::now() < until {
        seen = reqwest::get(&url)
            .await
            .expect("GET service")
            .json()
            .await
            .expect("JSON");
        if seen["status"] == status.as_str() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    w.note(format!(
        "{name} after {} ms: {} - {}",
        since.elapsed().as_millis(),
        seen["status"],
        seen["status_reason"]
    ));
    assert_eq!(
        seen["status"],
        status.as_str(),
        "not {status} within {ms} ms: {seen}"
    );
    let reason = seen["status_reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains(&needle),
        "reason {reason:?} does not mention {needle:?}"
    );
}

// ---------------------------------------------------------------- GPU placement

#[given(expr = "simulated GPUs {string}")]
async fn simulated_gpus(w: &mut AimaWorld, gpus: String) {
    let note = format!("daemon restarted with AIMA_SIMULATE_GPUS={gpus}");
    restart_daemon(w, |w| w.simulate_gpus = Some(gpus), note);
}

#[when(expr = "I ask for a recommendation for model {string}")]
async fn ask_recommendation(w: &mut AimaWorld, model: String) {
    let id = w.model(&model);
    let advice = w
        .aima_json(["service", "recommend", "--model-id", id.as_str()])
        .await;
    w.note(format!("recommend: {}", advice["models"][0]["reason"]));
    w.recommendation = Some(advice);
}

#[then(expr = "the recommendation places model {string} on GPU {int} with a memory utilization")]
async fn recommendation_places(w: &mut AimaWorld, model: String, gpu: u64) {
    let id = w.model(&model);
    let advice = w.recommendation.clone().expect("a recommendation");
    let entry = &advice["models"][0];
    assert_eq!(entry["model_id"], id.as_str(), "{advice}");
    assert_eq!(entry["fits"], true, "{entry}");
    assert_eq!(entry["gpu_index"], gpu, "{entry}");
    let fraction = entry["gpu_memory_utilization"]
        .as_f64()
        .expect("a utilization");
    assert!(fraction > 0.0 && fraction <= 1.0, "{entry}");
    assert!(
        !entry["engine"].as_str().unwrap_or_default().is_empty(),
        "{entry}"
    );
}

#[then("the recommendation shows each GPU's free and claimed memory")]
async fn recommendation_memory(w: &mut AimaWorld) {
    let advice = w.recommendation.clone().expect("a recommendation");
    let gpus = advice["devices"]["gpus"].as_array().expect("gpus").clone();
    for gpu in &gpus {
        w.note(format!(
            "GPU {} {}: {} MiB free, {} MiB claimed",
            gpu["index"], gpu["name"], gpu["memory_free_mib"], gpu["memory_claimed_mib"]
        ));
        assert!(
            gpu["memory_free_mib"].is_u64() && gpu["memory_claimed_mib"].is_u64(),
            "{gpu}"
        );
    }
    assert!(gpus.len() >= 2, "{advice}");
}

#[then(
    expr = "services {string} and {string} are placed on GPU {int} with {float} of its memory claimed"
)]
async fn placed_together(w: &mut AimaWorld, a: String, b: String, gpu: u64, fraction: f64) {
    let devices = w.aima_json(["device", "detect"]).await;
    let entry = devices["gpus"]
        .as_array()
        .expect("gpus")
        .iter()
        .find(|g| g["index"] == gpu)
        .cloned()
        .expect("the GPU");
    let placed: Vec<String> = entry["services"]
        .as_array()
        .expect("services")
        .iter()
        .filter_map(|s| s.as_str().map(str::to_owned))
        .collect();
    let total = entry["memory_total_mib"].as_f64().expect("total");
    let claimed = entry["memory_claimed_mib"].as_f64().expect("claimed");
    w.note(format!(
        "GPU {gpu}: {placed:?}, {claimed} of {total} MiB claimed"
    ));
    for name in [&a, &b] {
        let id = w.service(name).id;
        assert!(
            placed.contains(&id),
            "{id} is not placed on GPU {gpu}: {placed:?}"
        );
    }
    assert!(
        (claimed / total - fraction).abs() < 0.01,
        "claimed {claimed} of {total}"
    );
}

#[then(expr = "only the containers of services {string} and {string} are left")]
async fn only_containers_of_two(w: &mut AimaWorld, a: String, b: String) {
    let ours = containers_with_label(&w.instance_label(), false);
    let mut theirs = containers_with_label(&format!("aima.service={}", w.service(&a).id), false);
    theirs.extend(containers_with_label(
        &format!("aima.service={}", w.service(&b).id),
        false,
    ));
    w.note(format!("containers of this run: {}", ours.len()));
    let (mut ours, mut theirs) = (ours, theirs);
    ours.sort();
    theirs.sort();
    assert_eq!(ours, theirs);
}

#[then("aima device detect lists the same GPU")]
async fn device_detect_lists_gpu(w: &mut AimaWorld) {
    let devices = w.aima_json(["device", "detect"]).await;
    w.note(format!("aima device detect: {}", devices["gpus"]));
    assert_eq!(devices["simulated"], false);
    assert!(
        !devices["gpus"].as_array().expect("gpus").is_empty(),
        "{devices}"
    );
}
