//! Starting a cold service on demand: one start per service however many requests wait
//! for it, all of them told the same outcome.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use futures::FutureExt;
use futures::future::{BoxFuture, Shared};
use tokio::sync::broadcast::error::RecvError;

use crate::daemon::Daemon;
use crate::domain::{EventKind, FailureCause, ServiceId, ServiceStatus};

/// Why a load did not end with the service running.
#[derive(Debug, Clone)]
pub(super) struct LoadError {
    /// The start's one-line reason.
    pub reason: String,
    /// The start was refused because its GPU memory was taken (by a start that looked
    /// at the same moment, say): making room and starting again can help.
    pub no_room: bool,
}

impl LoadError {
    fn other(reason: impl Into<String>) -> Self {
        Self {
            reason: reason.into(),
            no_room: false,
        }
    }
}

/// A start in progress.
type Load = Shared<BoxFuture<'static, Result<(), LoadError>>>;

/// Loads in progress, by service.
#[derive(Default)]
pub(super) struct Loads(Mutex<HashMap<ServiceId, Load>>);

impl Loads {
    /// Resolves once the service runs, starting it if nobody else is; every caller that
    /// arrives during one start waits on that start. `Ok(true)` for the one caller whose
    /// request began the start (a cold start, for the metrics).
    pub async fn ready(
        &self,
        daemon: &Daemon,
        id: &ServiceId,
        load_timeout: Duration,
    ) -> Result<bool, LoadError> {
        let (load, led) = {
            let mut loads = self.0.lock().unwrap_or_else(|p| p.into_inner());
            match loads.get(id) {
                Some(load) => (load.clone(), false),
                None => {
                    let load = start_and_wait(daemon.clone(), id.clone(), load_timeout)
                        .boxed()
                        .shared();
                    loads.insert(id.clone(), load.clone());
                    (load, true)
                }
            }
        };
        let outcome = load.clone().await.map(|()| led);
        // The first to finish clears it, so the next cold request starts afresh.
        let mut loads = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if loads.get(id).is_some_and(|current| current.ptr_eq(&load)) {
            loads.remove(id);
        }
        outcome
    }
}

/// Starts the service through the daemon's ordinary pipeline and waits for `running`.
async fn start_and_wait(
    daemon: Daemon,
    id: ServiceId,
    load_timeout: Duration,
) -> Result<(), LoadError> {
    // Subscribed before the start, so its outcome cannot slip past.
    let mut events = daemon.events().subscribe();
    let started = daemon
        .start_service(id.as_str())
        .await
        .map_err(|e| LoadError::other(e.to_string()))?;
    if started.status == ServiceStatus::Running {
        return Ok(());
    }
    let outcome = async {
        loop {
            match events.recv().await {
                Ok(event) if event.service_id() == Some(&id) => match event.kind {
                    EventKind::Status(ServiceStatus::Running) => return Ok(()),
                    EventKind::Status(ServiceStatus::Failed) => {
                        let no_room =
                            daemon.last_failure_cause(&id) == Some(FailureCause::GpuAdmission);
                        if no_room {
                            daemon
                                .events()
                                .publish(
                                    &id,
                                    EventKind::Note,
                                    "the gateway keeps the requests for it waiting and starts it again once there is room",
                                )
                                .await;
                        }
                        return Err(LoadError {
                            reason: format!("service {id} failed to start: {}", event.message),
                            no_room,
                        });
                    }
                    EventKind::Status(ServiceStatus::Stopping | ServiceStatus::Stopped) => {
                        return Err(LoadError::other(format!(
                            "service {id} was stopped while it loaded"
                        )));
                    }
                    _ => {}
                },
                Ok(_) => {}
                // Fell behind the bus: ask for the status itself.
                Err(RecvError::Lagged(_)) => {
                    match daemon.get_service(id.as_str()).await.map(|s| s.status) {
                        Ok(ServiceStatus::Running) => return Ok(()),
                        Ok(ServiceStatus::Starting) => {}
                        Ok(other) => {
                            return Err(LoadError::other(format!("service {id} is {other}")));
                        }
                        Err(e) => return Err(LoadError::other(e.to_string())),
                    }
                }
                Err(RecvError::Closed) => {
                    return Err(LoadError::other("the daemon is shutting down"));
                }
            }
        }
    };
    match tokio::time::timeout(load_timeout, outcome).await {
        Ok(result) => result,
        Err(_) => Err(LoadError::other(format!(
            "service {id} did not load within its load timeout of {}; raise --load-timeout or see 'aima service events {id}'",
            humantime::format_duration(load_timeout)
        ))),
    }
}
