//! The model gateway: one OpenAI-compatible endpoint on the daemon's listener. A request
//! names a model or a service in its `model` field; the gateway finds the service,
//! starts it through the daemon's ordinary pipeline if it is not running (one start
//! however many requests wait), and streams the engine's answer back.
//!
//! It uses the daemon's public operations only; its own state (routing catalog, loads in
//! progress, traffic per service, metrics) lives here.

mod forward;
mod history;
mod idle;
mod loading;
mod metrics;
mod openai;
mod proxy;
mod stream_usage;
mod swap;
mod target;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::routing::{get, post};
use prometheus_client::metrics::gauge::Gauge;

use crate::daemon::Daemon;
use crate::domain::{RecentRequest, Service, ServiceId, ServiceTraffic, TrafficSource};
use metrics::{GatewayMetrics, Target, UsageTap};
use openai::OpenAiError;

/// How long an idle connection to an engine is kept for the next request.
const ENGINE_IDLE_CONNECTION: std::time::Duration = std::time::Duration::from_secs(3);
/// Largest request body: prompts with long contexts are megabytes of JSON.
pub const BODY_LIMIT_BYTES: usize = 32 * 1024 * 1024;

/// The gateway's shared state; cheap to clone into handlers.
#[derive(Clone)]
pub struct Gateway {
    inner: Arc<Inner>,
}

struct Inner {
    daemon: Daemon,
    http: reqwest::Client,
    catalog: target::CatalogCache,
    loads: loading::Loads,
    /// One look at the GPUs at a time (see `swap`), so evictions are decided once.
    placing: tokio::sync::Mutex<()>,
    traffic: Mutex<HashMap<ServiceId, Arc<Traffic>>>,
    /// `AIMA_GATEWAY_QUEUE`: how many requests may wait for a turn before more are refused.
    queue_limit: usize,
    metrics: GatewayMetrics,
    /// The latest finished requests, newest last, at most [`RECENT_KEPT`].
    recent: Mutex<std::collections::VecDeque<RecentRequest>>,
    /// The last hour a minute at a time, for the dashboard's charts.
    history: Mutex<crate::domain::History>,
}

/// Finished requests kept for the dashboard's activity list.
const RECENT_KEPT: usize = 200;

/// Requests of one service: how many are in flight, and when the last one ended.
#[derive(Debug, Default)]
struct Traffic {
    in_flight: AtomicUsize,
    last_ended: Mutex<Option<(Instant, chrono::DateTime<chrono::Utc>)>>,
    /// Requests enter under a read lock; an unload holds the write lock from its last
    /// look at `in_flight` until the engine is stopped, so a request arriving at the
    /// deadline either counts before the look or waits and starts the engine afresh.
    gate: tokio::sync::RwLock<()>,
    /// Turns at the engine when the service has `--max-concurrency`.
    turns: std::sync::OnceLock<Arc<tokio::sync::Semaphore>>,
}

impl Traffic {
    fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Acquire)
    }

    fn last_ended(&self) -> Option<(Instant, chrono::DateTime<chrono::Utc>)> {
        *self.last_ended.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// One request from the moment it is counted in to its answer's last byte (or the
/// client's hang-up): in flight until dropped, then its duration and the tokens its
/// answer reported go to the metrics.
struct Exchange {
    gateway: Gateway,
    traffic: Arc<Traffic>,
    target: Target,
    arrived: Instant,
    in_flight: Gauge,
    usage: Option<UsageTap>,
    /// The gateway asked the engine for a stream's usage the client did not ask for.
    hide_usage: bool,
    turn: Option<tokio::sync::OwnedSemaphorePermit>,
    /// The answer's status, once its head went out.
    status: Option<u16>,
    first_byte: Option<std::time::Duration>,
    /// The answer is an event stream: its first byte is its first token.
    streamed: bool,
    arrived_at: chrono::DateTime<chrono::Utc>,
}

impl Exchange {
    /// Reads usage from the answer's body as it passes.
    fn tap(&mut self, streaming: bool) {
        self.usage = Some(UsageTap::new(streaming));
        self.streamed = streaming;
    }

    fn saw(&mut self, chunk: &[u8]) {
        if self.first_byte.is_none() && !chunk.is_empty() {
            let first = self.arrived.elapsed();
            self.first_byte = Some(first);
            if self.streamed {
                self.gateway
                    .inner
                    .metrics
                    .first_token_after(&self.target, first);
            }
        }
        if let Some(tap) = &mut self.usage {
            tap.feed(chunk);
        }
    }
}

impl Drop for Exchange {
    fn drop(&mut self) {
        *self
            .traffic
            .last_ended
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some((Instant::now(), chrono::Utc::now()));
        self.traffic.in_flight.fetch_sub(1, Ordering::AcqRel);
        self.in_flight.dec();
        let metrics = &self.gateway.inner.metrics;
        metrics.finished_after(&self.target, self.arrived.elapsed());
        let tokens = self.usage.take().and_then(UsageTap::finish);
        if let Some((prompt, completion)) = tokens {
            metrics.usage(&self.target, prompt, completion);
            let generating = match (self.streamed, self.first_byte) {
                (true, Some(first)) => self.arrived.elapsed().saturating_sub(first),
                _ => self.arrived.elapsed(),
            };
            if self.status == Some(200) {
                metrics.generated(&self.target, completion, generating);
            }
        }
        if let Some(status) = self.status {
            self.gateway.remember(RecentRequest {
                at: self.arrived_at,
                model: self.target.model.clone(),
                service: self.target.service.clone(),
                status,
                duration: self.arrived.elapsed(),
                first_byte: self.first_byte,
                tokens,
                streamed: self.streamed,
            });
        }
    }
}

/// A place in the gateway's queue, given up when dropped.
struct Queued<'a> {
    waiting: &'a Gauge,
    /// How many wait, this one included.
    position: i64,
}

