//! The model gateway on the daemon's listener, driven by the official OpenAI client and by
//! plain HTTP, against the stub engine in real containers.

use std::process::Command;
use std::time::{Duration, Instant};

use aima::domain::{EventKind, ServiceStatus, StartPhase};
use futures::StreamExt;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::{TestDaemon, poll, post_ok as post};

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(120))
        .build()
        .expect("client")
}

/// A model named `name` and one stopped service for it, with `env` for the stub.
async fn model_with_service(d: &TestDaemon, name: &str, env: &[&str]) -> Value {
    post(
        d,
        "/api/v1/models",
        json!({"name": name, "source": "ollama", "repo": name}),
    )
    .await;
    post(
        d,
        "/api/v1/services",
        // A dead engine stays dead here: the restart policy has tests of its own.
        json!({"model_id": name, "engine_type": "vllm", "env": env, "restart": "no"}),
    )
    .await
}

async fn status_of(d: &TestDaemon, service: &Value) -> String {
    let id = service["id"].as_str().expect("id");
    let got: Value = client()
        .get(d.url(&format!("/api/v1/services/{id}")))
        .send()
        .await
        .expect("get")
        .json()
        .await
        .expect("json");
    got["status"].as_str().expect("status").to_owned()
}

fn chat(model: &str, stream: bool) -> Value {
    json!({"model": model, "stream": stream, "messages": [{"role": "user", "content": "hi"}]})
}

