//! What the handlers' annotations cannot say on their own, added to the OpenAPI document
//! in one place: the error answers every operation can give (the access guard, the body
//! and query checks, the timeout), the exact grammar of query and header values, the
//! shape of a server-sent event, and `/metrics`.

use serde_json::{Value, json};
use utoipa::openapi::path::{Operation, Parameter, PathItem};
use utoipa::openapi::{OpenApi, RefOr, Response};

/// The Modify that completes [`super::ApiDoc`].
#[derive(Debug)]
pub struct Contract;

impl utoipa::Modify for Contract {
    fn modify(&self, doc: &mut OpenApi) {
        for (path, item) in doc.paths.paths.iter_mut() {
            for operation in operations(item) {
                declare_errors(path, operation);
                for parameter in operation.parameters.iter_mut().flatten() {
                    tighten(parameter);
                }
                describe_event_streams(operation);
            }
        }
        doc.paths
            .paths
            .insert("/metrics".to_owned(), decode(metrics_path()));
    }
}

fn operations(item: &mut PathItem) -> impl Iterator<Item = &mut Operation> {
    [
        &mut item.get,
        &mut item.put,
        &mut item.post,
        &mut item.delete,
        &mut item.patch,
    ]
    .into_iter()
    .filter_map(Option::as_mut)
}

/// A document fragment written as JSON, read into utoipa's types.
fn decode<T: serde::de::DeserializeOwned>(value: Value) -> T {
    match serde_json::from_value(value) {
        Ok(decoded) => decoded,
        // The fragments are constants of this file; a unit test reads every one.
        Err(e) => unreachable!("a document fragment in api/contract.rs does not decode: {e}"),
    }
}

fn error(description: &str) -> RefOr<Response> {
    decode(json!({
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}
    }))
}

/// Every answer the layers around a handler can give, where the handler did not
/// already describe it.
fn declare_errors(path: &str, operation: &mut Operation) {
    let mut errors = vec![
        (
            "400",
            "a query parameter this route does not take, or a value it cannot read",
        ),
        (
            "401",
            "no bearer token, or the wrong one (when the daemon has AIMA_API_TOKEN)",
        ),
        (
            "403",
            "a cross-site request, or a Host the daemon does not answer to",
        ),
        (
            "408",
            "the request took longer than the daemon's request timeout",
        ),
    ];
    if operation.request_body.is_some() {
        errors.extend([
            ("413", "the body is larger than 64 KiB"),
            (
                "415",
                "the body is not sent as Content-Type: application/json",
            ),
            (
                "422",
                "the body is JSON but breaks a rule; the message names it",
            ),
        ]);
    }
    let names_something = path.contains('{')
        || operation
            .parameters
            .iter()
            .flatten()
            .any(|p| p.name.ends_with("_id"));
    if names_something {
        errors.push(("404", "no model or service with that id, name or prefix"));
    }
    for (code, description) in errors {
        operation
            .responses
            .responses
            .entry(code.to_owned())
            .or_insert_with(|| error(description));
    }
}

/// The grammar of values the schema types alone leave open, so a generated value the
/// schema allows is one the daemon takes.
fn tighten(parameter: &mut Parameter) {
    let schema = match parameter.name.as_str() {
        "Last-Event-ID" => json!({"type": "string", "pattern": "^[0-9]{1,18}$",
            "description": "the id of the last event received"}),
        "after" => json!({"type": "string", "pattern": "^([0-9]{1,18}|latest)$",
            "description": "an event's sequence number, or latest"}),
        "engine" => {
            json!({"type": "string", "enum": crate::engines::CATALOG.iter().map(|e| e.name).collect::<Vec<_>>()})
        }
        "status" => {
            json!({"type": "string", "enum": crate::domain::ServiceStatus::ALL.iter().map(|s| s.as_str()).collect::<Vec<_>>()})
        }
        "source" => {
            json!({"type": "string", "enum": ["ollama", "huggingface", "modelscope", "local"]})
        }
        "name" | "model" | "service_id" | "model_id" => json!({"type": "string", "minLength": 1}),
        "tail" => json!({"type": "integer", "minimum": 0, "maximum": 100_000_000}),
        "since" => json!({
            "type": "string",
            "description": "an RFC 3339 time (2026-12-02T10:00:00Z), unix seconds, or a duration ago such as 10m",
            "pattern": SINCE_PATTERN,
        }),
        _ => return,
    };
    parameter.schema = Some(decode(schema));
}