impl<'a> Queued<'a> {
    fn join(waiting: &'a Gauge) -> Self {
        let position = waiting.inc() + 1;
        Self { waiting, position }
    }
}

impl Drop for Queued<'_> {
    fn drop(&mut self) {
        self.waiting.dec();
    }
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway").finish_non_exhaustive()
    }
}

impl Gateway {
    /// The gateway of `daemon`, with its idle-unload task (which ends with the daemon).
    pub fn new(daemon: Daemon) -> Self {
        let http = reqwest::Client::builder()
            .no_proxy()
            .tcp_nodelay(true)
            // Engines close idle connections after 5 s (uvicorn's default); letting go
            // first means a pooled connection is never reused just as the engine closes it.
            .pool_idle_timeout(ENGINE_IDLE_CONNECTION)
            .build()
            .unwrap_or_default();
        let queue_limit = daemon.settings().gateway_queue;
        let gateway = Self {
            inner: Arc::new(Inner {
                daemon,
                http,
                catalog: target::CatalogCache::default(),
                loads: loading::Loads::default(),
                placing: tokio::sync::Mutex::new(()),
                traffic: Mutex::default(),
                queue_limit,
                metrics: GatewayMetrics::default(),
                recent: Mutex::default(),
                history: Mutex::default(),
            }),
        };
        tokio::spawn(idle::run(gateway.clone()));
        tokio::spawn(history::sample(gateway.clone()));
        gateway
    }

    fn traffic(&self, id: &ServiceId) -> Arc<Traffic> {
        let mut traffic = self.inner.traffic.lock().unwrap_or_else(|p| p.into_inner());
        Arc::clone(traffic.entry(id.clone()).or_default())
    }

