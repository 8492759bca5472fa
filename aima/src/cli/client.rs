use std::net::SocketAddr;
use std::time::Duration;

use reqwest::{Method, RequestBuilder, StatusCode};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::CliError;
use crate::api::dto::ErrorBody;

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
        Self { addr, http }
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
