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
}

/// The gateway as the API sees it.
pub trait TrafficSource: Send + Sync {
    /// Every service that has had a request.
    fn traffic(&self) -> Vec<ServiceTraffic>;
    /// The latest finished requests, newest first.
    fn recent_requests(&self) -> Vec<RecentRequest>;
    /// Appends the gateway's metrics in Prometheus' text format.
    fn render_metrics(&self, out: &mut String);
}
