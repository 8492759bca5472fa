//! Services, models and the host's GPUs as MCP resources, and the notifications an agent
//! subscribes to: `aima://services/{name}` changes with its status, `…/events` with each
//! event, `…/logs` when an engine starts or stops, and the resource list when a service
//! or model is created or deleted. Both ways of subscribing are served: `subscriptions/
//! listen` (protocol 2026-07-28) and `resources/subscribe` (earlier clients).

use std::collections::HashMap;

use futures::StreamExt;
use rmcp::ErrorData;
use rmcp::model::{
    ListResourceTemplatesResult, ListResourcesResult, ReadResourceResult, Resource as Listed,
    ResourceContents, ResourceTemplate,
};
use serde_json::Value;

use crate::api::dto::{EventDto, ModelDto, ServiceDto};
use crate::cli::{CliError, Client, path_segment as segment};

const JSON: &str = "application/json";

/// A resource AIMA serves, by its URI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resource {
    /// `aima://services/{name}`: the service as `get_service` shows it.
    Service(String),
    /// `aima://services/{name}/logs`: the engine's last lines, as text.
    ServiceLogs(String),
    /// `aima://services/{name}/events`: its events, oldest first.
    ServiceEvents(String),
    /// `aima://models/{name}`.
    Model(String),
    /// `aima://devices`: the GPUs and what each service claims.
    Devices,
}

impl Resource {
    /// The resource `uri` names; a service or model is named by name, id or id prefix.
    pub fn parse(uri: &str) -> Option<Self> {
        let path = uri.strip_prefix("aima://")?;
        let parts: Vec<&str> = path.split('/').collect();
        match parts.as_slice() {
            ["devices"] => Some(Self::Devices),
            ["services", name] if !name.is_empty() => Some(Self::Service((*name).to_owned())),
            ["services", name, "logs"] if !name.is_empty() => {
                Some(Self::ServiceLogs((*name).to_owned()))
            }
            ["services", name, "events"] if !name.is_empty() => {
                Some(Self::ServiceEvents((*name).to_owned()))
            }
            ["models", name] if !name.is_empty() => Some(Self::Model((*name).to_owned())),
            _ => None,
        }
    }

    /// The service this resource is about, as the URI names it.
    fn service(&self) -> Option<&str> {
        match self {
            Self::Service(s) | Self::ServiceLogs(s) | Self::ServiceEvents(s) => Some(s),
            Self::Model(_) | Self::Devices => None,
        }
    }

    /// Whether `event` (about a service with this id and name) changes this resource.
    fn changed_by(&self, event: &EventDto, id: &str, name: Option<&str>) -> bool {
        let Some(named) = self.service() else {
            // What the GPUs hold changes when a service starts or stops.
            return *self == Self::Devices && event.status.is_some();
        };
        // Exact id or name: a prefix would hear of every service it begins.
        let same = named == id || Some(named) == name;
        same && match self {
            Self::Service(_) => event.kind != "phase" && event.kind != "note",
            Self::ServiceEvents(_) => true,
            Self::ServiceLogs(_) => event.status.is_some(),
            Self::Model(_) | Self::Devices => false,
        }
    }
}

/// The resource templates, for clients that build URIs themselves.
pub fn templates() -> ListResourceTemplatesResult {
    let template = |uri: &str, name: &str, description: &str, mime: &str| {
        ResourceTemplate::new(uri, name)
            .with_description(description)
            .with_mime_type(mime)
    };
    ListResourceTemplatesResult::with_all_items(vec![
        template(
            "aima://services/{name}",
            "service",
            "A service: status and its reason, port, container, restarts. Subscribe to hear of each status change.",
            JSON,
        ),
        template(
            "aima://services/{name}/logs",
            "service-logs",
            "The last 200 lines of the service's engine, kept after a stop or a failure.",
            "text/plain",
        ),
        template(
            "aima://services/{name}/events",
            "service-events",
            "The service's events, oldest first: phases, status changes with reasons, restarts.",
            JSON,
        ),
        template("aima://models/{name}", "model", "A registered model.", JSON),
    ])
}

/// Every service (and its logs and events), every model, and the devices.
pub async fn list(client: &Client) -> Result<ListResourcesResult, ErrorData> {
    let services: Items<ServiceDto> = client.get("/api/v1/services").await.map_err(failure)?;
    let models: Items<ModelDto> = client.get("/api/v1/models").await.map_err(failure)?;
    let mut listed = vec![
        Listed::new("aima://devices", "devices")
            .with_description("The host's GPUs, their memory, and what each service claims.")
            .with_mime_type(JSON),
    ];
    for s in services.items {
        let about = format!("{} on {}, port {}", s.model_id, s.engine, s.port);
        listed.push(
            Listed::new(format!("aima://services/{}", s.name), s.name.clone())
                .with_description(format!("Service {} ({about}): {}", s.id, s.status))
                .with_mime_type(JSON),
        );
        listed.push(
            Listed::new(
                format!("aima://services/{}/logs", s.name),
                format!("{} logs", s.name),
            )
            .with_description(format!("The last lines of {}'s engine.", s.name))
            .with_mime_type("text/plain"),
        );
        listed.push(
            Listed::new(
                format!("aima://services/{}/events", s.name),
                format!("{} events", s.name),
            )
            .with_description(format!("{}'s events, oldest first.", s.name))
            .with_mime_type(JSON),
        );
    }
    for m in models.items {
        listed.push(
            Listed::new(format!("aima://models/{}", m.name), m.name.clone())
                .with_description(format!("Model {} ({})", m.id, m.source))
                .with_mime_type(JSON),
        );
    }
    Ok(ListResourcesResult::with_all_items(listed))
}

