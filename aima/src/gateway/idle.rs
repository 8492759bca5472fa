//! Idle unload: a running service with an idle timeout is stopped once no request has
//! been in flight for that long, counted from the end of the last request (or from when
//! it began running), never while a request is in flight. An ordinary stop: the port is
//! kept, the container removed, and the reason recorded.

use std::time::{Duration, Instant};

use super::Gateway;
use crate::domain::{EventKind, ServiceStatus};

/// How often idle services are looked for; unloads happen within this of the deadline.
const CHECK_EVERY: Duration = Duration::from_millis(250);

pub(super) async fn run(gateway: Gateway) {
    let shutdown = gateway.inner.daemon.shutdown_token();
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(CHECK_EVERY) => {}
        }
        let Ok(catalog) = gateway.inner.catalog.current(&gateway.inner.daemon).await else {
            continue;
        };
        for service in catalog
            .services
            .iter()
            .filter(|s| s.status == ServiceStatus::Running)
        {
            let Some(timeout) = service.serving.idle_timeout else {
                continue;
            };
            let traffic = gateway.traffic(&service.id);
            let running_for = (chrono::Utc::now() - service.updated_at)
                .to_std()
                .unwrap_or_default();
            let idle_for = |now: Instant| {
                traffic.last_ended().map_or(running_for, |(ended, _)| {
                    now.duration_since(ended).min(running_for)
                })
            };
            if traffic.in_flight() > 0 || idle_for(Instant::now()) < timeout {
                continue;
            }
            // From here until the engine is stopped no request enters; one that entered
            // before this point is counted and keeps the engine.
            let _closed = traffic.gate.write().await;
            let idle = idle_for(Instant::now());
            if traffic.in_flight() > 0 || idle < timeout {
                continue;
            }
            let reason = format!(
                "unloaded by the gateway: no request for {} (idle timeout {})",
                humantime::format_duration(whole_seconds(idle)),
                humantime::format_duration(timeout)
            );
            tracing::info!(service = %service.id, "{reason}");
            gateway
                .inner
                .metrics
                .idle_unload(&catalog.target_of(service));
            let daemon = &gateway.inner.daemon;
            daemon
                .events()
                .publish(&service.id, EventKind::Note, reason.clone())
                .await;
            if let Err(e) = daemon
                .stop_service_because(service.id.as_str(), Some(reason))
                .await
            {
                tracing::warn!(service = %service.id, "idle unload failed: {e}");
            }
        }
    }
}

fn whole_seconds(d: Duration) -> Duration {
    Duration::from_secs(d.as_secs())
}
