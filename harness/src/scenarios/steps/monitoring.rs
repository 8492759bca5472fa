//! Steps about watching a service: start progress, logs, the event stream, status over
//! the CLI and HTTP.

use super::*;

pub(super) fn last_start(w: &AimaWorld) -> &crate::scenarios::world::CliRun {
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
    let summary = event_kinds(&events);
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

/// The events of a service, oldest first, as `aima service events -o json` prints them.
pub(super) async fn service_events(w: &AimaWorld, name: &str) -> Vec<Value> {
    let id = w.service(name).id;
    let run = w
        .aima(["service", "events", id.as_str(), "-o", "json"])
        .await;
    assert_eq!(run.code, 0, "aima service events: {}", run.stderr.trim());
    run.stdout
        .lines()
        .map(|line| serde_json::from_str(line).expect("one JSON event a line"))
        .collect()
}

/// What each event was: its phase, its status, or `note`.
fn event_kinds(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .map(|e| {
            e["phase"]
                .as_str()
                .or(e["status"].as_str())
                .unwrap_or("note")
                .to_owned()
        })
        .collect()
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

#[then(expr = "the start of service {string} failed in its health phase")]
async fn failed_in_health(w: &mut AimaWorld, name: String) {
    let kinds = event_kinds(&service_events(w, &name).await);
    w.note(format!("{name}: {}", kinds.join(" → ")));
    let health = kinds.iter().position(|k| k == "health");
    let failed = kinds.iter().position(|k| k == "failed");
    assert!(
        matches!((health, failed), (Some(h), Some(f)) if h < f),
        "no health phase before the failure: {kinds:?}"
    );
}

#[then(expr = "the logs and events of services {string} and {string} are each their own")]
async fn logs_and_events_own(w: &mut AimaWorld, a: String, b: String) {
    let mut seen = Vec::new();
    for name in [&a, &b] {
        let state = w.service_state(name).await;
        let model = w
            .aima_json([
                "model",
                "get",
                state["model_id"].as_str().expect("model_id"),
            ])
            .await;
        let repo = model["repo"]
            .as_str()
            .expect("a model with a repo")
            .to_owned();
        seen.push((name.clone(), w.service(name), repo));
    }
    for (this, other) in [(&seen[0], &seen[1]), (&seen[1], &seen[0])] {
        let (name, service, repo) = this;
        let (_, other_service, other_repo) = other;
        let logs = w
            .aima(["service", "logs", service.id.as_str(), "--tail", "200"])
            .await;
        assert_eq!(logs.code, 0, "{}", logs.stderr);
        // The engine prints the model it was given: vLLM's "args: model='…'".
        let line = logs
            .stdout
            .lines()
            .find(|l| l.contains("args: model="))
            .unwrap_or_default()
            .trim()
            .to_owned();
        let events = service_events(w, name).await;
        let messages: Vec<&str> = events
            .iter()
            .filter_map(|e| e["message"].as_str())
            .collect();
        w.note(format!(
            "{name}: log line {line:?}; {} events, {} of them for other services",
            events.len(),
            events
                .iter()
                .filter(|e| e["service_id"] != service.id.as_str())
                .count()
        ));
        assert!(
            line.contains(&format!("model='{repo}'")),
            "the logs of {name} do not name its model {repo}:\n{}",
            logs.stdout
        );
        assert!(
            !logs.stdout.contains(other_repo.as_str()),
            "the logs of {name} name the other service's model {other_repo}"
        );
        assert!(
            events
                .iter()
                .all(|e| e["service_id"] == service.id.as_str()),
            "events of {name} include other services' events: {events:?}"
        );
        let port = format!("port {}", service.port);
        let other_port = format!("port {}", other_service.port);
        assert!(
            messages.iter().any(|m| m.contains(&port)),
            "no event of {name} names its {port}: {messages:?}"
        );
        assert!(
            !messages.iter().any(|m| m.contains(&other_port)),
            "an event of {name} names the other service's {other_port}: {messages:?}"
        );
    }
}
