//! What the model gateway knows of each service's requests, as the API shows it (`aima
//! ps`, `/metrics`) without depending on the gateway.

use chrono::{DateTime, Utc};

use super::ServiceId;

/// One service's requests through the gateway.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceTraffic {
    pub service_id: ServiceId,
    /// Requests being answered now.
    pub in_flight: usize,
    /// When the last request ended.
    pub last_request_at: Option<DateTime<Utc>>,
}

/// One finished gateway request, for the dashboard's activity list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecentRequest {
    /// When it arrived.
    pub at: DateTime<Utc>,
    /// The `model` it asked for.
    pub model: String,
    /// The service that answered; empty when none was found.
    pub service: String,
    pub status: u16,
    /// From arrival to the answer's last byte.
    pub duration: std::time::Duration,
    /// From arrival to the first byte of the answer's body.
    pub first_byte: Option<std::time::Duration>,
    /// Prompt and completion tokens, as the engine reported them.
    pub tokens: Option<(u64, u64)>,
    /// Whether the answer was an event stream (its first byte is its first token).
    pub streamed: bool,
}

/// How fast a service answered lately.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Speed {
    /// Completion tokens per second of generating: after the first token for a stream,
    /// over the whole answer otherwise.
    pub tokens_per_second: Option<f64>,
    /// The mean time from arrival to the first token of its streamed answers.
    pub time_to_first_token: Option<std::time::Duration>,
}

/// The speed of `service`'s successful answers that arrived since `since`.
pub fn speed(requests: &[RecentRequest], service: &str, since: DateTime<Utc>) -> Speed {
    let answered = || {
        requests
            .iter()
            .filter(move |r| r.service == service && r.status == 200 && r.at >= since)
    };
    let (mut tokens, mut seconds) = (0u64, 0f64);
    for r in answered() {
        let Some((_, completion)) = r.tokens else {
            continue;
        };
        let generating = match (r.streamed, r.first_byte) {
            (true, Some(first)) => r.duration.saturating_sub(first),
            _ => r.duration,
        };
        if completion > 0 && !generating.is_zero() {
            tokens += completion;
            seconds += generating.as_secs_f64();
        }
    }
    let firsts: Vec<std::time::Duration> = answered()
        .filter(|r| r.streamed)
        .filter_map(|r| r.first_byte)
        .collect();
    Speed {
        #[allow(clippy::cast_precision_loss)] // token counts stay far below 2^52
        tokens_per_second: (seconds > 0.0).then(|| tokens as f64 / seconds),
        time_to_first_token: u32::try_from(firsts.len())
            .ok()
            .filter(|n| *n > 0)
            .map(|n| firsts.iter().sum::<std::time::Duration>() / n),
    }
}

/// The gateway as the API sees it.
pub trait TrafficSource: Send + Sync {
    /// Every service that has had a request.
    fn traffic(&self) -> Vec<ServiceTraffic>;
    /// The latest finished requests, newest first.
    fn recent_requests(&self) -> Vec<RecentRequest>;
    /// Appends the gateway's metrics in Prometheus' text format.
    fn render_metrics(&self, out: &mut String);
    /// The last hour, a minute at a time.
    fn history(&self) -> Vec<super::Minute>;
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn answer(
        service: &str,
        streamed: bool,
        first_ms: u64,
        total_ms: u64,
        tokens: u64,
    ) -> RecentRequest {
        RecentRequest {
            at: Utc::now(),
            model: "m".into(),
            service: service.into(),
            status: 200,
            duration: Duration::from_millis(total_ms),
            first_byte: Some(Duration::from_millis(first_ms)),
            tokens: Some((5, tokens)),
            streamed,
        }
    }

    #[test]
    fn speed_counts_generating_time_after_the_first_token_of_streams() {
        let since = Utc::now() - chrono::Duration::minutes(5);
        let requests = [
            // 100 tokens in the 2 s after a 0.5 s first token; 50 in 1 s unstreamed.
            answer("a", true, 500, 2500, 100),
            answer("a", false, 1000, 1000, 50),
            answer("b", true, 100, 200, 1000),
            RecentRequest {
                status: 500,
                ..answer("a", true, 1, 2, 1_000_000)
            },
        ];
        let a = speed(&requests, "a", since);
        assert_eq!(a.tokens_per_second, Some(50.0));
        assert_eq!(a.time_to_first_token, Some(Duration::from_millis(500)));
        assert_eq!(speed(&requests, "c", since), Speed::default());
        let later = Utc::now() + chrono::Duration::minutes(1);
        assert_eq!(speed(&requests, "a", later), Speed::default());
    }
}
