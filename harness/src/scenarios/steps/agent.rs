//! Steps of an AI agent that runs the host through MCP alone: it launches `aima mcp` as
//! agents do, with rmcp's own client, and calls AIMA's tools; each answer is kept for the
//! Then steps, and the start phases it was told of as progress.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use cucumber::{given, then, when};
use rmcp::model::{
    CallToolRequestParams, CallToolResult, NumberOrString, ProgressNotificationParam,
    ProgressToken, RequestMetaObject,
};
use rmcp::service::{NotificationContext, RunningService};
use rmcp::transport::TokioChildProcess;
use rmcp::{ClientHandler, RoleClient, ServiceExt};
use serde_json::Value;

use super::super::world::{AimaWorld, ServiceRef};

/// An agent's session, and what it was told.
pub struct Agent {
    session: RunningService<RoleClient, Listener>,
    progress: Arc<Mutex<Vec<String>>>,
    /// The last tool answer.
    answer: Option<CallToolResult>,
    /// Progress messages of the last call that asked for them.
    phases: Vec<String>,
}

impl std::fmt::Debug for Agent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Agent")
            .field("answer", &self.answer)
            .field("phases", &self.phases)
            .finish_non_exhaustive()
    }
}

/// Collects the progress notifications the server sends.
#[derive(Clone, Default)]
struct Listener {
    progress: Arc<Mutex<Vec<String>>>,
}

impl ClientHandler for Listener {
    async fn on_progress(
        &self,
        params: ProgressNotificationParam,
        _context: NotificationContext<RoleClient>,
    ) {
        let message = params.message.unwrap_or_default();
        self.progress
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(message);
    }
}

fn agent(w: &mut AimaWorld) -> &mut Agent {
    w.agent
        .as_mut()
        .expect("no agent in this scenario; add 'an agent connected to \"aima mcp\"'")
}

#[given(expr = "an agent connected to {string}")]
async fn connect(w: &mut AimaWorld, command: String) {
    assert_eq!(command, "aima mcp", "agents launch 'aima mcp'");
    let mut launch = tokio::process::Command::new(&w.config().aima);
    launch
        .arg("mcp")
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", w.home.path())
        .env("AIMA_HOME", w.home.path())
        .env("AIMA_ADDR", w.addr().to_string());
    let transport = TokioChildProcess::new(launch).expect("launch aima mcp");
    let listener = Listener::default();
    let progress = listener.progress.clone();
    let session = listener
        .serve(transport)
        .await
        .expect("the MCP handshake with aima mcp");
    let tools = session.list_all_tools().await.expect("tools/list");
    let server = session
        .peer_info()
        .and_then(|i| i.server_info.as_ref().map(|s| s.name.clone()))
        .unwrap_or_default();
    w.note(format!(
        "agent connected to {server} over stdio: {} tools",
        tools.len()
    ));
    w.agent = Some(Agent {
        session,
        progress,
        answer: None,
        phases: Vec::new(),
    });
}

/// Calls `tool`; with `follow`, the call carries a progress token.
async fn call(w: &mut AimaWorld, tool: String, arguments: String, follow: bool) {
    let arguments: Value = serde_json::from_str(&arguments)
        .unwrap_or_else(|e| panic!("the arguments of {tool} are not JSON: {e}"));
    let Value::Object(arguments) = arguments else {
        panic!("the arguments of {tool} must be a JSON object");
    };
    let agent = agent(w);
    let mut params = CallToolRequestParams::new(tool.clone()).with_arguments(arguments);
    if follow {
        let mut meta = RequestMetaObject::default();
        meta.set_progress_token(ProgressToken(NumberOrString::Number(1)));
        params.meta = Some(meta);
        agent
            .progress
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clear();
    }
    let answer = tokio::time::timeout(
        Duration::from_secs(120),
        agent.session.peer().call_tool(params),
    )
    .await
    .unwrap_or_else(|_| panic!("{tool} did not answer in 120 s"))
    .unwrap_or_else(|e| panic!("{tool} failed as a protocol error, not a tool result: {e}"));
    if follow {
        agent.phases = agent
            .progress
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
    }
    let failed = answer.is_error == Some(true);
    let text = text_of(&answer);
    agent.answer = Some(answer.clone());
    w.note(format!(
        "{tool}: {}{}",
        if failed { "error: " } else { "" },
        excerpt(&text)
    ));
    if follow {
        let phases = w
            .agent
            .as_ref()
            .map(|a| a.phases.join(" | "))
            .unwrap_or_default();
        w.note(format!("progress: {phases}"));
    }
    // What the agent created, the scenario's other steps know by name.
    if !failed && let Some(created) = &answer.structured_content {
        let name = created["name"].as_str().unwrap_or_default().to_owned();
        let id = created["id"].as_str().unwrap_or_default().to_owned();
        match tool.as_str() {
            "create_model" => {
                w.models.insert(name, id);
            }
            "create_service" => {
                let port = created["port"].as_u64().unwrap_or_default();
                let port = u16::try_from(port).expect("a port");
                w.services.insert(name, ServiceRef { id, port });
            }
            _ => {}
        }
    }
}

