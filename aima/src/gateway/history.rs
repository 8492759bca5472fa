//! Samples the memory services claim into the gateway's history every few seconds, so
//! the dashboard's memory chart has a point for every minute, requests or not.

use std::collections::BTreeMap;
use std::time::Duration;

use super::Gateway;

/// How often the claims are looked at.
const SAMPLE_EVERY: Duration = Duration::from_secs(10);

pub(super) async fn sample(gateway: Gateway) {
    let daemon = gateway.inner.daemon.clone();
    let shutdown = daemon.shutdown_token();
    loop {
        if let Ok(claims) = daemon.claims().await {
            let gpus = daemon.gpu_inventory().await.gpus;
            let mut per_gpu: BTreeMap<u32, u64> = gpus.iter().map(|g| (g.index, 0)).collect();
            let mut host = None;
            for claim in &claims {
                if claim.gpu_uuid == crate::daemon::HOST_RAM {
                    *host.get_or_insert(0) += claim.claim_mib;
                } else if let Some(gpu) = gpus.iter().find(|g| g.uuid == claim.gpu_uuid) {
                    *per_gpu.entry(gpu.index).or_default() += claim.claim_mib;
                }
            }
            gateway
                .inner
                .history
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .memory(chrono::Utc::now(), &per_gpu, host);
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(SAMPLE_EVERY) => {}
        }
    }
}
