//! AIMA's MCP server driven by a client the project did not write: the reference MCP
//! Python SDK (PyPI `mcp`, installed by `.ci/run`), over both transports (`aima mcp` on
//! stdio, and the daemon's `/mcp` over Streamable HTTP), against a real daemon with the
//! stub engine; `/mcp` answers only what the access guard lets through. Tools are listed with schemas from the API's request types and annotations;
//! an agent registers a model, creates and starts a service, reads its logs and events,
//! is told to pass `force` before stopping a running one, and gets a failed start's reason
//! as a tool result with `isError`.

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
        check(
            transport,
            &serde_json::from_slice(&out.stdout).expect("the client's JSON report"),
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

/// What an agent saw through one transport.
fn check(transport: &str, seen: &Value) {
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
        "start_service",
        "stop_service",
        "delete_service",
        "service_logs",
        "service_events",
        "device_detect",
        "recommend",
    ] {
        assert!(tools.get(name).is_some(), "tool {name} missing: {tools}");
    }
    // The schemas come from the API's request types: the same fields, the same docs.
    let create = &tools["create_service"]["inputSchema"];
    for field in ["model_id", "engine_type", "restart", "env", "port"] {
        assert!(
            create["properties"].get(field).is_some(),
            "{field}: {create}"
        );
    }
    assert_eq!(
        create["required"],
        serde_json::json!(["model_id", "engine_type"])
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

    assert_eq!(
        seen["create_model"]["structuredContent"]["name"],
        format!("agent-model-{transport}")
    );
    assert_eq!(
        seen["create_service"]["structuredContent"]["name"],
        format!("agent-svc-{transport}")
    );
    let started = &seen["start"];
    assert_ne!(started["isError"], true, "{started}");
    assert_eq!(
        started["structuredContent"]["status"], "running",
        "{started}"
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

    let unforced = &seen["stop_unforced"];
    assert_eq!(unforced["isError"], true, "{unforced}");
    assert!(
        unforced["content"][0]["text"]
            .as_str()
            .is_some_and(|t| t.contains("force: true")),
        "{unforced}"
    );
    assert_eq!(
        seen["stop"]["structuredContent"]["status"], "stopped",
        "{}",
        seen["stop"]
    );

    let broken = &seen["start_broken"];
    assert_eq!(broken["isError"], true, "{broken}");
    let reason = broken["content"][0]["text"].as_str().unwrap_or_default();
    assert!(
        reason.contains("failed to start") && reason.contains("out of GPU memory"),
        "{reason}"
    );
    let missing = &seen["get_missing"];
    assert_eq!(missing["isError"], true, "{missing}");
    assert!(
        missing["content"][0]["text"]
            .as_str()
            .is_some_and(|t| t.contains("no service with id, name or id prefix 'no-such-service'")),
        "{missing}"
    );
}
