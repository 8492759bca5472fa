//! The daemon's Prometheus metrics, through prometheus-client: what happened (counters and
//! histograms the daemon and the HTTP server record as things happen) and what is
//! (gauges read from the store, the GPUs and `/proc` when `/metrics` is scraped).
//! The gateway keeps its own metrics (`gateway/metrics.rs`); `/metrics` serves both.

mod http;
mod process;
mod state;

pub use http::{RouteLabel, record_http, tag_route};
pub use state::{GpuState, ServiceState, State};

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::domain::{FailureCause, StartPhase};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EngineResult {
    engine: String,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EngineCause {
    engine: String,
    cause: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EnginePhase {
    engine: String,
    phase: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ServiceEngine {
    service: String,
    engine: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Engine {
    engine: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteCode {
    method: String,
    route: String,
    code: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Route {
    method: String,
    route: String,
}

type Timings<L> = Family<L, Histogram, fn() -> Histogram>;

/// 1 ms to about 9 minutes, doubling: HTTP answers and probes at the short end, model
/// loads at the long end.
fn seconds() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 20))
}

/// How a start ended, as the `result` label says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartResult {
    Running,
    Failed,
    /// Stopped before it finished.
    Cancelled,
}

impl StartResult {
    fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
        }
    }
}

/// Everything the daemon counts as it happens.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    starts: Family<EngineResult, Counter>,
    start_seconds: Timings<EngineResult>,
    phase_seconds: Timings<EnginePhase>,
    failures: Family<EngineCause, Counter>,
    probe_failures: Family<ServiceEngine, Counter>,
    probe_seconds: Timings<Engine>,
    restarts: Family<ServiceEngine, Counter>,
    http_requests: Family<RouteCode, Counter>,
    http_seconds: Timings<Route>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("aima");
        let metrics = Self {
            starts: Family::default(),
            start_seconds: Timings::new_with_constructor(seconds),
            phase_seconds: Timings::new_with_constructor(seconds),
            failures: Family::default(),
            probe_failures: Family::default(),
            probe_seconds: Timings::new_with_constructor(seconds),
            restarts: Family::default(),
            http_requests: Family::default(),
            http_seconds: Timings::new_with_constructor(seconds),
            registry: Registry::default(),
        };
        registry.register(
            "service_starts",
            "Service starts by engine and how they ended (running, failed, cancelled)",
            metrics.starts.clone(),
        );
        registry.register(
            "service_start_duration_seconds",
            "From a start's first phase to its end, by engine and result",
            metrics.start_seconds.clone(),
        );
        registry.register(
            "service_start_phase_duration_seconds",
            "Time spent in each start phase (validate, gpu, cleanup, port_check, image, create, start, health)",
            metrics.phase_seconds.clone(),
        );
        registry.register(
            "service_failures",
            "Services that turned failed, by engine and cause",
            metrics.failures.clone(),
        );
        registry.register(
            "health_probe_failures",
            "Health probes of running engines that got no healthy answer",
            metrics.probe_failures.clone(),
        );
        registry.register(
            "health_probe_duration_seconds",
            "Time a running engine took to answer its health probe",
            metrics.probe_seconds.clone(),
        );
        registry.register(
            "service_restarts",
            "Restarts the restart policy began, per service",
            metrics.restarts.clone(),
        );
        registry.register(
            "http_requests",
            "HTTP requests to the daemon by method, route and status code",
            metrics.http_requests.clone(),
        );
        registry.register(
            "http_request_duration_seconds",
            "Time from a request's arrival to its answer's head, by method and route",
            metrics.http_seconds.clone(),
        );
        Self {
            registry,
            ..metrics
        }
    }
}

impl Metrics {
    /// A start reached its end: `took` since its first phase.
    pub fn start_ended(&self, engine: &str, result: StartResult, took: Duration) {
        let labels = EngineResult {
            engine: engine.to_owned(),
            result: result.as_str(),
        };
        self.starts.get_or_create(&labels).inc();
        self.start_seconds
            .get_or_create(&labels)
            .observe(took.as_secs_f64());
    }

    /// A start spent `took` in `phase`.
    pub fn phase_took(&self, engine: &str, phase: StartPhase, took: Duration) {
        self.phase_seconds
            .get_or_create(&EnginePhase {
                engine: engine.to_owned(),
                phase: phase.as_str(),
            })
            .observe(took.as_secs_f64());
    }

    pub fn failed(&self, engine: &str, cause: FailureCause) {
        self.failures
            .get_or_create(&EngineCause {
                engine: engine.to_owned(),
                cause: cause.as_str(),
            })
            .inc();
    }

    /// The restart policy began a restart of `service`.
    pub fn restarted(&self, service: &str, engine: &str) {
        self.restarts
            .get_or_create(&ServiceEngine {
                service: service.to_owned(),
                engine: engine.to_owned(),
            })
            .inc();
    }

    /// One health probe of a running engine: how long it took and whether it passed.
    pub fn probed(&self, service: &str, engine: &str, took: Duration, healthy: bool) {
        self.probe_seconds
            .get_or_create(&Engine {
                engine: engine.to_owned(),
            })
            .observe(took.as_secs_f64());
        if !healthy {
            self.probe_failures
                .get_or_create(&ServiceEngine {
                    service: service.to_owned(),
                    engine: engine.to_owned(),
                })
                .inc();
        }
    }

    pub fn answered(&self, method: &str, route: &str, code: u16, took: Duration) {
        self.http_requests
            .get_or_create(&RouteCode {
                method: method.to_owned(),
                route: route.to_owned(),
                code,
            })
            .inc();
        self.http_seconds
            .get_or_create(&Route {
                method: method.to_owned(),
                route: route.to_owned(),
            })
            .observe(took.as_secs_f64());
    }

    /// Appends this process's metrics, then the state's, in Prometheus' text format.
    pub fn render(&self, state: &State, out: &mut String) {
        for registry in [&self.registry, &state.registry(), &process::registry()] {
            if let Err(e) = prometheus_client::encoding::text::encode_registry(out, registry) {
                tracing::warn!("cannot encode the metrics: {e}");
            }
        }
    }
}
