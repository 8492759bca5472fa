//! Watches Docker's event stream for this instance's containers, so a container that
//! dies or is removed outside AIMA turns its service `failed` within moments. Every
//! (re)subscription first reconciles all services with Docker, so nothing that happened
//! while the daemon was down or Docker was away goes unnoticed.

use std::time::Duration;

use futures::StreamExt;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use super::{Daemon, Reconciled};
use crate::domain::ServiceId;

/// Pause before re-subscribing after Docker's stream broke (Docker restarting, unreachable).
const RESUBSCRIBE_PAUSE: Duration = Duration::from_secs(1);

/// Runs until `shutdown`. `first_reconcile` hears how the first reconciliation went.
pub(super) async fn run(
    daemon: Daemon,
    shutdown: CancellationToken,
    mut first_reconcile: Option<oneshot::Sender<Result<Reconciled, String>>>,
) {
    let labels = daemon.instance_labels();
    loop {
        // Docker replays events since this moment, so nothing falls between the
        // reconciliation below and the stream's first poll.
        let since = chrono::Utc::now().timestamp() - 1;
        let subscribed = tokio::select! {
            () = shutdown.cancelled() => return,
            stream = daemon.runtime().events(&labels, Some(since)) => stream,
        };
        match subscribed {
            Ok(mut events) => {
                let reconciled = daemon.reconcile().await.map_err(|e| e.to_string());
                match first_reconcile.take() {
                    Some(tx) => {
                        let _ = tx.send(reconciled);
                    }
                    None => {
                        if let Err(e) = reconciled {
                            tracing::warn!("reconciliation after docker came back failed: {e}");
                        }
                    }
                }
                loop {
                    let event = tokio::select! {
                        () = shutdown.cancelled() => return,
                        event = events.next() => event,
                    };
                    match event {
                        Some(Ok(event)) => {
                            let Some(service) = event
                                .labels
                                .get("aima.service")
                                .and_then(|s| s.parse::<ServiceId>().ok())
                            else {
                                continue;
                            };
                            let daemon = daemon.clone();
                            // Handled off the stream, so one slow cleanup never delays the next event.
                            match event.action.as_str() {
                                // A create this daemon did not ask for: a request a killed
                                // daemon left in flight, which Docker completed after reconciling.
                                "create" => tokio::spawn(async move {
                                    daemon.remove_if_stray(&service, &event.container_id).await;
                                }),
                                "die" | "destroy" => tokio::spawn(async move {
                                    daemon
                                        .fail_running(
                                            &service,
                                            &event.container_id,
                                            event.exit_code,
                                        )
                                        .await;
                                }),
                                _ => continue,
                            };
                        }
                        Some(Err(e)) => {
                            tracing::warn!("docker event stream failed: {e}; re-subscribing");
                            break;
                        }
                        None => break,
                    }
                }
            }
            Err(e) => {
                if let Some(tx) = first_reconcile.take() {
                    let _ = tx.send(Err(e.to_string()));
                }
                tracing::debug!("cannot watch docker events: {e}");
            }
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(RESUBSCRIBE_PAUSE) => {}
        }
    }
}
