//! Steps about the daemon process: starting, restarting, signals, in-flight requests,
//! the database file.

use super::*;

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
pub(super) fn restart_daemon(w: &mut AimaWorld, change: impl FnOnce(&mut AimaWorld), note: String) {
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
pub(super) fn integrity_check(path: &std::path::Path) -> String {
    let conn =
        rusqlite::Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE)
            .unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    conn.query_row("PRAGMA integrity_check", [], |row| row.get(0))
        .unwrap_or_else(|e| panic!("integrity_check on {}: {e}", path.display()))
}
