//! `aima start` as a real process: signals, crashes, refusals and settings.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::sys::signal::Signal;
use serde_json::{Value, json};

use crate::support::{DaemonProcess, cli_for, poll, refuses_connections};

const EXIT_DEADLINE: Duration = Duration::from_secs(15);

fn model_ids(daemon: &DaemonProcess) -> Vec<String> {
    let out = cli_for(daemon.addr, &daemon.home)
        .args(["model", "list", "-o", "json"])
        .output()
        .expect("list");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let list: Value = serde_json::from_slice(&out.stdout).expect("json");
    list["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|m| m["id"].as_str().expect("id").to_owned())
        .collect()
}

fn integrity(home: &std::path::Path) -> String {
    let conn = rusqlite::Connection::open(home.join("data/aima.db")).expect("open db");
    conn.query_row("PRAGMA integrity_check", [], |row| row.get(0))
        .expect("integrity_check")
}

#[test]
fn sigterm_and_sigint_exit_zero_and_close_the_port() {
    for signal in [Signal::SIGTERM, Signal::SIGINT] {
        let home = tempfile::tempdir().expect("home");
        let mut daemon = DaemonProcess::start(home.path(), &[]);
        assert!(!refuses_connections(daemon.addr), "daemon is listening");
        daemon.signal(signal);
        let status = daemon.wait_exit(EXIT_DEADLINE);
        assert_eq!(status.code(), Some(0), "{signal}: {:#?}", daemon.stderr());
        assert!(
            refuses_connections(daemon.addr),
            "port {} closed after {signal}",
            daemon.addr
        );
        assert_eq!(integrity(home.path()), "ok");
    }
}

/// Sends the head and half the body of a model create, so the request is in flight.
fn start_slow_create(daemon: &DaemonProcess, name: &str) -> (TcpStream, String) {
    let body = json!({"name": name, "source": "ollama", "repo": "tinyllama"}).to_string();
    let mut stream = TcpStream::connect(daemon.addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    write!(
        stream,
        "POST /api/v1/models HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{}",
        body.len(),
        &body[..body.len() / 2]
    )
    .expect("write head");
    // The trace layer logs when the handler starts: from then on the request is in flight.
    daemon.wait_for_log("started processing request", Duration::from_secs(10));
    (stream, body[body.len() / 2..].to_owned())
}

#[test]
fn sigterm_refuses_new_connections_but_finishes_the_request_in_flight() {
    let home = tempfile::tempdir().expect("home");
    let mut daemon = DaemonProcess::start(home.path(), &[("AIMA_SHUTDOWN_TIMEOUT", "20s")]);
    let (mut stream, rest) = start_slow_create(&daemon, "in-flight");

    daemon.signal(Signal::SIGTERM);
    daemon.wait_for_log("shutting down", Duration::from_secs(10));
    poll(
        Duration::from_secs(2),
        "new connections to be refused while draining",
        || refuses_connections(daemon.addr).then_some(()),
    );
    assert!(
        daemon.child.try_wait().expect("wait").is_none(),
        "still draining the in-flight request"
    );

    stream.write_all(rest.as_bytes()).expect("finish body");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("read response");
    assert!(response.starts_with("HTTP/1.1 201"), "{response}");
    assert_eq!(daemon.wait_exit(EXIT_DEADLINE).code(), Some(0));

    let restarted = DaemonProcess::start(home.path(), &[]);
    let out = cli_for(restarted.addr, home.path())
        .args(["model", "list", "-o", "json"])
        .output()
        .expect("list");
    let list: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(
        list["items"][0]["name"], "in-flight",
        "the drained write was committed"
    );
}

#[test]
fn drain_is_bounded_by_the_shutdown_timeout() {
    let home = tempfile::tempdir().expect("home");
    let mut daemon = DaemonProcess::start(home.path(), &[("AIMA_SHUTDOWN_TIMEOUT", "300ms")]);
    let (_stalled, _never_sent) = start_slow_create(&daemon, "stalled");
    daemon.signal(Signal::SIGTERM);
    // The stalled client never finishes; the daemon must still exit 0 once the drain time is up.
    assert_eq!(daemon.wait_exit(EXIT_DEADLINE).code(), Some(0));
    assert!(
        daemon
            .stderr()
            .iter()
            .any(|l| l.contains("drain time is up")),
        "{:#?}",
        daemon.stderr()
    );
    assert_eq!(integrity(home.path()), "ok");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_under_write_load_loses_no_acknowledged_model() {
    let home = tempfile::tempdir().expect("home");
    let acknowledged = Arc::new(Mutex::new(Vec::<String>::new()));
    for cycle in 0..4 {
        let daemon = DaemonProcess::start(home.path(), &[]);
        let stop = Arc::new(AtomicBool::new(false));
        let http = reqwest::Client::builder()
            .no_proxy()
            .build()
            .expect("client");
        let writers: Vec<_> = (0..4)
            .map(|writer| {
                let (http, url, stop, acked) = (http.clone(), daemon.url("/api/v1/models"), stop.clone(), acknowledged.clone());
                tokio::spawn(async move {
                    for i in 0.. {
                        if stop.load(Ordering::Relaxed) {
                            break;
                        }
                        let body = json!({"name": format!("c{cycle}-w{writer}-{i}"), "source": "ollama", "repo": "r"});
                        let Ok(res) = http.post(&url).json(&body).send().await else { break };
                        if res.status() != reqwest::StatusCode::CREATED {
                            break;
                        }
                        let Ok(model) = res.json::<Value>().await else { break };
                        acked.lock().expect("lock").push(model["id"].as_str().expect("id").to_owned());
                    }
                })
            })
            .collect();
        // Kill at a different point of the load each cycle.
        let target = acknowledged.lock().expect("lock").len() + 10 + cycle * 7;
        tokio::task::spawn_blocking({
            let acked = acknowledged.clone();
            move || {
                poll(Duration::from_secs(30), "writes to be acknowledged", || {
                    (acked.lock().expect("lock").len() >= target).then_some(())
                })
            }
        })
        .await
        .expect("poll");
        daemon.signal(Signal::SIGKILL);
        stop.store(true, Ordering::Relaxed);
        for w in writers {
            w.await.expect("writer");
        }
        drop(daemon);
        assert_eq!(
            integrity(home.path()),
            "ok",
            "after SIGKILL in cycle {cycle}"
        );
    }
    let daemon = DaemonProcess::start(home.path(), &[]);
    let stored = model_ids(&daemon);
    let acked = acknowledged.lock().expect("lock").clone();
    assert!(acked.len() >= 40, "load produced {} writes", acked.len());
    let missing: Vec<_> = acked.iter().filter(|id| !stored.contains(id)).collect();
    assert!(
        missing.is_empty(),
        "acknowledged but lost after SIGKILL: {missing:?}"
    );
}

fn assert_one_error_line(lines: &[String], expected: &[&str]) {
    let errors: Vec<_> = lines.iter().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 1, "{lines:#?}");
    for needle in expected {
        assert!(
            errors[0].contains(needle),
            "{:?} should mention {needle:?}",
            errors[0]
        );
    }
}

#[test]
fn refuses_an_address_in_use() {
    let holder = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = holder.local_addr().expect("addr").to_string();
    let home = tempfile::tempdir().expect("home");
    let (status, lines) = DaemonProcess::start_expecting_failure(home.path(), &addr, &[]);
    assert_eq!(status.code(), Some(1));
    assert_one_error_line(&lines, &[&addr, "address already in use", "--addr"]);
}

#[test]
fn refuses_a_home_that_is_not_writable() {
    let dir = tempfile::tempdir().expect("dir");
    let file = dir.path().join("a-file");
    std::fs::write(&file, "").expect("write");
    // Tests run as root, which ignores permission bits; a path below a file is unwritable for anyone.
    let home = file.join("home");
    let (status, lines) = DaemonProcess::start_expecting_failure(&home, "127.0.0.1:0", &[]);
    assert_eq!(status.code(), Some(1));
    assert_one_error_line(
        &lines,
        &[&home.display().to_string(), "not writable", "--home"],
    );
}

#[test]
fn refuses_a_home_owned_by_another_daemon() {
    let home = tempfile::tempdir().expect("home");
    let first = DaemonProcess::start(home.path(), &[]);
    let (status, lines) = DaemonProcess::start_expecting_failure(home.path(), "127.0.0.1:0", &[]);
    assert_eq!(status.code(), Some(1));
    let pid = format!("pid {}", first.child.id());
    assert_one_error_line(&lines, &["another aima daemon", &pid, "--home"]);
    assert!(
        !refuses_connections(first.addr),
        "the first daemon keeps serving"
    );
}

#[test]
fn log_format_json_writes_one_object_per_line_for_log_shippers() {
    let home = tempfile::tempdir().expect("home");
    let d = DaemonProcess::start(home.path(), &[("AIMA_LOG_FORMAT", "json")]);
    d.wait_for_log("reconciled", Duration::from_secs(10));
    let lines = d.stderr();
    for line in &lines {
        let entry: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not one JSON object ({e}): {line}"));
        assert!(
            entry["timestamp"].is_string() && entry["level"].is_string(),
            "{line}"
        );
    }
    assert!(
        lines.iter().any(
            |l| serde_json::from_str::<serde_json::Value>(l).is_ok_and(|e| e["message"]
                .as_str()
                .is_some_and(|m| m.contains("listening on http://")))
        ),
        "{lines:#?}"
    );
    // Text for people: no colour codes when NO_COLOR is set (stderr is a pipe here anyway).
    let home = tempfile::tempdir().expect("home");
    let d = DaemonProcess::start(home.path(), &[("NO_COLOR", "1")]);
    assert!(d.stderr().iter().all(|l| !l.contains('\u{1b}')));
}

#[test]
fn refuses_bad_settings_naming_the_setting() {
    let home = tempfile::tempdir().expect("home");
    let cases = [
        (
            "AIMA_SHUTDOWN_TIMEOUT",
            "3x",
            "seconds (30) or a duration with a unit",
        ),
        ("AIMA_PORT_RANGE", "9000-8000", "FIRST-LAST"),
        ("AIMA_ADDR", "nowhere", "HOST:PORT"),
        ("AIMA_LOG_FORMAT", "xml", "text or json"),
    ];
    for (key, value, form) in cases {
        let out = cli_for("127.0.0.1:9".parse().expect("addr"), home.path())
            .arg("start")
            .env(key, value)
            .output()
            .expect("run");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{key}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(
            stderr.contains(key) && stderr.contains(value) && stderr.contains(form),
            "{stderr}"
        );
    }
    assert!(
        !home.path().join("data").exists(),
        "nothing was created for a refused start"
    );
}

#[test]
fn models_work_and_status_says_so_when_docker_is_unreachable() {
    for docker_host in ["tcp://127.0.0.1:9", "tcp://127.0.0.1:99999"] {
        let home = tempfile::tempdir().expect("home");
        let daemon = DaemonProcess::start(home.path(), &[("DOCKER_HOST", docker_host)]);
        let cli = || cli_for(daemon.addr, home.path());
        let out = cli()
            .args([
                "model", "create", "--name", "m", "--source", "ollama", "--repo", "r",
            ])
            .output()
            .expect("create");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );

        let started = std::time::Instant::now();
        let out = cli()
            .args(["status", "-o", "json"])
            .output()
            .expect("status");
        assert!(
            out.status.success(),
            "status exits 0 whatever Docker's state"
        );
        let status: Value = serde_json::from_slice(&out.stdout).expect("json");
        assert_eq!(status["docker"]["reachable"], false, "{status}");
        assert_eq!(status["docker"]["address"], docker_host);
        let error = status["docker"]["error"].as_str().expect("error");
        assert!(error.contains(docker_host), "{error}");
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "status took {:?}",
            started.elapsed()
        );
    }
}
