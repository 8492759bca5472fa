//! MCP sessions over HTTP, bounded: rmcp's local session manager keeps every session
//! until its keep-alive runs out, so a caller that only ever sends `initialize` could
//! drive the daemon out of memory. Here a session that has not finished its handshake
//! (`notifications/initialized`) within [`HANDSHAKE_GRACE`] is closed, an idle one after
//! [`IDLE_CLOSE`], and no more than the cap (`AIMA_MCP_MAX_SESSIONS`) live at once: a new
//! one beyond it is refused with 503 and a one-line reason before rmcp creates anything.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use futures::Stream;
use rmcp::model::{ClientJsonRpcMessage, ClientNotification, JsonRpcMessage, ServerJsonRpcMessage};
use rmcp::transport::streamable_http_server::session::local::{
    LocalSessionManager, LocalSessionManagerError, SessionConfig,
};
use rmcp::transport::streamable_http_server::session::{
    RestoreOutcome, ServerSseMessage, SessionId, SessionManager,
};

/// A session must finish `initialize` + `notifications/initialized` within this.
pub const HANDSHAKE_GRACE: Duration = Duration::from_secs(10);
/// A session that sends nothing for this long is closed (its client may start another).
pub const IDLE_CLOSE: Duration = Duration::from_secs(300);
/// Sessions at once unless `AIMA_MCP_MAX_SESSIONS` says otherwise.
pub const DEFAULT_MAX_SESSIONS: usize = 64;

/// rmcp's local sessions under a cap and a handshake deadline; cheap to clone.
#[derive(Clone)]
pub struct BoundedSessions {
    shared: Arc<Shared>,
}

struct Shared {
    local: LocalSessionManager,
    max: usize,
    /// Held while a request that may open a session is looked at and served, so two at
    /// once cannot both see room for one.
    opening: tokio::sync::Mutex<()>,
    /// Sessions whose client finished the handshake.
    initialized: Mutex<HashSet<SessionId>>,
}

impl std::fmt::Debug for BoundedSessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BoundedSessions")
            .field("max", &self.shared.max)
            .finish_non_exhaustive()
    }
}

impl BoundedSessions {
    pub fn new(max: usize) -> Self {
        let mut config = SessionConfig::default();
        config.keep_alive = Some(IDLE_CLOSE);
        config.init_timeout = Some(HANDSHAKE_GRACE);
        let mut local = LocalSessionManager::default();
        local.session_config = config;
        Self {
            shared: Arc::new(Shared {
                local,
                max,
                opening: tokio::sync::Mutex::new(()),
                initialized: Mutex::default(),
            }),
        }
    }

    /// Sessions alive now.
    pub async fn count(&self) -> usize {
        self.shared.local.sessions.read().await.len()
    }

    fn full_message(&self) -> String {
        format!(
            "the daemon already serves {} MCP sessions (AIMA_MCP_MAX_SESSIONS); close one (HTTP DELETE with its Mcp-Session-Id) or retry when an idle one expires",
            self.shared.max
        )
    }

    fn initialized(&self) -> std::sync::MutexGuard<'_, HashSet<SessionId>> {
        self.shared
            .initialized
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Refuses a new session (a POST without `Mcp-Session-Id`) while the cap is reached.
pub async fn refuse_when_full(
    State(sessions): State<BoundedSessions>,
    request: Request,
    next: Next,
) -> Response {
    let opens_session =
        request.method() == Method::POST && !request.headers().contains_key("mcp-session-id");
    if !opens_session {
        return next.run(request).await;
    }
    // rmcp creates the session before it answers the head, so holding this across the
    // call makes the count and the creation one step.
    let _opening = sessions.shared.opening.lock().await;
    if sessions.count().await >= sessions.shared.max {
        let message = sessions.full_message();
        tracing::warn!("{message}");
        let mut response = (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(serde_json::json!({
                "error": {"code": "too_many_sessions", "message": message}
            })),
        )
            .into_response();
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("10"));
        return response;
    }
    next.run(request).await
}

fn is_handshake_end(message: &ClientJsonRpcMessage) -> bool {
    matches!(
        message,
        JsonRpcMessage::Notification(n)
            if matches!(n.notification, ClientNotification::InitializedNotification(_))
    )
}

impl SessionManager for BoundedSessions {
    type Error = LocalSessionManagerError;
    type Transport = <LocalSessionManager as SessionManager>::Transport;

    async fn create_session(&self) -> Result<(SessionId, Self::Transport), Self::Error> {
        let (id, transport) = self.shared.local.create_session().await?;
        // A client that never finishes the handshake loses its session.
        let this = self.clone();
        let watched = id.clone();
        tokio::spawn(async move {
            tokio::time::sleep(HANDSHAKE_GRACE).await;
            if !this.initialized().contains(&watched) {
                tracing::info!(session = %watched, "closing an MCP session that never finished its handshake");
                let _ = this.close_session(&watched).await;
            }
        });
        Ok((id, transport))
    }

    async fn initialize_session(
        &self,
        id: &SessionId,
        message: ClientJsonRpcMessage,
    ) -> Result<ServerJsonRpcMessage, Self::Error> {
        self.shared.local.initialize_session(id, message).await
    }

    async fn has_session(&self, id: &SessionId) -> Result<bool, Self::Error> {
        self.shared.local.has_session(id).await
    }

    async fn close_session(&self, id: &SessionId) -> Result<(), Self::Error> {
        self.initialized().remove(id);
        self.shared.local.close_session(id).await
    }

    async fn create_stream(
        &self,
        id: &SessionId,
        message: ClientJsonRpcMessage,
    ) -> Result<impl Stream<Item = ServerSseMessage> + Send + Sync + 'static, Self::Error> {
        self.shared.local.create_stream(id, message).await
    }

    async fn accept_message(
        &self,
        id: &SessionId,
        message: ClientJsonRpcMessage,
    ) -> Result<(), Self::Error> {
        if is_handshake_end(&message) {
            self.initialized().insert(id.clone());
        }
        self.shared.local.accept_message(id, message).await
    }

    async fn create_standalone_stream(
        &self,
        id: &SessionId,
    ) -> Result<impl Stream<Item = ServerSseMessage> + Send + Sync + 'static, Self::Error> {
        self.shared.local.create_standalone_stream(id).await
    }

    async fn resume(
        &self,
        id: &SessionId,
        last_event_id: String,
    ) -> Result<impl Stream<Item = ServerSseMessage> + Send + Sync + 'static, Self::Error> {
        self.shared.local.resume(id, last_event_id).await
    }

    async fn restore_session(
        &self,
        _id: SessionId,
    ) -> Result<RestoreOutcome<Self::Transport>, Self::Error> {
        // A session this daemon forgot (restarted, expired) is not brought back: the
        // client starts a new one, under the cap.
        Ok(RestoreOutcome::NotSupported)
    }
}