/// The contents of `uri`.
pub async fn read(client: &Client, uri: &str) -> Result<ReadResourceResult, ErrorData> {
    let resource = Resource::parse(uri).ok_or_else(|| {
        ErrorData::resource_not_found(
            format!(
                "no resource {uri}; AIMA serves aima://services/NAME, aima://services/NAME/logs, aima://services/NAME/events, aima://models/NAME and aima://devices"
            ),
            None,
        )
    })?;
    let (text, mime) = match &resource {
        Resource::Service(name) => (
            json(client, &format!("/api/v1/services/{}", segment(name))).await?,
            JSON,
        ),
        Resource::ServiceLogs(name) => {
            let logs: Value = client
                .get(&format!(
                    "/api/service/logs?service_id={}&tail=200",
                    segment(name)
                ))
                .await
                .map_err(|e| missing(uri, e))?;
            let lines: Vec<&str> = logs["lines"]
                .as_array()
                .map(|l| l.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            (lines.join("\n"), "text/plain")
        }
        Resource::ServiceEvents(name) => (
            events_json(client, name)
                .await
                .map_err(|e| missing(uri, e))?,
            JSON,
        ),
        Resource::Model(name) => (
            json(client, &format!("/api/v1/models/{}", segment(name))).await?,
            JSON,
        ),
        Resource::Devices => (json(client, "/api/v1/devices").await?, JSON),
    };
    Ok(ReadResourceResult::new(vec![
        ResourceContents::text(text, uri).with_mime_type(mime),
    ]))
}

async fn events_json(client: &Client, name: &str) -> Result<String, CliError> {
    let items = recorded_events(client, name).await?;
    Ok(pretty(&serde_json::json!({ "items": items })))
}

/// The events recorded for a service so far, oldest first.
pub(super) async fn recorded_events(client: &Client, id: &str) -> Result<Vec<EventDto>, CliError> {
    let path = format!("/api/v1/services/{}/events?follow=false", segment(id));
    let mut stream = std::pin::pin!(client.events(&path).await?);
    let mut items = Vec::new();
    while let Some(event) = stream.next().await {
        items.push(event?);
    }
    Ok(items)
}

async fn json(client: &Client, path: &str) -> Result<String, ErrorData> {
    let value: Value = client.get(path).await.map_err(|e| missing(path, e))?;
    Ok(pretty(&value))
}

fn pretty(value: &Value) -> String {
    serde_json::to_string_pretty(value).unwrap_or_default()
}

fn missing(uri: &str, e: CliError) -> ErrorData {
    ErrorData::resource_not_found(format!("{uri}: {}", e.message), None)
}

fn failure(e: CliError) -> ErrorData {
    ErrorData::internal_error(e.message, None)
}

#[derive(serde::Deserialize)]
struct Items<T> {
    items: Vec<T>,
}

/// Turns the daemon's events into the URIs they change, among those subscribed.
pub struct Changes {
    client: Client,
    /// Service names by id, so that `aima://services/NAME` hears of events by id.
    names: HashMap<String, String>,
}

impl Changes {
    pub fn new(client: Client) -> Self {
        Self {
            client,
            names: HashMap::new(),
        }
    }

    /// The subscribed URIs `event` changes; `list_changed` when it creates or deletes.
    pub async fn touched(&mut self, event: &EventDto, subscribed: &[String]) -> Touched {
        let list_changed = matches!(event.kind.as_str(), "created" | "deleted");
        let Some(id) = &event.service_id else {
            return Touched {
                uris: Vec::new(),
                list_changed,
            };
        };
        if !self.names.contains_key(id)
            && let Ok(service) = self
                .client
                .get::<ServiceDto>(&format!("/api/v1/services/{}", segment(id)))
                .await
        {
            self.names.insert(id.clone(), service.name);
        }
        let name = self.names.get(id).map(String::as_str);
        let uris = subscribed
            .iter()
            .filter(|uri| Resource::parse(uri).is_some_and(|r| r.changed_by(event, id, name)))
            .cloned()
            .collect();
        Touched { uris, list_changed }
    }

    /// The daemon's event stream from now on.
    pub async fn follow(
        &self,
    ) -> Result<impl futures::Stream<Item = Result<EventDto, CliError>> + use<>, CliError> {
        self.client.events("/api/v1/events?after=latest").await
    }
}

pub struct Touched {
    pub uris: Vec<String>,
    pub list_changed: bool,
}
