//! Host memory for engines that run on the CPU (a host without a GPU, or an image built
//! for the CPU): a start claims its model's estimate against a budget, as GPU engines
//! claim GPU memory, and is refused early, with the numbers, when it does not fit. Once
//! the engine is healthy, what its container holds (its cgroup's memory) joins the
//! model's facts, and later starts claim that when it was more.
//!
//! Claims are kept with the GPU claims, on the pseudo-device [`HOST_RAM`], so the
//! gateway makes room on host memory the way it does on a GPU.

use super::{Daemon, gpus::gib};
use crate::domain::{
    EventKind, Gpu, GpuClaim, Known, Model, Service, StartPhase, available_mib, bytes_to_mib,
    estimate, mib,
};
use crate::engines::Engine;

/// The device uuid host memory claims are kept under.
pub const HOST_RAM: &str = "host-ram";

/// What `/proc/meminfo` says, in MiB.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct MemInfo {
    total_mib: u64,
    available_mib: u64,
}

fn meminfo() -> Option<MemInfo> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    parse_meminfo(&text)
}

fn parse_meminfo(text: &str) -> Option<MemInfo> {
    let kib = |key: &str| -> Option<u64> {
        let line = text.lines().find(|l| l.starts_with(key))?;
        line[key.len()..]
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .ok()
    };
    Some(MemInfo {
        total_mib: kib("MemTotal:")? / 1024,
        available_mib: kib("MemAvailable:")? / 1024,
    })
}

impl Daemon {
    /// Host memory as one device: its total is the budget (`AIMA_HOST_RAM_BUDGET`, else
    /// the host's RAM), its free memory what the kernel reports available now. `None`
    /// where the host does not say (not Linux).
    pub fn host_ram(&self) -> Option<Gpu> {
        let info = meminfo()?;
        let budget_mib = self
            .settings()
            .host_ram_budget
            .map_or(info.total_mib, bytes_to_mib);
        Some(Gpu {
            index: 0,
            uuid: HOST_RAM.to_owned(),
            name: "host RAM".to_owned(),
            memory_total_mib: budget_mib,
            memory_used_mib: info.total_mib.saturating_sub(info.available_mib),
            memory_free_mib: info.available_mib,
            utilization_percent: None,
        })
    }

    /// MiB a start of `service` on the CPU claims: its model's estimate, or what an
    /// engine of it held here before when that was more. `None` when the model's size
    /// is unknown (nothing to admit it by).
    pub(super) fn host_claim_mib(engine: &Engine, model: &Model) -> Option<(u64, String)> {
        let estimate = estimate(&model.facts, &engine.spec.memory, None)?;
        let measured = model.facts.measured_in_ram(engine.spec.name);
        let what = format!(
            "its estimate: weights {} + KV cache {} + overhead {}{}",
            gib(estimate.weights),
            gib(estimate.kv_cache),
            gib(estimate.overhead),
            measured
                .map(|m| format!("; measured {} on this host", gib(m)))
                .unwrap_or_default()
        );
        Some((
            bytes_to_mib(estimate.total.max(measured.unwrap_or(0))),
            what,
        ))
    }

    /// Claims host memory for a start on the CPU, or says why it does not fit.
    pub(super) async fn admit_on_host(
        &self,
        service: &Service,
        engine: &Engine,
        model: &Model,
    ) -> Result<(), String> {
        let Some(host) = self.host_ram() else {
            return Ok(());
        };
        // A model of unknown size (a repo not yet downloaded) has nothing to claim by;
        // `ps` shows it without a claim.
        let Some((want, what)) = Self::host_claim_mib(engine, model) else {
            return Ok(());
        };
        let _admission = self.inner.admission.lock().await;
        let claims: Vec<GpuClaim> = self
            .claims()
            .await
            .map_err(|e| e.to_string())?
            .into_iter()
            .filter(|c| c.service_id != service.id.as_str())
            .collect();
        let left = available_mib(&host, &claims);
        if want > left {
            let claimed: u64 = claims
                .iter()
                .filter(|c| c.gpu_uuid == HOST_RAM)
                .map(|c| c.claim_mib)
                .sum();
            return Err(format!(
                "not enough host memory: the model needs {} on the CPU ({what}); {} left of a budget of {} ({} claimed by services, {} available); stop a service, raise AIMA_HOST_RAM_BUDGET, or register the model with a shorter --context",
                mib(want),
                mib(left),
                mib(host.memory_total_mib),
                mib(claimed),
                mib(host.memory_free_mib),
            ));
        }
        let id = service.id.clone();
        self.store()
            .run(move |store| store.set_gpu_placement(&id, Some((HOST_RAM, want))))
            .await
            .map_err(|e| e.to_string())?;
        drop(_admission);
        self.events()
            .publish(
                &service.id,
                EventKind::Phase(StartPhase::Gpu),
                format!(
                    "claimed {} of host RAM ({what}); {} left of {}",
                    mib(want),
                    mib(left - want),
                    mib(host.memory_total_mib)
                ),
            )
            .await;
        Ok(())
    }

    /// Once an engine on the CPU is healthy, what its container holds joins its model's
    /// facts. Engines allocate before they answer health; a few looks over the next
    /// seconds keep the largest.
    pub(super) fn measure_host_memory(&self, service: Service, container_id: String) {
        let daemon = self.clone();
        let shutdown = self.shutdown_token();
        tokio::spawn(async move {
            let on_host = daemon.claims().await.is_ok_and(|claims| {
                claims
                    .iter()
                    .any(|c| c.service_id == service.id.as_str() && c.gpu_uuid == HOST_RAM)
            });
            if !on_host {
                return;
            }
            let mut largest = 0u64;
            for look in 0..3 {
                if look > 0 {
                    tokio::select! {
                        () = shutdown.cancelled() => return,
                        () = tokio::time::sleep(std::time::Duration::from_secs(5)) => {}
                    }
                }
                match daemon.runtime().memory_usage(&container_id).await {
                    Ok(Some(bytes)) => largest = largest.max(bytes),
                    _ => return, // the container went, or the runtime cannot tell
                }
            }
            if largest > 0 {
                daemon.record_host_measurement(&service, largest).await;
            }
        });
    }

    async fn record_host_measurement(&self, service: &Service, bytes: u64) {
        let Ok(mut model) = self.get_model(service.model_id.as_str()).await else {
            return;
        };
        model.facts.measured_ram.insert(
            service.engine.clone(),
            Known::new(
                bytes,
                format!(
                    "cgroup: the container of {} at {}",
                    service.id,
                    chrono::Utc::now().format("%Y-%m-%d %H:%M:%S UTC")
                ),
            ),
        );
        let (id, facts) = (model.id.clone(), model.facts.clone());
        if let Err(e) = self
            .store()
            .run(move |store| store.update_model_facts(&id, &facts))
            .await
        {
            tracing::warn!(service = %service.id, "cannot record the measured host memory: {e}");
            return;
        }
        self.events()
            .publish(
                &service.id,
                EventKind::Note,
                format!("measured {} of host RAM", gib(bytes)),
            )
            .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meminfo_is_read_in_mib_and_a_missing_field_is_none() {
        let text =
            "MemTotal:       24576000 kB\nMemFree:         1000 kB\nMemAvailable:   12288000 kB\n";
        assert_eq!(
            parse_meminfo(text),
            Some(MemInfo {
                total_mib: 24000,
                available_mib: 12000
            })
        );
        assert_eq!(parse_meminfo("MemTotal: 10 kB\n"), None);
    }
}
