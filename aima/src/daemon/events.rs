use chrono::Utc;
use tokio::sync::broadcast;

use crate::domain::{EventKind, ServiceEvent, ServiceId};
use crate::store::{Store, StoreError};

/// How many events a slow subscriber may fall behind before it re-reads from the store.
const BUS_CAPACITY: usize = 1024;

/// The in-process event bus: every event is stored first (so history and SSE replay
/// agree), then broadcast to live subscribers.
#[derive(Debug, Clone)]
pub struct EventBus {
    store: Store,
    sender: broadcast::Sender<ServiceEvent>,
    /// Storing (which numbers the event) and sending happen under one lock, so live
    /// subscribers see events in `seq` order and skip none.
    order: std::sync::Arc<tokio::sync::Mutex<()>>,
}

impl EventBus {
    pub fn new(store: Store) -> Self {
        let (sender, _) = broadcast::channel(BUS_CAPACITY);
        Self {
            store,
            sender,
            order: std::sync::Arc::default(),
        }
    }

    /// Records and broadcasts an event. A failed write is logged and the event is still
    /// delivered live: losing history must not also blind the operator watching now.
    pub async fn publish(
        &self,
        service_id: &ServiceId,
        kind: EventKind,
        message: impl Into<String>,
    ) {
        let _in_order = self.order.lock().await;
        // Messages quote engine output and host commands: keep each to one line.
        let message = crate::domain::one_line(&message.into());
        let mut event = ServiceEvent::new(service_id.clone(), kind, message, Utc::now());
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
            Err(e) => tracing::error!(service = %service_id, "event not stored: {e}"),
        }
        tracing::debug!(service = %service_id, kind = ?event.kind, "{}", event.message);
        // No subscribers is normal; nothing else can fail here.
        let _ = self.sender.send(event);
    }

    /// Live events from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<ServiceEvent> {
        self.sender.subscribe()
    }

    /// Stored events after `after_seq`, for one service or all.
    pub async fn history(
        &self,
        service: Option<ServiceId>,
        after_seq: i64,
    ) -> Result<Vec<ServiceEvent>, StoreError> {
        self.store
            .run(move |store| store.events(service.as_ref(), after_seq))
            .await
    }

    /// The newest stored sequence number (0 when there is none).
    pub async fn latest_seq(&self) -> Result<i64, StoreError> {
        self.store.run(|store| store.latest_event_seq()).await
    }
}
