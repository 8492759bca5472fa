//! What the gateway counts, per service and model: requests by status code, time to the
//! answer's head and to a stream's first token, whole durations, queue waits, cold
//! starts, idle unloads, tokens the engines report in `usage` and how fast they came,
//! and what is queued and in flight now. Served in
//! Prometheus text at `/metrics`, after the daemon's own metrics.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Which service answered, and for which model.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Target {
    pub model: String,
    pub service: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Answered {
    model: String,
    service: String,
    code: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Tokens {
    model: String,
    service: String,
    kind: &'static str,
}

type Timings = Family<Target, Histogram, fn() -> Histogram>;

/// 1 ms to about 9 minutes, doubling.
fn timing() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 20))
}

/// 1 to 8192 tokens per second, doubling.
fn speeds() -> Histogram {
    Histogram::new(exponential_buckets(1.0, 2.0, 14))
}

/// The gateway's metrics and their registry.
#[derive(Debug)]
pub struct GatewayMetrics {
    registry: Registry,
    requests: Family<Answered, Counter>,
    time_to_head: Timings,
    time_to_first_token: Timings,
    generation_speed: Timings,
    duration: Timings,
    queue_wait: Timings,
    cold_starts: Family<Target, Counter>,
    idle_unloads: Family<Target, Counter>,
    evictions: Family<Target, Counter>,
    tokens: Family<Tokens, Counter>,
    in_flight: Family<Target, Gauge>,
    queued: Gauge,
}

impl Default for GatewayMetrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("aima_gateway");
        let requests = Family::<Answered, Counter>::default();
        let time_to_head = Timings::new_with_constructor(timing);
        let time_to_first_token = Timings::new_with_constructor(timing);
        let generation_speed = Timings::new_with_constructor(speeds);
        let duration = Timings::new_with_constructor(timing);
        let queue_wait = Timings::new_with_constructor(timing);
        let cold_starts = Family::<Target, Counter>::default();
        let idle_unloads = Family::<Target, Counter>::default();
        let evictions = Family::<Target, Counter>::default();
        let tokens = Family::<Tokens, Counter>::default();
        let in_flight = Family::<Target, Gauge>::default();
        let queued = Gauge::default();
        registry.register(
            "requests",
            "Gateway requests by the status code of the answer",
            requests.clone(),
        );
        registry.register(
            "time_to_head_seconds",
            "From a request's arrival to the engine's answer head (cold starts and queue waits included)",
            time_to_head.clone(),
        );
        registry.register(
            "time_to_first_token_seconds",
            "From a streamed request's arrival to its first token (cold starts and queue waits included)",
            time_to_first_token.clone(),
        );
        registry.register(
            "completion_tokens_per_second",
            "Completion tokens per second of each answer, after its first token when streamed",
            generation_speed.clone(),
        );
        registry.register(
            "request_duration_seconds",
            "From a request's arrival to the last byte of its answer",
            duration.clone(),
        );
        registry.register(
            "queue_wait_seconds",
            "Time requests waited for a turn at an engine with --max-concurrency",
            queue_wait.clone(),
        );
        registry.register(
            "cold_starts",
            "Engines the gateway started because a request came for them",
            cold_starts.clone(),
        );
        registry.register(
            "idle_unloads",
            "Engines the gateway stopped after their idle timeout",
            idle_unloads.clone(),
        );
        registry.register(
            "evictions",
            "Idle engines the gateway stopped to make room on a GPU for another",
            evictions.clone(),
        );
        registry.register(
            "tokens",
            "Prompt and completion tokens, as the engines report them in usage",
            tokens.clone(),
        );
        registry.register(
            "in_flight",
            "Requests being answered now",
            in_flight.clone(),
        );
        registry.register(
            "queued",
            "Requests waiting for a turn at a busy engine now",
            queued.clone(),
        );
        Self {
            registry,
            requests,
            time_to_head,
            time_to_first_token,
            generation_speed,
            duration,
            queue_wait,
            cold_starts,
            idle_unloads,
            evictions,
            tokens,
            in_flight,
            queued,
        }
    }
}

impl GatewayMetrics {
    pub fn answered(&self, target: &Target, code: u16) {
        self.requests
            .get_or_create(&Answered {
                model: target.model.clone(),
                service: target.service.clone(),
                code,
            })
            .inc();
    }

    pub fn head_after(&self, target: &Target, elapsed: std::time::Duration) {
        self.time_to_head
            .get_or_create(target)
            .observe(elapsed.as_secs_f64());
    }

    pub fn first_token_after(&self, target: &Target, elapsed: std::time::Duration) {
        self.time_to_first_token
            .get_or_create(target)
            .observe(elapsed.as_secs_f64());
    }

    /// An answer of `completion` tokens generated in `took`.
    pub fn generated(&self, target: &Target, completion: u64, took: std::time::Duration) {
        if completion > 0 && !took.is_zero() {
            #[allow(clippy::cast_precision_loss)] // token counts stay far below 2^52
            self.generation_speed
                .get_or_create(target)
                .observe(completion as f64 / took.as_secs_f64());
        }
    }

