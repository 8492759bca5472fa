//! Steps of the model gateway: requests through `/v1/...` as an application sends them.

use std::process::Command;
use std::time::{Duration, Instant};

use cucumber::{given, then, when};
use futures::StreamExt;
use serde_json::{Value, json};

use super::super::world::{AimaWorld, GatewayAnswer};

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(120))
        .build()
        .expect("HTTP client")
}

fn chat(model: &str, stream: bool) -> Value {
    json!({"model": model, "stream": stream, "messages": [{"role": "user", "content": "hello"}]})
}

/// A stream long enough to interrupt: 400 tokens, as vLLM's `ignore_eos` allows.
fn long_chat(model: &str) -> Value {
    json!({
        "model": model, "stream": true, "max_tokens": 400, "ignore_eos": true,
        "messages": [{"role": "user", "content": "go on"}],
    })
}

/// Sends `body` and reads the whole answer, noting a body that broke off.
async fn ask(url: String, body: Value) -> GatewayAnswer {
    let asked = Instant::now();
    let response = client()
        .post(url)
        .json(&body)
        .send()
        .await
        .expect("the gateway answers");
    let status = response.status().as_u16();
    let service = response
        .headers()
        .get("x-aima-service")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let mut chunks = response.bytes_stream();
    let (mut body, mut broken) = (String::new(), false);
    while let Some(chunk) = chunks.next().await {
        match chunk {
            Ok(bytes) => body.push_str(&String::from_utf8_lossy(&bytes)),
            Err(_) => {
                broken = true;
                break;
            }
        }
    }
    GatewayAnswer {
        status,
        service,
        body,
        broken,
        elapsed: asked.elapsed(),
    }
}

/// The scenario's service `alias` as the API shows it now.
async fn service_json(w: &AimaWorld, alias: &str) -> Value {
    let id = w.service(alias).id;
    client()
        .get(w.url(&format!("/api/v1/services/{id}")))
        .send()
        .await
        .expect("GET service")
        .json()
        .await
        .expect("JSON")
}

/// The AIMA name of the scenario's service `alias`.
async fn service_name(w: &AimaWorld, alias: &str) -> String {
    service_json(w, alias).await["name"]
        .as_str()
        .expect("name")
        .to_owned()
}

#[when(expr = "I send a chat request for {string} to the gateway")]
async fn send_chat(w: &mut AimaWorld, model: String) {
    let answer = ask(w.url("/v1/chat/completions"), chat(&model, false)).await;
    w.note(format!(
        "answer {} from {:?} after {} ms",
        answer.status,
        answer.service,
        answer.elapsed.as_millis()
    ));
    w.answers.push(answer);
}

#[when(expr = "I send {int} chat requests for {string} to the gateway at once")]
async fn send_many(w: &mut AimaWorld, count: usize, model: String) {
    let url = w.url("/v1/chat/completions");
    let asked = Instant::now();
    let answers =
        futures::future::join_all((0..count).map(|_| ask(url.clone(), chat(&model, false)))).await;
    w.note(format!(
        "{count} requests answered within {} ms",
        asked.elapsed().as_millis()
    ));
    w.answers.extend(answers);
}

#[when(expr = "I send {int} chat requests at once, alternating between {string} and {string}")]
async fn send_alternating(w: &mut AimaWorld, count: usize, first: String, second: String) {
    let url = w.url("/v1/chat/completions");
    let asked = Instant::now();
    let requests = (0..count).map(|i| {
        let model = if i % 2 == 0 { &first } else { &second };
        ask(url.clone(), chat(model, false))
    });
    let answers = futures::future::join_all(requests).await;
    w.note(format!(
        "{count} requests for {first} and {second} answered within {} ms",
        asked.elapsed().as_millis()
    ));
    w.answers.extend(answers);
}

