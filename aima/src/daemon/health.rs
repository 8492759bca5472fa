//! Keeps "running" honest: a running service's engine must keep answering its health
//! path. An engine that stops answering (hung, deadlocked) while its container still runs
//! fails after its `--health-retries` misses in a row (probed every `--health-interval`),
//! its container is removed, and its restart policy decides what comes next.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::Daemon;
use crate::domain::{ServiceId, ServiceStatus};
use crate::engines::QuietProbes;

/// Longest pause of the probe loop: a service created meanwhile is probed this soon.
const LONGEST_TICK: Duration = Duration::from_secs(2);
/// Shortest pause, so a tiny `--health-interval` cannot spin the loop.
const SHORTEST_TICK: Duration = Duration::from_millis(100);
/// A slow answer under load is not a miss until it takes this long.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

pub(super) async fn run(daemon: Daemon, shutdown: CancellationToken) {
    let Ok(http) = reqwest::Client::builder()
        .no_proxy()
        .timeout(PROBE_TIMEOUT)
        .build()
    else {
        return;
    };
    // Misses in a row per service, and when the first of them was sent.
    let mut misses: HashMap<ServiceId, (u32, Instant)> = HashMap::new();
    // When each running service is due for its next probe.
    let mut due: HashMap<ServiceId, Instant> = HashMap::new();
    let mut tick = LONGEST_TICK;
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(tick) => {}
        }
        let Ok(services) = daemon.list_services().await else {
            continue;
        };
        let running: Vec<_> = services
            .into_iter()
            .filter(|s| s.status == ServiceStatus::Running)
            .collect();
        misses.retain(|id, _| running.iter().any(|s| &s.id == id));
        due.retain(|id, _| running.iter().any(|s| &s.id == id));
        tick = running
            .iter()
            .map(|s| s.health.interval)
            .min()
            .unwrap_or(LONGEST_TICK)
            .clamp(SHORTEST_TICK, LONGEST_TICK);
        for service in running {
            let now = Instant::now();
            // The first probe comes one interval after the service is seen running.
            let next = *due
                .entry(service.id.clone())
                .or_insert(now + service.health.interval);
            if next > now {
                continue;
            }
            due.insert(service.id.clone(), now + service.health.interval);
            let Some(engine) = daemon.inner.engines.get(&service.engine) else {
                continue;
            };
            let sent = Instant::now();
            let answer = match engine.spec.quiet_probes {
                QuietProbes::ConnectOnly => connects(daemon.engine_address(service.port))
                    .await
                    .map_err(ProbeError::from),
                QuietProbes::Switch(_) | QuietProbes::NotLogged => {
                    let url = daemon.engine_url(service.port, engine.spec.health_path);
                    http.get(&url)
                        .send()
                        .await
                        .map(|response| response.status().is_success())
                        .map_err(ProbeError::from)
                }
            };
            let healthy = match answer {
                Ok(healthy) => healthy,
                // The daemon itself is short of sockets or memory: that says nothing
                // about the engine, so it is neither a miss nor a pass.
                Err(e) if is_local_exhaustion(e.as_ref()) => {
                    tracing::warn!(service = %service.id, "cannot probe the engine: {e}; not counted as a miss");
                    continue;
                }
                Err(_) => false,
            };
            daemon.metrics().probed(
                service.id.as_str(),
                &service.engine,
                sent.elapsed(),
                healthy,
            );
            if healthy {
                misses.remove(&service.id);
                continue;
            }
            let (count, first) = misses.entry(service.id.clone()).or_insert((0, sent));
            *count += 1;
            if *count >= service.health.retries {
                let silent = first.elapsed();
                misses.remove(&service.id);
                if let Some(container) = service.container_id.as_deref() {
                    let reason = format!(
                        "engine did not answer {} for {} s ({} probes in a row) while its container ran",
                        engine.spec.health_path,
                        silent.as_secs(),
                        service.health.retries
                    );
                    daemon.fail_unhealthy(&service.id, container, reason).await;
                }
            }
        }
    }
}

type ProbeError = Box<dyn std::error::Error + Send + Sync>;

/// Whether the engine's port accepts a connection: the probe for engines that log every
/// HTTP request (see `QuietProbes::ConnectOnly`).
async fn connects(address: std::net::SocketAddr) -> Result<bool, std::io::Error> {
    match tokio::time::timeout(PROBE_TIMEOUT, tokio::net::TcpStream::connect(address)).await {
        Ok(Ok(_)) => Ok(true),
        Ok(Err(e)) if is_local_exhaustion(&e) => Err(e),
        Ok(Err(_)) | Err(_) => Ok(false),
    }
}

/// True when a request failed for want of local resources (file handles, buffers,
/// memory) rather than because the engine did not answer.
fn is_local_exhaustion(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = cause {
        if let Some(io) = e.downcast_ref::<std::io::Error>()
            && let Some(code) = io.raw_os_error()
        {
            return [
                nix::libc::EMFILE,
                nix::libc::ENFILE,
                nix::libc::ENOBUFS,
                nix::libc::ENOMEM,
                nix::libc::EADDRNOTAVAIL,
            ]
            .contains(&code);
        }
        cause = e.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An error wrapping `inner`, as reqwest and hyper wrap the socket's.
    #[derive(Debug)]
    struct Wrapped(std::io::Error);

    impl std::fmt::Display for Wrapped {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("client error (Connect)")
        }
    }

    impl std::error::Error for Wrapped {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }

    #[tokio::test]
    async fn a_connect_probe_passes_while_the_port_listens_and_fails_after() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let address = listener.local_addr().expect("address");
        assert!(connects(address).await.expect("probe"));
        drop(listener);
        assert!(!connects(address).await.expect("probe"));
    }

    #[test]
    fn running_out_of_file_handles_is_not_a_miss_but_a_refusal_is() {
        let emfile = Wrapped(std::io::Error::from_raw_os_error(nix::libc::EMFILE));
        assert!(is_local_exhaustion(&emfile));
        let refused = Wrapped(std::io::Error::from_raw_os_error(nix::libc::ECONNREFUSED));
        assert!(!is_local_exhaustion(&refused));
        let timeout = Wrapped(std::io::Error::new(std::io::ErrorKind::TimedOut, "slow"));
        assert!(!is_local_exhaustion(&timeout));
    }
}
