//! Service lifecycles against the real Docker engine, with the stub engine image as vLLM:
//! start/stop cycles, isolation, port conflicts, Docker unreachable, engine failures,
//! the Docker watcher, logs and events. Every test checks that no container of its
//! daemon's instance is left behind.

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, TcpListener};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::{DaemonProcess, TestDaemon, bin_dir, cli_for, ensure_stub_image, poll};

/// Runs the CLI; returns (exit code, stdout, stderr).
fn run(cmd: &mut assert_cmd::Command) -> (i32, String, String) {
    let out = cmd.output().expect("run aima");
    (
        out.status.code().expect("exit code"),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Runs the CLI with `-o json`, expecting success.
fn json(cmd: &mut assert_cmd::Command) -> Value {
    let (code, stdout, stderr) = run(cmd.args(["-o", "json"]));
    assert_eq!(code, 0, "stderr: {stderr}");
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("not json ({e}): {stdout}"))
}

fn create_model(d: &TestDaemon) -> String {
    let model = json(d.cli().args([
        "model",
        "create",
        "--name",
        "tiny",
        "--source",
        "ollama",
        "--repo",
        "tinyllama",
    ]));
    model["id"].as_str().expect("id").to_owned()
}

fn create_service(d: &TestDaemon, model: &str, extra: &[&str]) -> Value {
    json(
        d.cli()
            .args([
                "service",
                "create",
                "--model-id",
                model,
                "--engine-type",
                "vllm",
            ])
            .args(extra),
    )
}

fn id_of(service: &Value) -> String {
    service["id"].as_str().expect("id").to_owned()
}

fn port_of(service: &Value) -> u16 {
    service["port"].as_u64().expect("port") as u16
}

fn get(d: &TestDaemon, id: &str) -> Value {
    json(d.cli().args(["service", "get", id]))
}

fn start_wait(d: &TestDaemon, id: &str) -> (i32, String, String) {
    run(d
        .cli()
        .args(["service", "start", id, "--wait", "--timeout", "60"]))
}

fn wait_status(d: &TestDaemon, id: &str, status: &str, deadline: Duration) -> Value {
    poll(deadline, &format!("{id} to be {status}"), || {
        let service = get(d, id);
        (service["status"] == status).then_some(service)
    })
}

fn port_is_free(port: u16) -> bool {
    TcpListener::bind((Ipv4Addr::UNSPECIFIED, port)).is_ok()
}

fn assert_no_containers(d: &TestDaemon) {
    let left = d.containers();
    assert!(left.is_empty(), "containers left behind: {left:?}");
}

#[test]
fn five_start_stop_cycles_use_fresh_containers_on_the_same_port() {
    let d = TestDaemon::with_engine();
    let model = create_model(&d);
    let service = create_service(&d, &model, &[]);
    let (id, port) = (id_of(&service), port_of(&service));
    assert_eq!(port, d.port_range.0, "the lowest port of the range");
    let mut containers = BTreeSet::new();
    for cycle in 0..5 {
        let (code, stdout, stderr) = start_wait(&d, &id);
        assert_eq!(code, 0, "cycle {cycle}: {stderr}");
        assert!(
            stdout.contains(&format!("{id} running on port {port}")),
            "{stdout}"
        );
        let running = get(&d, &id);
        assert_eq!(running["status"], "running");
        assert_eq!(port_of(&running), port, "the port is kept across cycles");
        let container = running["container_id"]
            .as_str()
            .expect("container id")
            .to_owned();
        assert!(
            containers.insert(container),
            "cycle {cycle} reused a container"
        );
        assert_eq!(d.containers().len(), 1);

        let stopped = json(d.cli().args(["service", "stop", &id]));
        assert_eq!(stopped["status"], "stopped");
        assert_eq!(stopped["container_id"], Value::Null);
        assert!(
            port_is_free(port),
            "cycle {cycle}: port {port} must be bindable once stop returns"
        );
        assert_no_containers(&d);
    }
}

#[test]
fn start_wait_prints_every_phase_in_order() {
    let d = TestDaemon::with_engine();
    let model = create_model(&d);
    let id = id_of(&create_service(&d, &model, &[]));
    let (code, stdout, stderr) = start_wait(&d, &id);
    assert_eq!(code, 0, "{stderr}");
    let (last, progress) = stdout
        .trim_end()
        .lines()
        .collect::<Vec<_>>()
        .split_last()
        .map(|(l, p)| (*l, p.to_vec()))
        .expect("output");
    // Progress lines are "TIME SERVICE STEP: message", one per phase and status change.
    let steps: Vec<&str> = progress
        .iter()
        .filter_map(|l| l.split_whitespace().nth(2))
        .map(|w| w.trim_end_matches(':'))
        .collect();
    assert_eq!(
        steps,
        [
            "validate",
            "status",
            "cleanup",
            "port_check",
            "image",
            "create",
            "start",
            "health",
            "status"
        ],
        "{stdout}"
    );
    assert!(
        progress
            .last()
            .expect("progress")
            .contains("status running"),
        "{stdout}"
    );
    assert!(
        last.starts_with(&format!("{id} running on port ")),
        "{stdout}"
    );
    // The same history is kept and served by `service events`.
    let (code, events, _) = run(d.cli().args(["service", "events", &id]));
    assert_eq!(code, 0);
    for phase in [
        "validate",
        "cleanup",
        "port_check",
        "image",
        "create",
        "start",
        "health",
        "status running",
    ] {
        assert!(events.contains(phase), "events lack {phase}: {events}");
    }
    json(d.cli().args(["service", "delete", "--force", &id]));
    assert_no_containers(&d);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_one_service_leaves_the_other_running_and_answering() {
    let d = tokio::task::spawn_blocking(TestDaemon::with_engine)
        .await
        .expect("daemon");
    let cli = |args: Vec<String>| {
        let mut cmd = d.cli();
        cmd.args(args);
        cmd
    };
    let model = create_model(&d);
    let a = create_service(&d, &model, &[]);
    let b = create_service(&d, &model, &[]);
    assert_ne!(port_of(&a), port_of(&b));
    for s in [&a, &b] {
        let (code, _, stderr) = run(&mut cli(vec![
            "service".into(),
            "start".into(),
            id_of(s),
            "--wait".into(),
        ]));
        assert_eq!(code, 0, "{stderr}");
    }
    json(&mut cli(vec!["service".into(), "stop".into(), id_of(&a)]));
    assert_eq!(get(&d, &id_of(&b))["status"], "running");
    let models: Value = reqwest::get(format!("http://127.0.0.1:{}/v1/models", port_of(&b)))
        .await
        .expect("b answers")
        .json()
        .await
        .expect("json");
    // The engine serves the AIMA model's name (vLLM's --served-model-name), not its repo.
    assert_eq!(models["data"][0]["id"], "tiny");
    assert_eq!(d.containers().len(), 1, "only b's container remains");
    json(&mut cli(vec![
        "service".into(),
        "delete".into(),
        "--force".into(),
        id_of(&b),
    ]));
    assert_no_containers(&d);
}

/// A real separate process holding `port`: the stub engine binary run on the host.
fn hold_port_with_process(port: u16) -> Child {
    let child = Command::new(bin_dir().join("aima-stub-engine"))
        .args(["--port", &port.to_string(), "--host", "0.0.0.0"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn port holder");
    poll(Duration::from_secs(10), "the blocker to bind", || {
        (!port_is_free(port)).then_some(())
    });
    child
}

#[test]
fn a_port_held_by_another_process_fails_the_start_fast_and_names_it() {
    let d = TestDaemon::with_engine();
    let model = create_model(&d);
    let service = create_service(&d, &model, &[]);
    let (id, port) = (id_of(&service), port_of(&service));
    let mut blocker = hold_port_with_process(port);
    let started = Instant::now();
    let (code, _, stderr) = start_wait(&d, &id);
    let elapsed = started.elapsed();
    let _ = blocker.kill();
    let _ = blocker.wait();
    assert_eq!(code, 1);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    let needles = [
        format!("port {port}"),
        format!("pid {}", blocker.id()),
        "aima-stub-engine".to_owned(),
    ];
    for needle in &needles {
        assert!(stderr.contains(needle), "{stderr:?} should name {needle}");
    }
    assert!(
        elapsed < Duration::from_secs(1),
        "conflict took {elapsed:?}"
    );
    let failed = get(&d, &id);
    assert_eq!(failed["status"], "failed");
    assert!(
        failed["status_reason"]
            .as_str()
            .expect("reason")
            .contains(&needles[1])
    );
    assert_no_containers(&d);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_port_published_by_a_foreign_container_fails_the_start_and_names_it() {
    use testcontainers::core::IntoContainerPort;
    use testcontainers::runners::AsyncRunner;
    use testcontainers::{GenericImage, ImageExt};

    let d = tokio::task::block_in_place(TestDaemon::with_engine);
    let (id, port) = tokio::task::block_in_place(|| {
        let model = create_model(&d);
        let service = create_service(&d, &model, &[]);
        (id_of(&service), port_of(&service))
    });
    // Someone else's container (no AIMA labels) publishing the service's port.
    let (image, tag) = ensure_stub_image().split_once(':').expect("name:tag");
    let name = format!("foreign-{}", &d.instance[..8]);
    let foreign = GenericImage::new(image, tag)
        .with_mapped_port(port, 8000.tcp())
        .with_label("aima.test", "foreign")
        .with_container_name(name.clone())
        .start()
        .await
        .expect("start the foreign container");
    let (code, _, stderr) = tokio::task::block_in_place(|| start_wait(&d, &id));
    foreign.rm().await.expect("remove the foreign container");
    assert_eq!(code, 1);
    assert!(
        stderr.contains(&format!("port {port}")) && stderr.contains(&format!("container '{name}'")),
        "{stderr}"
    );
    assert_eq!(
        tokio::task::block_in_place(|| get(&d, &id))["status"],
        "failed"
    );
    assert_no_containers(&d);
}

#[test]
fn engine_out_of_memory_at_start_fails_with_a_diagnosis_and_keeps_the_logs() {
    let d = TestDaemon::with_engine();
    let model = create_model(&d);
    let id = id_of(&create_service(&d, &model, &["--env", "STUB_FAIL=oom"]));
    let (code, _, stderr) = start_wait(&d, &id);
    assert_eq!(code, 1);
    assert!(
        stderr.contains("exited with code 1 during start"),
        "{stderr}"
    );
    assert!(stderr.contains("ran out of GPU memory"), "{stderr}");
    assert_eq!(get(&d, &id)["status"], "failed");
    assert_no_containers(&d);
    // The container is gone, but its last lines still explain the failure.
    let (code, logs, _) = run(d.cli().args(["service", "logs", &id]));
    assert_eq!(code, 0);
    assert!(logs.contains("CUDA out of memory"), "{logs}");
    let (_, tail, _) = run(d.cli().args(["service", "logs", &id, "--tail", "1"]));
    assert_eq!(tail.lines().count(), 1, "{tail}");
}

#[test]
fn a_python_engine_failure_reason_quotes_the_cause_not_the_line_pointing_at_it() {
    let d = TestDaemon::with_engine();
    let model = create_model(&d);
    let id = id_of(&create_service(&d, &model, &["--env", "STUB_FAIL=shm"]));
    let (code, _, stderr) = start_wait(&d, &id);
    assert_eq!(code, 1);
    let reason = get(&d, &id)["status_reason"]
        .as_str()
        .expect("reason")
        .to_owned();
    assert!(
        reason.contains(
            "the engine's error: RuntimeError: Insufficient space in /dev/shm to create a shared memory buffer"
        ),
        "{reason}"
    );
    assert!(!reason.contains("See root cause above"), "{reason}");
    assert!(
        stderr.contains("Insufficient space in /dev/shm"),
        "{stderr}"
    );
    assert_no_containers(&d);
}

#[test]
fn an_engine_crash_while_running_turns_the_service_failed() {
    let d = TestDaemon::with_engine();
    let model = create_model(&d);
    let id = id_of(&create_service(
        &d,
        &model,
        &["--env", "STUB_CRASH_AFTER_SECS=1", "--restart", "no"],
    ));
    let (code, _, stderr) = start_wait(&d, &id);
    assert_eq!(code, 0, "{stderr}");
    let failed = wait_status(&d, &id, "failed", Duration::from_secs(10));
    let reason = failed["status_reason"].as_str().expect("reason");
    assert!(
        reason.contains("exited with code 3 while running"),
        "{reason}"
    );
    assert_no_containers(&d);
}

#[test]
fn a_container_removed_behind_aimas_back_is_noticed_within_a_second() {
    let d = TestDaemon::with_engine();
    let model = create_model(&d);
    let id = id_of(&create_service(&d, &model, &["--restart", "no"]));
    assert_eq!(start_wait(&d, &id).0, 0);
    let removed_at = Instant::now();
    let out = Command::new("docker")
        .args(["rm", "-f", &format!("aima-{id}")])
        .output()
        .expect("docker rm");
    assert!(out.status.success());
    let failed = wait_status(&d, &id, "failed", Duration::from_secs(5));
    let noticed = removed_at.elapsed();
    assert!(
        failed["status_reason"]
            .as_str()
            .expect("reason")
            .contains("killed by signal 9"),
        "{failed}"
    );
    assert!(
        noticed < Duration::from_secs(1),
        "noticed after {noticed:?}"
    );
    assert_no_containers(&d);
}

#[test]
fn stop_works_from_every_status_and_is_idempotent() {
    let d = TestDaemon::with_engine();
    let model = create_model(&d);
    // creating → stopped
    let fresh = id_of(&create_service(&d, &model, &[]));
    assert_eq!(
        json(d.cli().args(["service", "stop", &fresh]))["status"],
        "stopped"
    );
    assert_eq!(
        json(d.cli().args(["service", "stop", &fresh]))["status"],
        "stopped",
        "stop is idempotent"
    );
    // failed → stopped
    let failing = id_of(&create_service(&d, &model, &["--env", "STUB_FAIL=oom"]));
    assert_eq!(start_wait(&d, &failing).0, 1);
    assert_eq!(
        json(d.cli().args(["service", "stop", &failing]))["status"],
        "stopped"
    );
    // starting → stopped: the start is cancelled and leaves no container
    let slow = create_service(&d, &model, &["--env", "STUB_START_DELAY_MS=20000"]);
    let slow_id = id_of(&slow);
    assert_eq!(
        json(d.cli().args(["service", "start", &slow_id]))["status"],
        "starting"
    );
    poll(
        Duration::from_secs(10),
        "the slow container to exist",
        || (!d.containers().is_empty()).then_some(()),
    );
    let stopped = json(d.cli().args(["service", "stop", &slow_id]));
    assert_eq!(stopped["status"], "stopped");
    assert!(port_is_free(port_of(&slow)));
    assert_no_containers(&d);
    // The cancelled start must not overwrite the stop's outcome later.
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(get(&d, &slow_id)["status"], "stopped");
}

#[test]
fn delete_stops_and_frees_the_port() {
    let d = TestDaemon::with_engine();
    let model = create_model(&d);
    let service = create_service(&d, &model, &[]);
    let (id, port) = (id_of(&service), port_of(&service));
    assert_eq!(start_wait(&d, &id).0, 0);
    // A running engine is not deleted by a slip: the CLI asks for --force, as docker rm -f.
    let (code, _, stderr) = run(d.cli().args(["service", "delete", &id]));
    assert_eq!(code, 1);
    assert_eq!(
        stderr,
        format!(
            "error: service {id} is running; stop it first ('aima stop {id}'), or force the delete ('aima service delete --force {id}')\n"
        )
    );
    assert_eq!(
        json(d.cli().args(["service", "get", &id]))["status"],
        "running"
    );
    json(d.cli().args(["service", "delete", "--force", &id]));
    assert!(port_is_free(port));
    assert_no_containers(&d);
    let (code, _, stderr) = run(d.cli().args(["service", "get", &id]));
    assert_eq!(code, 1);
    assert!(stderr.contains("no service with id"), "{stderr}");
    assert_eq!(
        port_of(&create_service(&d, &model, &[])),
        port,
        "the freed port is reused"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_concurrent_creates_get_twenty_ports() {
    let d = tokio::task::spawn_blocking(TestDaemon::with_engine)
        .await
        .expect("daemon");
    let model = create_model(&d);
    let http = reqwest::Client::new();
    let creates = (0..20).map(|_| {
        let request = http
            .post(d.url("/api/v1/services"))
            .json(&serde_json::json!({"model_id": model, "engine_type": "vllm"}));
        async move {
            request
                .send()
                .await
                .expect("post")
                .json::<Value>()
                .await
                .expect("json")
        }
    });
    let services = futures::future::join_all(creates).await;
    let ports: BTreeSet<u64> = services
        .iter()
        .map(|s| s["port"].as_u64().unwrap_or_else(|| panic!("{s}")))
        .collect();
    assert_eq!(ports.len(), 20, "{ports:?}");
    let expected: BTreeSet<u64> =
        (u64::from(d.port_range.0)..u64::from(d.port_range.0) + 20).collect();
    assert_eq!(ports, expected, "the lowest free ports of the range");
}

#[test]
fn service_input_errors_are_clear() {
    let d = TestDaemon::with_engine();
    let model = create_model(&d);
    let cases: [(&[&str], &str); 6] = [
        (
            &["--model-id", "model-00000000", "--engine-type", "vllm"],
            "no model with id, name or id prefix 'model-00000000'",
        ),
        (
            &["--model-id", &model, "--engine-type", "tgi"],
            "unknown engine 'tgi'; expected one of vllm, sglang",
        ),
        (
            &[
                "--model-id",
                &model,
                "--engine-type",
                "vllm",
                "--env",
                "NOEQUALS",
            ],
            "pass --env KEY=VALUE",
        ),
        (
            &[
                "--model-id",
                &model,
                "--engine-type",
                "vllm",
                "--gpu-memory-utilization",
                "1.5",
            ],
            "out of range",
        ),
        (
            &["--model-id", &model, "--engine-type", "vllm", "--port", "0"],
            "port 0 is not a port",
        ),
        (
            &[
                "--model-id",
                &model,
                "--engine-type",
                "vllm",
                "--port",
                "80",
            ],
            "port 80 is outside the service port range",
        ),
    ];
    for (args, expected) in cases {
        let (code, _, stderr) = run(d.cli().args(["service", "create"]).args(args));
        assert_eq!(code, 1, "{args:?}");
        assert!(
            stderr.starts_with("error: ") && stderr.contains(expected),
            "{args:?}: {stderr}"
        );
    }
    assert!(
        d.store.list_services().expect("list").is_empty(),
        "nothing was written"
    );
    create_service(&d, &model, &[]);
    let (code, _, stderr) = run(d.cli().args(["model", "delete", &model]));
    assert_eq!(code, 1);
    assert!(stderr.contains("is used by svc-vllm-"), "{stderr}");
}

#[test]
fn unreachable_docker_fails_the_start_within_two_seconds_naming_the_address() {
    ensure_stub_image();
    for docker_host in ["tcp://127.0.0.1:9", "tcp://127.0.0.1:99999"] {
        let home = tempfile::tempdir().expect("home");
        let daemon = DaemonProcess::start(home.path(), &[("DOCKER_HOST", docker_host)]);
        let cli = || cli_for(daemon.addr, home.path());
        let model = {
            let out = cli()
                .args([
                    "model", "create", "--name", "m", "--source", "ollama", "--repo", "r",
                ])
                .output()
                .expect("create");
            String::from_utf8_lossy(&out.stdout).trim().to_owned()
        };
        let out = cli()
            .args([
                "service",
                "create",
                "--model-id",
                &model,
                "--engine-type",
                "vllm",
            ])
            .output()
            .expect("create");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let id = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        let started = Instant::now();
        let out = cli()
            .args(["service", "start", &id, "--wait", "--timeout", "30"])
            .output()
            .expect("start");
        let elapsed = started.elapsed();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        assert!(
            stderr.contains(docker_host) && stderr.contains("unreachable"),
            "{stderr}"
        );
        assert!(
            elapsed < Duration::from_secs(2),
            "{docker_host}: took {elapsed:?}"
        );
        let out = cli()
            .args(["service", "status", &id])
            .output()
            .expect("status");
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("failed"),
            "status is failed"
        );
    }
}

#[test]
fn a_foreign_container_with_the_service_name_is_never_touched() {
    let d = TestDaemon::with_engine();
    let model = create_model(&d);
    let id = id_of(&create_service(&d, &model, &[]));
    let name = format!("aima-{id}");
    // Same name, no aima.instance label: someone else's container squats the name.
    let out = Command::new("docker")
        .args([
            "create",
            "--name",
            &name,
            "--label",
            "aima.test=impostor",
            ensure_stub_image(),
        ])
        .output()
        .expect("docker create");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let squatter = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let exists = || {
        Command::new("docker")
            .args(["inspect", &squatter])
            .output()
            .expect("inspect")
            .status
            .success()
    };
    let (code, _, stderr) = start_wait(&d, &id);
    let after_start = exists();
    let (stop_code, _, stop_err) = run(d.cli().args(["service", "stop", &id]));
    let stopped = get(&d, &id);
    let after_stop = exists();
    let (delete_code, _, delete_err) = run(d.cli().args(["service", "delete", &id]));
    let after_delete = exists();
    let _ = Command::new("docker")
        .args(["rm", "-f", &squatter])
        .output();

    assert_eq!(code, 1);
    assert!(
        stderr.contains(&format!(
            "container name {name} is taken by container {}",
            &squatter[..12]
        )) && stderr.contains("remove or rename it"),
        "the start names the obstacle and its id: {stderr}"
    );
    assert!(after_start, "start must not remove a foreign container");
    assert_eq!(
        stop_code, 0,
        "nothing of ours runs, so the stop completes: {stop_err}"
    );
    assert_eq!(stopped["status"], "stopped");
    assert!(after_stop, "stop must not remove a foreign container");
    assert_eq!(delete_code, 0, "delete completes too: {delete_err}");
    assert!(after_delete, "delete must not remove a foreign container");
}

#[test]
fn logs_follow_streams_new_output() {
    let d = TestDaemon::with_engine();
    let model = create_model(&d);
    let service = create_service(&d, &model, &[]);
    let (id, port) = (id_of(&service), port_of(&service));
    assert_eq!(start_wait(&d, &id).0, 0);
    let mut follower = std::process::Command::new(crate::support::aima_bin())
        .args(["service", "logs", &id, "--follow", "--tail", "0"])
        .env("AIMA_ADDR", d.addr.to_string())
        .env("AIMA_HOME", d.home.path())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn logs -f");
    let stdout = follower.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            let _ = tx.send(line);
        }
    });
    // Each request makes the engine print an access line, which must reach the follower.
    let mut seen = None;
    let deadline = Instant::now() + Duration::from_secs(10);
    while seen.is_none() && Instant::now() < deadline {
        let _ = std::net::TcpStream::connect(("127.0.0.1", port)).and_then(|mut s| {
            use std::io::Write;
            s.write_all(b"GET /v1/models HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        });
        if let Ok(line) = rx.recv_timeout(Duration::from_millis(300))
            && line.contains("GET /v1/models")
        {
            seen = Some(line);
        }
    }
    let _ = follower.kill();
    let _ = follower.wait();
    assert!(seen.is_some(), "logs --follow never showed the new request");
    json(d.cli().args(["service", "delete", "--force", &id]));
    assert_no_containers(&d);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_global_event_stream_carries_every_service() {
    let d = tokio::task::spawn_blocking(TestDaemon::with_engine)
        .await
        .expect("daemon");
    let model = create_model(&d);
    let response = reqwest::get(d.url("/api/v1/events?after=latest"))
        .await
        .expect("subscribe");
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let a = id_of(&create_service(&d, &model, &[]));
    let b = id_of(&create_service(&d, &model, &[]));
    let mut body = response.bytes_stream();
    let mut text = String::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !(text.contains(&a) && text.contains(&b)) {
        use futures::StreamExt;
        let chunk = tokio::time::timeout_at(deadline, body.next())
            .await
            .expect("events in time");
        text.push_str(&String::from_utf8_lossy(
            &chunk.expect("stream open").expect("chunk"),
        ));
    }
    assert!(
        text.contains("event: status") && text.contains("\"status\":\"creating\""),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operator_scripts_routes_serve_the_same_bodies() {
    let d = tokio::task::spawn_blocking(TestDaemon::with_engine)
        .await
        .expect("daemon");
    let model = create_model(&d);
    let response = reqwest::Client::new()
        .post(d.url("/api/v1/services"))
        .json(&serde_json::json!({"model_id": "model-00000000", "engine_type": "vllm"}))
        .send()
        .await
        .expect("post");
    assert_eq!(response.status(), 404, "an unknown model is a 404");
    let id = id_of(&create_service(&d, &model, &[]));
    assert_eq!(start_wait(&d, &id).0, 0);

    let get = |path: String| async move { reqwest::get(path).await.expect("get") };
    let v1: Value = get(d.url("/api/v1/services"))
        .await
        .json()
        .await
        .expect("json");
    let legacy: Value = get(d.url("/api/service/list"))
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(v1, legacy);
    let status: Value = get(d.url(&format!("/api/service/status?service_id={id}")))
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(status, v1["items"][0]);
    assert_eq!(status["status"], "running");
    // The operator route answers JSON for jq; /api/v1 gives the same JSON when asked.
    let logs: Value = get(d.url(&format!("/api/service/logs?service_id={id}&tail=50")))
        .await
        .json()
        .await
        .expect("json logs");
    assert_eq!(logs["service_id"], id.as_str());
    let lines = logs["lines"].as_array().expect("lines");
    assert!(
        lines
            .iter()
            .any(|l| l.as_str().is_some_and(|l| l.contains("Uvicorn running on"))),
        "{logs}"
    );
    let asked: Value = reqwest::Client::new()
        .get(d.url(&format!("/api/v1/services/{id}/logs?tail=50")))
        .header("Accept", "application/json")
        .send()
        .await
        .expect("GET")
        .json()
        .await
        .expect("json logs");
    assert_eq!(asked, logs);
    let text = get(d.url(&format!("/api/v1/services/{id}/logs?tail=50")))
        .await
        .text()
        .await
        .expect("text");
    let as_lines: Vec<String> = text.lines().map(str::to_owned).collect();
    assert_eq!(
        serde_json::to_value(&as_lines).expect("lines"),
        logs["lines"]
    );

    let unknown = get(d.url("/api/service/status?service_id=svc-vllm-00000000")).await;
    assert_eq!(unknown.status(), 404);
    let missing = get(d.url("/api/service/status")).await;
    assert_eq!(missing.status(), 400);
    let body: Value = missing.json().await.expect("json error body");
    assert_eq!(body["error"]["code"], "bad_request");
    let message = body["error"]["message"].as_str().expect("message");
    assert!(
        message.starts_with("bad query string: missing field `service_id`")
            && message.contains("openapi.json"),
        "{message}"
    );
    json(d.cli().args(["service", "delete", "--force", &id]));
    assert_no_containers(&d);
}

#[test]
fn asking_again_while_a_start_runs_answers_at_once() {
    let d = TestDaemon::with_engine();
    let model = create_model(&d);
    let id = id_of(&create_service(
        &d,
        &model,
        &["--env", "STUB_START_DELAY_MS=3000"],
    ));
    assert_eq!(
        json(d.cli().args(["service", "start", &id]))["status"],
        "starting"
    );
    let again = Instant::now();
    assert_eq!(
        json(d.cli().args(["service", "start", &id]))["status"],
        "starting"
    );
    assert!(
        again.elapsed() < Duration::from_secs(2),
        "queued behind the start: {:?}",
        again.elapsed()
    );
    // A stop right away cancels the start and leaves nothing behind.
    assert_eq!(
        json(d.cli().args(["service", "stop", &id]))["status"],
        "stopped"
    );
    assert_no_containers(&d);
}

#[test]
fn a_local_model_is_mounted_read_only_into_the_engine() {
    let d = TestDaemon::with_engine();
    let weights = d.model_dir("weights");
    std::fs::write(weights.join("model.gguf"), b"weights").expect("write");
    let path = weights.to_str().expect("utf-8").to_owned();
    let model = json(d.cli().args([
        "model", "create", "--name", "local", "--source", "local", "--path", &path,
    ]));
    let id = id_of(&create_service(&d, model["id"].as_str().expect("id"), &[]));
    assert_eq!(start_wait(&d, &id).0, 0);
    let container = get(&d, &id)["container_id"]
        .as_str()
        .expect("container")
        .to_owned();
    let inspect = |format: &str| {
        let out = Command::new("docker")
            .args(["inspect", "-f", format, &container])
            .output()
            .expect("inspect");
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    assert_eq!(
        inspect("{{json .HostConfig.Binds}}"),
        format!("[\"{path}:/aima/model:ro\"]")
    );
    assert!(inspect("{{json .Config.Cmd}}").contains("\"--model\",\"/aima/model\""));
    // Unprivileged, no host network, the port published on loopback only.
    assert_eq!(inspect("{{.HostConfig.Privileged}}"), "false");
    assert_ne!(inspect("{{.HostConfig.NetworkMode}}"), "host");
    assert_eq!(inspect("{{json .HostConfig.CapAdd}}"), "null");
    // vLLM's workers share tensors through /dev/shm: Docker's 64 MiB stopped a real
    // vLLM at engine init, so AIMA gives it 8 GiB (a limit; tmpfs holds what is written).
    assert_eq!(inspect("{{.HostConfig.ShmSize}}"), (8u64 << 30).to_string());
    assert!(
        inspect("{{json .HostConfig.PortBindings}}").contains("\"HostIp\":\"127.0.0.1\""),
        "{}",
        inspect("{{json .HostConfig.PortBindings}}")
    );
    json(d.cli().args(["service", "delete", "--force", &id]));
    assert_no_containers(&d);
}
