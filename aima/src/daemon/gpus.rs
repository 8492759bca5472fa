//! GPU awareness: what the host has, where services sit, admission of a start's memory
//! claim, one engine loading at a time per GPU, and recommendations.

use std::sync::Arc;

use super::placement::pinned;
use super::{Daemon, DaemonError};
use crate::domain::{
    EventKind, Gpu, GpuClaim, GpuInventory, MemoryEstimate, Model, Service, StartPhase,
    available_mib, bytes_to_mib, estimate, fitting_gpus, largest_fitting_fraction, memory_of_pids,
    mib,
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
    /// The GPU share chosen by the model's size, for a service that named none.
    pub share: Option<f64>,
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
    /// What the model needs on `engine`, when its size is known.
    pub estimate: Option<MemoryEstimate>,
    /// Every GPU it fits on now, best first (most memory left).
    pub placements: Vec<PlacementOption>,
    /// What a running engine of it held on this host, on `engine`.
    pub measured: Option<u64>,
}

/// One GPU a model fits on, with the share a fixed-share engine would take there.
#[derive(Debug, Clone, PartialEq)]
pub struct PlacementOption {
    pub gpu_index: u32,
    pub gpu_memory_utilization: Option<f64>,
    pub memory_left_mib: u64,
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
    /// vLLM and SGLang claim their share of a GPU; llama.cpp and Ollama run on a GPU when
    /// the host has one and claim their model's memory estimate there.
    pub(super) async fn admit(
        &self,
        service: &Service,
        engine: &Engine,
        model: &Model,
    ) -> Result<Option<Placement>, String> {
        // A claim left from the previous run is not this start's: it is made anew below,
        // and must not count as memory in use meanwhile.
        let id = service.id.clone();
        self.store()
            .run(move |store| {
                store.set_placed_share(&id, None)?;
                store.set_gpu_placement(&id, None)
            })
            .await
            .map_err(|e| e.to_string())?;
        let estimate = estimate(&model.facts, &engine.spec.memory, None);
        if !engine.spec.needs_gpu {
            if engine.spec.gpu_offload.is_none() {
                self.admit_on_host(service, engine, model).await?;
                return Ok(None);
            }
            let inventory = self.gpu_inventory().await;
            if inventory.gpus.is_empty() {
                // The CPU, as on any host without GPUs.
                self.admit_on_host(service, engine, model).await?;
                return Ok(None);
            }
            let Some(estimate) = estimate else {
                // Nothing to admit it by: a GPU claim of nothing would let it crowd others.
                self.events()
                    .publish(
                        &service.id,
                        EventKind::Note,
                        "runs on the CPU: the model's size is unknown, so its GPU memory cannot be admitted; register it with --size to run it on a GPU",
                    )
                    .await;
                return Ok(None);
            };
            // What an engine of this model held here before wins when it was more.
            let measured = model.facts.measured_on(engine.spec.name);
            let want = bytes_to_mib(estimate.total.max(measured.unwrap_or(0)));
            let what = format!(
                "its estimate: weights {} + KV cache {} + overhead {}{}",
                gib(estimate.weights),
                gib(estimate.kv_cache),
                gib(estimate.overhead),
                measured
                    .map(|m| format!("; measured {} on this host", gib(m)))
                    .unwrap_or_default()
            );
            let candidates = pinned(service, inventory.clone())?;
            let (gpu, claim) = self
                .claim(service, &candidates, |gpus, claims| {
                    crate::domain::place_mib(gpus, claims, want, &what)
                })
                .await?;
            return Ok(Some(
                self.hold(
                    service,
                    &inventory,
                    &gpu,
                    format!("claimed {} ({what})", mib(claim)),
                )
                .await,
            ));
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
            if gpu_optional {
                // An image built for the CPU: host memory is what it takes.
                self.admit_on_host(service, engine, model).await?;
                return Ok(None);
            }
            if !matches!(labels, Ok(Some(_))) {
                return Ok(None);
            }
            return Err(format!(
                "engine {} needs an NVIDIA GPU and this host has none ({}); run llamacpp or ollama on the CPU, or use a GPU host",
                engine.spec.name,
                inventory.none_reason.as_deref().unwrap_or("no GPU found")
            ));
        }
        let inventory = pinned(service, inventory)?;
        self.admit_share(service, engine, model, &inventory).await
    }

