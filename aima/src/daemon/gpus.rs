//! GPU awareness: what the host has, where services sit, admission of a start's memory
//! claim, one engine loading at a time per GPU, and recommendations.

use std::sync::Arc;

use super::{Daemon, DaemonError};
use crate::domain::{
    EventKind, Gpu, GpuClaim, GpuInventory, Model, Service, StartPhase, largest_fitting_fraction,
    mib, place,
};
use crate::engines::{CATALOG, Engine};

/// Images carrying this label run without a GPU even for a GPU engine (the stub engine
/// the tests run as vLLM declares it).
pub const GPU_OPTIONAL_LABEL: (&str, &str) = ("ai.aima.gpu", "optional");

/// Where a starting service's engine goes.
#[derive(Debug, Clone)]
pub(super) struct Placement {
    /// A real device to pass to the container (none for simulated GPUs).
    pub device: Option<String>,
    /// Held until the engine is healthy or the start fails.
    pub _loading: Arc<tokio::sync::OwnedMutexGuard<()>>,
}

/// A GPU with the services placed on it.
#[derive(Debug, Clone)]
pub struct GpuPlacementView {
    pub gpu: Gpu,
    pub claimed_mib: u64,
    pub services: Vec<String>,
}

/// `aima device detect`.
#[derive(Debug, Clone)]
pub struct DeviceReport {
    pub inventory: GpuInventory,
    pub gpus: Vec<GpuPlacementView>,
}

/// Whether one model fits now, and how.
#[derive(Debug, Clone)]
pub struct ModelAdvice {
    pub model_id: String,
    pub model_name: String,
    pub fits: bool,
    pub engine: String,
    pub gpu_index: Option<u32>,
    pub gpu_memory_utilization: Option<f64>,
    pub reason: String,
}

/// `aima service recommend`.
#[derive(Debug, Clone)]
pub struct Recommendation {
    pub devices: DeviceReport,
    pub models: Vec<ModelAdvice>,
}

impl Daemon {
    /// The host's GPUs now (NVML is blocking, so off the async threads).
    pub async fn gpu_inventory(&self) -> GpuInventory {
        if let Ok(claims) = self.claims().await {
            self.inner.gpus.observe_claims(&claims);
        }
        let probe = Arc::clone(&self.inner.gpus);
        tokio::task::spawn_blocking(move || probe.detect())
            .await
            .unwrap_or_default()
    }

    /// The share of a GPU's memory `service` claims when it starts, or `None` when its
    /// engine runs without a GPU.
    pub fn gpu_memory_fraction(&self, service: &Service) -> Option<f64> {
        let engine = self.inner.engines.get(&service.engine)?;
        engine.spec.needs_gpu.then(|| {
            service
                .gpu_memory_utilization
                .unwrap_or(engine.spec.default_gpu_memory_utilization)
        })
    }

    /// The GPU memory each starting or running service claims.
    pub async fn claims(&self) -> Result<Vec<GpuClaim>, DaemonError> {
        Ok(self.store().run(|store| store.gpu_claims()).await?)
    }

    /// GPUs with their claims and the services placed on them.
    pub async fn devices(&self) -> Result<DeviceReport, DaemonError> {
        let inventory = self.gpu_inventory().await;
        let claims = self.claims().await?;
        let gpus = inventory
            .gpus
            .iter()
            .map(|gpu| {
                let mine: Vec<&GpuClaim> =
                    claims.iter().filter(|c| c.gpu_uuid == gpu.uuid).collect();
                GpuPlacementView {
                    gpu: gpu.clone(),
                    claimed_mib: mine.iter().map(|c| c.claim_mib).sum(),
                    services: mine.iter().map(|c| c.service_id.clone()).collect(),
                }
            })
            .collect();
        Ok(DeviceReport { inventory, gpus })
    }