/// Starts of `service` so far: its validate phases.
fn starts(d: &TestDaemon, service: &Value) -> usize {
    let id = service["id"]
        .as_str()
        .expect("id")
        .parse()
        .expect("service id");
    d.store
        .events(Some(&id), 0)
        .expect("events")
        .iter()
        .filter(|e| e.kind == EventKind::Phase(StartPhase::Validate))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_official_openai_client_is_routed_started_streamed_and_embedded() {
    let Some(python) = crate::contract::python_with("openai", "openai") else {
        return;
    };
    let d = TestDaemon::with_engine();
    // A bare model: the gateway gives it a service (the engine its files call for, vLLM
    // for a Hugging Face repository) on its first request.
    post(
        &d,
        "/api/v1/models",
        json!({"name": "tiny", "source": "huggingface", "repo": "org/tiny"}),
    )
    .await;
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/clients/openai_gateway.py"
    );
    let base = d.url("/v1");
    let out = tokio::task::spawn_blocking(move || {
        Command::new(python)
            .args([script, &base, "tiny"])
            .output()
            .expect("run the OpenAI client")
    })
    .await
    .expect("join");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let seen: Value = serde_json::from_slice(&out.stdout).expect("the client's JSON");

    assert_eq!(seen["models"], json!(["tiny"]));
    let chat = &seen["chat"];
    assert_eq!(
        chat["content"], "Hello from the aima stub engine serving tiny.",
        "{seen}"
    );
    assert!(chat["total_tokens"].as_u64().expect("usage") > 0);
    assert_eq!(chat["service_header"], "tiny-vllm");
    let overhead: f64 = chat["overhead_header"]
        .as_str()
        .expect("x-aima-overhead-ms")
        .parse()
        .expect("a number of ms");
    assert!((0.0..1000.0).contains(&overhead), "{overhead}");
    assert_eq!(
        seen["stream"]["text"], chat["content"],
        "the stream carries the same reply"
    );
    assert!(seen["stream"]["chunks"].as_u64().expect("chunks") > 3);
    assert!(seen["stream"]["total_tokens"].as_u64().expect("usage") > 0);
    assert_eq!(seen["completion"]["finish_reason"], "length");
    assert_eq!(seen["embeddings"], json!([8, 8]));
    let unknown = &seen["unknown"];
    assert_eq!(unknown["status"], 404, "{seen}");
    assert_eq!(unknown["code"], "model_not_found");
    assert!(
        unknown["message"]
            .as_str()
            .expect("message")
            .contains("tiny, tiny-vllm"),
        "{unknown}"
    );
    let service: Value = client()
        .get(d.url("/api/v1/services/tiny-vllm"))
        .send()
        .await
        .expect("get")
        .json()
        .await
        .expect("json");
    assert_eq!(status_of(&d, &service).await, "running");
    assert_eq!(starts(&d, &service), 1, "the cold request started it once");
    let id = service["id"].as_str().expect("id").parse().expect("id");
    let events = d.store.events(Some(&id), 0).expect("events");
    assert!(
        events.iter().any(|e| e
            .message
            .contains("created by the gateway: a request named model tiny")),
        "{events:?}"
    );
    crate::support::remove_containers_with_label(&d.instance_label());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_auto_create_off_a_bare_model_is_listed_but_not_served() {
    let d = TestDaemon::with_engine_and(|s| s.gateway_auto_create = false);
    post(
        &d,
        "/api/v1/models",
        json!({"name": "bare", "source": "huggingface", "repo": "org/bare"}),
    )
    .await;
    let models: Value = client()
        .get(d.url("/v1/models"))
        .send()
        .await
        .expect("models")
        .json()
        .await
        .expect("json");
    assert_eq!(models["data"][0]["id"], "bare", "{models}");
    assert_eq!(models["data"][0]["aima"]["services"], json!([]), "{models}");
    let answer = client()
        .post(d.url("/v1/chat/completions"))
        .json(&chat("bare", false))
        .send()
        .await
        .expect("request");
    assert_eq!(answer.status(), StatusCode::NOT_FOUND);
    let body: Value = answer.json().await.expect("json");
    let message = body["error"]["message"].as_str().expect("message");
    assert!(
        message.contains("'bare' has no service (AIMA_GATEWAY_AUTO_CREATE is off)"),
        "{body}"
    );
    assert!(d.containers().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_created_after_a_request_is_routed_at_once() {
    let d = TestDaemon::with_engine();
    model_with_service(&d, "first", &[]).await;
    let answer = client()
        .post(d.url("/v1/chat/completions"))
        .json(&chat("first", false))
        .send()
        .await
        .expect("first request");
    assert_eq!(answer.status(), StatusCode::OK);
    // The gateway has its catalog now; a model created next must be seen by the very
    // next request, even before any service of it changes.
    post(
        &d,
        "/api/v1/models",
        json!({"name": "second", "source": "huggingface", "repo": "org/second"}),
    )
    .await;
    let served = client()
        .post(d.url("/v1/chat/completions"))
        .json(&chat("second", false))
        .send()
        .await
        .expect("second request");
    assert_eq!(
        served.status(),
        StatusCode::OK,
        "the new model is known at once, and given a service"
    );
    let deleted = client()
        .delete(d.url("/api/v1/services/second-vllm?force=true"))
        .send()
        .await
        .expect("delete");
    assert!(deleted.status().is_success());
    poll(Duration::from_secs(30), "the service deleted", || {
        d.store
            .list_services()
            .expect("services")
            .iter()
            .all(|s| s.name != "second-vllm")
            .then_some(())
    });
    let deleted = client()
        .delete(d.url("/api/v1/models/second"))
        .send()
        .await
        .expect("delete");
    assert!(deleted.status().is_success());
    let gone: Value = client()
        .post(d.url("/v1/chat/completions"))
        .json(&chat("second", false))
        .send()
        .await
        .expect("third request")
        .json()
        .await
        .expect("json");
    assert!(
        gone["error"]["message"]
            .as_str()
            .expect("message")
            .contains("does not exist"),
        "a deleted model is forgotten at once: {gone}"
    );
    crate::support::remove_containers_with_label(&d.instance_label());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_concurrent_cold_requests_trigger_one_start() {
    let d = TestDaemon::with_engine();
    let service = model_with_service(&d, "cold", &["STUB_START_DELAY_MS=1500"]).await;
    let requests = (0..20).map(|_| {
        client()
            .post(d.url("/v1/chat/completions"))
            .json(&chat("cold", false))
            .send()
    });
    let answers = futures::future::join_all(requests).await;
    for answer in answers {
        let answer = answer.expect("answered");
        assert_eq!(answer.status(), StatusCode::OK);
        assert_eq!(answer.headers()["x-aima-service"], "cold-vllm");
    }
    assert_eq!(starts(&d, &service), 1, "one start for twenty requests");
    crate::support::remove_containers_with_label(&d.instance_label());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streaming_request_hears_loading_comments_until_the_engine_answers() {
    let d = TestDaemon::with_engine();
    model_with_service(&d, "slow", &["STUB_START_DELAY_MS=4000"]).await;
    let asked = Instant::now();
    let response = client()
        .post(d.url("/v1/chat/completions"))
        .json(&chat("slow", true))
        .send()
        .await
        .expect("post");
    assert_eq!(response.status(), StatusCode::OK);
    assert!(
        asked.elapsed() < Duration::from_secs(2),
        "the stream begins before the engine is up"
    );
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    assert_eq!(response.headers()["x-accel-buffering"], "no");
    let text = response.text().await.expect("body");
    let comments: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with(": loading slow-vllm"))
        .collect();
    assert!(comments.len() >= 3, "{text}");
    assert!(comments.iter().any(|c| c.ends_with("health")), "{text}");
    assert!(text.trim_end().ends_with("data: [DONE]"), "{text}");
    crate::support::remove_containers_with_label(&d.instance_label());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_start_gives_every_waiting_request_its_reason() {
    let d = TestDaemon::with_engine();
    let service = model_with_service(&d, "broken", &["STUB_FAIL=oom"]).await;
    let requests = (0..3).map(|_| {
        client()
            .post(d.url("/v1/chat/completions"))
            .json(&chat("broken", false))
            .send()
    });
    let stream = client()
        .post(d.url("/v1/chat/completions"))
        .json(&chat("broken", true))
        .send();
    let (answers, streamed) = tokio::join!(futures::future::join_all(requests), stream);
    for answer in answers {
        let answer = answer.expect("answered");
        assert_eq!(answer.status(), StatusCode::SERVICE_UNAVAILABLE);
        let body: Value = answer.json().await.expect("json");
        let message = body["error"]["message"].as_str().expect("message");
        assert!(message.contains("out of GPU memory"), "{body}");
        assert_eq!(body["error"]["type"], "server_error");
        assert!(!message.contains('\n'));
    }
    let text = streamed.expect("stream").text().await.expect("body");
    assert!(
        text.contains("\"service_unavailable\"") && text.contains("out of GPU memory"),
        "{text}"
    );
    assert_eq!(status_of(&d, &service).await, "failed");
    assert_eq!(starts(&d, &service), 1);
    assert!(
        d.containers().is_empty(),
        "a failed start leaves no container"
    );
}

/// Opens a long stream on a running service and returns it after the first chunk.
async fn long_stream(d: &TestDaemon, model: &str) -> reqwest::Response {
    let body = json!({
        "model": model, "stream": true, "max_tokens": 400, "ignore_eos": true,
        "messages": [{"role": "user", "content": "go on"}],
    });
    let response = client()
        .post(d.url("/v1/chat/completions"))
        .json(&body)
        .send()
        .await
        .expect("post");
    assert_eq!(response.status(), StatusCode::OK);
    response
}

fn container_of(d: &TestDaemon, service: &Value) -> String {
    let id = service["id"]
        .as_str()
        .expect("id")
        .parse()
        .expect("service id");
    d.store
        .get_service(&id)
        .expect("get")
        .and_then(|s| s.container_id)
        .expect("a container")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_hanging_up_cancels_the_engine_request() {
    let d = TestDaemon::with_engine();
    let service = model_with_service(&d, "chatty", &["STUB_TOKEN_DELAY_MS=20"]).await;
    let warm = client()
        .post(d.url("/v1/chat/completions"))
        .json(&chat("chatty", false))
        .send()
        .await
        .expect("warm up");
    assert_eq!(warm.status(), StatusCode::OK);
    let mut body = long_stream(&d, "chatty").await.bytes_stream();
    body.next().await.expect("a first chunk").expect("bytes");
    drop(body);
    let container = container_of(&d, &service);
    let logs = poll(
        Duration::from_secs(15),
        "the engine to see the hang-up",
        || {
            let out = Command::new("docker")
                .args(["logs", &container])
                .output()
                .expect("docker logs");
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            text.contains("client disconnected after").then_some(text)
        },
    );
    let line = logs
        .lines()
        .find(|l| l.contains("client disconnected after"))
        .expect("line");
    let sent: usize = line
        .split("after ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .expect("events sent");
    assert!(sent < 300, "the engine stopped early: {line}");
    crate::support::remove_containers_with_label(&d.instance_label());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_engine_killed_mid_stream_ends_it_with_an_error_event() {
    let d = TestDaemon::with_engine();
    let service = model_with_service(&d, "fragile", &["STUB_TOKEN_DELAY_MS=20"]).await;
    let warm = client()
        .post(d.url("/v1/chat/completions"))
        .json(&chat("fragile", false))
        .send()
        .await
        .expect("warm up");
    assert_eq!(warm.status(), StatusCode::OK);
    let mut body = long_stream(&d, "fragile").await.bytes_stream();
    let mut text = String::new();
    let first = body.next().await.expect("a first chunk").expect("bytes");
    text.push_str(&String::from_utf8_lossy(&first));
    let container = container_of(&d, &service);
    let killed = Command::new("docker")
        .args(["kill", &container])
        .output()
        .expect("docker kill");
    assert!(killed.status.success());
    while let Some(chunk) = body.next().await {
        match chunk {
            Ok(bytes) => text.push_str(&String::from_utf8_lossy(&bytes)),
            Err(e) => panic!("the stream should end cleanly with an error event: {e}; got {text}"),
        }
    }
    assert!(
        text.contains("\"engine_error\"") && !text.contains("[DONE]"),
        "{text}"
    );
    let id = service["id"].as_str().expect("id").parse().expect("id");
    poll(
        Duration::from_secs(10),
        "the service to turn failed",
        || {
            let s = d.store.get_service(&id).expect("get").expect("exists");
            (s.status == ServiceStatus::Failed).then_some(())
        },
    );
    assert!(d.containers().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_service_is_unloaded_after_its_timeout_and_never_during_a_stream() {
    let d = TestDaemon::with_engine();
    post(
        &d,
        "/api/v1/models",
        json!({"name": "idle", "source": "ollama", "repo": "idle"}),
    )
    .await;
    let service = post(
        &d,
        "/api/v1/services",
        json!({"model_id": "idle", "engine_type": "vllm", "idle_timeout": "1s",
               "env": ["STUB_TOKEN_DELAY_MS=20"]}),
    )
    .await;
    assert_eq!(service["idle_timeout"], "1s");
    // 150 tokens 20 ms apart: a stream three times longer than the idle timeout.
    let body = json!({
        "model": "idle", "stream": true, "max_tokens": 150, "ignore_eos": true,
        "messages": [{"role": "user", "content": "go on"}],
    });
    let response = client()
        .post(d.url("/v1/chat/completions"))
        .json(&body)
        .send()
        .await
        .expect("post");
    let mut chunks = response.bytes_stream();
    let mut statuses = std::collections::BTreeSet::new();
    let mut last_look = Instant::now();
    let mut text = String::new();
    while let Some(chunk) = chunks.next().await {
        text.push_str(&String::from_utf8_lossy(&chunk.expect("bytes")));
        if text.contains("delta") && last_look.elapsed() > Duration::from_millis(300) {
            statuses.insert(status_of(&d, &service).await);
            last_look = Instant::now();
        }
    }
    assert!(text.trim_end().ends_with("data: [DONE]"), "{text}");
    assert_eq!(
        statuses.into_iter().collect::<Vec<_>>(),
        ["running"],
        "never unloaded during the stream"
    );
    let ended = Instant::now();
    let id: aima::domain::ServiceId = service["id"].as_str().expect("id").parse().expect("id");
    let stopped = poll(Duration::from_secs(5), "the idle unload", || {
        let s = d.store.get_service(&id).expect("get").expect("exists");
        (s.status == ServiceStatus::Stopped).then_some(s)
    });
    let after = ended.elapsed();
    assert!(
        after >= Duration::from_millis(900),
        "unloaded {after:?} after the stream, before its idle timeout"
    );
    assert!(
        stopped
            .status_reason
            .as_deref()
            .is_some_and(|r| r.contains("unloaded by the gateway") && r.contains("idle timeout 1s")),
        "{stopped:?}"
    );
    assert_eq!(
        u64::from(stopped.port),
        service["port"].as_u64().expect("port")
    );
    assert!(d.containers().is_empty(), "the container is removed");
    // The next request loads it again.
    let again = client()
        .post(d.url("/v1/chat/completions"))
        .json(&chat("idle", false))
        .send()
        .await
        .expect("post");
    assert_eq!(again.status(), StatusCode::OK);
    assert_eq!(starts(&d, &service), 2);
    crate::support::remove_containers_with_label(&d.instance_label());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_engine_queues_requests_and_a_full_queue_answers_503_with_retry_after() {
    let d = TestDaemon::with_engine_and(|settings| settings.gateway_queue = 2);
    post(
        &d,
        "/api/v1/models",
        json!({"name": "busy", "source": "ollama", "repo": "busy"}),
    )
    .await;
    let service = post(
        &d,
        "/api/v1/services",
        json!({"model_id": "busy", "engine_type": "vllm", "max_concurrency": 1,
               "env": ["STUB_TOKEN_DELAY_MS=20"]}),
    )
    .await;
    assert_eq!(service["max_concurrency"], 1);
    let warm = client()
        .post(d.url("/v1/chat/completions"))
        .json(&chat("busy", false))
        .send()
        .await
        .expect("warm up");
    assert_eq!(warm.status(), StatusCode::OK);

    // One long stream holds the only turn (300 tokens, about 6 s).
    let body = json!({
        "model": "busy", "stream": true, "max_tokens": 300, "ignore_eos": true,
        "messages": [{"role": "user", "content": "go on"}],
    });
    let holder = client()
        .post(d.url("/v1/chat/completions"))
        .json(&body)
        .send()
        .await
        .expect("post");
    let mut holder = holder.bytes_stream();
    holder.next().await.expect("first chunk").expect("bytes");
    // Two wait their turn: the queue's capacity.
    let queued: Vec<_> = (0..2)
        .map(|_| {
            let request = client()
                .post(d.url("/v1/chat/completions"))
                .json(&chat("busy", false));
            tokio::spawn(async move { request.send().await.expect("answered").status() })
        })
        .collect();
    // Once both wait (the queue gauge says so), a third finds the queue full.
    let until = Instant::now() + Duration::from_secs(5);
    while !metrics(&d).await.contains("aima_gateway_queued 2\n") {
        assert!(Instant::now() < until, "two requests never queued");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let refused = client()
        .post(d.url("/v1/chat/completions"))
        .json(&chat("busy", false))
        .send()
        .await
        .expect("answered");
    assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(refused.headers()["retry-after"], "1");
    let error: Value = refused.json().await.expect("json");
    assert!(
        error["error"]["message"]
            .as_str()
            .expect("message")
            .contains("the gateway queue is full (2 requests"),
        "{error}"
    );
    // The stream finishes, then the two queued requests get their turns.
    let mut rest = String::new();
    while let Some(chunk) = holder.next().await {
        rest.push_str(&String::from_utf8_lossy(&chunk.expect("bytes")));
    }
    assert!(rest.trim_end().ends_with("data: [DONE]"));
    for request in queued {
        assert_eq!(request.await.expect("join"), StatusCode::OK);
    }
    crate::support::remove_containers_with_label(&d.instance_label());
}

async fn metrics(d: &TestDaemon) -> String {
    client()
        .get(d.url("/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text")
}

/// The value of the sample whose line starts with `series` (name and labels).
fn sample(metrics: &str, series: &str) -> Option<f64> {
    metrics
        .lines()
        .find(|l| l.starts_with(series))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_and_ps_show_requests_tokens_cold_starts_and_what_is_loaded() {
    let d = TestDaemon::with_engine();
    post(
        &d,
        "/api/v1/models",
        json!({"name": "seen", "source": "ollama", "repo": "seen"}),
    )
    .await;
    post(
        &d,
        "/api/v1/services",
        json!({"model_id": "seen", "engine_type": "vllm", "idle_timeout": "10m",
               "env": ["STUB_TOKEN_DELAY_MS=20"]}),
    )
    .await;
    let first = client()
        .post(d.url("/v1/chat/completions"))
        .json(&chat("seen", false))
        .send()
        .await
        .expect("post");
    assert_eq!(first.status(), StatusCode::OK);
    first.bytes().await.expect("body");
    let streamed = client()
        .post(d.url("/v1/chat/completions"))
        .json(
            &json!({"model": "seen", "stream": true, "stream_options": {"include_usage": true},
                      "messages": [{"role": "user", "content": "three words here"}]}),
        )
        .send()
        .await
        .expect("post");
    streamed.text().await.expect("stream");
    // A stream that did not ask for usage: the gateway asks the engine (real engines
    // count a stream's tokens only then) and keeps the usage event from the client.
    let unasked = client()
        .post(d.url("/v1/chat/completions"))
        .json(&json!({"model": "seen", "stream": true,
                      "messages": [{"role": "user", "content": "two words"}]}))
        .send()
        .await
        .expect("post")
        .text()
        .await
        .expect("stream");
    assert!(
        !unasked.contains("\"usage\"") && unasked.ends_with("data: [DONE]\n\n"),
        "{unasked}"
    );
    let missing = client()
        .post(d.url("/v1/chat/completions"))
        .json(&chat("nobody", false))
        .send()
        .await
        .expect("post");
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);

    let text = metrics(&d).await;
    let labels = r#"{model="seen",service="seen-vllm""#;
    let at = |name: &str, extra: &str| {
        sample(
            &text,
            &format!("{name}{}{extra}}}", &labels[..labels.len()]),
        )
    };
    assert_eq!(
        at("aima_gateway_requests_total", r#",code="200""#),
        Some(3.0),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            r#"aima_gateway_requests_total{model="",service="",code="404"}"#
        ),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        at("aima_gateway_cold_starts_total", ""),
        Some(1.0),
        "{text}"
    );
    // Usage: the JSON answer and the streams' usage chunks (1 + 3 + 2 prompt words).
    assert_eq!(
        at("aima_gateway_tokens_total", r#",kind="prompt""#),
        Some(6.0),
        "{text}"
    );
    assert!(at("aima_gateway_tokens_total", r#",kind="completion""#).unwrap_or(0.0) >= 16.0);
    assert_eq!(
        at("aima_gateway_time_to_head_seconds_count", ""),
        Some(3.0),
        "{text}"
    );
    assert_eq!(
        at("aima_gateway_request_duration_seconds_count", ""),
        Some(3.0),
        "{text}"
    );
    assert_eq!(at("aima_gateway_in_flight", ""), Some(0.0), "{text}");
    // The last hour, a minute at a time, for the dashboard's charts.
    let history: Value = client()
        .get(d.url("/api/v1/history"))
        .send()
        .await
        .expect("history")
        .json()
        .await
        .expect("json");
    let minutes = history["minutes"].as_array().expect("minutes");
    let count = |key: &str| -> u64 { minutes.iter().filter_map(|m| m[key].as_u64()).sum() };
    // Three answered, and the one for a model that does not exist.
    assert_eq!((count("requests"), count("errors")), (4, 1), "{history}");
    let tokens: u64 = minutes
        .iter()
        .filter_map(|m| m["completion_tokens"].as_u64())
        .sum();
    assert!(tokens >= 16, "{history}");
    assert!(
        minutes
            .iter()
            .any(|m| m["tokens_per_second"].as_f64().is_some()),
        "{history}"
    );
    // Speed: the two streams' first tokens, and every answer's tokens per second.
    assert_eq!(
        at("aima_gateway_time_to_first_token_seconds_count", ""),
        Some(2.0),
        "{text}"
    );
    assert_eq!(
        at("aima_gateway_completion_tokens_per_second_count", ""),
        Some(3.0),
        "{text}"
    );
    assert!(
        at("aima_gateway_completion_tokens_per_second_sum", "").unwrap_or(0.0) > 0.0,
        "{text}"
    );

    // While a long stream runs, ps and the gauge show it in flight, with no unload time.
    let body = json!({
        "model": "seen", "stream": true, "max_tokens": 200, "ignore_eos": true,
        "messages": [{"role": "user", "content": "go on"}],
    });
    let long = client()
        .post(d.url("/v1/chat/completions"))
        .json(&body)
        .send()
        .await
        .expect("post");
    let mut long = long.bytes_stream();
    long.next().await.expect("first chunk").expect("bytes");
    let ps = |d: &TestDaemon| {
        let out = d
            .cli()
            .args(["-o", "json", "ps"])
            .output()
            .expect("aima ps");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice::<Value>(&out.stdout).expect("json")
    };
    let busy = ps(&d);
    assert_eq!(busy["items"][0]["name"], "seen-vllm", "{busy}");
    assert_eq!(busy["items"][0]["in_flight"], 1, "{busy}");
    assert_eq!(busy["items"][0]["unload_at"], Value::Null, "{busy}");
    assert_eq!(at_now(&d, labels).await, Some(1.0));
    while let Some(chunk) = long.next().await {
        chunk.expect("bytes");
    }
    let idle = poll(Duration::from_secs(5), "the stream to end", || {
        let now = ps(&d);
        (now["items"][0]["in_flight"] == 0).then_some(now)
    });
    let last: chrono::DateTime<chrono::Utc> =
        serde_json::from_value(idle["items"][0]["last_request_at"].clone()).expect("last request");
    let unload: chrono::DateTime<chrono::Utc> =
        serde_json::from_value(idle["items"][0]["unload_at"].clone()).expect("unload time");
    assert_eq!((unload - last).num_seconds(), 600, "{idle}");
    // ps has the speed of the last five minutes' answers.
    assert!(
        idle["items"][0]["tokens_per_second"]
            .as_f64()
            .unwrap_or(0.0)
            > 0.0,
        "{idle}"
    );
    assert!(
        idle["items"][0]["time_to_first_token_ms"].is_u64(),
        "{idle}"
    );
    let table = d.cli().arg("ps").output().expect("aima ps");
    let table = String::from_utf8_lossy(&table.stdout).into_owned();
    assert!(
        table.starts_with("NAME")
            && table.contains("TOK/S")
            && table.contains("seen-vllm")
            && table.contains("in 9m"),
        "{table}"
    );
    crate::support::remove_containers_with_label(&d.instance_label());
}

async fn at_now(d: &TestDaemon, labels: &str) -> Option<f64> {
    sample(
        &metrics(d).await,
        &format!("aima_gateway_in_flight{labels}}}"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn short_gpu_memory_evicts_the_least_recently_used_idle_service_never_a_pinned_one() {
    // One simulated 80 GiB GPU; three services claim 45% each, so two fit at a time, and
    // a stopped engine's memory comes back a second later.
    let d = TestDaemon::with_engine_and(|settings| {
        settings.simulate_gpus = Some(vec![("H100".into(), 81920)]);
        settings.simulate_gpu_release = Duration::from_secs(1);
    });
    for (name, pinned) in [("p", true), ("a", false), ("b", false)] {
        post(
            &d,
            "/api/v1/models",
            json!({"name": name, "source": "ollama", "repo": name}),
        )
        .await;
        post(
            &d,
            "/api/v1/services",
            json!({"model_id": name, "engine_type": "vllm", "gpu_memory_utilization": 0.45,
                   "pinned": pinned}),
        )
        .await;
    }
    let ask = |model: &'static str| {
        let request = client()
            .post(d.url("/v1/chat/completions"))
            .json(&chat(model, false));
        async move {
            let asked = Instant::now();
            let response = request.send().await.expect("answered");
            let status = response.status();
            let body = response.text().await.unwrap_or_default();
            (status, body, asked.elapsed())
        }
    };
    let status = |name: &str| {
        let services = d.store.list_services().expect("list");
        let s = services
            .into_iter()
            .find(|s| s.name == name)
            .expect("service");
        (s.status, s.status_reason.unwrap_or_default())
    };
    for model in ["p", "a"] {
        let (code, body, _) = ask(model).await;
        assert_eq!(code, StatusCode::OK, "{model}: {body}");
    }
    // b does not fit beside p and a: a (idle, not pinned) makes room.
    let (code, body, took) = ask("b").await;
    assert_eq!(code, StatusCode::OK, "{body}");
    assert!(
        took >= Duration::from_secs(1),
        "b waited for a's memory to be released: {took:?}"
    );
    let (a, reason) = status("a-vllm");
    assert_eq!(a, ServiceStatus::Stopped);
    assert!(
        reason.contains("evicted by the gateway") && reason.contains("b-vllm"),
        "{reason}"
    );
    assert_eq!(
        status("p-vllm").0,
        ServiceStatus::Running,
        "the pinned one stays"
    );
    assert_eq!(status("b-vllm").0, ServiceStatus::Running);
    // And back: a evicts b, the least recently used idle one.
    let (code, body, _) = ask("a").await;
    assert_eq!(code, StatusCode::OK, "{body}");
    assert_eq!(status("b-vllm").0, ServiceStatus::Stopped);
    assert_eq!(status("p-vllm").0, ServiceStatus::Running);
    let text = metrics(&d).await;
    for victim in ["a", "b"] {
        let series =
            format!(r#"aima_gateway_evictions_total{{model="{victim}",service="{victim}-vllm"}}"#);
        assert_eq!(sample(&text, &series), Some(1.0), "{text}");
    }
    crate::support::remove_containers_with_label(&d.instance_label());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_swap_storm_of_200_cold_requests_for_two_models_that_cannot_share_a_gpu_all_succeed() {
    let Some(python) = crate::contract::python_with("openai", "openai") else {
        return;
    };
    // One simulated 80 GiB GPU; each service claims 60 %, so only one runs at a time,
    // and a stopped engine's memory comes back a second later, as real engines' does.
    let d = TestDaemon::with_engine_and(|settings| {
        settings.simulate_gpus = Some(vec![("H100".into(), 81920)]);
        settings.simulate_gpu_release = Duration::from_secs(1);
    });
    for name in ["left", "right"] {
        post(
            &d,
            "/api/v1/models",
            json!({"name": name, "source": "ollama", "repo": name}),
        )
        .await;
        post(
            &d,
            "/api/v1/services",
            json!({"model_id": name, "engine_type": "vllm", "gpu_memory_utilization": 0.6,
                   "env": ["STUB_START_DELAY_MS=500"], "restart": "no"}),
        )
        .await;
    }
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clients/swap_storm.py");
    let base = d.url("/v1");
    let out = tokio::task::spawn_blocking(move || {
        Command::new(python)
            .args([script, &base, "200", "left", "right"])
            .output()
            .expect("run the OpenAI client")
    })
    .await
    .expect("join");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let seen: Value = serde_json::from_slice(&out.stdout).expect("the client's JSON");
    let results = seen["results"].as_array().expect("results");
    let failed: Vec<&Value> = results.iter().filter(|r| r["ok"] != true).collect();
    let waits: Vec<f64> = results
        .iter()
        .map(|r| r["seconds"].as_f64().expect("seconds"))
        .collect();
    let max_wait = waits.iter().copied().fold(0.0, f64::max);
    let events = d.store.events(None, 0).expect("events");
    let evictions = events
        .iter()
        .filter(|e| e.kind == EventKind::Note && e.message.starts_with("evicted by the gateway"))
        .count();
    let starts = events
        .iter()
        .filter(|e| e.kind == EventKind::Phase(StartPhase::Validate))
        .count();
    let mut why: std::collections::BTreeMap<String, usize> = Default::default();
    for f in &failed {
        let error = f["error"].as_str().unwrap_or_default();
        *why.entry(format!(
            "{}: {}",
            f["model"],
            error.get(..90).unwrap_or(error)
        ))
        .or_default() += 1;
    }
    let report = json!({
        "requests": results.len(), "failed": failed.len(), "failures": why, "max_wait_s": max_wait,
        "storm_s": seen["seconds"], "evictions": evictions, "starts": starts,
    });
    eprintln!("swap storm: {report}");
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/tmp");
    let _ = std::fs::create_dir_all(&dir);
    let _ = std::fs::write(dir.join("swap-storm.json"), report.to_string());
    assert!(
        failed.is_empty(),
        "{} of 200 failed, e.g. {:?}",
        failed.len(),
        failed.first()
    );
    assert!(
        evictions >= 1,
        "one model made room for the other: {report}"
    );
    // One swap: the first engine's start, serving, its stop and the memory's release (1 s),
    // the second engine's start (0.5 s of loading each, plus Docker's own time).
    assert!(
        max_wait < 30.0,
        "a request waited {max_wait:.1} s: {report}"
    );
    crate::support::remove_containers_with_label(&d.instance_label());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_engine_refusing_a_large_body_is_heard_not_a_broken_pipe() {
    let d = TestDaemon::with_engine();
    model_with_service(&d, "big", &[]).await;
    let warm = client()
        .post(d.url("/v1/chat/completions"))
        .json(&chat("big", false))
        .send()
        .await
        .expect("warm up");
    assert_eq!(warm.status(), StatusCode::OK);
    // 10 MB: within the gateway's 32 MiB, beyond the stub engine's 4 MiB.
    // An engine that closed without reading the rest reset the connection about one
    // time in three: ten tries.
    let prompt = "x".repeat(10 * 1000 * 1000);
    for attempt in 0..10 {
        let answer = client()
            .post(d.url("/v1/chat/completions"))
            .json(&json!({"model": "big", "messages": [{"role": "user", "content": prompt}]}))
            .send()
            .await
            .expect("answered");
        let status = answer.status();
        let body = answer.text().await.unwrap_or_default();
        assert_eq!(
            status,
            StatusCode::PAYLOAD_TOO_LARGE,
            "attempt {attempt}: the engine's own answer: {body}"
        );
    }
    crate::support::remove_containers_with_label(&d.instance_label());
}