    /// Places `service` with `place` and records the claim, one admission at a time so
    /// two starts never count the same free memory.
    pub(super) async fn claim(
        &self,
        service: &Service,
        inventory: &GpuInventory,
        place: impl for<'a> FnOnce(
            &'a [Gpu],
            &[GpuClaim],
        ) -> Result<(&'a Gpu, u64), crate::domain::DoesNotFit>,
    ) -> Result<(Gpu, u64), String> {
        let _admission = self.inner.admission.lock().await;
        let claims: Vec<GpuClaim> = self
            .claims()
            .await
            .map_err(|e| e.to_string())?
            .into_iter()
            .filter(|c| c.service_id != service.id.as_str())
            .collect();
        let (gpu, claim) = place(&inventory.gpus, &claims).map_err(|e| e.message)?;
        let (id, uuid) = (service.id.clone(), gpu.uuid.clone());
        self.store()
            .run(move |store| store.set_gpu_placement(&id, Some((&uuid, claim))))
            .await
            .map_err(|e| e.to_string())?;
        Ok((gpu.clone(), claim))
    }

    /// Announces the placement and waits for the GPU's loading turn.
    pub(super) async fn hold(
        &self,
        service: &Service,
        inventory: &GpuInventory,
        gpu: &Gpu,
        claimed: String,
    ) -> Placement {
        self.events()
            .publish(
                &service.id,
                EventKind::Phase(StartPhase::Gpu),
                format!(
                    "{claimed} on GPU {} ({}){}",
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
        Placement {
            device: (!inventory.simulated).then(|| gpu.uuid.clone()),
            share: None,
            _loading: Arc::new(loading),
        }
    }

    /// Once a llama.cpp or Ollama service runs, what its container holds on the GPUs
    /// (NVML's per-process accounting) joins its model's facts next to the estimate, so
    /// that admission and recommend learn what this host really needs. Engines allocate before they answer health; a few
    /// looks over the next seconds keep the largest. Nothing is recorded where nothing
    /// can be measured (no GPU, simulated GPUs, a CPU engine).
    pub(super) fn measure_gpu_memory(&self, service: Service, container_id: String) {
        // vLLM and SGLang take their share whatever the model needs: measuring them
        // would record the share, not the model.
        let takes_what_it_needs = CATALOG
            .iter()
            .any(|e| e.name == service.engine && e.gpu_offload.is_some());
        if !takes_what_it_needs {
            return;
        }
        let daemon = self.clone();
        let shutdown = self.shutdown_token();
        tokio::spawn(async move {
            let mut largest = 0u64;
            for look in 0..3 {
                if look > 0 {
                    tokio::select! {
                        () = shutdown.cancelled() => return,
                        () = tokio::time::sleep(std::time::Duration::from_secs(5)) => {}
                    }
                }
                let Ok(pids) = daemon.runtime().container_pids(&container_id).await else {
                    return; // the container went
                };
                let probe = Arc::clone(&daemon.inner.gpus);
                let processes = tokio::task::spawn_blocking(move || probe.process_memory())
                    .await
                    .unwrap_or_default();
                largest = largest.max(memory_of_pids(&pids, &processes));
            }
            if largest > 0 {
                daemon.record_measurement(&service, largest).await;
            }
        });
    }

    async fn record_measurement(&self, service: &Service, bytes: u64) {
        let Ok(mut model) = self.get_model(service.model_id.as_str()).await else {
            return;
        };
        let estimate = CATALOG
            .iter()
            .find(|e| e.name == service.engine)
            .and_then(|e| estimate(&model.facts, &e.memory, None));
        model.facts.measured.insert(
            service.engine.clone(),
            crate::domain::Known::new(
                bytes,
                format!(
                    "NVML: the processes of {} at {}",
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
            tracing::warn!(service = %service.id, "cannot record the measured GPU memory: {e}");
            return;
        }
        let against = estimate
            .map(|e| format!(" (estimate {})", gib(e.total)))
            .unwrap_or_default();
        self.events()
            .publish(
                &service.id,
                EventKind::Note,
                format!("measured {} on the GPU{against}", gib(bytes)),
            )
            .await;
    }

    /// Per GPU its free and claimed memory; per model (or the one asked for) whether it
    /// fits now, where, with which engine and share, or why not, from its memory
    /// estimate when its size is known.
    pub async fn recommend(&self, model_id: Option<&str>) -> Result<Recommendation, DaemonError> {
        let models: Vec<Model> = match model_id {
            Some(id) => vec![self.get_model(id).await?],
            None => self.list_models().await?,
        };
        let devices = self.devices().await?;
        let claims = self.claims().await?;
        let advice = models
            .iter()
            .map(|model| self.advise(model, &devices.inventory, &claims))
            .collect();
        Ok(Recommendation {
            devices,
            models: advice,
        })
    }

    fn advise(&self, model: &Model, inventory: &GpuInventory, claims: &[GpuClaim]) -> ModelAdvice {
        let engine_name = crate::engines::default_engine_for(model);
        let spec = CATALOG.iter().find(|e| e.name == engine_name);
        let estimate = spec.and_then(|e| estimate(&model.facts, &e.memory, None));
        let mut advice = ModelAdvice {
            model_id: model.id.to_string(),
            model_name: model.name.clone(),
            fits: false,
            engine: engine_name.to_owned(),
            gpu_index: None,
            gpu_memory_utilization: None,
            reason: String::new(),
            estimate: estimate.clone(),
            placements: Vec::new(),
            measured: model.facts.measured_on(engine_name),
        };
        let needs = estimate.as_ref().map(|e| {
            format!(
                "needs {} (weights {} + KV cache {} for {} tokens + overhead {} on {engine_name})",
                gib(e.total),
                gib(e.weights),
                gib(e.kv_cache),
                e.context_length,
                gib(e.overhead)
            )
        });
        if inventory.gpus.is_empty() {
            let cpu: Vec<&str> = CATALOG
                .iter()
                .filter(|e| !e.needs_gpu)
                .map(|e| e.name)
                .collect();
            advice.fits = true;
            if spec.is_some_and(|s| s.needs_gpu) {
                let on_cpu = cpu.first().copied().unwrap_or("llamacpp");
                advice.engine = on_cpu.to_owned();
                advice.estimate = CATALOG
                    .iter()
                    .find(|e| e.name == on_cpu)
                    .and_then(|e| crate::domain::estimate(&model.facts, &e.memory, None));
            }
            advice.reason = format!(
                "no NVIDIA GPU ({}); run it on the CPU with {}{}",
                inventory.none_reason.as_deref().unwrap_or("none found"),
                cpu.join(" or "),
                needs.map(|n| format!("; it {n}")).unwrap_or_default()
            );
            return advice;
        }
        // vLLM and SGLang take a share of the GPU; llama.cpp and Ollama what they need.
        let cap = spec
            .filter(|s| s.needs_gpu)
            .map(|s| s.default_gpu_memory_utilization);
        let Some(estimate) = estimate else {
            return self.advise_unsized(advice, inventory, claims, cap.unwrap_or(0.9));
        };
        // What this host measured wins over the estimate when it was more.
        let measured = model.facts.measured_on(engine_name);
        let needed = bytes_to_mib(estimate.total.max(measured.unwrap_or(0)));
        let needs = match (needs, measured) {
            (Some(needs), Some(m)) => Some(format!("{needs}; measured {} on this host", gib(m))),
            (needs, _) => needs,
        };
        let fits = fitting_gpus(&inventory.gpus, claims, needed, cap);
        advice.placements = fits
            .iter()
            .map(|(gpu, share)| PlacementOption {
                gpu_index: gpu.index,
                gpu_memory_utilization: *share,
                memory_left_mib: available_mib(gpu, claims),
            })
            .collect();
        let needs = needs.unwrap_or_default();
        if let Some((gpu, share)) = fits.first() {
            advice.fits = true;
            advice.gpu_index = Some(gpu.index);
            advice.gpu_memory_utilization = *share;
            let with = share
                .map(|s| format!(" with --gpu-memory-utilization {s}"))
                .unwrap_or_default();
            advice.reason = format!(
                "fits on GPU {} ({}){with}: it {needs}; {} of {} left",
                gpu.index,
                gpu.name,
                gib_mib(available_mib(gpu, claims)),
                gib_mib(gpu.memory_total_mib)
            );
            return advice;
        }
        // Nowhere: say where it came closest, and whether a shorter context would do.
        let room = |gpu: &Gpu| -> u64 {
            let left = available_mib(gpu, claims);
            cap.map_or(left, |cap| left.min(crate::domain::claim_mib(gpu, cap)))
        };
        let best = inventory.gpus.iter().max_by_key(|g| room(g));
        let listed: Vec<String> = inventory
            .gpus
            .iter()
            .map(|g| format!("GPU {} ({}) {} left", g.index, g.name, gib_mib(room(g))))
            .collect();
        let per_token = spec
            .and_then(|s| {
                model
                    .facts
                    .kv_bytes_per_token(s.memory.kv_bytes_per_element)
            })
            .unwrap_or(0);
        let shorter = best.and_then(|gpu| {
            let room = room(gpu) << 20;
            let fixed = estimate.weights.saturating_add(estimate.overhead);
            let tokens = room.checked_sub(fixed)?.checked_div(per_token)?;
            (tokens >= 256).then(|| (gpu.index, tokens.min(u64::from(u32::MAX))))
        });
        let hint = match shorter {
            Some((index, tokens)) => format!(
                "a context of {tokens} tokens would fit on GPU {index} (register the model with --context {tokens})"
            ),
            None => {
                "stop services to make room, use a smaller quantization, or a larger GPU".to_owned()
            }
        };
        advice.reason = format!(
            "fits on no GPU: it {needs}, but {}; {hint}",
            listed.join(", ")
        );
        advice
    }

    /// A model of unknown size: the fixed-share engine's largest share that fits now.
    fn advise_unsized(
        &self,
        mut advice: ModelAdvice,
        inventory: &GpuInventory,
        claims: &[GpuClaim],
        cap: f64,
    ) -> ModelAdvice {
        let best = inventory
            .gpus
            .iter()
            .filter_map(|gpu| largest_fitting_fraction(gpu, claims, cap).map(|f| (gpu, f)))
            // The GPU with the most memory left, as placement does.
            .max_by_key(|(gpu, _)| available_mib(gpu, claims));
        match best {
            Some((gpu, fraction)) => {
                advice.fits = true;
                advice.gpu_index = Some(gpu.index);
                advice.gpu_memory_utilization = Some(fraction);
                advice.placements = vec![PlacementOption {
                    gpu_index: gpu.index,
                    gpu_memory_utilization: Some(fraction),
                    memory_left_mib: available_mib(gpu, claims),
                }];
                advice.reason = format!(
                    "fits on GPU {} ({}) with --gpu-memory-utilization {fraction} ({} of {} left); its size is unknown, so whether its weights fit is not checked (state it with model create --size)",
                    gpu.index,
                    gpu.name,
                    mib(available_mib(gpu, claims)),
                    mib(gpu.memory_total_mib)
                );
            }
            None => {
                advice.reason = "no GPU has 5% of its memory left beside the running services; stop one, or run it on the CPU".to_owned();
            }
        }
        advice
    }
}

/// Bytes as GiB with two decimals (`14.96 GiB`).
pub(super) fn gib(bytes: u64) -> String {
    #[allow(clippy::cast_precision_loss)] // display only
    let gib = bytes as f64 / f64::from(1u32 << 30);
    format!("{gib:.2} GiB")
}

fn gib_mib(value_mib: u64) -> String {
    gib(value_mib << 20)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use crate::config::{Flags, Settings};
    use crate::daemon::{Daemon, ModelRequest, ServiceRequest};

    /// What a measurement of a llama.cpp engine leaves: the model's facts say it, the
    /// service's events say it against the estimate, and recommend plans with it when it
    /// is more.
    #[tokio::test]
    async fn a_measurement_joins_the_models_facts_and_recommend_plans_with_it() {
        let (dir, store) = crate::store::temp_store();
        let settings = Settings::resolve_with(
            &Flags {
                home: Some(dir.path().to_owned()),
                addr: None,
            },
            |key| match key {
                "AIMA_SIMULATE_GPUS" => Some("H100:81559,L4:23034".to_owned()),
                "AIMA_PORT_RANGE" => Some("23100-23199".to_owned()),
                _ => None,
            },
            Vec::new(),
        )
        .expect("settings");
        // Docker is never called here: nothing starts.
        let runtime = Arc::new(crate::runtime::DockerRuntime::from_env());
        let daemon = Daemon::new(settings, store, runtime).expect("daemon");
        let mut model = daemon
            .create_model(ModelRequest {
                name: "m".into(),
                source: "huggingface".into(),
                repo: Some("org/m".into()),
                size_bytes: Some(4 << 30),
                context_length: Some(4096),
                ..ModelRequest::default()
            })
            .await
            .expect("model");
        // As if read from a GGUF file: llama.cpp is then its engine.
        model.facts.format = Some("gguf".into());
        let (id, facts) = (model.id.clone(), model.facts.clone());
        daemon
            .store()
            .update_model_facts(&id, &facts)
            .expect("facts");
        let service = |engine: &str| ServiceRequest {
            model_id: model.id.to_string(),
            engine: engine.into(),
            ..ServiceRequest::default()
        };
        let llamacpp = daemon
            .create_service(service("llamacpp"))
            .await
            .expect("service");

        // 4 GiB of weights + 0.75 GiB overhead is the estimate; the engine held 30 GiB.
        daemon.record_measurement(&llamacpp, 30 << 30).await;
        let model = daemon.get_model(model.id.as_str()).await.expect("model");
        let measured = &model.facts.measured["llamacpp"];
        assert_eq!(measured.value, 30 << 30);
        assert!(
            measured.from.contains(llamacpp.id.as_str()),
            "{}",
            measured.from
        );
        let subject = crate::domain::EventSubject::Service(llamacpp.id.clone());
        let events = daemon.store().events(Some(&subject), 0).expect("events");
        assert!(
            events
                .iter()
                .any(|e| e.message == "measured 30.00 GiB on the GPU (estimate 4.75 GiB)"),
            "{events:?}"
        );
        let advice = daemon
            .recommend(Some(model.id.as_str()))
            .await
            .expect("recommend")
            .models
            .remove(0);
        assert_eq!(advice.engine, "llamacpp");
        assert_eq!(advice.measured, Some(30 << 30));
        // 30 GiB fits the H100 only, not the 22.5 GiB L4 that the 4.75 GiB estimate would.
        let on: Vec<u32> = advice.placements.iter().map(|p| p.gpu_index).collect();
        assert_eq!(on, [0], "{advice:?}");
        assert!(
            advice.reason.contains("measured 30.00 GiB on this host"),
            "{}",
            advice.reason
        );
    }
}