    pub fn finished_after(&self, target: &Target, elapsed: std::time::Duration) {
        self.duration
            .get_or_create(target)
            .observe(elapsed.as_secs_f64());
    }

    pub fn waited_for_turn(&self, target: &Target, elapsed: std::time::Duration) {
        self.queue_wait
            .get_or_create(target)
            .observe(elapsed.as_secs_f64());
    }

    pub fn cold_start(&self, target: &Target) {
        self.cold_starts.get_or_create(target).inc();
    }

    pub fn idle_unload(&self, target: &Target) {
        self.idle_unloads.get_or_create(target).inc();
    }

    /// `victim` was stopped to make room for `for_whom`.
    pub fn eviction(&self, victim: &Target, for_whom: &Target) {
        tracing::debug!(victim = %victim.service, for_whom = %for_whom.service, "eviction");
        self.evictions.get_or_create(victim).inc();
    }

    pub fn usage(&self, target: &Target, prompt: u64, completion: u64) {
        for (kind, count) in [("prompt", prompt), ("completion", completion)] {
            self.tokens
                .get_or_create(&Tokens {
                    model: target.model.clone(),
                    service: target.service.clone(),
                    kind,
                })
                .inc_by(count);
        }
    }

    pub fn in_flight(&self, target: &Target) -> Gauge {
        self.in_flight.get_or_create(target).clone()
    }

    pub fn queued(&self) -> &Gauge {
        &self.queued
    }

    /// Appends the metrics in Prometheus' text format.
    pub fn render(&self, out: &mut String) {
        if let Err(e) = prometheus_client::encoding::text::encode_registry(out, &self.registry) {
            tracing::warn!("cannot encode the gateway metrics: {e}");
        }
    }
}

/// Finds the token counts in an answer as it streams by: the `usage` object of a JSON
/// answer, or of the event that carries it in an event stream. Keeps at most one line
/// (events) or one bounded body (JSON), so a long answer costs no memory.
#[derive(Debug, Default)]
pub struct UsageTap {
    streaming: bool,
    pending: Vec<u8>,
    gave_up: bool,
    found: Option<(u64, u64)>,
}

/// Largest JSON answer kept to read its usage.
const JSON_KEPT_BYTES: usize = 1 << 20;

impl UsageTap {
    pub fn new(streaming: bool) -> Self {
        Self {
            streaming,
            ..Self::default()
        }
    }

    pub fn feed(&mut self, chunk: &[u8]) {
        if self.gave_up {
            return;
        }
        self.pending.extend_from_slice(chunk);
        if !self.streaming {
            if self.pending.len() > JSON_KEPT_BYTES {
                self.gave_up = true;
                self.pending = Vec::new();
            }
            return;
        }
        while let Some(end) = self.pending.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = self.pending.drain(..=end).collect();
            if let Some(data) = line.strip_prefix(b"data: ")
                && let Some(usage) = usage_of(data)
            {
                self.found = Some(usage);
            }
        }
        if self.pending.len() > JSON_KEPT_BYTES {
            self.pending.clear();
        }
    }

    /// (prompt, completion) tokens, if the answer said.
    pub fn finish(mut self) -> Option<(u64, u64)> {
        if !self.streaming && !self.gave_up {
            self.found = usage_of(&self.pending);
        }
        self.found
    }
}

fn usage_of(json: &[u8]) -> Option<(u64, u64)> {
    if !json.windows(7).any(|w| w == b"\"usage\"") {
        return None;
    }
    let value: serde_json::Value = serde_json::from_slice(json).ok()?;
    let usage = value.get("usage")?;
    Some((
        usage.get("prompt_tokens")?.as_u64()?,
        usage
            .get("completion_tokens")
            .and_then(|c| c.as_u64())
            .unwrap_or(0),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_is_found_in_json_and_in_event_streams_split_anywhere() {
        let mut json = UsageTap::new(false);
        let body = br#"{"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":7,"total_tokens":10}}"#;
        json.feed(&body[..20]);
        json.feed(&body[20..]);
        assert_eq!(json.finish(), Some((3, 7)));

        let stream = b"data: {\"choices\":[{\"delta\":{\"content\":\"hi\"}}]}\n\ndata: {\"choices\":[],\"usage\":{\"prompt_tokens\":2,\"completion_tokens\":5}}\n\ndata: [DONE]\n\n";
        let mut tap = UsageTap::new(true);
        for piece in stream.chunks(9) {
            tap.feed(piece);
        }
        assert_eq!(tap.finish(), Some((2, 5)));

        let mut none = UsageTap::new(true);
        none.feed(b"data: {\"choices\":[]}\n\ndata: [DONE]\n\n");
        assert_eq!(none.finish(), None);
    }
}
