//! Every query parameter a route takes is declared in the OpenAPI document; anything else
//! is the caller's typo (`?stauts=running`) and gets a 400 naming it, instead of being
//! ignored and answering as if no filter had been asked for. A declared parameter's value
//! must fit its schema's `enum`, `pattern` and `minLength` too, so the document is the one
//! statement of what the API takes, and a client generated from it is never surprised.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use utoipa::openapi::path::ParameterIn;
use utoipa::openapi::{RefOr, Schema};

use super::ApiError;

/// The query parameters of each documented route.
#[derive(Debug, Default)]
pub struct DeclaredParams {
    routes: Vec<Route>,
}

#[derive(Debug)]
struct Route {
    method: Method,
    /// Path segments; `None` stands for a `{template}` segment.
    segments: Vec<Option<String>>,
    query: BTreeMap<String, ValueRule>,
}

/// What a query parameter's schema allows of its value.
#[derive(Debug, Default)]
struct ValueRule {
    one_of: Option<Vec<String>>,
    pattern: Option<regex::Regex>,
    min_length: Option<usize>,
    /// What a value must be, in words, for the message when the pattern does not match.
    described: Option<String>,
    /// Bounds of an integer value.
    range: Option<(f64, f64)>,
}

fn number(n: &utoipa::Number) -> f64 {
    match n {
        utoipa::Number::Int(i) => *i as f64,
        utoipa::Number::UInt(u) => *u as f64,
        utoipa::Number::Float(f) => *f,
    }
}

impl ValueRule {
    fn from_schema(schema: Option<&RefOr<Schema>>) -> Self {
        let Some(RefOr::T(Schema::Object(object))) = schema else {
            return Self::default();
        };
        Self {
            one_of: object.enum_values.as_ref().map(|values| {
                values
                    .iter()
                    .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_owned))
                    .collect()
            }),
            // The document's patterns are this crate's constants, tested to compile.
            pattern: object
                .pattern
                .as_deref()
                .and_then(|p| regex::Regex::new(p).ok()),
            min_length: object.min_length,
            described: object.description.clone(),
            range: object.maximum.as_ref().map(|max| {
                (
                    object.minimum.as_ref().map_or(f64::MIN, number),
                    number(max),
                )
            }),
        }
    }

    /// Why `value` does not fit, if it does not.
    fn refuse(&self, name: &str, value: &str) -> Option<String> {
        let shown = crate::domain::one_line(value);
        if let Some(allowed) = &self.one_of
            && !allowed.iter().any(|a| a == value)
        {
            return Some(format!(
                "{name} '{shown}' is not one of {}",
                allowed.join(", ")
            ));
        }
        if self
            .min_length
            .is_some_and(|min| value.chars().count() < min)
        {
            return Some(format!("{name} is empty; give it a value or leave it out"));
        }
        if let Some((min, max)) = self.range
            && value
                .parse::<f64>()
                .is_ok_and(|n| !(min..=max).contains(&n))
        {
            return Some(format!(
                "{name} {shown} is out of range; give {min} to {max}"
            ));
        }
        if let Some(pattern) = &self.pattern
            && !pattern.is_match(value)
        {
            let wanted = self
                .described
                .clone()
                .unwrap_or_else(|| format!("a value matching {}", pattern.as_str()));
            return Some(format!("{name} '{shown}' is not valid; write {wanted}"));
        }
        None
    }
}

impl DeclaredParams {
    /// Reads the routes and their query parameters out of the OpenAPI document.
    pub fn from_doc(doc: &utoipa::openapi::OpenApi) -> Self {
        let mut routes = Vec::new();
        for (path, item) in &doc.paths.paths {
            let segments: Vec<Option<String>> = path
                .trim_start_matches('/')
                .split('/')
                .map(|s| (!s.starts_with('{')).then(|| s.to_owned()))
                .collect();
            for (method, operation) in [
                (Method::GET, &item.get),
                (Method::POST, &item.post),
                (Method::PUT, &item.put),
                (Method::DELETE, &item.delete),
                (Method::PATCH, &item.patch),
            ] {
                let Some(operation) = operation else {
                    continue;
                };
                let query = operation
                    .parameters
                    .iter()
                    .flatten()
                    .filter(|p| matches!(p.parameter_in, ParameterIn::Query))
                    .map(|p| (p.name.clone(), ValueRule::from_schema(p.schema.as_ref())))
                    .collect();
                routes.push(Route {
                    method: method.clone(),
                    segments: segments.clone(),
                    query,
                });
            }
        }
        Self { routes }
    }

