//! Prompts that gather the facts an agent needs for a task into one message, so that it
//! reasons from what AIMA recorded rather than guessing: why a service failed, and where
//! a model fits on this host.

use rmcp::ErrorData;
use rmcp::model::{
    GetPromptResult, JsonObject, ListPromptsResult, Prompt, PromptArgument, PromptMessage, Role,
};
use serde_json::Value;

use super::AimaServer;
use crate::api::dto::ServiceDto;
use crate::cli::{CliError, path_segment as segment};

const DIAGNOSE: &str = "diagnose_service";
const PLACE: &str = "place_model";

pub fn list() -> ListPromptsResult {
    ListPromptsResult::with_all_items(vec![
        Prompt::new(
            DIAGNOSE,
            Some(
                "Diagnose a failed (or restarting) service: its status reason, restarts, recent events, the engine's kept log lines and the GPUs' claims, with the tools to fix it.",
            ),
            Some(vec![
                PromptArgument::new("service")
                    .with_description("The service: id, name or unique id prefix.")
                    .with_required(true),
            ]),
        ),
        Prompt::new(
            PLACE,
            Some(
                "Place a model on this host: the model, AIMA's recommendation (GPU, engine, memory share), the GPUs' free memory and the services that hold it.",
            ),
            Some(vec![
                PromptArgument::new("model")
                    .with_description("The model: id, name or unique id prefix.")
                    .with_required(true),
            ]),
        ),
    ])
}

pub async fn get(
    server: &AimaServer,
    name: &str,
    arguments: Option<&JsonObject>,
) -> Result<GetPromptResult, ErrorData> {
    let argument = |key: &str| {
        arguments
            .and_then(|a| a.get(key))
            .and_then(Value::as_str)
            .filter(|v| !v.is_empty())
            .map(str::to_owned)
            .ok_or_else(|| {
                ErrorData::invalid_params(format!("prompt {name} needs the argument `{key}`"), None)
            })
    };
    let (description, text) = match name {
        DIAGNOSE => {
            let service = argument("service")?;
            let text = diagnose(server, &service).await.map_err(invalid)?;
            (format!("Diagnose service {service}"), text)
        }
        PLACE => {
            let model = argument("model")?;
            let text = place(server, &model).await.map_err(invalid)?;
            (format!("Place model {model} on this host"), text)
        }
        other => {
            return Err(ErrorData::invalid_params(
                format!("no prompt {other}; AIMA has {DIAGNOSE} and {PLACE}"),
                None,
            ));
        }
    };
    Ok(
        GetPromptResult::new(vec![PromptMessage::new_text(Role::User, text)])
            .with_description(description),
    )
}

/// An unknown service or model is the caller's to fix; a daemon that is not there is not.
fn invalid(e: CliError) -> ErrorData {
    if e.exit == CliError::UNREACHABLE {
        ErrorData::internal_error(e.message, None)
    } else {
        ErrorData::invalid_params(e.message, None)
    }
}

async fn diagnose(server: &AimaServer, id: &str) -> Result<String, CliError> {
    let s: ServiceDto = server
        .client
        .get(&format!("/api/v1/services/{}", segment(id)))
        .await?;
    let logs: Value = server
        .client
        .get(&format!(
            "/api/service/logs?service_id={}&tail=40",
            segment(&s.id)
        ))
        .await
        .unwrap_or_default();
    let events = server.events(&s.id).await.unwrap_or_default();
    let devices: Value = server
        .client
        .get("/api/v1/devices")
        .await
        .unwrap_or_default();

    let mut text = format!(
        "Diagnose why AIMA service {} ({}) is {}, and fix it.\n\n\
         Model {} on engine {}, host port {}, restart policy {}.\n\
         Status reason: {}\n\
         Restarts: {} in all, {} in a row; last exit code: {}.\n",
        s.name,
        s.id,
        s.status,
        s.model_id,
        s.engine,
        s.port,
        s.restart,
        s.status_reason.as_deref().unwrap_or("none recorded"),
        s.restarts,
        s.restarts_in_a_row,
        s.last_exit_code
            .map_or_else(|| "none".to_owned(), |c| c.to_string()),
    );
    text.push_str("\nRecent events, oldest first:\n");
    for e in events.iter().rev().take(15).rev() {
        let what = e.phase.as_deref().or(e.status.as_deref()).unwrap_or("");
        text.push_str(&format!(
            "- {} {} {what}: {}\n",
            e.time.format("%H:%M:%S%.3f"),
            e.kind,
            e.message
        ));
    }
    text.push_str("\nThe engine's last log lines (kept after a stop or a failure):\n");
    for line in logs["lines"].as_array().into_iter().flatten() {
        text.push_str(line.as_str().unwrap_or_default());
        text.push('\n');
    }
    text.push_str(&format!(
        "\nGPUs and their claims:\n{}\n",
        serde_json::to_string_pretty(&devices).unwrap_or_default()
    ));
    text.push_str(
        "\nFind the cause in these facts. Then fix it with AIMA's tools: a port held by another \
         process (delete_service, then create_service without a port so AIMA picks a free one), \
         GPU memory held by other services (stop_service with force, or update_service with a \
         smaller gpu_memory_utilization), a wrong environment (update_service with env), a missing \
         image (tell the operator to build or load it). Start it with start_service and confirm \
         it runs; say what you changed and why.",
    );
    Ok(text)
}

async fn place(server: &AimaServer, id: &str) -> Result<String, CliError> {
    let model: Value = server
        .client
        .get(&format!("/api/v1/models/{}", segment(id)))
        .await?;
    let model_id = model["id"].as_str().unwrap_or(id).to_owned();
    let advice: Value = server
        .client
        .get(&format!(
            "/api/v1/recommend?model_id={}",
            segment(&model_id)
        ))
        .await?;
    let devices: Value = server
        .client
        .get("/api/v1/devices")
        .await
        .unwrap_or_default();
    let services: Value = server
        .client
        .get("/api/v1/services")
        .await
        .unwrap_or_default();
    let held: Vec<String> = services["items"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|s| {
            format!(
                "- {} ({}) on {}: {}, GPU share {}, pinned {}",
                s["name"].as_str().unwrap_or_default(),
                s["model_id"].as_str().unwrap_or_default(),
                s["engine"].as_str().unwrap_or_default(),
                s["status"].as_str().unwrap_or_default(),
                s["gpu_memory_utilization"],
                s["pinned"]
            )
        })
        .collect();
    Ok(format!(
        "Place model {} ({model_id}) on this host, with AIMA's tools.\n\n\
         The model:\n{}\n\n\
         AIMA's recommendation for it:\n{}\n\n\
         The GPUs:\n{}\n\n\
         The services on this host:\n{}\n\n\
         Choose an engine and a GPU memory share from these facts (prefer the recommendation; \
         if it does not fit now, say which services would have to stop and whether they are \
         pinned). Then create_service and start_service, and confirm with chat that it answers.",
        model["name"].as_str().unwrap_or(id),
        serde_json::to_string_pretty(&model).unwrap_or_default(),
        serde_json::to_string_pretty(&advice).unwrap_or_default(),
        serde_json::to_string_pretty(&devices).unwrap_or_default(),
        if held.is_empty() {
            "(none)".to_owned()
        } else {
            held.join("\n")
        },
    ))
}