#[then(expr = "every answer is {int}, none after more than {int} ms")]
async fn all_answered_in_time(w: &mut AimaWorld, status: u16, ms: u64) {
    let wrong: Vec<String> = w
        .answers
        .iter()
        .filter(|a| a.status != status)
        .map(|a| {
            format!(
                "{} after {} ms: {}",
                a.status,
                a.elapsed.as_millis(),
                a.body
            )
        })
        .collect();
    let longest = w
        .answers
        .iter()
        .map(|a| a.elapsed)
        .max()
        .unwrap_or_default();
    let mut by_service = std::collections::BTreeMap::<String, usize>::new();
    for answer in &w.answers {
        *by_service
            .entry(answer.service.clone().unwrap_or_default())
            .or_default() += 1;
    }
    w.note(format!(
        "{} answers ({by_service:?}), {} not {status}; the longest wait {} ms",
        w.answers.len(),
        wrong.len(),
        longest.as_millis()
    ));
    assert!(
        wrong.is_empty(),
        "{} failed, e.g. {:?}",
        wrong.len(),
        wrong.first()
    );
    assert!(
        longest <= Duration::from_millis(ms),
        "a request waited {} ms",
        longest.as_millis()
    );
}

#[then(
    expr = "one of services {string} and {string} is {string} and the other was evicted once, for it"
)]
async fn one_swapped(w: &mut AimaWorld, a: String, b: String, status: String) {
    let (first, second) = (service_json(w, &a).await, service_json(w, &b).await);
    let first_name = first["name"].clone();
    let (kept, evicted) = if first["status"] == status.as_str() {
        (first, second)
    } else {
        (second, first)
    };
    let reason = evicted["status_reason"].as_str().unwrap_or_default();
    w.note(format!(
        "{}: {}; {}: {} ({reason})",
        kept["name"], kept["status"], evicted["name"], evicted["status"]
    ));
    assert_eq!(kept["status"], status.as_str(), "{kept}");
    assert_eq!(evicted["status"], "stopped", "{evicted}");
    let kept_name = kept["name"].as_str().expect("name");
    assert!(
        reason.contains("evicted by the gateway") && reason.contains(kept_name),
        "{reason}"
    );
    let evicted_alias = if evicted["name"] == first_name {
        &a
    } else {
        &b
    };
    let events = super::monitoring::service_events(w, evicted_alias).await;
    let evictions = events
        .iter()
        .filter(|e| {
            e["type"] == "note"
                && e["message"]
                    .as_str()
                    .is_some_and(|m| m.starts_with("evicted by the gateway"))
        })
        .count();
    w.note(format!(
        "{} was evicted {evictions} time(s)",
        evicted["name"]
    ));
    assert_eq!(evictions, 1, "one swap decided once: {events:?}");
}

#[when(expr = "I send a streaming chat request for {string} to the gateway")]
async fn send_stream(w: &mut AimaWorld, model: String) {
    let answer = ask(w.url("/v1/chat/completions"), chat(&model, true)).await;
    w.note(format!(
        "stream {} after {} ms, {} bytes",
        answer.status,
        answer.elapsed.as_millis(),
        answer.body.len()
    ));
    w.answers.push(answer);
}

#[then(expr = "the gateway answers {int} from service {string}")]
async fn answered_by(w: &mut AimaWorld, status: u16, alias: String) {
    let name = service_name(w, &alias).await;
    let answer = w.answers.last().expect("an answer").clone();
    assert_eq!(answer.status, status, "{}", answer.body);
    assert_eq!(answer.service.as_deref(), Some(name.as_str()));
    let reply: Value = serde_json::from_str(&answer.body).expect("a JSON answer");
    let content = reply["choices"][0]["message"]["content"]
        .as_str()
        .unwrap_or_default();
    w.note(format!("{name} said: {content}"));
    assert!(content.contains("aima stub engine"), "{reply}");
}

