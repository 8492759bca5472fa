//! Steps with real engines under AIMA (llama.cpp's own server on the CPU), with tiny real
//! models written by the harness: what the stub cannot tell about arguments, names,
//! streams, usage, logs and metrics.

use super::*;

#[given("the tiny real models are under the model root")]
async fn tiny_models(w: &mut AimaWorld) {
    let root = w.home.path().join("models");
    let files = harness_models(&root);
    w.note(format!("tiny models written: {files:?}"));
}

fn harness_models(root: &std::path::Path) -> Vec<String> {
    crate::engine_images::build_models(root)
        .unwrap_or_else(|e| panic!("{e:#}"))
        .iter()
        .map(|f| {
            let size = std::fs::metadata(f).map(|m| m.len()).unwrap_or(0);
            format!("{} ({size} bytes)", f.display())
        })
        .collect()
}

#[given(expr = "the local model {string} is registered from the tiny model {string}")]
async fn register_tiny(w: &mut AimaWorld, name: String, dir: String) {
    let path = w.home.path().join("models").join(&dir);
    let path = path.to_string_lossy().into_owned();
    let model = w
        .aima_json([
            "model", "create", "--name", &name, "--source", "local", "--path", &path,
        ])
        .await;
    let id = model["id"].as_str().expect("model id").to_owned();
    w.note(format!(
        "model \"{name}\" is {id}: {} bytes, context {}, read from the file",
        model["size_bytes"], model["context_length"]
    ));
    w.models.insert(name, id);
}

#[then(expr = "AIMA read model {string} from its file: a context of {int} tokens")]
async fn read_from_file(w: &mut AimaWorld, name: String, context: u64) {
    let id = w.model(&name);
    let model = w.aima_json(["model", "get", id.as_str()]).await;
    w.note(format!(
        "{name}: size {} bytes, context {}",
        model["size_bytes"], model["context_length"]
    ));
    assert_eq!(model["context_length"], context, "{model}");
    assert!(
        model["size_bytes"].as_u64().unwrap_or(0) > 100_000,
        "{model}"
    );
}

#[given(expr = "a service {string} for model {string} on engine {word} with env {string}")]
async fn engine_service(
    w: &mut AimaWorld,
    name: String,
    model: String,
    engine: String,
    env: String,
) {
    let model_id = w.model(&model);
    let service = w
        .aima_json([
            "service",
            "create",
            "--name",
            &name,
            "--model-id",
            model_id.as_str(),
            "--engine-type",
            &engine,
            "--env",
            &env,
        ])
        .await;
    super::services::remember_service(w, &name, &service);
}

#[then(
    expr = "the official OpenAI client chats with model {string} through the gateway, plain and streamed, with usage"
)]
async fn openai_chat(w: &mut AimaWorld, model: String) {
    let before = gateway_tokens(w, &model).await;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/clients/openai_chat.py");
    let out = tokio::process::Command::new("python3")
        .args([script, &w.url("/v1"), &model])
        .output()
        .await
        .expect("run python3");
    assert!(
        out.status.success(),
        "the OpenAI client failed: {}",
        String::from_utf8_lossy(&out.stderr)
            .lines()
            .last()
            .unwrap_or("")
    );
    let seen: Value = serde_json::from_slice(&out.stdout).expect("the client's JSON");
    w.note(format!("the OpenAI client saw: {seen}"));
    let plain = &seen["plain"];
    assert_eq!(
        plain["model"],
        model.as_str(),
        "the engine answers to the model's name"
    );
    assert!(plain["completion_tokens"].as_u64() > Some(0), "{seen}");
    assert!(plain["prompt_tokens"].as_u64() > Some(0), "{seen}");
    assert!(plain["finish_reason"].is_string(), "{seen}");
    let stream = &seen["stream"];
    assert!(stream["chunks"].as_u64() > Some(2), "{seen}");
    assert!(
        stream["completion_tokens"].as_u64() > Some(0),
        "usage in the stream: {seen}"
    );
    assert!(stream["finish_reason"].is_string(), "{seen}");
    // Real engines count a stream's tokens only when asked: the gateway asks for every
    // stream, and a client that did not ask sees no usage event.
    let unasked = &seen["unasked"];
    assert!(unasked["chunks"].as_u64() > Some(1), "{seen}");
    assert_eq!(unasked["usage_events"], 0, "{seen}");
    let after = gateway_tokens(w, &model).await;
    let prompt = plain["prompt_tokens"].as_u64().unwrap_or(0);
    w.note(format!(
        "gateway token counters: prompt {} -> {}, completion {} -> {}",
        before.0, after.0, before.1, after.1
    ));
    assert_eq!(
        after.0 - before.0,
        3 * prompt,
        "three chats of the same prompt counted, the stream that did not ask for usage too"
    );
    assert!(after.1 - before.1 > plain["completion_tokens"].as_u64().unwrap_or(0));
}

/// (prompt, completion) tokens the gateway counted for `model`.
async fn gateway_tokens(w: &AimaWorld, model: &str) -> (u64, u64) {
    let text = reqwest::get(w.url("/metrics"))
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("metrics text");
    let count = |kind: &str| -> u64 {
        text.lines()
            .filter(|l| {
                l.starts_with("aima_gateway_tokens_total{")
                    && l.contains(&format!("model=\"{model}\""))
                    && l.contains(&format!("kind=\"{kind}\""))
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>() as u64
    };
    (count("prompt"), count("completion"))
}

#[then(expr = "the engine of service {string} serves its own metrics, such as {string}")]
async fn engine_metrics(w: &mut AimaWorld, name: String, metric: String) {
    let port = w.service(&name).port;
    let text = reqwest::get(format!("http://127.0.0.1:{port}/metrics"))
        .await
        .expect("GET /metrics of the engine")
        .text()
        .await
        .expect("metrics text");
    let line = text
        .lines()
        .find(|l| l.starts_with(metric.as_str()))
        .unwrap_or_default()
        .to_owned();
    w.note(format!("engine metrics: {line}"));
    assert!(
        !line.is_empty(),
        "no {metric} in the engine's metrics: {text}"
    );
}
