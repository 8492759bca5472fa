//! Making room on a GPU for a cold service: when its memory claim does not fit, the
//! least recently used idle services on one GPU are stopped (never a pinned one, never
//! one with a request in flight), then the gateway waits until the GPU's measured free
//! memory really has room, since engines take seconds to release it. Meanwhile the
//! request waits in the gateway's bounded queue.

use std::time::{Duration, Instant};

use super::Gateway;
use super::metrics::Target;
use super::openai::OpenAiError;
use crate::domain::{
    EventKind, Gpu, GpuClaim, Service, ServiceStatus, available_mib, claim_mib, mib, place,
};

/// How often free memory is measured while waiting (Ollama's scheduler polls as often).
const POLL: Duration = Duration::from_millis(250);

/// What one look at the GPUs found.
enum Room {
    /// The claim fits now.
    Fits,
    /// It will fit on `gpu` once memory is released; `need` MiB.
    Freeing { gpu: Gpu, need: u64 },
    /// Nothing can be evicted now (busy or pinned); look again later.
    Busy(String),
}

/// Returns once `service`'s claim fits, evicting what it must; refuses with 503 and
/// `Retry-After` when the queue is full or no room comes within the load timeout.
pub(super) async fn make_room(
    gateway: &Gateway,
    service: &Service,
    target: &Target,
) -> Result<(), OpenAiError> {
    let daemon = &gateway.inner.daemon;
    let Some(fraction) = daemon.gpu_memory_fraction(service) else {
        return Ok(());
    };
    let deadline = Instant::now() + service.serving.load_timeout;
    let mut queued = None;
    loop {
        let unavailable = |e: crate::daemon::DaemonError| OpenAiError::unavailable(e.to_string());
        match look(gateway, service, fraction, target)
            .await
            .map_err(unavailable)?
        {
            Room::Fits => return Ok(()),
            Room::Freeing { gpu, need } => {
                return wait_for_memory(gateway, service, &gpu, need, deadline).await;
            }
            Room::Busy(why) => {
                if queued.is_none() {
                    queued = Some(gateway.join_queue(&why)?);
                }
                if Instant::now() >= deadline {
                    return Err(OpenAiError {
                        retry_after: Some(5),
                        ..OpenAiError::unavailable(format!(
                            "no room for service {} within its load timeout: {why}",
                            service.name
                        ))
                    });
                }
                tokio::time::sleep(POLL).await;
            }
        }
    }
}