fn text_of(answer: &CallToolResult) -> String {
    answer
        .content
        .iter()
        .filter_map(|c| c.as_text().map(|t| t.text.clone()))
        .collect::<Vec<_>>()
        .join("\n")
}

fn excerpt(text: &str) -> String {
    let mut short: String = text.chars().take(240).collect();
    if short.len() < text.len() {
        short.push('…');
    }
    short
}

#[when(regex = r#"^the agent calls "([a-z_]+)" with (\{.*\})$"#)]
async fn calls(w: &mut AimaWorld, tool: String, arguments: String) {
    call(w, tool, arguments, false).await;
}

#[when(regex = r#"^the agent calls "([a-z_]+)" with (\{.*\}) and follows its progress$"#)]
async fn calls_following(w: &mut AimaWorld, tool: String, arguments: String) {
    call(w, tool, arguments, true).await;
}

fn answer(w: &mut AimaWorld) -> &CallToolResult {
    agent(w)
        .answer
        .as_ref()
        .expect("the agent has called no tool yet")
}

#[then(expr = "the tool answered with an error mentioning {string}")]
async fn answered_error(w: &mut AimaWorld, needle: String) {
    let answer = answer(w);
    let text = text_of(answer);
    assert_eq!(answer.is_error, Some(true), "not an error: {text}");
    assert!(text.contains(&needle), "{needle:?} not in {text:?}");
}

#[then(expr = "the tool's error names the port of service {string} and the blocking process")]
async fn error_names_port(w: &mut AimaWorld, name: String) {
    let port = w.service(&name).port;
    let pid = w.blockers.first().map(|b| b.id()).expect("a blocker");
    let text = text_of(answer(w));
    for needle in [
        format!("port {port}"),
        format!("pid {pid}"),
        "aima-stub-engine".to_owned(),
    ] {
        assert!(text.contains(&needle), "{text:?} does not name {needle}");
    }
}

#[then(expr = "the tool answered that service {string} is {string}")]
async fn answered_status(w: &mut AimaWorld, name: String, status: String) {
    let answer = answer(w).clone();
    let text = text_of(&answer);
    assert_ne!(answer.is_error, Some(true), "an error: {text}");
    let service = answer.structured_content.unwrap_or_default();
    assert_eq!(service["name"], name.as_str(), "{text}");
    assert_eq!(service["status"], status.as_str(), "{text}");
}

#[then(expr = "service {string} now has a port other than {int}")]
async fn port_other_than(w: &mut AimaWorld, name: String, port: u16) {
    assert_ne!(w.service(&name).port, port);
}

#[then(expr = "the agent was told of the phases {string} as progress")]
async fn told_phases(w: &mut AimaWorld, phases: String) {
    let seen = agent(w).phases.clone();
    let names: Vec<&str> = seen.iter().filter_map(|m| m.split(':').next()).collect();
    let mut from = 0;
    for phase in phases.split(", ") {
        let at = names[from..]
            .iter()
            .position(|n| *n == phase)
            .unwrap_or_else(|| panic!("phase {phase} not told in order: {seen:?}"));
        from += at + 1;
    }
}

#[then(expr = "the tool answered with the reply {string}")]
async fn answered_reply(w: &mut AimaWorld, reply: String) {
    let answer = answer(w).clone();
    let text = text_of(&answer);
    assert_ne!(answer.is_error, Some(true), "an error: {text}");
    let body = answer.structured_content.unwrap_or_default();
    assert_eq!(body["reply"], reply.as_str(), "{text}");
}
