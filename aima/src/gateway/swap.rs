//! Bringing a cold service up: when its memory claim does not fit, the least recently
//! used idle services on one device (a GPU, or host memory for engines on the CPU) are
//! stopped (never a pinned one, never one with a request in flight), then the gateway
//! waits until the device's measured free memory really has room, since engines take
//! seconds to release it, and starts it. Meanwhile
//! the request waits in the gateway's bounded queue. A waiting request looks again
//! every [`POLL`] (a service went idle, stopped, released memory, a start failed), and
//! a start refused for room because another start took it first is made room for and
//! tried again, all within the request's load timeout.

use std::time::{Duration, Instant};

use super::Gateway;
use super::metrics::Target;
use super::openai::OpenAiError;
use crate::daemon::{HOST_RAM, RoomNeed};
use crate::domain::{EventKind, Gpu, GpuClaim, Service, ServiceStatus, available_mib, mib};

/// How often free memory is measured while waiting (Ollama's scheduler polls as often).
const POLL: Duration = Duration::from_millis(250);
/// Longest pause between starts retried after a refusal for room.
const RETRY_MAX_PAUSE: Duration = Duration::from_secs(5);

/// What one look at the GPUs found.
enum Room {
    /// The claim fits now.
    Fits,
    /// It will fit on `gpu` once memory is released; `need` MiB. `evicted`: this look
    /// stopped services for it (and so tells when the room came).
    Freeing { gpu: Gpu, need: u64, evicted: bool },
    /// Nothing can be evicted now (busy or pinned); look again later.
    Busy(String),
}

/// Returns once `service` runs, making room for it and starting it (once, however many
/// requests wait); `Ok(true)` for the request whose start it was (a cold start). Refuses
/// with 503 when the queue is full, the start fails, or the load timeout passes.
pub(super) async fn until_running(
    gateway: &Gateway,
    service: &Service,
    target: &Target,
) -> Result<bool, OpenAiError> {
    let daemon = &gateway.inner.daemon;
    let deadline = Instant::now() + service.serving.load_timeout;
    let mut pause = POLL;
    loop {
        make_room(gateway, service, target, deadline).await?;
        let left = deadline.saturating_duration_since(Instant::now());
        match gateway.inner.loads.ready(daemon, &service.id, left).await {
            Ok(led) => return Ok(led),
            // Only where the gateway can make room: a claim larger than any device is
            // the start's verdict, at once.
            Err(e)
                if e.no_room
                    && Instant::now() < deadline
                    && daemon
                        .room_need(service)
                        .await
                        .is_some_and(|need| need.could_ever_fit()) =>
            {
                // Another start took the memory between our look and this start: make
                // room again (the other one becomes evictable once idle) and retry,
                // less often each time, so a look and an admission that keep
                // disagreeing cost a start every few seconds, not four a second.
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(RETRY_MAX_PAUSE);
            }
            Err(e) => return Err(OpenAiError::unavailable(e.reason)),
        }
    }
}

/// Returns once `service`'s claim fits, evicting what it must; refuses with 503 and
/// `Retry-After` when the queue is full or no room comes by `deadline`.
async fn make_room(
    gateway: &Gateway,
    service: &Service,
    target: &Target,
    deadline: Instant,
) -> Result<(), OpenAiError> {
    let mut queued = None;
    loop {
        let unavailable = |e: crate::daemon::DaemonError| OpenAiError::unavailable(e.to_string());
        // One look at a time: a look that evicts has stopped its victims before the next
        // one counts, so a hundred waiting requests make room once, not a hundred times.
        let looked = {
            let _placing = gateway.inner.placing.lock().await;
            look(gateway, service, target).await
        };
        match looked.map_err(unavailable)? {
            Room::Fits => return Ok(()),
            Room::Freeing { gpu, need, evicted } => {
                return wait_for_memory(gateway, service, &gpu, need, deadline, evicted).await;
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
    target: &Target,
) -> Result<Room, crate::daemon::DaemonError> {
    let daemon = &gateway.inner.daemon;
    let Some(RoomNeed { devices, want }) = daemon.room_need(service).await else {
        // It claims nothing, or nothing is known to claim by: the start decides.
        return Ok(Room::Fits);
    };
    if !devices.iter().any(|d| want.on(d) <= d.memory_total_mib) {
        // Larger than any device: the start's admission refuses it with the numbers.
        return Ok(Room::Fits);
    }
    let claims = daemon.claims().await?;
    if claims.iter().any(|c| c.service_id == service.id.as_str()) {
        // Its own start holds its claim already (the memory measured in use is its
        // own): nothing to make room for; the start decides.
        return Ok(Room::Fits);
    }
    if devices
        .iter()
        .any(|d| want.on(d) <= available_mib(d, &claims))
    {
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
    let Some(gpu) = devices
        .iter()
        .find(|gpu| want.on(gpu) <= gpu.memory_total_mib.saturating_sub(kept(gpu)))
        .cloned()
    else {
        return Ok(Room::Busy(format!(
            "the memory is held by services that are busy or pinned; {} waits for one of them",
            service.name
        )));
    };
    let need = want.on(&gpu);
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
            "evicted by the gateway: {} needed {} for {}",
            device(&gpu),
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
                format!("making room on {}: stopping {}", device(&gpu), victim.name),
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
            "{} has {} left after evicting what was idle",
            device(&gpu),
            mib(by_claims(&left))
        )));
    }
    Ok(Room::Freeing {
        gpu,
        need,
        evicted: left.len() < claims.len(),
    })
}

/// Waits until `gpu` measures enough free memory beside the claims, polling.
async fn wait_for_memory(
    gateway: &Gateway,
    service: &Service,
    gpu: &Gpu,
    need: u64,
    deadline: Instant,
    evicted: bool,
) -> Result<(), OpenAiError> {
    let daemon = &gateway.inner.daemon;
    let started = Instant::now();
    loop {
        let devices = daemon
            .room_need(service)
            .await
            .map(|need| need.devices)
            .unwrap_or_default();
        let claims: Vec<GpuClaim> = daemon
            .claims()
            .await
            .map_err(|e| OpenAiError::unavailable(e.to_string()))?;
        if claims.iter().any(|c| c.service_id == service.id.as_str()) {
            // Another request's start of this service got there first; it holds the
            // room now (and the memory measured in use is its own).
            return Ok(());
        }
        let now = devices.iter().find(|g| g.uuid == gpu.uuid);
        let left = now.map_or(0, |g| available_mib(g, &claims));
        if left >= need {
            if evicted {
                daemon
                    .events()
                    .publish(
                        &service.id,
                        EventKind::Note,
                        format!(
                            "{} has room after {} ms of waiting for memory to be released",
                            device(gpu),
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
                    "{} still has only {} free for {} after the evictions; retry shortly",
                    device(gpu),
                    mib(left),
                    service.name
                ))
            });
        }
        tokio::time::sleep(POLL).await;
    }
}

/// A device as an operator names it: `GPU 0 (NVIDIA H100)`, or `host RAM`.
fn device(gpu: &Gpu) -> String {
    if gpu.uuid == HOST_RAM {
        gpu.name.clone()
    } else {
        format!("GPU {} ({})", gpu.index, gpu.name)
    }
}