    /// Decides where a starting service's engine runs, before any container exists.
    /// Returns `Ok(None)` when it runs without a GPU, or the reason it cannot start.
    pub(super) async fn admit(
        &self,
        service: &Service,
        engine: &Engine,
    ) -> Result<Option<Placement>, String> {
        // A claim left from the previous run is not this start's: it is made anew below,
        // and must not count as memory in use meanwhile.
        let id = service.id.clone();
        self.store()
            .run(move |store| store.set_gpu_placement(&id, None))
            .await
            .map_err(|e| e.to_string())?;
        if !engine.spec.needs_gpu {
            return Ok(None);
        }
        let labels = self.runtime().image_labels(&engine.image).await;
        let gpu_optional = matches!(
            &labels,
            Ok(Some(labels)) if labels.get(GPU_OPTIONAL_LABEL.0).map(String::as_str) == Some(GPU_OPTIONAL_LABEL.1)
        );
        let inventory = self.gpu_inventory().await;
        if inventory.gpus.is_empty() {
            // Docker not answering, or the image missing, is the real problem then; the
            // launch reports it (with its retries, or the pull) rather than a guess about
            // an image it cannot read.
            if gpu_optional || !matches!(labels, Ok(Some(_))) {
                return Ok(None);
            }
            return Err(format!(
                "engine {} needs an NVIDIA GPU and this host has none ({}); run llamacpp or ollama on the CPU, or use a GPU host",
                engine.spec.name,
                inventory.none_reason.as_deref().unwrap_or("no GPU found")
            ));
        }
        let fraction = service
            .gpu_memory_utilization
            .unwrap_or(engine.spec.default_gpu_memory_utilization);
        let (gpu, claim) = {
            let _admission = self.inner.admission.lock().await;
            let claims: Vec<GpuClaim> = self
                .claims()
                .await
                .map_err(|e| e.to_string())?
                .into_iter()
                .filter(|c| c.service_id != service.id.as_str())
                .collect();
            let (gpu, claim) = place(&inventory.gpus, &claims, fraction).map_err(|e| e.message)?;
            let (id, uuid) = (service.id.clone(), gpu.uuid.clone());
            self.store()
                .run(move |store| store.set_gpu_placement(&id, Some((&uuid, claim))))
                .await
                .map_err(|e| e.to_string())?;
            (gpu.clone(), claim)
        };
        self.events()
            .publish(
                &service.id,
                EventKind::Phase(StartPhase::Gpu),
                format!(
                    "claimed {} ({fraction} of {}) on GPU {} ({}){}",
                    mib(claim),
                    mib(gpu.memory_total_mib),
                    gpu.index,
                    gpu.name,
                    if inventory.simulated {
                        ", simulated"
                    } else {
                        ""
                    }
                ),
            )
            .await;
        let lock = {
            let mut locks = self
                .inner
                .gpu_loading
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            Arc::clone(locks.entry(gpu.uuid.clone()).or_default())
        };
        let loading = match Arc::clone(&lock).try_lock_owned() {
            Ok(guard) => guard,
            Err(_) => {
                self.events()
                    .publish(
                        &service.id,
                        EventKind::Phase(StartPhase::Gpu),
                        format!(
                            "waiting for GPU {}: another engine is loading there",
                            gpu.index
                        ),
                    )
                    .await;
                lock.lock_owned().await
            }
        };
        Ok(Some(Placement {
            device: (!inventory.simulated).then(|| gpu.uuid.clone()),
            _loading: Arc::new(loading),
        }))
    }

    /// Per GPU its free and claimed memory; per model (or the one asked for) whether it
    /// fits now, where, with which utilization and engine, or why not.
    pub async fn recommend(&self, model_id: Option<&str>) -> Result<Recommendation, DaemonError> {
        let models: Vec<Model> = match model_id {
            Some(id) => vec![self.get_model(id).await?],
            None => self.list_models().await?,
        };
        let devices = self.devices().await?;
        let claims = self.claims().await?;
        let gpu_engine = CATALOG
            .iter()
            .find(|e| e.needs_gpu)
            .map_or("vllm", |e| e.name);
        let default_fraction = self
            .inner
            .engines
            .get(gpu_engine)
            .map_or(0.9, |e| e.spec.default_gpu_memory_utilization);
        let cpu_engines: Vec<&str> = CATALOG
            .iter()
            .filter(|e| !e.needs_gpu)
            .map(|e| e.name)
            .collect();
        let advice = models
            .iter()
            .map(|model| {
                let base = |fits, engine: &str, gpu_index, util, reason: String| ModelAdvice {
                    model_id: model.id.to_string(),
                    model_name: model.name.clone(),
                    fits,
                    engine: engine.to_owned(),
                    gpu_index,
                    gpu_memory_utilization: util,
                    reason,
                };
                if devices.inventory.gpus.is_empty() {
                    return base(
                        true,
                        cpu_engines.first().copied().unwrap_or("llamacpp"),
                        None,
                        None,
                        format!(
                            "no NVIDIA GPU ({}); run it on the CPU with {}",
                            devices.inventory.none_reason.as_deref().unwrap_or("none found"),
                            cpu_engines.join(" or ")
                        ),
                    );
                }
                let best = devices
                    .inventory
                    .gpus
                    .iter()
                    .filter_map(|gpu| largest_fitting_fraction(gpu, &claims, default_fraction).map(|f| (gpu, f)))
                    // The GPU with the most memory left, as placement does.
                    .max_by_key(|(gpu, _)| crate::domain::available_mib(gpu, &claims));
                match best {
                    Some((gpu, fraction)) => base(
                        true,
                        gpu_engine,
                        Some(gpu.index),
                        Some(fraction),
                        format!(
                            "fits on GPU {} ({}) with --gpu-memory-utilization {fraction} ({} of {} left)",
                            gpu.index,
                            gpu.name,
                            mib(crate::domain::available_mib(gpu, &claims)),
                            mib(gpu.memory_total_mib)
                        ),
                    ),
                    None => base(
                        false,
                        gpu_engine,
                        None,
                        None,
                        "no GPU has 5% of its memory left beside the running services; stop one, or run it on the CPU"
                            .to_owned(),
                    ),
                }
            })
            .collect();
        Ok(Recommendation {
            devices,
            models: advice,
        })
    }
}
