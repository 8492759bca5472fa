//! HTTP request metrics: the outer layer times every request and counts it by method,
//! route and status code; the route is the template that matched (`/api/v1/services/{id}`),
//! which the routers' inner layer leaves on the response, so ids never become labels.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::Response;

use super::Metrics;

/// The route template that answered, left on the response for [`record_http`].
#[derive(Debug, Clone)]
pub struct RouteLabel(pub String);

/// The route label of requests no route matched (404s, and requests the access guard
/// refused before routing).
const UNMATCHED: &str = "unmatched";

/// Inner layer of a router (`Router::route_layer`): names the route that answered.
pub async fn tag_route(matched: Option<MatchedPath>, request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    if let Some(matched) = matched {
        response
            .extensions_mut()
            .insert(RouteLabel(matched.as_str().to_owned()));
    }
    response
}

/// Outer layer of the whole app: times each request to its answer's head and counts it.
pub async fn record_http(
    State(metrics): State<Arc<Metrics>>,
    request: Request,
    next: Next,
) -> Response {
    let method = method_label(request.method());
    let started = Instant::now();
    let response = next.run(request).await;
    let route = response
        .extensions()
        .get::<RouteLabel>()
        .map_or(UNMATCHED, |r| r.0.as_str());
    metrics.answered(method, route, response.status().as_u16(), started.elapsed());
    response
}

/// Methods a client invents would each become a label; they are counted as `other`.
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}
