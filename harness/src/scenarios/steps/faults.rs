//! Steps that inject faults (port holders, foreign containers, containers removed behind
//! AIMA's back) and check what AIMA made of them.

use super::*;

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
            "--label",
            &crate::ledger::run_label(),
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

#[when(expr = "someone removes the container of service {string} with docker")]
async fn remove_behind_back(w: &mut AimaWorld, name: String) {
    let id = w.service(&name).id;
    let url = w.url(&format!("/api/v1/services/{id}"));
    let read = || async {
        reqwest::get(&url)
            .await
            .expect("GET service")
            .json::<Value>()
            .await
            .expect("JSON")
    };
    let before = read().await;
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
    // Until the daemon has noticed, the service still reads as it was: a later "is
    // running" must not be that stale view.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let now = read().await;
        if now["status"] != before["status"] || now["container_id"] != before["container_id"] {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the daemon did not notice the removal within 10 s: {now}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
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

// ---------------------------------------------------------------- Docker faults

/// Puts the fault proxy between the daemon and Docker (restarting the daemon through it)
/// unless it already is, and returns it.
async fn through_proxy(w: &mut AimaWorld) -> &crate::docker_proxy::DockerProxy {
    if w.docker_proxy.is_none() {
        let proxy = crate::docker_proxy::DockerProxy::start()
            .await
            .unwrap_or_else(|e| panic!("{e:#}"));
        let host = proxy.docker_host();
        w.docker_proxy = Some(proxy);
        let note = format!("daemon restarted to reach Docker through the fault proxy {host}");
        restart_daemon(w, |w| w.docker_host = Some(host), note);
    }
    w.docker_proxy.as_ref().expect("the proxy")
}

#[given("Docker refuses the next container start with a transient error")]
async fn docker_refuses_transient(w: &mut AimaWorld) {
    // What Docker answers while it still tears down a container of that name.
    let message = "Conflict. The container is marked for removal and cannot be started";
    through_proxy(w)
        .await
        .refuse_starts(1, axum::http::StatusCode::CONFLICT, message);
    w.note(format!(
        "the next container start is refused: 409 {message}"
    ));
}

#[given("Docker refuses the next container start with a permanent error")]
async fn docker_refuses_permanent(w: &mut AimaWorld) {
    let message = "OCI runtime create failed: runc create failed: unable to start container process: exec: \"vllm\": executable file not found in $PATH: unknown";
    through_proxy(w)
        .await
        .refuse_starts(1, axum::http::StatusCode::INTERNAL_SERVER_ERROR, message);
    w.note(format!(
        "the next container start is refused: 500 {message}"
    ));
}

#[when(
    expr = "the daemon is killed between creating and starting the container of service {string}"
)]
async fn killed_between_create_and_start(w: &mut AimaWorld, name: String) {
    let id = w.service(&name).id;
    through_proxy(w).await.hold_starts();
    // Without --wait: the start goes on in the daemon while this returns.
    let run = w.aima(["service", "start", id.as_str()]).await;
    assert_eq!(run.code, 0, "start refused: {}", run.stderr.trim());
    let container = format!("aima-{id}");
    let proxy = w.docker_proxy.as_ref().expect("the proxy");
    let held = eventually(Duration::from_secs(20), || {
        proxy.created().contains(&container) && proxy.intercepted() >= 1
    })
    .await;
    assert!(
        held,
        "the daemon never created {container} and asked to start it (created: {:?})",
        proxy.created()
    );
    w.signal(Signal::SIGKILL);
    let status = w.wait_daemon_exit(Duration::from_secs(10));
    w.docker_proxy.as_ref().expect("the proxy").release_starts();
    let exists = Command::new("docker")
        .args(["inspect", &container])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    w.note(format!(
        "{container} created, its start held; daemon killed ({status}); container exists afterwards: {exists}"
    ));
    assert!(exists, "the created container should outlive the daemon");
}

#[then(regex = r#"^the start of service "([^"]+)" was tried (\d+) times?$"#)]
async fn start_tried(w: &mut AimaWorld, name: String, tries: usize) {
    let events = super::monitoring::service_events(w, &name).await;
    // Each attempt begins with its cleanup phase; each retry is announced.
    let attempts = events.iter().filter(|e| e["phase"] == "cleanup").count();
    let retries: Vec<&str> = events
        .iter()
        .filter_map(|e| e["message"].as_str())
        .filter(|m| m.contains("retrying"))
        .collect();
    w.note(format!(
        "{name}: {attempts} attempts, retries announced: {retries:?}"
    ));
    assert_eq!(attempts, tries, "attempts at starting {name}");
    assert_eq!(
        retries.len(),
        tries - 1,
        "retry events of {name}: {retries:?}"
    );
}
