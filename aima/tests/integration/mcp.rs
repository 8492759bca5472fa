//! AIMA's MCP server driven by a client the project did not write: the reference MCP
//! Python SDK (PyPI `mcp`, installed by `.ci/run`), over both transports (`aima mcp` on
//! stdio, and the daemon's `/mcp` over Streamable HTTP), against a real daemon with the
//! stub engine; `/mcp` answers only what the access guard lets through. Tools are listed
//! with the OpenAPI document's schemas for the API bodies and with annotations; an agent
//! registers a model, creates and starts a service with each phase as progress, reads its
//! logs, events and resources, chats through the gateway, is told to pass `force` before
//! stopping a running one, gets a failed start's reason and its own mistakes as tool
//! results with `isError`, reads the prompts' gathered facts, and is notified of a status
//! change through both subscription mechanisms (resources/subscribe, and
//! subscriptions/listen of protocol 2026-07-28).

use std::process::Command;

use serde_json::Value;

use crate::support::{TestDaemon, aima_bin};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_deploys_a_model_and_reads_why_a_start_failed_through_the_mcp_sdk() {
    let Some(python) = crate::contract::python_with("mcp", "mcp") else {
        return;
    };
    let d = tokio::task::spawn_blocking(TestDaemon::with_engine)
        .await
        .expect("daemon");
    let doc: Value = reqwest::get(d.url("/api/v1/openapi.json"))
        .await
        .expect("GET openapi.json")
        .json()
        .await
        .expect("the OpenAPI document");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clients/mcp_client.py");
    for transport in ["stdio", "http"] {
        let (addr, home, url) = (d.addr.to_string(), d.home.path().to_owned(), d.url("/mcp"));
        let python = python.clone();
        let out = tokio::task::spawn_blocking(move || {
            let target = if transport == "stdio" {
                aima_bin().to_owned()
            } else {
                url
            };
            Command::new(python)
                .args([script, transport, target.as_str()])
                .env("AIMA_ADDR", addr)
                .env("AIMA_HOME", home)
                .output()
                .expect("run the MCP client")
        })
        .await
        .expect("join");
        assert!(
            out.status.success(),
            "the MCP client over {transport} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        // Kept for a look after a failure: what the agent saw, call by call.
        let report =
            std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("mcp-{transport}.json"));
        std::fs::write(&report, &out.stdout).expect("write the MCP report");
        check(
            transport,
            &serde_json::from_slice(&out.stdout).expect("the client's JSON report"),
            &doc,
        );
    }
    // `/mcp` is behind the daemon's access guard, as the API is: a page whose name
    // resolves to 127.0.0.1 (DNS rebinding) cannot reach it.
    let rebound = reqwest::Client::new()
        .post(d.url("/mcp"))
        .header("host", "attacker.example:9090")
        .header("content-type", "application/json")
        .body(r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#)
        .send()
        .await
        .expect("POST /mcp");
    assert_eq!(rebound.status(), 403);
    crate::support::remove_containers_with_label(&d.instance_label());
}

/// What an agent saw through one transport; `doc` is the daemon's OpenAPI document.
fn check(transport: &str, seen: &Value, doc: &Value) {
    assert_eq!(
        seen["server"]["name"], "aima",
        "{transport}: {}",
        seen["server"]
    );
    let tools = &seen["tools"];
    for name in [
        "list_models",
        "get_model",
        "create_model",
        "list_services",
        "get_service",
        "create_service",
        "update_service",
        "start_service",
        "stop_service",
        "delete_service",
        "service_logs",
        "service_events",
        "device_detect",
        "recommend",
        "chat",
    ] {
        assert!(tools.get(name).is_some(), "tool {name} missing: {tools}");
    }
    // One contract: the tools that take an API body take the OpenAPI document's schema
    // for it, patterns and bounds included.
    for (tool, component) in [
        ("create_service", "CreateServiceRequest"),
        ("create_model", "CreateModelRequest"),
    ] {
        assert_eq!(
            tools[tool]["inputSchema"], doc["components"]["schemas"][component],
            "{tool} takes {component} as the API declares it"
        );
    }
    let update = &tools["update_service"]["inputSchema"];
    assert!(update["properties"]["env"].is_object(), "{update}");
    assert!(
        update["required"]
            .as_array()
            .is_some_and(|r| r.contains(&Value::from("id"))),
        "{update}"
    );
    assert_eq!(
        tools["stop_service"]["annotations"]["destructiveHint"],
        true
    );
    assert_eq!(tools["list_services"]["annotations"]["readOnlyHint"], true);
    assert!(
        tools["stop_service"]["description"]
            .as_str()
            .is_some_and(|d| d.contains("force")),
        "destructive tools say what they do"
    );
    assert_eq!(seen["capabilities"]["resources"]["subscribe"], true);

    assert_eq!(
        seen["create_model"]["structuredContent"]["name"],
        format!("agent-model-{transport}")
    );
    assert_eq!(
        seen["create_service"]["structuredContent"]["name"],
        format!("agent-svc-{transport}")
    );
    // The model's GPU memory on an engine and context of the agent's choice.
    let estimate = &seen["model_on_llamacpp"]["structuredContent"]["estimate"];
    assert_eq!(
        estimate["engine"], "llamacpp",
        "{}",
        seen["model_on_llamacpp"]
    );
    assert_eq!(estimate["weights"], 1_000_000_000_u64);
    assert_eq!(estimate["context_length"], 2048);
    assert_eq!(estimate["overhead"], 768_u64 << 20);

    // A caller's mistakes are tool results with the reason, not protocol errors.
    assert_error(&seen["create_invalid"], "unknown engine 'nope'");
    assert_error(&seen["start_mistyped"], "invalid arguments: invalid type");

    let started = &seen["start"];
    assert_ne!(started["isError"], true, "{started}");
    assert_eq!(
        started["structuredContent"]["status"], "running",
        "{started}"
    );
    // Each phase of the start arrived as a progress notification, in order, rising.
    let progress: Vec<&str> = seen["progress"]
        .as_array()
        .expect("progress")
        .iter()
        .filter_map(|p| p["message"].as_str())
        .collect();
    let phases: Vec<&str> = progress
        .iter()
        .filter_map(|m| m.split(':').next())
        .collect();
    for wanted in ["validate", "port_check", "create", "health", "running"] {
        assert!(phases.contains(&wanted), "{wanted} in {progress:?}");
    }
    assert_eq!(phases.last(), Some(&"running"), "{progress:?}");
    let numbers: Vec<f64> = seen["progress"]
        .as_array()
        .expect("progress")
        .iter()
        .filter_map(|p| p["progress"].as_f64())
        .collect();
    assert!(numbers.windows(2).all(|w| w[0] < w[1]), "{numbers:?}");

    // resources/subscribe: the service's resource was updated when it changed status.
    let uri = format!("aima://services/agent-svc-{transport}");
    assert!(
        seen["updates"]
            .as_array()
            .is_some_and(|u| u.contains(&Value::from(uri.clone()))),
        "{}",
        seen["updates"]
    );
    let resources = seen["resources"].as_array().expect("resources");
    for wanted in [
        uri.clone(),
        format!("{uri}/logs"),
        format!("{uri}/events"),
        format!("aima://models/agent-model-{transport}"),
        "aima://devices".to_owned(),
    ] {
        assert!(
            resources.contains(&Value::from(wanted.clone())),
            "{wanted} in {resources:?}"
        );
    }
    assert!(
        seen["templates"]
            .as_array()
            .is_some_and(|t| t.contains(&Value::from("aima://services/{name}"))),
        "{}",
        seen["templates"]
    );
    let service: Value = serde_json::from_str(
        seen["read_service"]["contents"][0]["text"]
            .as_str()
            .expect("text"),
    )
    .expect("the service resource is JSON");
    assert_eq!(service["status"], "running");
    assert!(
        seen["read_logs"]["contents"][0]["text"]
            .as_str()
            .is_some_and(|t| t.contains("Uvicorn running")),
        "{}",
        seen["read_logs"]
    );

    let lines = seen["logs"]["structuredContent"]["lines"]
        .as_array()
        .expect("log lines");
    assert!(
        lines
            .iter()
            .any(|l| l.as_str().is_some_and(|l| l.contains("Uvicorn running"))),
        "{lines:?}"
    );
    let events = seen["events"]["structuredContent"]["items"]
        .as_array()
        .expect("events");
    assert!(
        events.iter().any(|e| e["status"] == "running"),
        "{events:?}"
    );
    // The gateway's chat through the tool: the stub engine's answer, with usage. The tool
    // named the service; the engine answers to the model's name, which the gateway sent.
    let chat = &seen["chat"]["structuredContent"];
    assert_eq!(
        chat["reply"],
        format!("Hello from the aima stub engine serving agent-model-{transport}."),
        "{}",
        seen["chat"]
    );
    assert!(
        chat["usage"]["total_tokens"]
            .as_u64()
            .is_some_and(|n| n > 0),
        "{chat}"
    );

    assert_error(&seen["stop_unforced"], "force: true");
    assert_eq!(
        seen["stop"]["structuredContent"]["status"], "stopped",
        "{}",
        seen["stop"]
    );
    assert_error(&seen["start_broken"], "did not start, it is failed");
    assert_error(&seen["start_broken"], "out of GPU memory");
    assert_error(
        &seen["get_missing"],
        "no service with id, name or id prefix 'no-such-service'",
    );

    // The prompts gather the facts: the reason, the kept log line, the GPUs.
    assert_eq!(
        seen["prompts"],
        serde_json::json!(["diagnose_service", "place_model"])
    );
    let diagnosis = seen["diagnose"]["messages"][0]["content"]["text"]
        .as_str()
        .unwrap_or_default();
    for fact in [
        "is failed",
        "engine ran out of GPU memory",
        "torch.OutOfMemoryError",
        "restart policy no",
        "none_reason",
    ] {
        assert!(diagnosis.contains(fact), "{fact} in {diagnosis}");
    }
    let placement = seen["place"]["messages"][0]["content"]["text"]
        .as_str()
        .unwrap_or_default();
    for fact in [
        format!("agent-model-{transport}"),
        "recommendation".to_owned(),
        format!("agent-svc-{transport}"),
    ] {
        assert!(placement.contains(&fact), "{fact} in {placement}");
    }

    // The 2026-07-28 protocol: discovered, and subscriptions/listen fires on the start.
    assert_eq!(seen["modern_protocol"], "2026-07-28");
    assert_eq!(
        seen["listen_honored"]["resourceSubscriptions"],
        serde_json::json!([uri])
    );
    assert_eq!(
        seen["modern_start"]["structuredContent"]["status"],
        "running"
    );
    assert_eq!(
        seen["listen_event"],
        serde_json::json!({"kind": "ResourceUpdated", "uri": uri})
    );
    assert_eq!(
        seen["modern_stop"]["structuredContent"]["status"],
        "stopped"
    );
}

fn assert_error(result: &Value, says: &str) {
    assert_eq!(result["isError"], true, "{result}");
    assert!(
        result["content"][0]["text"]
            .as_str()
            .is_some_and(|t| t.contains(says)),
        "{says:?} in {result}"
    );
}