    /// A place in the gateway's one bounded queue, or 503 with `Retry-After` when it is
    /// full; `why` says what the request waits for and how to avoid it.
    fn join_queue(&self, why: &str) -> Result<Queued<'_>, OpenAiError> {
        let queued = Queued::join(self.inner.metrics.queued());
        if queued.position > self.inner.queue_limit as i64 {
            return Err(OpenAiError {
                retry_after: Some(1),
                ..OpenAiError::unavailable(format!(
                    "the gateway queue is full ({} requests wait); {why}",
                    self.inner.queue_limit
                ))
            });
        }
        Ok(queued)
    }

    /// Counts a request in for `service`; waits while an unload of it is under way.
    async fn enter(&self, service: &Service, target: Target, arrived: Instant) -> Exchange {
        let traffic = self.traffic(&service.id);
        {
            let _open = traffic.gate.read().await;
            traffic.in_flight.fetch_add(1, Ordering::AcqRel);
        }
        let in_flight = self.inner.metrics.in_flight(&target);
        in_flight.inc();
        Exchange {
            gateway: self.clone(),
            traffic,
            target,
            arrived,
            in_flight,
            usage: None,
            hide_usage: false,
            turn: None,
            status: None,
            first_byte: None,
            streamed: false,
            arrived_at: chrono::Utc::now()
                - chrono::Duration::from_std(arrived.elapsed()).unwrap_or_default(),
        }
    }

    /// Keeps a finished request for the activity list, dropping the oldest.
    fn remember(&self, request: RecentRequest) {
        let generating = match (request.streamed, request.first_byte) {
            (true, Some(first)) => request.duration.saturating_sub(first),
            _ => request.duration,
        };
        let completion = request.tokens.map_or(0, |(_, c)| c);
        self.inner
            .history
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .request(chrono::Utc::now(), request.status, completion, generating);
        let mut recent = self.inner.recent.lock().unwrap_or_else(|p| p.into_inner());
        if recent.len() == RECENT_KEPT {
            recent.pop_front();
        }
        recent.push_back(request);
    }

    /// A turn at the engine of `service` when it limits concurrency: at once if one is
    /// free, else after waiting in the bounded queue (refused with 503 and `Retry-After`
    /// when the queue is full, or when no turn comes within the load timeout).
    async fn take_turn(
        &self,
        service: &Service,
        exchange: &mut Exchange,
    ) -> Result<(), OpenAiError> {
        let Some(limit) = service.serving.max_concurrency else {
            return Ok(());
        };
        let turns = Arc::clone(
            exchange
                .traffic
                .turns
                .get_or_init(|| Arc::new(tokio::sync::Semaphore::new(limit as usize))),
        );
        if let Ok(turn) = Arc::clone(&turns).try_acquire_owned() {
            exchange.turn = Some(turn);
            return Ok(());
        }
        let waited = Instant::now();
        let _queued = self.join_queue(
            "retry shortly, or raise AIMA_GATEWAY_QUEUE or the service's --max-concurrency",
        )?;
        let turn = tokio::time::timeout(service.serving.load_timeout, turns.acquire_owned()).await;
        self.inner
            .metrics
            .waited_for_turn(&exchange.target, waited.elapsed());
        match turn {
            Ok(Ok(turn)) => {
                exchange.turn = Some(turn);
                Ok(())
            }
            _ => Err(OpenAiError {
                retry_after: Some(1),
                ..OpenAiError::unavailable(format!(
                    "no turn at service {} within its load timeout ({limit} requests at once at most)",
                    service.name
                ))
            }),
        }
    }
}

impl TrafficSource for Gateway {
    fn traffic(&self) -> Vec<ServiceTraffic> {
        let traffic = self.inner.traffic.lock().unwrap_or_else(|p| p.into_inner());
        traffic
            .iter()
            .map(|(id, t)| ServiceTraffic {
                service_id: id.clone(),
                in_flight: t.in_flight(),
                last_request_at: t.last_ended().map(|(_, at)| at),
            })
            .collect()
    }

    fn render_metrics(&self, out: &mut String) {
        self.inner.metrics.render(out);
    }

    fn recent_requests(&self) -> Vec<RecentRequest> {
        let recent = self.inner.recent.lock().unwrap_or_else(|p| p.into_inner());
        recent.iter().rev().cloned().collect()
    }

    fn history(&self) -> Vec<crate::domain::Minute> {
        self.inner
            .history
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .last_hour(chrono::Utc::now())
    }
}

/// The gateway's routes: `/v1/models`, `/v1/chat/completions`, `/v1/completions`,
/// `/v1/embeddings`. No request timeout: a cold start may take minutes, bounded by each
/// service's load timeout instead.
pub fn router(gateway: Gateway) -> Router {
    Router::new()
        .route("/v1/models", get(forward::list_models))
        .route(
            "/v1/chat/completions",
            post(|state, headers, body| {
                forward::forward(state, "/v1/chat/completions", headers, body)
            }),
        )
        .route(
            "/v1/completions",
            post(|state, headers, body| forward::forward(state, "/v1/completions", headers, body)),
        )
        .route(
            "/v1/embeddings",
            post(|state, headers, body| forward::forward(state, "/v1/embeddings", headers, body)),
        )
        .route_layer(axum::middleware::from_fn(crate::metrics::tag_route))
        .method_not_allowed_fallback(|| async {
            OpenAiError {
                status: StatusCode::METHOD_NOT_ALLOWED,
                message: "this route takes POST (GET for /v1/models)".to_owned(),
                kind: "invalid_request_error",
                code: None,
                retry_after: None,
            }
        })
        .layer(DefaultBodyLimit::max(BODY_LIMIT_BYTES))
        .with_state(gateway)
}
