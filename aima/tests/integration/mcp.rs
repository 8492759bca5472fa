//! `aima mcp` driven by a client the project did not write: the reference MCP Python SDK
//! (PyPI `mcp`, installed by `.ci/run`) over stdio, against a real daemon with the stub
//! engine. Tools are listed with schemas from the API's request types and annotations;
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
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clients/mcp_stdio.py");
    let (addr, home) = (d.addr.to_string(), d.home.path().to_owned());
    let out = tokio::task::spawn_blocking(move || {
        Command::new(python)
            .arg(script)
            .arg(aima_bin())
            .env("AIMA_ADDR", addr)
            .env("AIMA_HOME", home)
            .output()
            .expect("run the MCP client")
    })
    .await
    .expect("join");
    assert!(
        out.status.success(),
        "the MCP client failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let seen: Value = serde_json::from_slice(&out.stdout).expect("the client's JSON report");

    assert_eq!(seen["server"]["name"], "aima", "{}", seen["server"]);
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
        "agent-model"
    );
    assert_eq!(
        seen["create_service"]["structuredContent"]["name"],
        "agent-svc"
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
    crate::support::remove_containers_with_label(&d.instance_label());
}
