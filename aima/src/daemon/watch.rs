//! Watches Docker's event stream for this instance's containers, so a container that
//! dies or is removed outside AIMA turns its service `failed` within moments.

use std::time::Duration;

use futures::StreamExt;
use tokio_util::sync::CancellationToken;

use super::Daemon;
use crate::domain::ServiceId;

/// Pause before re-subscribing after Docker's stream broke (Docker restarting, unreachable).
const RESUBSCRIBE_PAUSE: Duration = Duration::from_secs(1);

pub(super) async fn run(daemon: Daemon, shutdown: CancellationToken) {
    let labels = daemon.instance_labels();
    loop {
        let stream = tokio::select! {
            () = shutdown.cancelled() => return,
            stream = daemon.runtime().events(&labels) => stream,
        };
        match stream {
            Ok(mut events) => loop {
                let event = tokio::select! {
                    () = shutdown.cancelled() => return,
                    event = events.next() => event,
                };
                match event {
                    Some(Ok(event)) if matches!(event.action.as_str(), "die" | "destroy") => {
                        let Some(service) = event
                            .labels
                            .get("aima.service")
                            .and_then(|s| s.parse::<ServiceId>().ok())
                        else {
                            continue;
                        };
                        let daemon = daemon.clone();
                        // Handle off the stream so one slow cleanup never delays the next event.
                        tokio::spawn(async move {
                            daemon
                                .fail_running(&service, &event.container_id, event.exit_code)
                                .await;
                        });
                    }
                    Some(Ok(_)) => {}
                    Some(Err(e)) => {
                        tracing::warn!("docker event stream failed: {e}; re-subscribing");
                        break;
                    }
                    None => break,
                }
            },
            Err(e) => tracing::debug!("cannot watch docker events: {e}"),
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(RESUBSCRIBE_PAUSE) => {}
        }
    }
}
