use std::net::SocketAddr;
use std::time::Duration;

use reqwest::{Method, RequestBuilder, StatusCode};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::CliError;
use futures::StreamExt;

use crate::api::dto::{ErrorBody, EventDto};

/// Connecting to a local daemon takes microseconds; this bounds the wait when nothing
/// answers, so the CLI reports an unreachable daemon in well under a second.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(800);
/// Upper bound for one ordinary (non-streaming) request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);

/// An HTTP client of the daemon's API.
#[derive(Debug, Clone)]
pub struct Client {
    addr: SocketAddr,
    http: reqwest::Client,
    /// For streams that stay open (logs -f, events): no overall timeout.
    streaming: reqwest::Client,
}

impl Client {
    pub fn new(addr: SocketAddr) -> Self {
        let http = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(REQUEST_TIMEOUT)
            // The daemon is local; a proxy from the environment must not intercept it.
            .no_proxy()
            .build()
            .unwrap_or_default();
        let streaming = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .no_proxy()
            .build()
            .unwrap_or_default();
        Self {
            addr,
            http,
            streaming,
        }
    }

    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, CliError> {
        self.call(self.request(Method::GET, path)).await
    }

    pub async fn post<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, CliError> {
        self.call(self.request(Method::POST, path).json(body)).await
    }

    pub async fn delete<T: DeserializeOwned>(&self, path: &str) -> Result<T, CliError> {
        self.call(self.request(Method::DELETE, path)).await
    }

    /// A streaming GET (logs, events): no overall timeout, and the response is handed back
    /// as soon as its head arrives.
    pub async fn stream(&self, path: &str) -> Result<reqwest::Response, CliError> {
        let response = self
            .streaming
            .get(format!("http://{}{path}", self.addr))
            .send()
            .await
            .map_err(|e| self.transport_error(&e))?;
        if !response.status().is_success() {
            let status = response.status();
            let bytes = response.bytes().await.unwrap_or_default();
            return Err(api_error(status, &bytes));
        }
        Ok(response)
    }

    /// Server-sent events from `path`, decoded; ends when the daemon ends the stream.
    pub async fn events(
        &self,
        path: &str,
    ) -> Result<impl futures::Stream<Item = Result<EventDto, CliError>> + use<>, CliError> {
        let response = self.stream(path).await?;
        let addr = self.addr;
        let bytes = response.bytes_stream();
        Ok(futures::stream::unfold(
            (bytes, String::new()),
            move |(mut bytes, mut buffer)| async move {
                loop {
                    // One SSE event ends with a blank line; its `data:` line holds our JSON.
                    if let Some(end) = buffer.find("\n\n") {
                        let block: String = buffer.drain(..end + 2).collect();
                        let data = block
                            .lines()
                            .filter_map(|l| l.strip_prefix("data:"))
                            .map(str::trim_start)
                            .collect::<Vec<_>>()
                            .join("\n");
                        if data.is_empty() {
                            continue;
                        }
                        let event = serde_json::from_str::<EventDto>(&data).map_err(|e| {
                            CliError::new(
                                CliError::FAILED,
                                format!("the daemon at {addr} sent an unreadable event ({e})"),
                            )
                        });
                        return Some((event, (bytes, buffer)));
                    }
                    match bytes.next().await {
                        Some(Ok(chunk)) => buffer.push_str(&String::from_utf8_lossy(&chunk)),
                        Some(Err(e)) => {
                            let error = CliError::new(
                                CliError::FAILED,
                                format!("event stream from {addr} broke: {e}"),
                            );
                            return Some((Err(error), (bytes, String::new())));
                        }
                        None => return None,
                    }
                }
            },
        ))
    }

    fn request(&self, method: Method, path: &str) -> RequestBuilder {
        self.http
            .request(method, format!("http://{}{path}", self.addr))
    }

    async fn call<T: DeserializeOwned>(&self, request: RequestBuilder) -> Result<T, CliError> {
        let response = request.send().await.map_err(|e| self.transport_error(&e))?;
        let status = response.status();
        let bytes = response
            .bytes()
            .await
            .map_err(|e| self.transport_error(&e))?;
        if !status.is_success() {
            return Err(api_error(status, &bytes));
        }
        serde_json::from_slice(&bytes).map_err(|e| {
            CliError::new(
                CliError::FAILED,
                format!("the daemon at {} answered in an unexpected shape ({e}); are the CLI and daemon the same version?", self.addr),
            )
        })
    }

    fn transport_error(&self, err: &reqwest::Error) -> CliError {
        // reqwest reports a connect timeout as a connect error too.
        if err.is_connect() {
            return CliError::new(
                CliError::UNREACHABLE,
                format!(
                    "cannot reach the aima daemon at {}: {}; start it with 'aima start' or point --addr/AIMA_ADDR at a running daemon",
                    self.addr,
                    innermost(err)
                ),
            );
        }
        CliError::new(
            CliError::FAILED,
            format!(
                "request to the aima daemon at {} failed: {}",
                self.addr,
                innermost(err)
            ),
        )
    }
}

/// The root cause in lower case, without the os error number ("connection refused").
fn innermost(err: &reqwest::Error) -> String {
    let mut cause: &dyn std::error::Error = err;
    while let Some(next) = cause.source() {
        cause = next;
    }
    let text = cause.to_string();
    let text = match text.find(" (os error") {
        Some(at) => &text[..at],
        None => &text,
    };
    text.to_lowercase()
}

/// The daemon's own message when it sent one, else the status.
fn api_error(status: StatusCode, body: &[u8]) -> CliError {
    let message = serde_json::from_slice::<ErrorBody>(body)
        .map(|b| b.error.message)
        .unwrap_or_else(|_| format!("the daemon answered {status}"));
    CliError::new(CliError::FAILED, message)
}
