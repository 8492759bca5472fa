use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use chrono::Utc;
use tokio::sync::broadcast;

use crate::domain::{
    Event, EventKind, EventSubject, ModelId, ServiceId, ServiceStatus, StartPhase,
};
use crate::metrics::{Metrics, StartResult};
use crate::store::{Store, StoreError};

/// How many events a slow subscriber may fall behind before it re-reads from the store.
const BUS_CAPACITY: usize = 1024;

/// The in-process event bus: every event is stored first (so history and SSE replay
/// agree), then broadcast to live subscribers.
#[derive(Debug, Clone)]
pub struct EventBus {
    store: Store,
    sender: broadcast::Sender<Event>,
    /// Storing (which numbers the event) and sending happen under one lock, so live
    /// subscribers see events in `seq` order and skip none.
    order: std::sync::Arc<tokio::sync::Mutex<()>>,
    /// Starts in progress, timed from their phase events.
    clocks: Arc<Mutex<HashMap<ServiceId, StartClock>>>,
    metrics: Arc<Metrics>,
}

/// When a start began and which phase it is in since when.
#[derive(Debug)]
struct StartClock {
    began: Instant,
    phase: StartPhase,
    phase_began: Instant,
}

impl EventBus {
    pub fn new(store: Store, metrics: Arc<Metrics>) -> Self {
        let (sender, _) = broadcast::channel(BUS_CAPACITY);
        Self {
            store,
            sender,
            order: std::sync::Arc::default(),
            clocks: Arc::default(),
            metrics,
        }
    }

    /// Times starts from the events that tell their story: a phase ends when the next
    /// begins, a start when its status turns running, failed, or stopping (cancelled).
    fn time_start(&self, service_id: &ServiceId, kind: &EventKind) {
        let now = Instant::now();
        let engine = service_id.engine();
        let mut clocks = self.clocks.lock().unwrap_or_else(|p| p.into_inner());
        match kind {
            EventKind::Phase(phase) => {
                let clock = clocks.entry(service_id.clone()).or_insert(StartClock {
                    began: now,
                    phase: *phase,
                    phase_began: now,
                });
                if clock.phase != *phase {
                    self.metrics
                        .phase_took(engine, clock.phase, now - clock.phase_began);
                    clock.phase = *phase;
                    clock.phase_began = now;
                }
            }
            EventKind::Status(status) => {
                let result = match status {
                    ServiceStatus::Running => StartResult::Running,
                    ServiceStatus::Failed => StartResult::Failed,
                    ServiceStatus::Stopping | ServiceStatus::Stopped => StartResult::Cancelled,
                    _ => return,
                };
                if let Some(clock) = clocks.remove(service_id) {
                    self.metrics
                        .phase_took(engine, clock.phase, now - clock.phase_began);
                    self.metrics.start_ended(engine, result, now - clock.began);
                }
            }
            _ => {}
        }
    }

    /// Records and broadcasts an event about a service.
    pub async fn publish(
        &self,
        service_id: &ServiceId,
        kind: EventKind,
        message: impl Into<String>,
    ) {
        self.publish_about(service_id.clone().into(), kind, message.into())
            .await;
    }

    /// Records and broadcasts an event about a model.
    pub async fn publish_model(&self, model_id: &ModelId, kind: EventKind, message: String) {
        self.publish_about(model_id.clone().into(), kind, message)
            .await;
    }

    /// Records and broadcasts an event. A failed write is logged and the event is still
    /// delivered live: losing history must not also blind the operator watching now.
    async fn publish_about(&self, subject: EventSubject, kind: EventKind, message: String) {
        let _in_order = self.order.lock().await;
        if let EventSubject::Service(service_id) = &subject {
            self.time_start(service_id, &kind);
        }
        // Messages quote engine output and host commands: keep each to one line.
        let message = crate::domain::one_line(&message);
        let mut event = Event::new(subject.clone(), kind, message, Utc::now());
        let stored = event.clone();
        match self
            .store
            .run(move |store| {
                let mut stored = stored;
                store.insert_event(&mut stored).map(|()| stored.seq)
            })
            .await
        {
            Ok(seq) => event.seq = seq,
            Err(e) => tracing::error!(%subject, "event not stored: {e}"),
        }
        tracing::debug!(%subject, kind = ?event.kind, "{}", event.message);
        // No subscribers is normal; nothing else can fail here.
        let _ = self.sender.send(event);
    }

    /// Live events from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.sender.subscribe()
    }

    /// Stored events after `after_seq`, about one subject or all.
    pub async fn history(
        &self,
        subject: Option<EventSubject>,
        after_seq: i64,
    ) -> Result<Vec<Event>, StoreError> {
        self.store
            .run(move |store| store.events(subject.as_ref(), after_seq))
            .await
    }

    /// The newest stored sequence number (0 when there is none).
    pub async fn latest_seq(&self) -> Result<i64, StoreError> {
        self.store.run(|store| store.latest_event_seq()).await
    }
}
