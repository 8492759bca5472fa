//! The HTTP API of an in-process daemon, driven with a real HTTP client.

use std::io::{Read, Write};
use std::time::Duration;

use aima::server::ServeOptions;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::TestDaemon;

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client")
}

async fn post_model(d: &TestDaemon, body: Value) -> (StatusCode, Value) {
    let res = client()
        .post(d.url("/api/v1/models"))
        .json(&body)
        .send()
        .await
        .expect("post");
    let status = res.status();
    (status, res.json().await.expect("json body"))
}

async fn get_json(d: &TestDaemon, path: &str) -> (StatusCode, Value) {
    let res = client().get(d.url(path)).send().await.expect("get");
    let status = res.status();
    (status, res.json().await.expect("json body"))
}

/// Asserts the error shape and returns the message.
fn error_message(body: &Value, code: &str) -> String {
    let error = body
        .get("error")
        .unwrap_or_else(|| panic!("no error object in {body}"));
    assert_eq!(error["code"], code, "{body}");
    let keys: Vec<_> = error.as_object().expect("object").keys().collect();
    assert_eq!(keys, ["code", "message"], "{body}");
    error["message"].as_str().expect("message").to_owned()
}

#[tokio::test]
async fn created_model_has_exactly_the_contract_fields() {
    let d = TestDaemon::start();
    let (status, model) = post_model(
        &d,
        json!({"name": "tiny", "source": "ollama", "repo": "tinyllama"}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{model}");
    let mut keys: Vec<_> = model
        .as_object()
        .expect("object")
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "context_length",
            "created_at",
            "estimate",
            "facts",
            "id",
            "name",
            "params",
            "path",
            "quantization",
            "repo",
            "size_bytes",
            "source",
            "status"
        ]
    );
    let id = model["id"].as_str().expect("id");
    assert!(
        id.starts_with("model-")
            && id.len() == 14
            && id[6..].chars().all(|c| c.is_ascii_hexdigit()),
        "{id}"
    );
    assert_eq!(model["name"], "tiny");
    assert_eq!(model["source"], "ollama");
    assert_eq!(model["repo"], "tinyllama");
    assert_eq!(model["path"], Value::Null);
    assert_eq!(model["status"], "registered");
    chrono::DateTime::parse_from_rfc3339(model["created_at"].as_str().expect("time"))
        .expect("rfc3339");

    let (status, fetched) = get_json(&d, &format!("/api/v1/models/{id}")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(fetched, model);
}

#[tokio::test]
async fn every_source_registers_and_local_paths_must_exist() {
    let d = TestDaemon::start();
    for source in ["ollama", "huggingface", "modelscope"] {
        let (status, body) = post_model(
            &d,
            json!({"name": source, "source": source, "repo": "org/model"}),
        )
        .await;
        assert_eq!(status, StatusCode::CREATED, "{source}: {body}");
    }
    let weights = d.model_dir("weights");
    let path = weights.to_str().expect("utf-8 path");
    let (status, body) = post_model(
        &d,
        json!({"name": "local", "source": "local", "path": path}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["path"], path);
    assert_eq!(body["repo"], Value::Null);

    let missing = weights.join("missing");
    let (status, body) = post_model(
        &d,
        json!({"name": "gone", "source": "local", "path": missing}),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let message = error_message(&body, "invalid_argument");
    assert!(
        message.contains("does not exist") && message.contains("missing"),
        "{message}"
    );
    assert_eq!(
        d.store.list_models().expect("list").len(),
        4,
        "the refused model was not written"
    );
}

#[tokio::test]
async fn bad_input_is_refused_with_a_clear_error_and_writes_nothing() {
    let d = TestDaemon::start();
    let long = "n".repeat(129);
    let cases = [
        (
            json!({"name": "", "source": "ollama", "repo": "r"}),
            "name is empty",
        ),
        (
            json!({"name": "  ", "source": "ollama", "repo": "r"}),
            "name is empty",
        ),
        (
            json!({"name": long, "source": "ollama", "repo": "r"}),
            "the limit is 128",
        ),
        (
            json!({"name": "m", "source": "s3", "repo": "r"}),
            "unknown source 's3'",
        ),
        (json!({"name": "m", "source": "ollama"}), "pass --repo"),
        (
            json!({"name": "m", "source": "ollama", "repo": "r", "path": "/tmp"}),
            "takes a repo, not a path",
        ),
        (
            json!({"name": "m", "source": "local", "repo": "r"}),
            "takes a path, not a repo",
        ),
        (json!({"name": "m", "source": "local"}), "pass --path"),
        (
            json!({"name": "m", "source": "local", "path": "relative"}),
            "is relative",
        ),
        (
            json!({"source": "ollama", "repo": "r"}),
            "missing field `name`",
        ),
        (
            json!({"name": 7, "source": "ollama", "repo": "r"}),
            "invalid type",
        ),
        (
            json!({"name": "m", "source": "ollama", "repo": "r", "repository": "x"}),
            "unknown field `repository`",
        ),
    ];
    for (body, expected) in cases {
        let (status, error) = post_model(&d, body.clone()).await;
        assert_eq!(
            status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{body} -> {error}"
        );
        let message = error_message(&error, "invalid_argument");
        assert!(
            message.contains(expected),
            "{body}: {message:?} should mention {expected:?}"
        );
        assert!(!message.contains('\n'), "one line: {message:?}");
    }

    let raw = |body: &'static str, content_type: Option<&'static str>| {
        let mut req = client().post(d.url("/api/v1/models")).body(body);
        if let Some(ct) = content_type {
            req = req.header("content-type", ct);
        }
        req
    };
    let res = raw("{\"name\":", Some("application/json"))
        .send()
        .await
        .expect("post");
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    error_message(&res.json().await.expect("json"), "bad_request");
    let res = raw("name=x", None).send().await.expect("post");
    assert_eq!(res.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let message = error_message(&res.json().await.expect("json"), "unsupported_media_type");
    assert!(
        message.contains("Content-Type: application/json"),
        "{message}"
    );

    assert!(
        d.store.list_models().expect("list").is_empty(),
        "nothing may be written"
    );
}

#[tokio::test]
async fn list_is_oldest_first_on_both_routes() {
    let d = TestDaemon::start();
    let mut ids = Vec::new();
    for i in 0..12 {
        let (_, model) = post_model(
            &d,
            json!({"name": format!("m{i}"), "source": "ollama", "repo": "r"}),
        )
        .await;
        ids.push(model["id"].as_str().expect("id").to_owned());
    }
    for route in ["/api/v1/models", "/api/model/list"] {
        let (status, list) = get_json(&d, route).await;
        assert_eq!(status, StatusCode::OK);
        let keys: Vec<_> = list.as_object().expect("object").keys().collect();
        assert_eq!(keys, ["items"]);
        let listed: Vec<_> = list["items"]
            .as_array()
            .expect("items")
            .iter()
            .map(|m| m["id"].as_str().expect("id").to_owned())
            .collect();
        assert_eq!(listed, ids, "{route}");
    }
}

#[tokio::test]
async fn unknown_and_malformed_ids_are_404_and_delete_removes() {
    let d = TestDaemon::start();
    for id in ["model-00000000", "nonsense", "model-ZZZZZZZZ", "%20"] {
        let (status, body) = get_json(&d, &format!("/api/v1/models/{id}")).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{id}");
        let message = error_message(&body, "not_found");
        assert!(message.contains("aima model list"), "{message}");
    }
    let (_, model) = post_model(
        &d,
        json!({"name": "doomed", "source": "ollama", "repo": "r"}),
    )
    .await;
    let url = d.url(&format!(
        "/api/v1/models/{}",
        model["id"].as_str().expect("id")
    ));
    let res = client().delete(&url).send().await.expect("delete");
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.json::<Value>().await.expect("json"), model);
    let res = client().delete(&url).send().await.expect("delete again");
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
    assert!(d.store.list_models().expect("list").is_empty());
}

#[tokio::test]
async fn unknown_routes_and_methods_get_json_errors() {
    let d = TestDaemon::start();
    let (status, body) = get_json(&d, "/api/v1/nope").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(error_message(&body, "not_found").contains("/api/v1/nope"));

    let res = client()
        .put(d.url("/api/v1/models"))
        .send()
        .await
        .expect("put");
    assert_eq!(res.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(res.headers()["allow"], "GET,HEAD,POST");
    assert_eq!(res.headers()["content-type"], "application/json");
    let message = error_message(&res.json().await.expect("json"), "method_not_allowed");
    assert!(message.contains("GET,HEAD,POST"), "{message}");

    let res = client()
        .post(d.url("/api/v1/models/model-00000000"))
        .send()
        .await
        .expect("post");
    assert_eq!(res.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(res.headers()["allow"], "GET,HEAD,DELETE");
}

#[tokio::test]
async fn oversized_bodies_are_refused() {
    let d = TestDaemon::start();
    let big =
        json!({"name": "x".repeat(aima::api::BODY_LIMIT_BYTES), "source": "ollama", "repo": "r"});
    let (status, body) = post_model(&d, big).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    error_message(&body, "payload_too_large");
    assert!(d.store.list_models().expect("list").is_empty());
}

#[test]
fn a_request_that_stalls_is_cut_off_by_the_request_timeout() {
    let d = TestDaemon::start_with(ServeOptions {
        drain_timeout: Duration::from_secs(5),
        request_timeout: Duration::from_millis(300),
        ..ServeOptions::default()
    });
    // Headers promise a body that never comes, so the handler waits until the timeout.
    let mut stream = std::net::TcpStream::connect(d.addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    write!(
        stream,
        "POST /api/v1/models HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 40\r\n\r\n{{\"name\":"
    )
    .expect("write");
    let mut response = String::new();
    let mut buf = [0u8; 4096];
    while !response.contains("}}") {
        let n = stream.read(&mut buf).expect("read response");
        assert!(n > 0, "connection closed without a response: {response:?}");
        response.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    assert!(response.starts_with("HTTP/1.1 408"), "{response}");
    assert!(
        response.contains("\"code\":\"request_timeout\""),
        "{response}"
    );
}

#[tokio::test]
async fn health_status_and_openapi_describe_the_daemon() {
    let d = TestDaemon::start();
    let (status, health) = get_json(&d, "/api/v1/health").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        health,
        json!({"status": "ok", "version": aima::VERSION, "commit": aima::COMMIT, "build_date": aima::BUILD_DATE})
    );

    let (status, info) = get_json(&d, "/api/v1/status").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(info["version"], aima::VERSION);
    assert_eq!(info["home"], d.home.path().to_str().expect("utf-8"));
    assert!(
        info["database"]
            .as_str()
            .expect("db")
            .ends_with("/data/aima.db")
    );
    assert!(info["docker"]["reachable"].is_boolean(), "{info}");
    if cfg!(feature = "gpu") {
        assert!(
            !info["gpus"].as_array().expect("gpus").is_empty(),
            "a GPU runner has a GPU: {info}"
        );
    } else {
        assert_eq!(info["gpus"], json!([]), "this machine has no NVIDIA GPU");
        assert!(
            info["gpus_none_reason"]
                .as_str()
                .is_some_and(|r| r.contains("NVIDIA")),
            "{info}"
        );
    }

    let (status, doc) = get_json(&d, "/api/v1/openapi.json").await;
    assert_eq!(status, StatusCode::OK);
    for path in [
        "/api/v1/models",
        "/api/v1/models/{id}",
        "/api/v1/health",
        "/api/v1/status",
        "/api/model/list",
        "/api/v1/services",
        "/api/v1/services/{id}/start",
        "/api/v1/services/{id}/events",
        "/api/v1/events",
        "/api/v1/devices",
        "/api/v1/recommend",
        "/api/service/status",
        "/api/device/detect",
        "/api/service/recommend",
    ] {
        assert!(doc["paths"].get(path).is_some(), "openapi lacks {path}");
    }
    let post = &doc["paths"]["/api/v1/models"]["post"];
    assert!(
        post["responses"].get("201").is_some() && post["responses"].get("422").is_some(),
        "{post}"
    );
    let schema = &doc["components"]["schemas"]["ModelDto"]["properties"];
    for field in [
        "id",
        "name",
        "source",
        "repo",
        "path",
        "status",
        "created_at",
    ] {
        assert!(schema.get(field).is_some(), "ModelDto schema lacks {field}");
    }
}

#[tokio::test]
async fn metrics_count_models_and_services_by_status() {
    let d = TestDaemon::start();
    let (_, model) = post_model(&d, json!({"name": "m", "source": "ollama", "repo": "r"})).await;
    let res = client()
        .post(d.url("/api/v1/services"))
        .json(&json!({"model_id": model["id"], "engine_type": "vllm"}))
        .send()
        .await
        .expect("create service");
    assert_eq!(res.status(), StatusCode::CREATED);
    let res = client()
        .get(d.url("/metrics"))
        .send()
        .await
        .expect("metrics");
    assert_eq!(res.status(), StatusCode::OK);
    assert!(
        res.headers()["content-type"]
            .to_str()
            .expect("type")
            .starts_with("text/plain; version=0.0.4")
    );
    let text = res.text().await.expect("text");
    for line in [
        "aima_up 1",
        "aima_models 1",
        "aima_services{status=\"creating\"} 1",
        "aima_services{status=\"running\"} 0",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "{line:?} missing from:\n{text}"
        );
    }
}

async fn post_service(d: &TestDaemon, body: Value) -> (StatusCode, Value) {
    let res = client()
        .post(d.url("/api/v1/services"))
        .json(&body)
        .send()
        .await
        .expect("post");
    let status = res.status();
    (status, res.json().await.expect("json body"))
}

#[tokio::test]
async fn names_are_unique_and_every_id_argument_takes_a_name_or_a_unique_prefix() {
    let d = TestDaemon::start();
    let (status, tiny) = post_model(
        &d,
        json!({"name": "tiny", "source": "ollama", "repo": "tinyllama"}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    let tiny_id = tiny["id"].as_str().expect("id").to_owned();
    let (status, body) = post_model(
        &d,
        json!({"name": "tiny", "source": "ollama", "repo": "other"}),
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT);
    let message = error_message(&body, "conflict");
    assert!(
        message.contains("'tiny' is taken by") && message.contains(&tiny_id),
        "{message}"
    );
    let (status, body) = post_model(
        &d,
        json!({"name": "model-1a2b3c4d", "source": "ollama", "repo": "r"}),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");

    // The model by name and by a prefix of its id.
    for reference in ["tiny", &tiny_id[..9], &tiny_id] {
        let (status, got) = get_json(&d, &format!("/api/v1/models/{reference}")).await;
        assert_eq!(status, StatusCode::OK, "{reference}");
        assert_eq!(got["id"], tiny_id, "{reference}");
    }

    // Services: the model named by name; generated names take the next free suffix.
    let (status, first) =
        post_service(&d, json!({"model_id": "tiny", "engine_type": "vllm"})).await;
    assert_eq!(status, StatusCode::CREATED, "{first}");
    assert_eq!(first["model_id"], tiny_id);
    assert_eq!(first["name"], "tiny-vllm");
    let (status, second) =
        post_service(&d, json!({"model_id": "tiny", "engine_type": "vllm"})).await;
    assert_eq!(status, StatusCode::CREATED, "{second}");
    assert_eq!(second["name"], "tiny-vllm-2");
    let (status, body) = post_service(
        &d,
        json!({"model_id": "tiny", "engine_type": "vllm", "name": "tiny-vllm"}),
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT);
    let message = error_message(&body, "conflict");
    assert!(
        message.contains(first["id"].as_str().expect("id")),
        "{message}"
    );

    let (status, got) = get_json(&d, "/api/v1/services/tiny-vllm-2").await;
    assert_eq!((status, &got["id"]), (StatusCode::OK, &second["id"]));
    let (status, got) = get_json(&d, "/api/service/status?service_id=tiny-vllm").await;
    assert_eq!((status, &got["id"]), (StatusCode::OK, &first["id"]));
    // Both ids start with "svc-vllm-": ambiguous, and the answer says how to fix it.
    let (status, body) = get_json(&d, "/api/v1/services/svc-vllm-").await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert!(
        error_message(&body, "conflict").contains("give more of the id, or the name"),
        "{body}"
    );
    let (status, body) = get_json(&d, "/api/v1/services/nothing-like-it").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(error_message(&body, "not_found").contains("'nothing-like-it'"));

    // Stop and delete by name, as the CLI does.
    let out = d
        .cli()
        .args(["service", "stop", "tiny-vllm"])
        .output()
        .expect("stop");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = d
        .cli()
        .args(["-o", "json", "service", "delete", "tiny-vllm-2"])
        .output()
        .expect("delete");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let deleted: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(deleted["id"], second["id"]);
}

async fn patch_service(d: &TestDaemon, id: &str, body: Value) -> (StatusCode, Value) {
    let res = client()
        .patch(d.url(&format!("/api/v1/services/{id}")))
        .json(&body)
        .send()
        .await
        .expect("patch");
    let status = res.status();
    (status, res.json().await.expect("json body"))
}

#[tokio::test]
async fn duration_fields_take_bare_seconds() {
    let d = TestDaemon::start();
    let (status, _) = post_model(&d, json!({"name": "m", "source": "ollama", "repo": "r"})).await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, created) = post_service(
        &d,
        json!({"model_id": "m", "engine_type": "vllm", "idle_timeout": "600",
               "load_timeout": "90", "start_timeout": "1200", "health_interval": "3"}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(
        [
            &created["idle_timeout"],
            &created["load_timeout"],
            &created["start_timeout"],
            &created["health_interval"]
        ],
        [&json!("10m"), &json!("1m 30s"), &json!("20m"), &json!("3s")],
        "{created}"
    );
    let id = created["id"].as_str().expect("id");
    let (status, updated) = patch_service(&d, id, json!({"idle_timeout": "120"})).await;
    assert_eq!(status, StatusCode::OK, "{updated}");
    assert_eq!(updated["service"]["idle_timeout"], "2m", "{updated}");
    let (status, body) = patch_service(&d, id, json!({"idle_timeout": "0"})).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(
        error_message(&body, "invalid_argument"),
        "idle-timeout must be more than zero; give seconds (600) or a duration with a unit (10m, 30s)"
    );
}

#[tokio::test]
async fn gpu_selecting_env_is_refused_because_aima_places_gpus() {
    let d = TestDaemon::start();
    let (status, _) = post_model(&d, json!({"name": "m", "source": "ollama", "repo": "r"})).await;
    assert_eq!(status, StatusCode::CREATED);
    for key in [
        "NVIDIA_VISIBLE_DEVICES",
        "NVIDIA_DRIVER_CAPABILITIES",
        "CUDA_VISIBLE_DEVICES",
        "ROCR_VISIBLE_DEVICES",
        "HIP_VISIBLE_DEVICES",
        "GPU_DEVICE_ORDINAL",
    ] {
        let (status, body) = post_service(
            &d,
            json!({"model_id": "m", "engine_type": "vllm", "env": ["A=1", format!("{key}=1")]}),
        )
        .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{key}: {body}");
        let message = error_message(&body, "invalid_argument");
        assert!(
            message.starts_with(&format!(
                "env {key} selects GPUs, and AIMA places GPUs itself; leave it out and use --gpu-memory-utilization"
            )),
            "{message}"
        );
    }
    let (status, body) = get_json(&d, "/api/v1/services").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["items"], json!([]), "nothing was created");

    // An update is held to the same rule, and the service keeps its environment.
    let (status, created) = post_service(
        &d,
        json!({"model_id": "m", "engine_type": "vllm", "env": ["A=1"]}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let id = created["id"].as_str().expect("id");
    let (status, body) = patch_service(&d, id, json!({"env": ["CUDA_VISIBLE_DEVICES=0,1"]})).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(
        error_message(&body, "invalid_argument").contains("CUDA_VISIBLE_DEVICES selects GPUs"),
        "{body}"
    );
    let stored = d.store.list_services().expect("list");
    let env: Vec<String> = stored[0].env.iter().map(ToString::to_string).collect();
    assert_eq!(env, ["A=1"]);
}
