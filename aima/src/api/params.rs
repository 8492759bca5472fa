//! Every query parameter a route takes is declared in the OpenAPI document; anything else
//! is the caller's typo (`?stauts=running`) and gets a 400 naming it, instead of being
//! ignored and answering as if no filter had been asked for.

use std::collections::BTreeSet;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use utoipa::openapi::path::ParameterIn;

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
    query: BTreeSet<String>,
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
                    .map(|p| p.name.clone())
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
    fn query_of(&self, method: &Method, path: &str) -> Option<&BTreeSet<String>> {
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

    /// The first parameter of `query` that `method path` does not take, with the fix.
    pub fn unknown(&self, method: &Method, path: &str, query: &str) -> Option<String> {
        let declared = self.query_of(method, path)?;
        let unknown = form_urlencoded::parse(query.as_bytes())
            .map(|(key, _)| key.into_owned())
            .find(|key| !declared.contains(key))?;
        let takes = if declared.is_empty() {
            "it takes none".to_owned()
        } else {
            format!(
                "it takes {}",
                declared.iter().cloned().collect::<Vec<_>>().join(", ")
            )
        };
        Some(format!(
            "unknown query parameter '{}' for {method} {path}; {takes}",
            crate::domain::one_line(&unknown)
        ))
    }
}

/// Middleware: a 400 for an undeclared query parameter, before the handler runs.
pub async fn refuse_unknown(
    State(declared): State<Arc<DeclaredParams>>,
    request: Request,
    next: Next,
) -> Response {
    if let Some(query) = request.uri().query()
        && let Some(message) = declared.unknown(request.method(), request.uri().path(), query)
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
            d.unknown(
                &Method::GET,
                "/api/v1/services/abc/logs",
                "tail=5&follow=true"
            ),
            None
        );
        assert_eq!(
            d.unknown(&Method::GET, "/api/v1/services", "stauts=running"),
            Some(
                "unknown query parameter 'stauts' for GET /api/v1/services; it takes engine, model, name, status"
                    .to_owned()
            )
        );
        assert_eq!(
            d.unknown(&Method::GET, "/api/v1/models/m1", "x=1"),
            Some("unknown query parameter 'x' for GET /api/v1/models/m1; it takes none".to_owned())
        );
        // Routes the document does not know are left to the router (404, 405).
        assert_eq!(d.unknown(&Method::GET, "/api/v1/nowhere", "x=1"), None);
        assert_eq!(d.unknown(&Method::PUT, "/api/v1/services", "x=1"), None);
    }
}
