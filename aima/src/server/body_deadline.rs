//! Request bodies on the routes without a request timeout (the gateway's `/v1`, where a
//! cold start may take minutes, and `/mcp`) must arrive at a minimum rate: a client that
//! sends its head and then a byte now and then would otherwise hold one of the capped
//! connections for as long as it likes. The API has its own request timeout (408 too).
//!
//! The rule: a body may take [`BodyRules::grace`] (30 s) plus one second for every MiB
//! received so far, i.e. an honest upload at 1 MiB/s or faster is never cut, whatever
//! its size up to the route's limit (32 MiB on `/v1`, 4 MiB on `/mcp`).

use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use futures::StreamExt;

/// Bytes a second an upload must average once its grace is spent.
pub const MIN_BODY_RATE: u64 = 1024 * 1024;
/// Largest MCP message: tool calls are small JSON.
pub const MCP_BODY_LIMIT: usize = 4 * 1024 * 1024;

/// How long a body may take, and how large it may be, by route.
#[derive(Debug, Clone, Copy)]
pub struct BodyRules {
    pub grace: Duration,
}

impl Default for BodyRules {
    fn default() -> Self {
        Self {
            grace: Duration::from_secs(30),
        }
    }
}

/// The face a path belongs to, for its limit and its error's shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Face {
    Gateway,
    Mcp,
}

fn face_of(path: &str) -> Option<Face> {
    if path.starts_with("/v1/") {
        Some(Face::Gateway)
    } else if path == "/mcp" || path.starts_with("/mcp/") {
        Some(Face::Mcp)
    } else {
        None
    }
}

/// Reads the body under the rule, then hands the request on with the body in memory
/// (the gateway and MCP read it whole anyway); 408 or 413 when it breaks the rule.
pub async fn read_body_in_time(
    State(rules): State<BodyRules>,
    request: Request,
    next: Next,
) -> Response {
    let Some(face) = face_of(request.uri().path()) else {
        return next.run(request).await;
    };
    let limit = match face {
        Face::Gateway => crate::gateway::BODY_LIMIT_BYTES,
        Face::Mcp => MCP_BODY_LIMIT,
    };
    let (parts, body) = request.into_parts();
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let started = Instant::now();
    let mut frames = body.into_data_stream();
    if declared.is_some_and(|n| n > limit as u64) {
        drain(&mut frames, rules, started, 0).await;
        return refuse(face, StatusCode::PAYLOAD_TOO_LARGE, too_large(limit));
    }
    let mut received: Vec<u8> = Vec::new();
    loop {
        let left = time_left(rules, started, received.len());
        match tokio::time::timeout(left, frames.next()).await {
            Err(_) => {
                tracing::info!(
                    received = received.len(),
                    "request body too slow: closed the connection"
                );
                return refuse(
                    face,
                    StatusCode::REQUEST_TIMEOUT,
                    format!(
                        "the request body arrived too slowly ({} bytes in {} s); a body may take {} s plus 1 s per MiB",
                        received.len(),
                        started.elapsed().as_secs(),
                        rules.grace.as_secs()
                    ),
                );
            }
            Ok(None) => break,
            Ok(Some(Ok(chunk))) => {
                if received.len() + chunk.len() > limit {
                    let read = received.len() + chunk.len();
                    drop(received);
                    drain(&mut frames, rules, started, read).await;
                    return refuse(face, StatusCode::PAYLOAD_TOO_LARGE, too_large(limit));
                }
                received.extend_from_slice(&chunk);
            }
            Ok(Some(Err(e))) => {
                return refuse(
                    face,
                    StatusCode::BAD_REQUEST,
                    format!("the request body could not be read: {e}"),
                );
            }
        }
    }
    next.run(Request::from_parts(
        parts,
        Body::from(Bytes::from(received)),
    ))
    .await
}

/// How long the rest of a body may take, `received` bytes in.
fn time_left(rules: BodyRules, started: Instant, received: usize) -> Duration {
    let allowed = rules.grace + Duration::from_secs_f64(received as f64 / MIN_BODY_RATE as f64);
    allowed.saturating_sub(started.elapsed())
}

/// Most of a refused body read and thrown away before answering.
const DRAIN_MAX: usize = 64 * 1024 * 1024;

/// Reads and discards the rest of a body that is refused for its size (up to
/// [`DRAIN_MAX`] and under the same time rule), so the client, still sending, reads the
/// 413 instead of a connection reset: closing a socket with unread data resets it.
async fn drain<S>(frames: &mut S, rules: BodyRules, started: Instant, mut read: usize)
where
    S: futures::Stream<Item = Result<Bytes, axum::Error>> + Unpin,
{
    while read < DRAIN_MAX {
        match tokio::time::timeout(time_left(rules, started, read), frames.next()).await {
            Ok(Some(Ok(chunk))) => read += chunk.len(),
            _ => return,
        }
    }
}

fn too_large(limit: usize) -> String {
    format!(
        "the request body is larger than {} MiB; send a smaller one",
        limit / (1024 * 1024)
    )
}

/// The error in the face's own shape; the connection closes, since the rest of the
/// body was never read.
fn refuse(face: Face, status: StatusCode, message: String) -> Response {
    let body = match face {
        Face::Gateway => serde_json::json!({"error": {
            "message": message,
            "type": "invalid_request_error",
            "code": status.canonical_reason().map(|r| r.to_lowercase().replace(' ', "_")),
        }}),
        Face::Mcp => serde_json::json!({"error": {
            "code": status.canonical_reason().map(|r| r.to_lowercase().replace(' ', "_")),
            "message": message,
        }}),
    };
    let mut response = (status, axum::Json(body)).into_response();
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_routes_without_a_request_timeout_are_ruled() {
        assert_eq!(face_of("/v1/chat/completions"), Some(Face::Gateway));
        assert_eq!(face_of("/mcp"), Some(Face::Mcp));
        assert_eq!(face_of("/api/v1/services"), None);
        assert_eq!(face_of("/v1"), None);
        assert_eq!(face_of("/mcpx"), None);
    }
}
