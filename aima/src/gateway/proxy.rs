//! Passing a request to the engine and its answer back: headers filtered, the body
//! streamed through as the engine writes it, never collected.

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::Response;
use futures::{Stream, StreamExt};

use super::Exchange;
use super::openai::OpenAiError;
use super::stream_usage::HideUsage;

/// Connection-level headers (RFC 9110 §7.6.1) that a proxy must not forward, plus the
/// ones it sets itself.
const NOT_FORWARDED: &[HeaderName] = &[
    header::CONNECTION,
    header::HOST,
    header::CONTENT_LENGTH,
    header::TRANSFER_ENCODING,
    header::TE,
    header::TRAILER,
    header::UPGRADE,
    header::PROXY_AUTHORIZATION,
    header::PROXY_AUTHENTICATE,
    // The daemon's token is for AIMA, not for the engine.
    header::AUTHORIZATION,
];

fn forwardable(name: &HeaderName) -> bool {
    !NOT_FORWARDED.contains(name) && name.as_str() != "keep-alive"
}

/// The request headers the engine gets.
pub(super) fn upstream_headers(incoming: &HeaderMap) -> reqwest::header::HeaderMap {
    let mut out = reqwest::header::HeaderMap::with_capacity(incoming.len());
    for (name, value) in incoming {
        if forwardable(name) {
            out.append(name.clone(), value.clone());
        }
    }
    out
}

/// The engine's answer as the client gets it: status and headers passed on, the body
/// streamed, and AIMA's own headers added: the service that answered and the time the
/// gateway itself added (the engine's time and any cold start not counted).
pub(super) fn downstream(
    upstream: reqwest::Response,
    overhead: std::time::Duration,
    mut exchange: Exchange,
) -> Response {
    let status =
        StatusCode::from_u16(upstream.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
    let mut headers = HeaderMap::with_capacity(upstream.headers().len() + 3);
    for (name, value) in upstream.headers() {
        if forwardable(name) || name == header::CONTENT_LENGTH {
            headers.append(name.clone(), value.clone());
        }
    }
    let streaming = is_event_stream(&headers);
    let metrics = &exchange.gateway.inner.metrics;
    metrics.answered(&exchange.target, status.as_u16());
    metrics.head_after(&exchange.target, exchange.arrived.elapsed());
    exchange.status = Some(status.as_u16());
    if status.is_success() {
        exchange.tap(streaming);
    }
    let service = exchange.target.service.clone();
    let body = pass_through(upstream.bytes_stream(), streaming, exchange);
    let mut response = Response::new(Body::from_stream(body));
    *response.status_mut() = status;
    *response.headers_mut() = headers;
    add_aima_headers(response.headers_mut(), &service, overhead, streaming);
    response
}

pub(super) fn add_aima_headers(
    headers: &mut HeaderMap,
    service: &str,
    overhead: std::time::Duration,
    streaming: bool,
) {
    if let Ok(value) = HeaderValue::from_str(service) {
        headers.insert("x-aima-service", value);
    }
    if let Ok(value) = HeaderValue::from_str(&format!("{:.3}", overhead.as_secs_f64() * 1000.0)) {
        headers.insert("x-aima-overhead-ms", value);
    }
    if streaming {
        // Tell nginx and friends not to buffer the stream.
        headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    }
}

fn is_event_stream(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"))
}

/// The engine's body chunk by chunk. If the engine breaks off an event stream (it died),
/// the client gets an error event before the end instead of a silent cut. The exchange
/// lives as long as the body and sees each chunk, so it is in flight until the client
/// has the last byte or hangs up (which drops this stream and the engine connection).
/// A usage event the gateway asked for on the client's behalf is left out.
pub(super) fn pass_through<S>(
    body: S,
    streaming: bool,
    exchange: Exchange,
) -> impl Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static
where
    S: Stream<Item = reqwest::Result<Bytes>> + Send + 'static,
{
    let passing = Passing {
        hide: (streaming && exchange.hide_usage).then(HideUsage::default),
        body: Box::pin(body),
        exchange,
        ended: false,
    };
    futures::stream::unfold(passing, move |mut state| async move {
        if state.ended {
            return None;
        }
        loop {
            match state.body.next().await {
                Some(Ok(chunk)) => {
                    state.exchange.saw(&chunk);
                    let chunk = match &mut state.hide {
                        Some(hide) => hide.filter(&chunk),
                        None => chunk,
                    };
                    // A chunk that held only the hidden event: nothing to send yet.
                    if !chunk.is_empty() {
                        return Some((Ok(chunk), state));
                    }
                }
                Some(Err(e)) if streaming => {
                    let error = OpenAiError {
                        status: StatusCode::BAD_GATEWAY,
                        message: format!("the engine broke off the stream: {}", innermost(&e)),
                        kind: "server_error",
                        code: Some("engine_error"),
                        retry_after: None,
                    };
                    let mut event = state.held_back();
                    event.extend_from_slice(format!("data: {}\n\n", error.body()).as_bytes());
                    state.ended = true;
                    return Some((Ok(Bytes::from(event)), state));
                }
                Some(Err(e)) => {
                    state.ended = true;
                    return Some((Err(std::io::Error::other(e)), state));
                }
                None => {
                    let rest = state.held_back();
                    state.ended = true;
                    return (!rest.is_empty()).then(|| (Ok(Bytes::from(rest)), state));
                }
            }
        }
    })
}

struct Passing<S> {
    body: std::pin::Pin<Box<S>>,
    /// Dropped with the stream: the request is in flight until then.
    exchange: Exchange,
    hide: Option<HideUsage>,
    ended: bool,
}

impl<S> Passing<S> {
    fn held_back(&mut self) -> Vec<u8> {
        self.hide
            .as_mut()
            .map(|hide| hide.finish().to_vec())
            .unwrap_or_default()
    }
}

/// The root cause of a request error, without the layers around it.
pub(super) fn innermost(err: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = err;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}