/// `since` as the daemon reads it (see `api/services.rs`): unix seconds, a whole number
/// of seconds, minutes, hours or days ago, or an RFC 3339 time from 1970 on, on a day
/// every year has (February 29 is left out: use unix seconds for it).
pub const SINCE_PATTERN: &str = "^([0-9]{1,10}|[0-9]{1,5}(s|m|h)|[0-9]{1,4}d|(19[7-9][0-9]|2[0-9]{3})-((0[13578]|1[02])-(0[1-9]|[12][0-9]|3[01])|(0[469]|11)-(0[1-9]|[12][0-9]|30)|02-(0[1-9]|1[0-9]|2[0-8]))T([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\\.[0-9]{1,9})?(Z|[+-]([01][0-9]|2[0-3]):[0-5][0-9]))$";

/// A server-sent event as the OpenAPI registry models `text/event-stream`: its `id` (the
/// sequence number to resume after), its `event` type and its `data`, an event as JSON.
fn describe_event_streams(operation: &mut Operation) {
    for response in operation.responses.responses.values_mut() {
        let RefOr::T(response) = response else {
            continue;
        };
        if let Some(stream) = response.content.get_mut("text/event-stream") {
            stream.schema = Some(decode(json!({
                "type": "object",
                "required": ["id", "event", "data"],
                "properties": {
                    "id": {"type": "string", "pattern": "^[0-9]+$"},
                    "event": {"type": "string", "enum": ["phase", "status", "note", "created", "restarted", "deleted"]},
                    "data": {
                        "type": "string",
                        "contentMediaType": "application/json",
                        "description": "the event as JSON, an EventDto (#/components/schemas/EventDto)"
                    }
                }
            })));
        }
    }
}

fn metrics_path() -> Value {
    let text = json!({"schema": {"type": "string"}});
    json!({
        "get": {
            "tags": ["system"],
            "summary": "Prometheus metrics",
            "description": "Counters and histograms of what happened (starts by engine and result, start and phase durations, failures by cause, health probes, HTTP requests by route and code), gauges of what is (services up, GPU memory in bytes), process metrics, then the gateway's. OpenMetrics 1.0 when the Accept header asks for application/openmetrics-text, Prometheus text 0.0.4 otherwise.",
            "operationId": "metrics",
            "responses": {
                "200": {
                    "description": "the metrics",
                    "content": {
                        "text/plain; version=0.0.4; charset=utf-8": text,
                        "application/openmetrics-text; version=1.0.0; charset=utf-8": text
                    }
                },
                "400": error("a query parameter this route does not take"),
                "401": error("no bearer token, or the wrong one (when the daemon has AIMA_API_TOKEN)"),
                "403": error("a Host the daemon does not answer to"),
                "408": error("the request took longer than the daemon's request timeout")
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_fragment_decodes_and_the_document_has_metrics() {
        let doc = <super::super::ApiDoc as utoipa::OpenApi>::openapi();
        assert!(doc.paths.paths.contains_key("/metrics"));
        let events = &doc.paths.paths["/api/v1/events"];
        let responses = &events.get.as_ref().expect("get").responses.responses;
        for code in ["200", "400", "401", "403", "408"] {
            assert!(responses.contains_key(code), "{code}");
        }
    }

    #[test]
    fn the_since_pattern_takes_what_the_daemon_reads() {
        let pattern = regex_lite(SINCE_PATTERN);
        for good in [
            "0",
            "1733130000",
            "10m",
            "2h",
            "1d",
            "30s",
            "2026-12-02T10:00:00Z",
            "2026-02-28T23:59:59.5+01:00",
        ] {
            assert!(pattern(good), "{good}");
        }
        for bad in [
            "",
            "10 m",
            "1h30m",
            "soon",
            "-1",
            "2026-13-01T00:00:00Z",
            "2026-12-32T00:00:00Z",
        ] {
            assert!(!pattern(bad), "{bad}");
        }
    }

    /// The pattern compiled by the regex engine the tests already build.
    fn regex_lite(pattern: &str) -> impl Fn(&str) -> bool {
        let compiled = regex::Regex::new(pattern).expect("the pattern compiles");
        move |text| compiled.is_match(text)
    }
}