#[then(expr = "every answer is {int} from service {string}")]
async fn all_answered_by(w: &mut AimaWorld, status: u16, alias: String) {
    let name = service_name(w, &alias).await;
    let wrong: Vec<String> = w
        .answers
        .iter()
        .filter(|a| a.status != status || a.service.as_deref() != Some(name.as_str()))
        .map(|a| format!("{} from {:?}: {}", a.status, a.service, a.body))
        .collect();
    w.note(format!(
        "{} answers, {} not {status} from {name}",
        w.answers.len(),
        wrong.len()
    ));
    assert!(wrong.is_empty(), "{wrong:#?}");
}

#[then(expr = "service {string} was started once")]
async fn started_once(w: &mut AimaWorld, alias: String) {
    let id = w.service(&alias).id;
    // One JSON event per line.
    let events = w
        .aima(["service", "events", id.as_str(), "-o", "json"])
        .await;
    assert_eq!(events.code, 0, "{}", events.stderr);
    let starts = events
        .stdout
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|e| e["phase"] == "validate")
        .count();
    w.note(format!("service {alias} went through {starts} start(s)"));
    assert_eq!(starts, 1);
}

#[then("the stream carried loading comments and ended with [DONE]")]
async fn loading_comments(w: &mut AimaWorld) {
    let answer = w.answers.last().expect("an answer").clone();
    let comments: Vec<&str> = answer
        .body
        .lines()
        .filter(|l| l.starts_with(": loading"))
        .collect();
    w.note(format!("{} loading comments: {comments:?}", comments.len()));
    assert_eq!(answer.status, 200);
    assert!(comments.len() >= 2, "{}", answer.body);
    assert!(
        answer.body.trim_end().ends_with("data: [DONE]"),
        "{}",
        answer.body
    );
}

#[when(expr = "I start a long streaming request for {string} and hang up after the first chunk")]
async fn hang_up(w: &mut AimaWorld, model: String) {
    let response = client()
        .post(w.url("/v1/chat/completions"))
        .json(&long_chat(&model))
        .send()
        .await
        .expect("the gateway answers");
    assert_eq!(response.status(), 200);
    let mut body = response.bytes_stream();
    body.next().await.expect("a first chunk").expect("bytes");
    drop(body);
    w.note("hung up after the first chunk of a 400-token stream");
}

