//! Keeps "running" honest: a running service's engine must keep answering its health
//! path. An engine that stops answering (hung, deadlocked) while its container still runs
//! is marked `failed` after a few misses in a row, and its container removed.

use std::collections::HashMap;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::Daemon;
use crate::domain::{ServiceId, ServiceStatus};

/// How often running services are probed.
const PROBE_EVERY: Duration = Duration::from_secs(2);
/// A slow answer under load is not a miss until it takes this long.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// Misses in a row before a service is declared failed (about 10-20 s of silence).
const MISSES_ALLOWED: u32 = 5;

pub(super) async fn run(daemon: Daemon, shutdown: CancellationToken) {
    let Ok(http) = reqwest::Client::builder()
        .no_proxy()
        .timeout(PROBE_TIMEOUT)
        .build()
    else {
        return;
    };
    let mut misses: HashMap<ServiceId, u32> = HashMap::new();
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(PROBE_EVERY) => {}
        }
        let Ok(services) = daemon.list_services().await else {
            continue;
        };
        let running: Vec<_> = services
            .into_iter()
            .filter(|s| s.status == ServiceStatus::Running)
            .collect();
        misses.retain(|id, _| running.iter().any(|s| &s.id == id));
        for service in running {
            let Some(engine) = daemon.inner.engines.get(&service.engine) else {
                continue;
            };
            let url = format!(
                "http://127.0.0.1:{}{}",
                service.port, engine.spec.health_path
            );
            let healthy = http
                .get(&url)
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            let count = misses.entry(service.id.clone()).or_default();
            *count = if healthy { 0 } else { *count + 1 };
            if *count >= MISSES_ALLOWED {
                misses.remove(&service.id);
                if let Some(container) = service.container_id.as_deref() {
                    let reason = format!(
                        "engine stopped answering {} for {} s while its container ran",
                        engine.spec.health_path,
                        (PROBE_EVERY * MISSES_ALLOWED).as_secs()
                    );
                    daemon.fail_unhealthy(&service.id, container, reason).await;
                }
            }
        }
    }
}
