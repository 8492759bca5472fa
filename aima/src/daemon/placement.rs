//! Where a fixed-share engine (vLLM, SGLang) runs: on the GPU its model's estimate fits,
//! with a share that holds it (the ranking `recommend` gives), or the GPU `--gpu N` pins.

use super::Daemon;
use super::gpus::{Placement, gib};
use crate::domain::{
    EventKind, GpuInventory, Model, Service, bytes_to_mib, estimate, mib, place_sized,
    share_that_holds,
};
use crate::engines::Engine;

/// `inventory` narrowed to the GPU `service` is pinned to, or why that GPU is missing.
pub(super) fn pinned(service: &Service, inventory: GpuInventory) -> Result<GpuInventory, String> {
    let Some(index) = service.gpu_index else {
        return Ok(inventory);
    };
    if inventory.gpus.iter().any(|g| g.index == index) {
        let gpus = inventory
            .gpus
            .iter()
            .filter(|g| g.index == index)
            .cloned()
            .collect();
        return Ok(GpuInventory { gpus, ..inventory });
    }
    let have: Vec<String> = inventory
        .gpus
        .iter()
        .map(|g| format!("{} ({})", g.index, g.name))
        .collect();
    Err(format!(
        "{} is pinned to GPU {index}, which this host does not have (it has GPU {}); pin another with 'aima service update {} --gpu N'",
        service.name,
        have.join(", "),
        service.name
    ))
}

impl Daemon {
    /// Admits a fixed-share engine on `inventory`'s GPUs: by its model's size when that
    /// is known, else by its share alone.
    pub(super) async fn admit_share(
        &self,
        service: &Service,
        engine: &Engine,
        model: &Model,
        inventory: &GpuInventory,
    ) -> Result<Option<Placement>, String> {
        let estimate = estimate(&model.facts, &engine.spec.memory, None);
        // What an engine of this model held here before wins when it was more.
        let measured = model.facts.measured_on(engine.spec.name).unwrap_or(0);
        let needed = estimate
            .as_ref()
            .map(|e| bytes_to_mib(e.total.max(measured)));
        let default_share = engine.spec.default_gpu_memory_utilization;
        let mut share = service.gpu_memory_utilization.unwrap_or(default_share);
        let (gpu, claim) = self
            .claim(service, inventory, |gpus, claims| {
                place_sized(
                    gpus,
                    claims,
                    service.gpu_memory_utilization,
                    default_share,
                    needed,
                )
                .map(|(gpu, claim, taken)| {
                    share = taken;
                    (gpu, claim)
                })
            })
            .await?;
        if let (Some(e), Some(needed)) = (&estimate, needed)
            && claim < needed
        {
            // A warning, not a refusal: the estimate may be wrong, the engine is not.
            let advice = match share_that_holds(&gpu, needed) {
                Some(holds) => format!("pass --gpu-memory-utilization {holds} or more"),
                None => format!(
                    "it does not fit on GPU {} even whole ({}): use a GPU with more memory, a smaller quantization, or a shorter --context",
                    gpu.index,
                    mib(gpu.memory_total_mib)
                ),
            };
            self.events()
                .publish(
                    &service.id,
                    EventKind::Note,
                    format!(
                        "warning: a share of {share} ({}) is smaller than the model needs ({}: weights {} + KV cache {} + overhead {}); the engine will likely run out of memory: {advice}",
                        gib(claim << 20),
                        gib(needed << 20),
                        gib(e.weights),
                        gib(e.kv_cache),
                        gib(e.overhead),
                    ),
                )
                .await;
        }
        let chosen = service.gpu_memory_utilization.is_none().then_some(share);
        let id = service.id.clone();
        self.store()
            .run(move |store| store.set_placed_share(&id, chosen))
            .await
            .map_err(|e| e.to_string())?;
        let why = match (service.gpu_memory_utilization, needed) {
            (Some(_), _) => String::new(),
            (None, Some(needed)) if claim >= needed => {
                format!(", the share that holds the model's {}", gib(needed << 20))
            }
            (None, _) => ", the engine's default".to_owned(),
        };
        let mut placement = self
            .hold(
                service,
                inventory,
                &gpu,
                format!(
                    "claimed {} ({share} of {}{why})",
                    mib(claim),
                    mib(gpu.memory_total_mib)
                ),
            )
            .await;
        placement.share = chosen;
        Ok(Some(placement))
    }
}
