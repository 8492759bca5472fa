use std::fmt;

use chrono::{DateTime, Utc};

use super::{ServiceId, ServiceStatus};

/// The steps of a start, in order; each is published as it begins.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StartPhase {
    Validate,
    /// GPU admission: the memory claim, and waiting for another engine to finish loading.
    Gpu,
    Cleanup,
    PortCheck,
    Image,
    Create,
    Start,
    Health,
}

impl StartPhase {
    pub const ALL: [StartPhase; 8] = [
        Self::Validate,
        Self::Gpu,
        Self::Cleanup,
        Self::PortCheck,
        Self::Image,
        Self::Create,
        Self::Start,
        Self::Health,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Validate => "validate",
            Self::Gpu => "gpu",
            Self::Cleanup => "cleanup",
            Self::PortCheck => "port_check",
            Self::Image => "image",
            Self::Create => "create",
            Self::Start => "start",
            Self::Health => "health",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.as_str() == s)
    }
}

impl fmt::Display for StartPhase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// A start phase began.
    Phase(StartPhase),
    /// The service's status changed; the message is the reason.
    Status(ServiceStatus),
    /// Something worth telling that changes no status (an attempt retried, pull progress).
    Note,
    /// The service was deleted; its history stays in the global stream, an audit trail.
    Deleted,
}

/// One entry of a service's history, kept in SQLite and streamed to subscribers.
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceEvent {
    /// Assigned by the store; increases across all services.
    pub seq: i64,
    pub service_id: ServiceId,
    pub at: DateTime<Utc>,
    pub kind: EventKind,
    pub message: String,
}

impl ServiceEvent {
    pub fn new(
        service_id: ServiceId,
        kind: EventKind,
        message: impl Into<String>,
        at: DateTime<Utc>,
    ) -> Self {
        Self {
            seq: 0,
            service_id,
            at,
            kind,
            message: message.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phases_have_the_names_the_wire_and_the_harness_use() {
        let names: Vec<&str> = StartPhase::ALL
            .into_iter()
            .map(StartPhase::as_str)
            .collect();
        assert_eq!(
            names,
            [
                "validate",
                "gpu",
                "cleanup",
                "port_check",
                "image",
                "create",
                "start",
                "health"
            ]
        );
        for phase in StartPhase::ALL {
            assert_eq!(StartPhase::parse(phase.as_str()), Some(phase));
            assert_eq!(phase.to_string(), phase.as_str());
        }
        assert_eq!(StartPhase::parse("port-check"), None);
        assert_eq!(StartPhase::parse(""), None);
    }
}
