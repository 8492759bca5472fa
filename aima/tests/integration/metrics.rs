//! `/metrics` read by the reference Prometheus client's parsers (installed from PyPI),
//! after a daemon did real work: a start that runs, one that fails, health probes, API
//! requests. Each number checked is one the test caused.

use std::io::Write as _;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::{TestDaemon, http, post_ok};

#[derive(Debug, serde::Deserialize)]
struct Sample {
    name: String,
    labels: std::collections::BTreeMap<String, String>,
    value: f64,
}

/// Scrapes `/metrics`, as an OpenMetrics scraper or a plain one, and parses the body with
/// the reference parser for that format.
async fn scrape(d: &TestDaemon, python: &std::path::Path, openmetrics: bool) -> Vec<Sample> {
    let mut request = http().get(d.url("/metrics"));
    if openmetrics {
        request = request.header(
            "accept",
            "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5",
        );
    }
    let response = request.send().await.expect("scrape");
    assert_eq!(response.status(), StatusCode::OK);
    let content_type = response.headers()["content-type"]
        .to_str()
        .expect("type")
        .to_owned();
    let expected = if openmetrics {
        "application/openmetrics-text; version=1.0.0"
    } else {
        "text/plain; version=0.0.4"
    };
    assert!(content_type.starts_with(expected), "{content_type}");
    let body = response.text().await.expect("body");
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/clients/parse_metrics.py"
    );
    let mut child = Command::new(python)
        .args([script, if openmetrics { "openmetrics" } else { "text" }])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run the parser");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(body.as_bytes())
        .expect("feed the parser");
    let out = child.wait_with_output().expect("parser output");
    assert!(
        out.status.success(),
        "the reference parser refused /metrics: {}\n{body}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("sample"))
        .collect()
}

