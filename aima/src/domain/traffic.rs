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

/// The gateway as the API sees it.
pub trait TrafficSource: Send + Sync {
    /// Every service that has had a request.
    fn traffic(&self) -> Vec<ServiceTraffic>;
    /// Appends the gateway's metrics in Prometheus' text format.
    fn render_metrics(&self, out: &mut String);
}
