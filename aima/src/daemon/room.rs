//! What a start of a service will claim, and on which devices, for callers that make
//! room for it before it starts (the gateway's swaps): the same rules as admission,
//! without claiming anything.

use super::Daemon;
use super::gpus::GPU_OPTIONAL_LABEL;
use crate::domain::{Gpu, Service, bytes_to_mib, claim_mib, estimate};

/// How much a start claims on a device.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Want {
    /// A share of the device's total (vLLM and SGLang on a GPU).
    Share(f64),
    /// MiB: the model's estimate (llama.cpp and Ollama on a GPU, any engine on the CPU).
    Mib(u64),
}

impl Want {
    /// MiB the claim takes on `device`.
    pub fn on(&self, device: &Gpu) -> u64 {
        match *self {
            Self::Share(fraction) => claim_mib(device, fraction),
            Self::Mib(mib) => mib,
        }
    }
}

/// Where a start's claim goes: one of `devices` (GPUs, or host memory as one device).
#[derive(Debug, Clone)]
pub struct RoomNeed {
    pub devices: Vec<Gpu>,
    pub want: Want,
}

impl RoomNeed {
    /// Whether the claim fits on some device once every other claim there is gone.
    pub fn could_ever_fit(&self) -> bool {
        self.devices
            .iter()
            .any(|d| self.want.on(d) <= d.memory_total_mib)
    }
}

impl Daemon {
    /// What starting `service` would claim now, on devices as measured now; `None` when
    /// it claims nothing (its model's size is unknown, or its engine is not known).
    pub async fn room_need(&self, service: &Service) -> Option<RoomNeed> {
        let engine = self.inner.engines.get(&service.engine)?;
        let inventory = self.gpu_inventory().await;
        if engine.spec.needs_gpu && !inventory.gpus.is_empty() {
            return Some(RoomNeed {
                devices: inventory.gpus,
                want: Want::Share(
                    service
                        .gpu_memory_utilization
                        .unwrap_or(engine.spec.default_gpu_memory_utilization),
                ),
            });
        }
        let model = self.get_model(service.model_id.as_str()).await.ok()?;
        if inventory.gpus.is_empty() || engine.spec.gpu_offload.is_none() {
            if engine.spec.needs_gpu {
                let labels = self.runtime().image_labels(&engine.image).await.ok()??;
                let cpu_image = labels.get(GPU_OPTIONAL_LABEL.0).map(String::as_str)
                    == Some(GPU_OPTIONAL_LABEL.1);
                if !cpu_image {
                    return None;
                }
            }
            let (want, _) = Self::host_claim_mib(&engine, &model)?;
            return Some(RoomNeed {
                devices: vec![self.host_ram()?],
                want: Want::Mib(want),
            });
        }
        let estimate = estimate(&model.facts, &engine.spec.memory, None)?;
        let measured = model.facts.measured_on(engine.spec.name).unwrap_or(0);
        Some(RoomNeed {
            devices: inventory.gpus,
            want: Want::Mib(bytes_to_mib(estimate.total.max(measured))),
        })
    }
}