/// The value of the one sample named `name` whose labels include `labels`.
fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let found: Vec<&Sample> = samples
        .iter()
        .filter(|s| {
            s.name == name
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .collect();
    assert!(
        found.len() <= 1,
        "several samples match {name}{labels:?}: {found:?}"
    );
    found.first().map(|s| s.value)
}

async fn wait_for_status(d: &TestDaemon, id: &str, status: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let got: Value = http()
            .get(d.url(&format!("/api/v1/services/{id}")))
            .send()
            .await
            .expect("get")
            .json()
            .await
            .expect("json");
        if got["status"] == status {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{id} never turned {status}: {got}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_starts_failures_probes_and_requests_for_the_reference_parsers() {
    let Some(python) = crate::contract::python_with("prometheus_client", "prometheus-client")
    else {
        return;
    };
    let d = TestDaemon::with_engine();
    post_ok(
        &d,
        "/api/v1/models",
        json!({"name": "tiny", "source": "ollama", "repo": "tiny"}),
    )
    .await;
    let good = post_ok(
        &d,
        "/api/v1/services",
        json!({"model_id": "tiny", "engine_type": "vllm", "name": "good"}),
    )
    .await;
    let bad = post_ok(
        &d,
        "/api/v1/services",
        json!({"model_id": "tiny", "engine_type": "vllm", "name": "bad", "env": ["STUB_FAIL=oom"]}),
    )
    .await;
    let (good_id, bad_id) = (
        good["id"].as_str().expect("id"),
        bad["id"].as_str().expect("id"),
    );
    post_ok(&d, &format!("/api/v1/services/{good_id}/start"), json!({})).await;
    post_ok(&d, &format!("/api/v1/services/{bad_id}/start"), json!({})).await;
    wait_for_status(&d, good_id, "running").await;
    wait_for_status(&d, bad_id, "failed").await;
    let missing = http()
        .get(d.url("/api/v1/nowhere"))
        .send()
        .await
        .expect("get");
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);

    // The health monitor probes running engines every 2 s.
    let deadline = Instant::now() + Duration::from_secs(30);
    let samples = loop {
        let samples = scrape(&d, &python, true).await;
        let probes = value(
            &samples,
            "aima_health_probe_duration_seconds_count",
            &[("engine", "vllm")],
        );
        if probes.is_some_and(|n| n >= 1.0) {
            break samples;
        }
        assert!(Instant::now() < deadline, "no health probe was counted");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };

    let counted = |name: &str, labels: &[(&str, &str)]| value(&samples, name, labels);
    assert_eq!(counted("aima_up", &[]), Some(1.0));
    assert_eq!(counted("aima_models", &[]), Some(1.0));
    assert_eq!(
        counted("aima_services", &[("status", "running")]),
        Some(1.0)
    );
    assert_eq!(counted("aima_services", &[("status", "failed")]), Some(1.0));
    let result = |r| [("engine", "vllm"), ("result", r)];
    assert_eq!(
        counted("aima_service_starts_total", &result("running")),
        Some(1.0)
    );
    assert_eq!(
        counted("aima_service_starts_total", &result("failed")),
        Some(1.0)
    );
    assert_eq!(
        counted(
            "aima_service_start_duration_seconds_count",
            &result("running")
        ),
        Some(1.0)
    );
    assert_eq!(
        counted(
            "aima_service_failures_total",
            &[("engine", "vllm"), ("cause", "out_of_memory")]
        ),
        Some(1.0)
    );
    // Both starts went through every phase from cleanup to health.
    for phase in [
        "validate",
        "cleanup",
        "port_check",
        "image",
        "create",
        "start",
        "health",
    ] {
        assert_eq!(
            counted(
                "aima_service_start_phase_duration_seconds_count",
                &[("engine", "vllm"), ("phase", phase)]
            ),
            Some(2.0),
            "phase {phase}"
        );
    }
    let good_port = good["port"].to_string();
    let up = |id: &str, name: &str, port: &str| {
        counted(
            "aima_service_up",
            &[
                ("service", id),
                ("name", name),
                ("engine", "vllm"),
                ("port", port),
            ],
        )
    };
    assert_eq!(up(good_id, "good", &good_port), Some(1.0));
    assert_eq!(up(bad_id, "bad", &bad["port"].to_string()), Some(0.0));
    assert_eq!(
        counted(
            "aima_http_requests_total",
            &[
                ("method", "POST"),
                ("route", "/api/v1/services/{id}/start"),
                ("code", "202")
            ]
        )
        .or_else(|| counted(
            "aima_http_requests_total",
            &[
                ("method", "POST"),
                ("route", "/api/v1/services/{id}/start"),
                ("code", "200")
            ]
        )),
        Some(2.0)
    );
    assert!(
        counted(
            "aima_http_requests_total",
            &[("method", "GET"), ("route", "unmatched"), ("code", "404")]
        )
        .is_some_and(|n| n >= 1.0)
    );
    assert!(
        counted(
            "aima_http_request_duration_seconds_count",
            &[("method", "GET"), ("route", "/api/v1/services/{id}")]
        )
        .is_some_and(|n| n >= 2.0)
    );
    assert_eq!(
        counted("aima_health_probe_failures_total", &[("service", good_id)]),
        None,
        "a healthy engine's probes all passed"
    );
    for process in [
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
        "process_open_fds",
        "process_start_time_seconds",
    ] {
        assert!(
            counted(process, &[]).is_some_and(|v| v > 0.0),
            "{process} missing or zero"
        );
    }

    // The same body in Prometheus' text format, for scrapers that do not ask for OpenMetrics.
    let text = scrape(&d, &python, false).await;
    assert_eq!(
        value(&text, "aima_service_up", &[("service", good_id)]),
        Some(1.0)
    );
    crate::support::remove_containers_with_label(&d.instance_label());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_probes_leave_no_line_in_the_engines_access_log() {
    let Some(python) = crate::contract::python_with("prometheus_client", "prometheus-client")
    else {
        return;
    };
    let d = TestDaemon::with_engine();
    post_ok(
        &d,
        "/api/v1/models",
        json!({"name": "tiny", "source": "ollama", "repo": "tiny"}),
    )
    .await;
    let service = post_ok(
        &d,
        "/api/v1/services",
        json!({"model_id": "tiny", "engine_type": "vllm"}),
    )
    .await;
    let id = service["id"].as_str().expect("id");
    post_ok(&d, &format!("/api/v1/services/{id}/start"), json!({})).await;
    wait_for_status(&d, id, "running").await;
    // One request through the gateway: the engine's access log is on, and shows it.
    let answer = http()
        .post(d.url("/v1/chat/completions"))
        .json(&json!({"model": "tiny", "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .expect("chat");
    assert_eq!(answer.status(), StatusCode::OK);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let samples = scrape(&d, &python, false).await;
        let probes = value(
            &samples,
            "aima_health_probe_duration_seconds_count",
            &[("engine", "vllm")],
        );
        if probes.is_some_and(|n| n >= 3.0) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "fewer than 3 health probes were counted"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let logs = http()
        .get(d.url(&format!("/api/v1/services/{id}/logs")))
        .send()
        .await
        .expect("logs")
        .text()
        .await
        .expect("text");
    assert!(
        logs.contains("\"POST /v1/chat/completions HTTP/1.1\" 200"),
        "the access log is off altogether: {logs}"
    );
    assert!(!logs.contains("GET /health"), "{logs}");
    crate::support::remove_containers_with_label(&d.instance_label());
}
