//! Restart survival: graceful shutdown details, reconciliation with Docker at start,
//! and crash safety under SIGKILL at any moment. Real daemon processes, real Docker.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, TcpListener};
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use serde_json::{Value, json};

use crate::support::{
    Cleanup, DaemonProcess, aima_bin, cli_for, ensure_stub_image, poll, port_range,
};

/// A real daemon on `home` running the stub engine as vLLM in its own port slice.
fn daemon(home: &Path, ports: (u16, u16), extra: &[(&str, &str)]) -> DaemonProcess {
    let image = ensure_stub_image();
    let range = format!("{}-{}", ports.0, ports.1);
    let mut env = vec![
        ("AIMA_ENGINE_IMAGE_VLLM", image),
        ("AIMA_PORT_RANGE", range.as_str()),
    ];
    env.extend_from_slice(extra);
    DaemonProcess::start(home, &env)
}

fn cli_json(d: &DaemonProcess, args: &[&str]) -> Value {
    let out = cli_for(d.addr, &d.home)
        .args(args)
        .args(["-o", "json"])
        .output()
        .expect("run aima");
    assert!(
        out.status.success(),
        "aima {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("json")
}

fn instance(d: &DaemonProcess) -> String {
    cli_json(d, &["status"])["instance"]
        .as_str()
        .expect("instance")
        .to_owned()
}

fn new_model(d: &DaemonProcess) -> String {
    cli_json(
        d,
        &[
            "model",
            "create",
            "--name",
            "m",
            "--source",
            "ollama",
            "--repo",
            "tinyllama",
        ],
    )["id"]
        .as_str()
        .expect("id")
        .to_owned()
}

/// A vLLM service that stays `failed` when its engine dies: these tests check what the
/// daemon notices; the restart policy has tests of its own (`self_healing`).
fn new_service(d: &DaemonProcess, model: &str, env: &[&str]) -> Value {
    let mut args = vec![
        "service",
        "create",
        "--model-id",
        model,
        "--engine-type",
        "vllm",
        "--restart",
        "no",
    ];
    for e in env {
        args.extend(["--env", e]);
    }
    cli_json(d, &args)
}

fn id(service: &Value) -> String {
    service["id"].as_str().expect("id").to_owned()
}

fn start_wait(d: &DaemonProcess, id: &str) {
    let out = cli_for(d.addr, &d.home)
        .args(["service", "start", id, "--wait", "--timeout", "60"])
        .output()
        .expect("start");
    assert!(
        out.status.success(),
        "start {id}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn get(d: &DaemonProcess, id: &str) -> Value {
    cli_json(d, &["service", "get", id])
}

fn containers(label: &str, running_only: bool) -> Vec<String> {
    let mut cmd = Command::new("docker");
    cmd.args(["ps", "-q", "--filter", &format!("label={label}")]);
    if !running_only {
        cmd.arg("-a");
    }
    let out = cmd.output().expect("docker ps");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}

fn docker(args: &[&str]) -> String {
    let out = Command::new("docker").args(args).output().expect("docker");
    assert!(
        out.status.success(),
        "docker {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

fn sigterm_and_wait(d: &mut DaemonProcess) {
    d.signal(Signal::SIGTERM);
    assert_eq!(
        d.wait_exit(Duration::from_secs(20)).code(),
        Some(0),
        "{:#?}",
        d.stderr()
    );
}

#[test]
fn a_running_service_is_adopted_in_place_across_a_restart() {
    let home = tempfile::tempdir().expect("home");
    let ports = port_range();
    let mut d = daemon(home.path(), ports, &[]);
    let _cleanup = Cleanup(instance(&d));
    let model = new_model(&d);
    let svc = id(&new_service(&d, &model, &[]));
    start_wait(&d, &svc);
    let container = get(&d, &svc)["container_id"]
        .as_str()
        .expect("container")
        .to_owned();
    sigterm_and_wait(&mut d);
    assert_eq!(
        containers(&format!("aima.service={svc}"), true).len(),
        1,
        "the engine kept running"
    );

    let d = daemon(home.path(), ports, &[]);
    d.wait_for_log("ready", Duration::from_secs(10));
    let after = get(&d, &svc);
    assert_eq!(after["status"], "running");
    assert_eq!(
        after["container_id"],
        container.as_str(),
        "adopted, not recreated"
    );
    let events = cli_for(d.addr, &d.home)
        .args(["service", "events", &svc])
        .output()
        .expect("events");
    assert!(String::from_utf8_lossy(&events.stdout).contains("adopted running container"));
    // The watcher follows the adopted container too.
    docker(&["kill", &format!("aima-{svc}")]);
    poll(
        Duration::from_secs(5),
        "the adopted container's death to be noticed",
        || (get(&d, &svc)["status"] == "failed").then_some(()),
    );
}

#[test]
fn containers_that_died_or_vanished_while_the_daemon_was_down_fail_with_the_reason() {
    let home = tempfile::tempdir().expect("home");
    let ports = port_range();
    let mut d = daemon(home.path(), ports, &[]);
    let _cleanup = Cleanup(instance(&d));
    let model = new_model(&d);
    let died = id(&new_service(&d, &model, &[]));
    let vanished = id(&new_service(&d, &model, &[]));
    start_wait(&d, &died);
    start_wait(&d, &vanished);
    sigterm_and_wait(&mut d);
    docker(&["kill", &format!("aima-{died}")]);
    docker(&["rm", "-f", &format!("aima-{vanished}")]);

    let d = daemon(home.path(), ports, &[]);
    d.wait_for_log("ready", Duration::from_secs(10));
    let a = get(&d, &died);
    assert_eq!(a["status"], "failed");
    assert!(
        a["status_reason"]
            .as_str()
            .expect("reason")
            .contains("container exited while the daemon was down (exit code 137)"),
        "{a}"
    );
    let b = get(&d, &vanished);
    assert_eq!(b["status"], "failed");
    assert!(
        b["status_reason"]
            .as_str()
            .expect("reason")
            .contains("vanished while the daemon was down"),
        "{b}"
    );
    // The dead container's last lines are kept, then it is removed.
    let logs = cli_for(d.addr, &d.home)
        .args(["service", "logs", &died])
        .output()
        .expect("logs");
    assert!(
        String::from_utf8_lossy(&logs.stdout).contains("Uvicorn running on"),
        "logs kept"
    );
    assert!(
        containers(&format!("aima.instance={}", instance(&d)), false).is_empty(),
        "no container left"
    );
}

#[test]
fn leftovers_of_this_instance_are_removed_and_other_instances_are_untouched() {
    let home = tempfile::tempdir().expect("home");
    let ports = port_range();
    let mut d = daemon(home.path(), ports, &[]);
    let ours = instance(&d);
    let _cleanup = Cleanup(ours.clone());
    sigterm_and_wait(&mut d);
    let image = ensure_stub_image();
    let leftover = docker(&[
        "create",
        "--label",
        &format!("aima.instance={ours}"),
        "--label",
        "aima.service=svc-vllm-0badf00d",
        image,
    ]);
    let foreign = docker(&[
        "create",
        "--label",
        "aima.instance=someone-else",
        "--label",
        "aima.managed=true",
        image,
    ]);

    let d = daemon(home.path(), ports, &[]);
    d.wait_for_log("ready", Duration::from_secs(10));
    let gone = Command::new("docker")
        .args(["inspect", &leftover])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    let kept = Command::new("docker")
        .args(["inspect", &foreign])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    let _ = Command::new("docker").args(["rm", "-f", &foreign]).output();
    assert!(
        !gone.expect("inspect").success(),
        "the leftover of this instance was removed"
    );
    assert!(
        kept.expect("inspect").success(),
        "another instance's container is never touched"
    );
    drop(d);
}

#[test]
fn a_changed_engine_image_recreates_the_container_on_restart() {
    let home = tempfile::tempdir().expect("home");
    let ports = port_range();
    let mut d = daemon(home.path(), ports, &[]);
    let _cleanup = Cleanup(instance(&d));
    let model = new_model(&d);
    let svc = id(&new_service(&d, &model, &[]));
    start_wait(&d, &svc);
    let before = get(&d, &svc)["container_id"]
        .as_str()
        .expect("container")
        .to_owned();
    sigterm_and_wait(&mut d);

    let retagged = format!("aima-stub-engine:restart-{}", std::process::id());
    docker(&["tag", ensure_stub_image(), &retagged]);
    let d = daemon(
        home.path(),
        ports,
        &[("AIMA_ENGINE_IMAGE_VLLM", retagged.as_str())],
    );
    let after = poll(Duration::from_secs(20), "the service to run again", || {
        let s = get(&d, &svc);
        (s["status"] == "running").then_some(s)
    });
    let _ = Command::new("docker").args(["rmi", &retagged]).output();
    assert_ne!(
        after["container_id"],
        before.as_str(),
        "a new container for the new spec"
    );
    assert_eq!(containers(&format!("aima.service={svc}"), false).len(), 1);
}

#[test]
fn sigkill_in_the_middle_of_a_start_resumes_it_after_restart() {
    let home = tempfile::tempdir().expect("home");
    let ports = port_range();
    let d = daemon(home.path(), ports, &[]);
    let _cleanup = Cleanup(instance(&d));
    let model = new_model(&d);
    let svc = id(&new_service(&d, &model, &["STUB_START_DELAY_MS=1500"]));
    assert_eq!(
        cli_json(&d, &["service", "start", &svc])["status"],
        "starting"
    );
    poll(
        Duration::from_secs(10),
        "the container to be created",
        || (!containers(&format!("aima.service={svc}"), true).is_empty()).then_some(()),
    );
    d.signal(Signal::SIGKILL);
    drop(d);

    let d = daemon(home.path(), ports, &[]);
    let state = poll(Duration::from_secs(15), "the start to settle", || {
        let s = get(&d, &svc);
        (s["status"] != "starting").then_some(s)
    });
    assert_eq!(state["status"], "running", "{state}");
    assert_eq!(containers(&format!("aima.service={svc}"), false).len(), 1);
}

#[test]
fn sigkill_in_the_middle_of_a_stop_finishes_it_after_restart() {
    let home = tempfile::tempdir().expect("home");
    let ports = port_range();
    let d = daemon(home.path(), ports, &[]);
    let _cleanup = Cleanup(instance(&d));
    let model = new_model(&d);
    let service = new_service(&d, &model, &["STUB_STOP_DELAY_MS=5000"]);
    let (svc, port) = (id(&service), service["port"].as_u64().expect("port") as u16);
    start_wait(&d, &svc);
    let mut stopper = Command::new(aima_bin())
        .args(["service", "stop", &svc])
        .env("AIMA_ADDR", d.addr.to_string())
        .env("AIMA_HOME", home.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn stop");
    poll(Duration::from_secs(10), "the stop to be under way", || {
        (get(&d, &svc)["status"] == "stopping").then_some(())
    });
    d.signal(Signal::SIGKILL);
    drop(d);
    let _ = stopper.wait();

    let d = daemon(home.path(), ports, &[]);
    d.wait_for_log("ready", Duration::from_secs(15));
    assert_eq!(get(&d, &svc)["status"], "stopped");
    assert!(
        containers(&format!("aima.service={svc}"), false).is_empty(),
        "no container left"
    );
    poll(Duration::from_secs(10), "the port to be free", || {
        TcpListener::bind((Ipv4Addr::UNSPECIFIED, port))
            .ok()
            .map(|_| ())
    });
}

#[test]
fn a_second_signal_forces_the_exit() {
    let home = tempfile::tempdir().expect("home");
    let mut d = daemon(
        home.path(),
        port_range(),
        &[("AIMA_SHUTDOWN_TIMEOUT", "60s")],
    );
    // A request that never finishes keeps the drain waiting.
    let mut stalled = std::net::TcpStream::connect(d.addr).expect("connect");
    std::io::Write::write_all(
        &mut stalled,
        b"POST /api/v1/models HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 50\r\n\r\n{",
    )
    .expect("write");
    d.wait_for_log("started processing request", Duration::from_secs(10));
    d.signal(Signal::SIGTERM);
    d.wait_for_log("shutting down", Duration::from_secs(10));
    assert!(
        d.child.try_wait().expect("wait").is_none(),
        "still draining"
    );
    let forced = Instant::now();
    d.signal(Signal::SIGTERM);
    let status = d.wait_exit(Duration::from_secs(10));
    assert_eq!(status.code(), Some(1), "a forced exit is not a clean one");
    assert!(forced.elapsed() < Duration::from_secs(5));
    assert!(
        d.stderr().iter().any(|l| l.contains("second signal")),
        "{:#?}",
        d.stderr()
    );
}

#[test]
fn following_streams_end_cleanly_on_sigterm() {
    let home = tempfile::tempdir().expect("home");
    let ports = port_range();
    let mut d = daemon(home.path(), ports, &[("AIMA_SHUTDOWN_TIMEOUT", "60s")]);
    let _cleanup = Cleanup(instance(&d));
    let model = new_model(&d);
    let svc = id(&new_service(&d, &model, &[]));
    start_wait(&d, &svc);
    let followers: Vec<_> = [
        ["service", "events", svc.as_str(), "--follow"],
        ["service", "logs", svc.as_str(), "--follow"],
    ]
    .iter()
    .map(|args| {
        Command::new(aima_bin())
            .args(args)
            .env("AIMA_ADDR", d.addr.to_string())
            .env("AIMA_HOME", home.path())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn follower")
    })
    .collect();
    poll(Duration::from_secs(10), "both followers to connect", || {
        (d.stderr()
            .iter()
            .filter(|l| l.contains("/follow") || l.contains("follow=true"))
            .count()
            >= 2)
            .then_some(())
    });
    let signalled = Instant::now();
    sigterm_and_wait(&mut d);
    assert!(
        signalled.elapsed() < Duration::from_secs(10),
        "the drain did not wait for the streams' end"
    );
    for mut follower in followers {
        let status = poll(Duration::from_secs(10), "the follower to end", || {
            follower.try_wait().expect("wait")
        });
        assert!(status.success(), "a follower ended with {status}");
    }
}

#[test]
fn systemd_hears_ready_and_stopping() {
    let home = tempfile::tempdir().expect("home");
    let socket_path = home.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).expect("bind notify socket");
    socket
        .set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    let mut d = daemon(
        home.path(),
        port_range(),
        &[("NOTIFY_SOCKET", socket_path.to_str().expect("utf-8"))],
    );
    let mut buf = [0u8; 256];
    let n = socket.recv(&mut buf).expect("READY arrives");
    assert_eq!(String::from_utf8_lossy(&buf[..n]).trim(), "READY=1");
    d.signal(Signal::SIGTERM);
    let n = socket.recv(&mut buf).expect("STOPPING arrives");
    assert_eq!(String::from_utf8_lossy(&buf[..n]).trim(), "STOPPING=1");
    assert_eq!(d.wait_exit(Duration::from_secs(20)).code(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thirty_sigkills_at_random_moments_leave_a_consistent_state() {
    let home = tempfile::tempdir().expect("home");
    let ports = port_range();
    let http = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client");
    let first = tokio::task::block_in_place(|| daemon(home.path(), ports, &[]));
    let instance_id = instance(&first);
    let _cleanup = Cleanup(instance_id.clone());
    let model = new_model(&first);
    drop(first);
    // Services whose create was acknowledged and whose delete was not.
    let mut alive: BTreeSet<String> = BTreeSet::new();
    let mut answered = 0;
    let mut running_at_kill = 0;
    for cycle in 0..30 {
        let d = tokio::task::block_in_place(|| daemon(home.path(), ports, &[]));
        check_consistent(&d, &http, &alive, &instance_id, cycle).await;

        // A random workload of creates, starts, stops and deletes, killed at a random moment.
        let kill_after = Duration::from_millis(fastrand::u64(30..600));
        let deadline = Instant::now() + kill_after;
        let mut pending_deletes = Vec::new();
        while Instant::now() < deadline {
            let known: Vec<String> = alive.iter().cloned().collect();
            let target = (!known.is_empty()).then(|| known[fastrand::usize(..known.len())].clone());
            let op = if known.len() < 2 {
                0
            } else {
                fastrand::u8(0..4)
            };
            let request = match (op, &target) {
                (0, _) if known.len() < 6 => http
                    .post(d.url("/api/v1/services"))
                    .json(&json!({"model_id": model, "engine_type": "vllm"})),
                (1, Some(t)) => http.post(d.url(&format!("/api/v1/services/{t}/start"))),
                (2, Some(t)) => http.post(d.url(&format!("/api/v1/services/{t}/stop"))),
                (3, Some(t)) => http.delete(d.url(&format!("/api/v1/services/{t}?force=true"))),
                _ => http.post(d.url(&format!("/api/v1/services/{}/start", known[0]))),
            };
            let call = tokio::time::timeout(
                deadline.saturating_duration_since(Instant::now()),
                request.send(),
            );
            let result = call.await;
            answered += usize::from(matches!(&result, Ok(Ok(res)) if res.status().is_success()));
            match (op, result) {
                (0, Ok(Ok(res))) if res.status() == 201 => {
                    let body: Value = res.json().await.expect("json");
                    alive.insert(body["id"].as_str().expect("id").to_owned());
                }
                (3, Ok(Ok(res))) if res.status() == 200 => {
                    alive.remove(target.as_deref().expect("target"));
                }
                // A delete cut off by the kill may or may not have happened.
                (3, _) => pending_deletes.extend(target),
                _ => {}
            }
        }
        running_at_kill += containers(&format!("aima.instance={instance_id}"), true).len();
        d.signal(Signal::SIGKILL);
        drop(d);
        let db = rusqlite::Connection::open(home.path().join("data/aima.db")).expect("open db");
        let integrity: String = db
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .expect("check");
        assert_eq!(integrity, "ok", "cycle {cycle}");
        let stored: BTreeSet<String> = db
            .prepare("SELECT id FROM services")
            .expect("prepare")
            .query_map([], |r| r.get(0))
            .expect("query")
            .map(|r| r.expect("row"))
            .collect();
        for gone in pending_deletes {
            if !stored.contains(&gone) {
                alive.remove(&gone);
            }
        }
        // Creates acknowledged before the kill must all be there; unacknowledged ones may be too.
        let missing: Vec<_> = alive.difference(&stored).collect();
        assert!(
            missing.is_empty(),
            "cycle {cycle}: acknowledged services lost: {missing:?}"
        );
        alive = stored;
    }
    println!(
        "{answered} operations answered; {running_at_kill} engine containers running at the 30 kill points"
    );
    // The workload must have done real work for the kills to mean anything.
    assert!(answered >= 60, "only {answered} operations were answered");
    assert!(
        running_at_kill >= 10,
        "engines were running at only {running_at_kill} kill points"
    );
    let d = tokio::task::block_in_place(|| daemon(home.path(), ports, &[]));
    check_consistent(&d, &http, &alive, &instance_id, 30).await;
    for svc in &alive {
        let res = http
            .delete(d.url(&format!("/api/v1/services/{svc}?force=true")))
            .send()
            .await
            .expect("delete");
        assert_eq!(res.status(), 200);
    }
    assert!(containers(&format!("aima.instance={instance_id}"), false).is_empty());
}

/// After a restart: nothing stays in starting/stopping, every container belongs to a
/// running service and every running service has exactly its one container, and no two
/// services share a port.
async fn check_consistent(
    d: &DaemonProcess,
    http: &reqwest::Client,
    alive: &BTreeSet<String>,
    instance_id: &str,
    cycle: usize,
) {
    let services = poll_settled(d, http).await;
    let ids: BTreeSet<String> = services.keys().cloned().collect();
    assert_eq!(&ids, alive, "cycle {cycle}: the services the daemon lists");
    let ports: BTreeSet<u64> = services
        .values()
        .map(|s| s["port"].as_u64().expect("port"))
        .collect();
    assert_eq!(
        ports.len(),
        services.len(),
        "cycle {cycle}: a port is held twice"
    );
    let label = format!("aima.instance={instance_id}");
    // A create a killed daemon left in flight can land after reconciliation; the watcher
    // removes such strays as Docker reports them, so allow it a moment.
    let running_count = services
        .values()
        .filter(|s| s["status"] == "running")
        .count();
    let all = {
        let until = Instant::now() + Duration::from_secs(5);
        loop {
            let all = containers(&label, false);
            if all.len() == running_count || Instant::now() >= until {
                break all;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    let running: Vec<&Value> = services
        .values()
        .filter(|s| s["status"] == "running")
        .collect();
    if all.len() != running.len() {
        let detail = Command::new("docker")
            .args([
                "ps",
                "-a",
                "--filter",
                &format!("label={label}"),
                "--format",
                "{{.Names}} {{.Status}} {{.CreatedAt}}",
            ])
            .output()
            .expect("docker ps");
        let statuses: Vec<String> = services
            .values()
            .map(|s| format!("{} {}", s["id"], s["status"]))
            .collect();
        panic!(
            "cycle {cycle}: {} containers for {} running services:\n{}\nservices: {statuses:?}\nlog: {:#?}",
            all.len(),
            running.len(),
            String::from_utf8_lossy(&detail.stdout),
            d.stderr()
                .iter()
                .filter(|l| l.contains("reconcil") || l.contains("status"))
                .collect::<Vec<_>>()
        );
    }
    for s in running {
        let cid = s["container_id"].as_str().expect("container id");
        assert!(
            all.iter().any(|c| cid.starts_with(c.as_str())),
            "cycle {cycle}: {} has no container",
            s["id"]
        );
    }
}

/// The service list once nothing is starting or stopping (every such state has an owner
/// and a deadline, so this settles).
async fn poll_settled(d: &DaemonProcess, http: &reqwest::Client) -> BTreeMap<String, Value> {
    let until = Instant::now() + Duration::from_secs(30);
    loop {
        let list: Value = http
            .get(d.url("/api/v1/services"))
            .send()
            .await
            .expect("list")
            .json()
            .await
            .expect("json");
        let services: BTreeMap<String, Value> = list["items"]
            .as_array()
            .expect("items")
            .iter()
            .map(|s| (s["id"].as_str().expect("id").to_owned(), s.clone()))
            .collect();
        if services
            .values()
            .all(|s| s["status"] != "starting" && s["status"] != "stopping")
        {
            return services;
        }
        assert!(
            Instant::now() < until,
            "services stuck in a transition: {services:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[test]
fn an_engine_that_stops_answering_is_failed_and_removed() {
    let home = tempfile::tempdir().expect("home");
    let d = daemon(home.path(), port_range(), &[]);
    let _cleanup = Cleanup(instance(&d));
    let model = new_model(&d);
    let svc = id(&new_service(&d, &model, &["STUB_HANG_AFTER_SECS=1"]));
    start_wait(&d, &svc);
    let running_since = Instant::now();
    let failed = poll(
        Duration::from_secs(60),
        "the hung engine to be noticed",
        || {
            let s = get(&d, &svc);
            (s["status"] == "failed").then_some(s)
        },
    );
    let reason = failed["status_reason"].as_str().expect("reason");
    assert!(reason.contains("did not answer /health for "), "{reason}");
    // The reason states the real detection time: from the first missed probe (the engine
    // hangs 1 s after start) to the decision, five probes 2 s apart.
    let said: u64 = reason
        .split("for ")
        .nth(1)
        .and_then(|rest| rest.split(" s").next())
        .and_then(|n| n.parse().ok())
        .expect("seconds in the reason");
    assert!(
        (8..=running_since.elapsed().as_secs()).contains(&said),
        "{said} s stated, {:?} observed: {reason}",
        running_since.elapsed()
    );
    assert!(
        containers(&format!("aima.service={svc}"), false).is_empty(),
        "its container is removed"
    );
}