/// The engine container's output so far.
fn engine_logs(container: &str) -> String {
    let out = Command::new("docker")
        .args(["logs", container])
        .output()
        .expect("docker logs");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

async fn container_of(w: &AimaWorld, alias: &str) -> String {
    service_json(w, alias).await["container_id"]
        .as_str()
        .expect("a running container")
        .to_owned()
}

#[then(expr = "the engine of service {string} saw the client disconnect early")]
async fn engine_saw_hang_up(w: &mut AimaWorld, alias: String) {
    let container = container_of(w, &alias).await;
    let until = Instant::now() + Duration::from_secs(15);
    let line = loop {
        let logs = engine_logs(&container);
        if let Some(line) = logs
            .lines()
            .find(|l| l.contains("client disconnected after"))
        {
            break line.to_owned();
        }
        assert!(
            Instant::now() < until,
            "the engine never saw the hang-up:\n{logs}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    w.note(format!("engine: {}", line.trim()));
    let sent: usize = line
        .split("after ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .expect("the number of events sent");
    assert!(sent < 300, "the engine went on after the hang-up: {line}");
}

#[when(
    expr = "I start a long streaming request for {string} and the engine of service {string} is killed"
)]
async fn killed_mid_stream(w: &mut AimaWorld, model: String, alias: String) {
    let container = container_of(w, &alias).await;
    let asked = Instant::now();
    let response = client()
        .post(w.url("/v1/chat/completions"))
        .json(&long_chat(&model))
        .send()
        .await
        .expect("the gateway answers");
    let status = response.status().as_u16();
    let mut chunks = response.bytes_stream();
    let first = chunks.next().await.expect("a first chunk").expect("bytes");
    let killed = Command::new("docker")
        .args(["kill", &container])
        .output()
        .expect("docker kill");
    assert!(killed.status.success(), "docker kill failed");
    w.removed_at = Some(Instant::now());
    let (mut body, mut broken) = (String::from_utf8_lossy(&first).into_owned(), false);
    while let Some(chunk) = chunks.next().await {
        match chunk {
            Ok(bytes) => body.push_str(&String::from_utf8_lossy(&bytes)),
            Err(_) => {
                broken = true;
                break;
            }
        }
    }
    w.note(format!("docker kill {} mid-stream", &container[..12]));
    w.answers.push(GatewayAnswer {
        status,
        service: None,
        body,
        broken,
        elapsed: asked.elapsed(),
    });
}

#[then("the stream ended with an error event")]
async fn ended_with_error(w: &mut AimaWorld) {
    let answer = w.answers.last().expect("an answer").clone();
    let last = answer
        .body
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or_default()
        .to_owned();
    w.note(format!("last line: {last}"));
    assert!(
        !answer.broken,
        "the stream broke instead of ending with an event"
    );
    assert!(
        last.starts_with("data: ") && last.contains("\"error\""),
        "{last}"
    );
    assert!(!answer.body.contains("[DONE]"));
}

#[given(expr = "a service {string} for model {string} with idle timeout {string} and env {string}")]
async fn idle_service(w: &mut AimaWorld, alias: String, model: String, idle: String, env: String) {
    let flags = ["--idle-timeout", idle.as_str(), "--env", env.as_str()];
    let service = super::create_service_with(w, &alias, &model, &flags).await;
    w.note(format!("idle timeout {}", service["idle_timeout"]));
}

#[when(expr = "I stream {int} tokens from {string} while watching service {string}")]
async fn stream_watching(w: &mut AimaWorld, tokens: u64, model: String, alias: String) {
    let id = w.service(&alias).id;
    let status_url = w.url(&format!("/api/v1/services/{id}"));
    let body = json!({
        "model": model, "stream": true, "max_tokens": tokens, "ignore_eos": true,
        "messages": [{"role": "user", "content": "go on"}],
    });
    let asked = Instant::now();
    let response = client()
        .post(w.url("/v1/chat/completions"))
        .json(&body)
        .send()
        .await
        .expect("the gateway answers");
    let status = response.status().as_u16();
    let mut chunks = response.bytes_stream();
    let (mut text, mut broken) = (String::new(), false);
    let mut seen = Vec::new();
    let mut looked = Instant::now();
    while let Some(chunk) = chunks.next().await {
        match chunk {
            Ok(bytes) => text.push_str(&String::from_utf8_lossy(&bytes)),
            Err(_) => {
                broken = true;
                break;
            }
        }
        if text.contains("delta") && looked.elapsed() > Duration::from_millis(250) {
            let service: Value = client()
                .get(&status_url)
                .send()
                .await
                .expect("GET service")
                .json()
                .await
                .expect("JSON");
            seen.push(service["status"].as_str().unwrap_or_default().to_owned());
            looked = Instant::now();
        }
    }
    w.note(format!(
        "{tokens}-token stream took {} ms; service status seen during it: {seen:?}",
        asked.elapsed().as_millis()
    ));
    w.removed_at = Some(Instant::now());
    w.statuses_seen = seen;
    w.answers.push(GatewayAnswer {
        status,
        service: None,
        body: text,
        broken,
        elapsed: asked.elapsed(),
    });
}

#[then(expr = "service {string} was {string} throughout the stream")]
async fn throughout(w: &mut AimaWorld, alias: String, status: String) {
    let answer = w.answers.last().expect("a stream").clone();
    assert!(!answer.broken, "the stream broke");
    assert!(
        answer.body.trim_end().ends_with("data: [DONE]"),
        "the stream did not finish"
    );
    assert!(
        !w.statuses_seen.is_empty(),
        "the status of service {alias} was never looked at"
    );
    assert!(
        w.statuses_seen.iter().all(|s| *s == status),
        "service {alias} was not always {status}: {:?}",
        w.statuses_seen
    );
}

#[given(
    expr = "a running service {string} for model {string} taking {int} request at a time, with env {string}"
)]
async fn limited_service(w: &mut AimaWorld, alias: String, model: String, limit: u32, env: String) {
    let limit = limit.to_string();
    let flags = ["--max-concurrency", limit.as_str(), "--env", env.as_str()];
    let service = super::create_service_with(w, &alias, &model, &flags).await;
    let id = service["id"].as_str().expect("id").to_owned();
    let started = w
        .aima(["service", "start", id.as_str(), "--wait", "--timeout", "60"])
        .await;
    assert_eq!(started.code, 0, "{}", started.stderr);
    w.note(format!("max concurrency {limit}, running"));
}

