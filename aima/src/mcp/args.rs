//! Tool arguments: their schemas and their parsing. A body the API takes (a model, a
//! service, an update) keeps the OpenAPI document's schema and goes to the daemon as the
//! caller wrote it, so the daemon's checks and one-line reasons apply unchanged; the
//! tool-only arguments are small structs with `schemars` schemas.

use std::sync::Arc;

use rmcp::ErrorData;
use rmcp::handler::server::common::FromContextPart;
use rmcp::handler::server::tool::ToolCallContext;
use rmcp::model::JsonObject;
use schemars::JsonSchema;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

/// A tool's arguments, parsed by the tool itself: a caller's mistake (a missing id, a
/// number for a string) comes back as an `isError` result that names it, which an agent
/// reads and corrects, rather than as a JSON-RPC error.
pub struct Args<T>(pub Result<T, String>);

impl<S, T: DeserializeOwned> FromContextPart<ToolCallContext<'_, S>> for Args<T> {
    fn from_context_part(context: &mut ToolCallContext<S>) -> Result<Self, ErrorData> {
        let arguments = context.arguments.take().unwrap_or_default();
        Ok(Self(
            serde_json::from_value(Value::Object(arguments))
                .map_err(|e| format!("invalid arguments: {e}; see the tool's input schema")),
        ))
    }
}

/// The arguments as the caller sent them, for tools that pass an API body through.
pub type Body = JsonObject;

/// The schema of a tool-only argument type.
pub fn schema<T: JsonSchema + 'static>() -> Arc<JsonObject> {
    rmcp::handler::server::common::schema_for_type::<T>()
}

/// The OpenAPI document's schema for an API body; `target` adds the `id` argument that
/// names the service a body applies to (`update_service`).
pub fn api_schema(component: &str, target: bool) -> Arc<JsonObject> {
    let mut schema = crate::api::component_schema(component).unwrap_or_else(|| {
        // Only a renamed component gets here, and the MCP test lists every tool's schema.
        serde_json::json!({ "type": "object" })
            .as_object()
            .cloned()
            .unwrap_or_default()
    });
    if target {
        if let Some(Value::Object(properties)) = schema.get_mut("properties") {
            properties.insert(
                "id".to_owned(),
                serde_json::json!({
                    "type": "string",
                    "minLength": 1,
                    "description": "The service: id, name or unique id prefix."
                }),
            );
        }
        let required = schema
            .entry("required")
            .or_insert_with(|| Value::Array(Vec::new()));
        if let Value::Array(required) = required {
            required.push(Value::from("id"));
        }
    }
    Arc::new(schema)
}

/// A model or service named by id, name or unique id prefix.
#[derive(Debug, Deserialize, JsonSchema)]
pub struct Target {
    /// The id (model-1a2b3c4d, svc-vllm-1a2b3c4d), the name, or a unique id prefix.
    #[schemars(length(min = 1))]
    pub id: String,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct ModelArgs {
    /// The model: id, name or unique id prefix.
    #[schemars(length(min = 1))]
    pub id: String,
    /// The engine to estimate GPU memory for: vllm, sglang, llamacpp or ollama (default:
    /// llamacpp for GGUF weights, vllm otherwise).
    #[serde(default)]
    #[schemars(regex(pattern = "^(vllm|sglang|llamacpp|ollama)$"))]
    pub engine: Option<String>,
    /// Tokens of context to size the KV cache for (default: the model's own).
    #[serde(default)]
    #[schemars(range(min = 1, max = 100_000_000))]
    pub context_length: Option<u32>,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct StartArgs {
    /// The service: id, name or unique id prefix.
    #[schemars(length(min = 1))]
    pub id: String,
    /// Wait until it runs or fails (at most `timeout_secs`), and answer with the outcome;
    /// each phase of the start is sent as a progress notification when the call asks.
    #[serde(default = "yes")]
    pub wait: bool,
    /// Longest wait, in seconds (default 600).
    #[serde(default)]
    #[schemars(range(min = 1, max = 86400))]
    pub timeout_secs: Option<u64>,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct StopArgs {
    /// The service: id, name or unique id prefix.
    #[schemars(length(min = 1))]
    pub id: String,
    /// Required to stop (or delete) a service that is running or starting: it ends the
    /// engine and every request it is answering.
    #[serde(default)]
    pub force: bool,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct LogsArgs {
    /// The service: id, name or unique id prefix.
    #[schemars(length(min = 1))]
    pub id: String,
    /// The last N lines (default 100, at most 1000).
    #[serde(default)]
    #[schemars(range(min = 1, max = 1000))]
    pub tail: Option<usize>,
    /// The lines kept from the container before the current one (a crashed engine's).
    #[serde(default)]
    pub previous: bool,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct RecommendArgs {
    /// Only this model (default: every registered model).
    #[serde(default)]
    pub model_id: Option<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct ChatArgs {
    /// The model's name, or a service's name, as an application sends it to the gateway.
    #[schemars(length(min = 1))]
    pub model: String,
    /// The user message.
    #[schemars(length(min = 1))]
    pub message: String,
    /// Most tokens in the answer (default 64).
    #[serde(default)]
    #[schemars(range(min = 1, max = 4096))]
    pub max_tokens: Option<u32>,
}