/// One look: fits, or evict what makes room, or wait.
async fn look(
    gateway: &Gateway,
    service: &Service,
    fraction: f64,
    target: &Target,
) -> Result<Room, crate::daemon::DaemonError> {
    let daemon = &gateway.inner.daemon;
    let inventory = daemon.gpu_inventory().await;
    if inventory.gpus.is_empty() {
        // The start's admission says what is wrong.
        return Ok(Room::Fits);
    }
    let claims: Vec<GpuClaim> = daemon
        .claims()
        .await?
        .into_iter()
        .filter(|c| c.service_id != service.id.as_str())
        .collect();
    if place(&inventory.gpus, &claims, fraction).is_ok() {
        return Ok(Room::Fits);
    }
    let catalog = gateway.inner.catalog.current(daemon).await?;
    // Idle, unpinned, running services with a claim: least recently used first (never
    // used at all counts as least recent).
    let mut idle: Vec<(&Service, &GpuClaim, Option<Instant>)> = claims
        .iter()
        .filter_map(|claim| {
            let victim = catalog.services.iter().find(|s| {
                s.id.as_str() == claim.service_id
                    && s.status == ServiceStatus::Running
                    && !s.serving.pinned
            })?;
            let traffic = gateway.traffic(&victim.id);
            (traffic.in_flight() == 0)
                .then(|| (victim, claim, traffic.last_ended().map(|(at, _)| at)))
        })
        .collect();
    idle.sort_by_key(|(_, _, last)| *last);
    // A GPU where the claims left after evicting its idle services make room.
    let kept = |gpu: &Gpu| -> u64 {
        claims
            .iter()
            .filter(|c| c.gpu_uuid == gpu.uuid)
            .filter(|c| !idle.iter().any(|(_, v, _)| v.service_id == c.service_id))
            .map(|c| c.claim_mib)
            .sum()
    };
    let Some(gpu) = inventory
        .gpus
        .iter()
        .find(|gpu| claim_mib(gpu, fraction) <= gpu.memory_total_mib.saturating_sub(kept(gpu)))
        .cloned()
    else {
        return Ok(Room::Busy(format!(
            "the GPUs are held by services that are busy or pinned; {} waits for one of them",
            service.name
        )));
    };
    let need = claim_mib(&gpu, fraction);
    let mut left: Vec<GpuClaim> = claims.clone();
    let by_claims = |claims: &[GpuClaim]| {
        let claimed: u64 = claims
            .iter()
            .filter(|c| c.gpu_uuid == gpu.uuid)
            .map(|c| c.claim_mib)
            .sum();
        gpu.memory_total_mib.saturating_sub(claimed)
    };
    for (victim, claim, _) in idle.iter().filter(|(_, c, _)| c.gpu_uuid == gpu.uuid) {
        if by_claims(&left) >= need {
            break;
        }
        let traffic = gateway.traffic(&victim.id);
        // The same gate as the idle unload: no request enters while it stops.
        let _closed = traffic.gate.write().await;
        if traffic.in_flight() > 0 {
            continue;
        }
        let reason = format!(
            "evicted by the gateway: GPU {} ({}) needed {} for {}",
            gpu.index,
            gpu.name,
            mib(need),
            service.name
        );
        tracing::info!(service = %victim.id, "{reason}");
        daemon
            .events()
            .publish(&victim.id, EventKind::Note, reason.clone())
            .await;
        daemon
            .events()
            .publish(
                &service.id,
                EventKind::Note,
                format!("making room on GPU {}: stopping {}", gpu.index, victim.name),
            )
            .await;
        gateway
            .inner
            .metrics
            .eviction(&catalog.target_of(victim), target);
        daemon
            .stop_service_because(victim.id.as_str(), Some(reason))
            .await?;
        left.retain(|c| c.service_id != claim.service_id);
    }
    if by_claims(&left) < need {
        return Ok(Room::Busy(format!(
            "GPU {} has {} left after evicting what was idle",
            gpu.index,
            mib(by_claims(&left))
        )));
    }
    Ok(Room::Freeing { gpu, need })
}

/// Waits until `gpu` measures enough free memory beside the claims, polling.
async fn wait_for_memory(
    gateway: &Gateway,
    service: &Service,
    gpu: &Gpu,
    need: u64,
    deadline: Instant,
) -> Result<(), OpenAiError> {
    let daemon = &gateway.inner.daemon;
    let started = Instant::now();
    loop {
        let inventory = daemon.gpu_inventory().await;
        let claims: Vec<GpuClaim> = daemon
            .claims()
            .await
            .map_err(|e| OpenAiError::unavailable(e.to_string()))?
            .into_iter()
            .filter(|c| c.service_id != service.id.as_str())
            .collect();
        let now = inventory.gpus.iter().find(|g| g.uuid == gpu.uuid);
        let left = now.map_or(0, |g| available_mib(g, &claims));
        if left >= need {
            if !started.elapsed().is_zero() {
                daemon
                    .events()
                    .publish(
                        &service.id,
                        EventKind::Note,
                        format!(
                            "GPU {} has room after {} ms of waiting for memory to be released",
                            gpu.index,
                            started.elapsed().as_millis()
                        ),
                    )
                    .await;
            }
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(OpenAiError {
                retry_after: Some(5),
                ..OpenAiError::unavailable(format!(
                    "GPU {} still has only {} free for {} after the evictions; retry shortly",
                    gpu.index,
                    mib(left),
                    service.name
                ))
            });
        }
        tokio::time::sleep(POLL).await;
    }
}