#[when(expr = "a long stream for {string} holds the engine and {int} more requests wait")]
async fn hold_and_queue(w: &mut AimaWorld, model: String, waiting: usize) {
    let response = client()
        .post(w.url("/v1/chat/completions"))
        .json(&long_chat(&model))
        .send()
        .await
        .expect("the gateway answers");
    assert_eq!(response.status(), 200);
    let mut holder = response.bytes_stream();
    holder.next().await.expect("a first chunk").expect("bytes");
    let url = w.url("/v1/chat/completions");
    let queued: Vec<_> = (0..waiting)
        .map(|_| tokio::spawn(ask(url.clone(), chat(&model, false))))
        .collect();
    let metrics_url = w.url("/metrics");
    let gauge = format!("aima_gateway_queued {waiting}\n");
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        let metrics = client()
            .get(&metrics_url)
            .send()
            .await
            .expect("GET /metrics")
            .text()
            .await
            .expect("text");
        if metrics.contains(&gauge) {
            break;
        }
        assert!(Instant::now() < until, "{waiting} requests never queued");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    w.note(format!(
        "one stream holds the engine; /metrics: aima_gateway_queued {waiting}"
    ));
    // One more: the queue is full.
    let refused = client()
        .post(w.url("/v1/chat/completions"))
        .json(&chat(&model, false))
        .send()
        .await
        .expect("the gateway answers");
    let retry_after = refused
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let status = refused.status().as_u16();
    let body = refused.text().await.unwrap_or_default();
    w.note(format!(
        "one more: {status}, Retry-After {retry_after:?}: {body}"
    ));
    w.answers.push(GatewayAnswer {
        status,
        service: retry_after,
        body,
        broken: false,
        elapsed: Duration::ZERO,
    });
    // The holder finishes, then the queued ones get their turns.
    while let Some(chunk) = holder.next().await {
        chunk.expect("bytes");
    }
    for request in queued {
        let answer = request.await.expect("join");
        w.note(format!("queued request answered {}", answer.status));
        w.answers.push(answer);
    }
}

#[then("the extra request was refused with 503 and Retry-After, and the queued ones were answered")]
async fn queue_verdict(w: &mut AimaWorld) {
    let refused = w
        .answers
        .iter()
        .find(|a| a.status == 503)
        .expect("a refused request")
        .clone();
    assert!(refused.service.is_some(), "no Retry-After header");
    assert!(
        refused.body.contains("the gateway queue is full"),
        "{}",
        refused.body
    );
    let answered = w.answers.iter().filter(|a| a.status == 200).count();
    assert_eq!(answered, 2, "the queued requests were not all answered");
}

#[then(expr = "the gateway answers {int} from service {string} after waiting at least {int} ms")]
async fn answered_after(w: &mut AimaWorld, status: u16, alias: String, ms: u64) {
    let waited = w.answers.last().expect("an answer").elapsed;
    w.note(format!("answered after {} ms", waited.as_millis()));
    assert!(
        waited >= Duration::from_millis(ms),
        "answered after {waited:?}: it did not wait for the memory to be released"
    );
    answered_by(w, status, alias).await;
}
