use std::fmt;

use chrono::{DateTime, Utc};

use super::{Invalid, ModelId, ServiceId, ServiceStatus};

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
    /// A model was registered.
    Created,
    /// The restart policy began a restart after the back-off; the message says which.
    Restarted,
    /// The service or model was deleted; its history stays in the global stream, an
    /// audit trail.
    Deleted,
}

/// What an event is about: a service, or a model.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum EventSubject {
    Service(ServiceId),
    Model(ModelId),
}

impl EventSubject {
    pub fn as_str(&self) -> &str {
        match self {
            Self::Service(id) => id.as_str(),
            Self::Model(id) => id.as_str(),
        }
    }
}

impl fmt::Display for EventSubject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for EventSubject {
    type Err = Invalid;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.parse()
            .map(Self::Service)
            .or_else(|_| s.parse().map(Self::Model))
            .map_err(|_| {
                Invalid::new(
                    "id",
                    format!("'{s}' is neither a service id nor a model id"),
                )
            })
    }
}

impl From<ServiceId> for EventSubject {
    fn from(id: ServiceId) -> Self {
        Self::Service(id)
    }
}

impl From<ModelId> for EventSubject {
    fn from(id: ModelId) -> Self {
        Self::Model(id)
    }
}

/// One entry of a service's or a model's history, kept in SQLite and streamed to
/// subscribers.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// Assigned by the store; increases across all subjects.
    pub seq: i64,
    pub subject: EventSubject,
    pub at: DateTime<Utc>,
    pub kind: EventKind,
    pub message: String,
}

impl Event {
    pub fn new(
        subject: impl Into<EventSubject>,
        kind: EventKind,
        message: impl Into<String>,
        at: DateTime<Utc>,
    ) -> Self {
        Self {
            seq: 0,
            subject: subject.into(),
            at,
            kind,
            message: message.into(),
        }
    }

    /// The service this event is about, if it is about one.
    pub fn service_id(&self) -> Option<&ServiceId> {
        match &self.subject {
            EventSubject::Service(id) => Some(id),
            EventSubject::Model(_) => None,
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