    /// The query parameters of `method path`, if the document has that route.
    fn query_of(&self, method: &Method, path: &str) -> Option<&BTreeMap<String, ValueRule>> {
        let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        // A literal segment wins over a template (`/services/list` before `/services/{id}`).
        self.routes
            .iter()
            .filter(|r| r.method == *method && r.segments.len() == parts.len())
            .filter(|r| {
                r.segments
                    .iter()
                    .zip(&parts)
                    .all(|(s, p)| s.as_deref().is_none_or(|s| s == *p))
            })
            .max_by_key(|r| r.segments.iter().filter(|s| s.is_some()).count())
            .map(|r| &r.query)
    }

    /// The first parameter of `query` that `method path` does not take, or whose value
    /// its schema does not allow, with the fix.
    pub fn refuse(&self, method: &Method, path: &str, query: &str) -> Option<String> {
        let declared = self.query_of(method, path)?;
        for (key, value) in form_urlencoded::parse(query.as_bytes()) {
            let Some(rule) = declared.get(key.as_ref()) else {
                let takes = if declared.is_empty() {
                    "it takes none".to_owned()
                } else {
                    format!(
                        "it takes {}",
                        declared.keys().cloned().collect::<Vec<_>>().join(", ")
                    )
                };
                return Some(format!(
                    "unknown query parameter '{}' for {method} {path}; {takes}",
                    crate::domain::one_line(&key)
                ));
            };
            if let Some(refused) = rule.refuse(&key, &value) {
                return Some(refused);
            }
        }
        None
    }
}

/// Middleware: a 400 for an undeclared query parameter, before the handler runs.
pub async fn refuse_unknown(
    State(declared): State<Arc<DeclaredParams>>,
    request: Request,
    next: Next,
) -> Response {
    if let Some(query) = request.uri().query()
        && let Some(message) = declared.refuse(request.method(), request.uri().path(), query)
    {
        return ApiError::new(StatusCode::BAD_REQUEST, message).into_response();
    }
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use utoipa::OpenApi as _;

    fn declared() -> DeclaredParams {
        DeclaredParams::from_doc(&super::super::ApiDoc::openapi())
    }

    #[test]
    fn declared_parameters_pass_and_others_are_named() {
        let d = declared();
        assert_eq!(
            d.refuse(
                &Method::GET,
                "/api/v1/services/abc/logs",
                "tail=5&follow=true"
            ),
            None
        );
        assert_eq!(
            d.refuse(&Method::GET, "/api/v1/services", "stauts=running"),
            Some(
                "unknown query parameter 'stauts' for GET /api/v1/services; it takes engine, model, name, status"
                    .to_owned()
            )
        );
        assert_eq!(
            d.refuse(&Method::DELETE, "/api/v1/models/m1", "x=1"),
            Some(
                "unknown query parameter 'x' for DELETE /api/v1/models/m1; it takes none"
                    .to_owned()
            )
        );
        assert_eq!(
            d.refuse(&Method::GET, "/api/v1/models/m1", "x=1"),
            Some(
                "unknown query parameter 'x' for GET /api/v1/models/m1; it takes context_length, engine"
                    .to_owned()
            )
        );
        assert_eq!(
            d.refuse(&Method::GET, "/api/v1/services", "status=runing"),
            Some("status 'runing' is not one of creating, starting, running, stopping, stopped, failed, backoff".to_owned())
        );
        assert_eq!(
            d.refuse(&Method::GET, "/api/v1/services", "name="),
            Some("name is empty; give it a value or leave it out".to_owned())
        );
        assert!(
            d.refuse(&Method::GET, "/api/v1/services/a/logs", "since=soon")
                .is_some_and(|m| m.starts_with("since 'soon' is not valid; write an RFC 3339 time"))
        );
        assert_eq!(
            d.refuse(&Method::GET, "/api/v1/services/a/logs", "since=10m"),
            None
        );
        // Routes the document does not know are left to the router (404, 405).
        assert_eq!(d.refuse(&Method::GET, "/api/v1/nowhere", "x=1"), None);
        assert_eq!(d.refuse(&Method::PUT, "/api/v1/services", "x=1"), None);
    }
}
