use std::net::SocketAddr;
use std::time::Duration;

use reqwest::{Method, RequestBuilder, StatusCode};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::CliError;
use futures::StreamExt;

use crate::api::dto::EventDto;

/// Connecting to a local daemon takes microseconds; this bounds the wait when nothing
/// answers, so the CLI reports an unreachable daemon in well under a second.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(800);
/// Upper bound for one ordinary (non-streaming) request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);

/// An HTTP client of the daemon's API.
#[derive(Debug, Clone)]
pub struct Client {
    addr: SocketAddr,
    /// Sent as a bearer token on every request when set.
    token: Option<crate::config::ApiToken>,
    http: reqwest::Client,
    /// For streams that stay open (logs -f, events): no overall timeout.
    streaming: reqwest::Client,
}

impl Client {
    pub fn new(addr: SocketAddr, token: Option<crate::config::ApiToken>) -> Self {
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
            token,
            http,
            streaming,
        }
    }

    /// The daemon address this client dials.
    pub fn addr(&self) -> SocketAddr {
        self.addr
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

    /// A POST whose answer says by its status whether it made something: `(true, _)` for
    /// 201 Created, `(false, _)` for 200.
    pub async fn post_with_status<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<(bool, T), CliError> {
        let response = self
            .request(Method::POST, path)
            .json(body)
            .send()
            .await
            .map_err(|e| self.transport_error(&e))?;
        let created = response.status() == StatusCode::CREATED;
        self.read(response).await.map(|value| (created, value))
    }

    pub async fn patch<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, CliError> {
        self.call(self.request(Method::PATCH, path).json(body))
            .await
    }

    pub async fn delete<T: DeserializeOwned>(&self, path: &str) -> Result<T, CliError> {
        self.call(self.request(Method::DELETE, path)).await
    }

    /// `GET /api/v1/health`: the daemon's answer when it is ok (200) and when it is
    /// degraded (503, same shape).
    pub async fn health(&self) -> Result<crate::api::dto::Health, CliError> {
        let response = self
            .request(Method::GET, "/api/v1/health")
            .send()
            .await
            .map_err(|e| self.transport_error(&e))?;
        let status = response.status();
        let bytes = response
            .bytes()
            .await
            .map_err(|e| self.transport_error(&e))?;
        serde_json::from_slice(&bytes).map_err(|_| self.api_error(status, &bytes))
    }

    /// A streaming GET (logs, events): no overall timeout, and the response is handed back
    /// as soon as its head arrives.
    pub async fn stream(&self, path: &str) -> Result<reqwest::Response, CliError> {
        self.streamed(self.streaming.get(format!("http://{}{path}", self.addr)))
            .await
    }

    /// A streaming POST (a chat answer as the engine writes it).
    pub async fn post_stream<B: Serialize>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<reqwest::Response, CliError> {
        self.streamed(
            self.streaming
                .post(format!("http://{}{path}", self.addr))
                .json(body),
        )
        .await
    }

    async fn streamed(&self, request: RequestBuilder) -> Result<reqwest::Response, CliError> {
        let response = self
            .authorized(request)
            .send()
            .await
            .map_err(|e| self.transport_error(&e))?;
        if !response.status().is_success() {
            let status = response.status();
            let bytes = response.bytes().await.unwrap_or_default();
            return Err(self.api_error(status, &bytes));
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
                                CliError::UNREACHABLE,
                                format!(
                                    "event stream from {addr} broke: the aima daemon went away ({e}); check 'aima status'"
                                ),
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
        self.authorized(
            self.http
                .request(method, format!("http://{}{path}", self.addr)),
        )
    }

    fn authorized(&self, request: RequestBuilder) -> RequestBuilder {
        match &self.token {
            Some(token) => request.bearer_auth(token.expose()),
            None => request,
        }
    }

    async fn call<T: DeserializeOwned>(&self, request: RequestBuilder) -> Result<T, CliError> {
        let response = request.send().await.map_err(|e| self.transport_error(&e))?;
        self.read(response).await
    }

    async fn read<T: DeserializeOwned>(&self, response: reqwest::Response) -> Result<T, CliError> {
        let status = response.status();
        let bytes = response
            .bytes()
            .await
            .map_err(|e| self.transport_error(&e))?;
        if !status.is_success() {
            return Err(self.api_error(status, &bytes));
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
        if err.is_timeout() {
            return CliError::new(
                CliError::FAILED,
                format!(
                    "the aima daemon at {} did not answer in time: {}; check 'aima status' and retry",
                    self.addr,
                    innermost(err)
                ),
            );
        }
        // The connection broke after it was made: the daemon died or was stopped
        // mid-request, which scripts should treat like an unreachable daemon.
        if err.is_request() || err.is_body() || err.is_decode() {
            return CliError::new(
                CliError::UNREACHABLE,
                format!(
                    "the aima daemon at {} went away during the request: {}; check that it still runs ('aima status') and retry",
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

    /// The daemon's own message when it sent one, else the status; a refused token also
    /// says where the CLI looked for one.
    fn api_error(&self, status: StatusCode, body: &[u8]) -> CliError {
        // `{"error":{"message":…}}`: the API's shape, and the gateway's OpenAI one whose
        // `code` may be null.
        let message = serde_json::from_slice::<serde_json::Value>(body)
            .ok()
            .and_then(|b| b.pointer("/error/message")?.as_str().map(str::to_owned))
            .unwrap_or_else(|| format!("the daemon answered {status}"));
        if status == StatusCode::UNAUTHORIZED {
            let sent = if self.token.is_some() {
                "the token this CLI sent was refused"
            } else {
                "this CLI sent no token"
            };
            return CliError::new(
                CliError::FAILED,
                format!(
                    "the daemon at {} requires an API token and {sent}; set AIMA_API_TOKEN to the daemon's token, or write it to $AIMA_HOME/token (mode 600)",
                    self.addr
                ),
            );
        }
        CliError::new(CliError::FAILED, message)
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
