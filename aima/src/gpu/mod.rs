//! GPU discovery. Only this module touches NVML. The library is loaded at run time, so a
//! host without the NVIDIA driver builds, runs, and reports "no NVIDIA GPU: <reason>".

use crate::domain::{Gpu, GpuClaim, GpuInventory, ProcessMemory};

/// Something that can tell which GPUs the host has right now.
pub trait GpuProbe: Send + Sync + 'static {
    fn detect(&self) -> GpuInventory;

    /// Hears the claims of starting and running services before a detect. Real GPUs
    /// need not: their measured memory shows what engines hold.
    fn observe_claims(&self, _claims: &[GpuClaim]) {}

    /// The GPU memory each process holds now (empty where that cannot be known, as with
    /// simulated GPUs).
    fn process_memory(&self) -> Vec<ProcessMemory> {
        Vec::new()
    }
}

/// Real GPUs through NVML, initialised once (a driver that was missing at start stays
/// missing until the daemon restarts, as with every CUDA process).
#[derive(Default)]
pub struct NvmlProbe {
    nvml: std::sync::OnceLock<Result<nvml_wrapper::Nvml, String>>,
}

impl std::fmt::Debug for NvmlProbe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NvmlProbe")
    }
}

impl GpuProbe for NvmlProbe {
    fn process_memory(&self) -> Vec<ProcessMemory> {
        let Some(Ok(nvml)) = self.nvml.get() else {
            return Vec::new();
        };
        let count = nvml.device_count().unwrap_or(0);
        let mut held = Vec::new();
        for index in 0..count {
            let Ok(device) = nvml.device_by_index(index) else {
                continue;
            };
            let uuid = device.uuid().unwrap_or_else(|_| format!("GPU-{index}"));
            for process in device.running_compute_processes().unwrap_or_default() {
                if let nvml_wrapper::enums::device::UsedGpuMemory::Used(bytes) =
                    process.used_gpu_memory
                {
                    held.push(ProcessMemory {
                        gpu_uuid: uuid.clone(),
                        pid: process.pid,
                        bytes,
                    });
                }
            }
        }
        held
    }

    fn detect(&self) -> GpuInventory {
        let nvml = match self
            .nvml
            .get_or_init(|| nvml_wrapper::Nvml::init().map_err(|e| nvml_reason(&e)))
        {
            Ok(nvml) => nvml,
            Err(reason) => return none(reason.clone()),
        };
        let count = match nvml.device_count() {
            Ok(count) => count,
            Err(e) => return none(format!("NVML cannot count devices: {e}")),
        };
        let mut gpus = Vec::new();
        for index in 0..count {
            let Ok(device) = nvml.device_by_index(index) else {
                continue;
            };
            let Ok(memory) = device.memory_info() else {
                continue;
            };
            gpus.push(Gpu {
                index,
                uuid: device.uuid().unwrap_or_else(|_| format!("GPU-{index}")),
                name: device.name().unwrap_or_else(|_| "NVIDIA GPU".to_owned()),
                memory_total_mib: memory.total / MIB,
                memory_used_mib: memory.used / MIB,
                memory_free_mib: memory.free / MIB,
                utilization_percent: device.utilization_rates().ok().map(|u| u.gpu),
            });
        }
        let cuda_version = nvml.sys_cuda_driver_version().ok().map(|v| {
            format!(
                "{}.{}",
                nvml_wrapper::cuda_driver_version_major(v),
                nvml_wrapper::cuda_driver_version_minor(v)
            )
        });
        let none_reason = gpus.is_empty().then(|| "NVML found no devices".to_owned());
        GpuInventory {
            gpus,
            simulated: false,
            driver_version: nvml.sys_driver_version().ok(),
            cuda_version,
            none_reason,
        }
    }
}

const MIB: u64 = 1024 * 1024;

fn none(reason: String) -> GpuInventory {
    GpuInventory {
        none_reason: Some(reason),
        ..GpuInventory::default()
    }
}

/// The two ways a host without NVIDIA shows up, in plain words.
fn nvml_reason(e: &nvml_wrapper::error::NvmlError) -> String {
    use nvml_wrapper::error::NvmlError as E;
    match e {
        E::LibloadingError(_) => {
            "the NVIDIA driver library (libnvidia-ml.so.1) is not installed".to_owned()
        }
        E::DriverNotLoaded => "the NVIDIA driver is not loaded".to_owned(),
        E::NoPermission => "no permission to query the NVIDIA driver".to_owned(),
        other => format!("NVML failed: {other}"),
    }
}

/// Memory an engine holds on a simulated GPU: (gpu uuid, MiB, when its claim went).
type Held = (String, u64, Option<std::time::Instant>);

/// GPUs from `AIMA_SIMULATE_GPUS` (`NAME:MiB[,NAME:MiB…]`), for tests and demos: all
/// memory free but what engines hold, no real device behind them.
#[derive(Debug)]
pub struct SimulatedProbe {
    gpus: Vec<(String, u64)>,
    /// How long an engine's memory stays in use after its service let go of its claim,
    /// as a real engine takes seconds to free it (`AIMA_SIMULATE_GPU_RELEASE`).
    release_delay: std::time::Duration,
    /// Memory in use per service: (gpu uuid, MiB, when the claim went).
    held: std::sync::Mutex<std::collections::HashMap<String, Held>>,
}

impl SimulatedProbe {
    pub fn new(gpus: Vec<(String, u64)>, release_delay: std::time::Duration) -> Self {
        Self {
            gpus,
            release_delay,
            held: std::sync::Mutex::default(),
        }
    }

    fn used_mib(&self, uuid: &str) -> u64 {
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        held.retain(|_, (_, _, gone)| gone.is_none_or(|at| at.elapsed() < self.release_delay));
        held.values()
            .filter(|(gpu, _, _)| gpu == uuid)
            .map(|(_, mib, _)| mib)
            .sum()
    }
}

impl GpuProbe for SimulatedProbe {
    fn observe_claims(&self, claims: &[GpuClaim]) {
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        for (service, (_, _, gone)) in held.iter_mut() {
            if gone.is_none() && !claims.iter().any(|c| &c.service_id == service) {
                *gone = Some(std::time::Instant::now());
            }
        }
        for claim in claims {
            held.insert(
                claim.service_id.clone(),
                (claim.gpu_uuid.clone(), claim.claim_mib, None),
            );
        }
    }

    fn detect(&self) -> GpuInventory {
        GpuInventory {
            gpus: self
                .gpus
                .iter()
                .enumerate()
                .map(|(index, (name, total))| {
                    let uuid = format!("GPU-simulated-{index}");
                    let used = self.used_mib(&uuid).min(*total);
                    Gpu {
                        index: index as u32,
                        uuid,
                        name: name.clone(),
                        memory_total_mib: *total,
                        memory_used_mib: used,
                        memory_free_mib: total - used,
                        utilization_percent: Some(0),
                    }
                })
                .collect(),
            simulated: true,
            driver_version: None,
            cuda_version: None,
            none_reason: None,
        }
    }
}

/// Parses `NAME:MiB[,NAME:MiB…]`.
pub fn parse_simulated(spec: &str) -> Option<Vec<(String, u64)>> {
    spec.split(',')
        .map(|gpu| {
            let (name, mib) = gpu.trim().rsplit_once(':')?;
            let mib: u64 = mib.trim().parse().ok().filter(|m| *m > 0)?;
            (!name.trim().is_empty()).then(|| (name.trim().to_owned(), mib))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn simulated_gpus_parse_and_report_all_memory_free() {
        let gpus = parse_simulated("H200:143771, A100 80GB:81920").expect("valid");
        assert_eq!(
            gpus,
            [
                ("H200".to_owned(), 143_771),
                ("A100 80GB".to_owned(), 81_920)
            ]
        );
        let inventory = SimulatedProbe::new(gpus, std::time::Duration::ZERO).detect();
        assert!(inventory.simulated);
        assert_eq!(inventory.gpus[1].index, 1);
        assert_eq!(inventory.gpus[1].memory_free_mib, 81_920);
        for bad in [
            "",
            "H200",
            "H200:",
            ":100",
            "H200:0",
            "H200:lots",
            "H200:100,",
        ] {
            assert!(parse_simulated(bad).is_none(), "{bad:?}");
        }
    }

    /// CI and this machine have no NVIDIA driver; GPU runners run the test below instead.
    #[cfg(not(feature = "gpu"))]
    #[test]
    fn a_host_without_the_driver_reports_none_with_a_reason() {
        let inventory = NvmlProbe::default().detect();
        assert!(inventory.gpus.is_empty());
        let reason = inventory.none_reason.expect("a reason");
        assert!(reason.contains("NVIDIA"), "{reason}");
    }

    #[cfg(feature = "gpu")]
    #[test]
    fn nvml_finds_the_real_gpu() {
        let inventory = NvmlProbe::default().detect();
        assert!(
            inventory.none_reason.is_none(),
            "no GPU: {:?}",
            inventory.none_reason
        );
        let gpu = inventory.gpus.first().expect("a GPU");
        assert!(
            gpu.memory_total_mib > 1024 && gpu.memory_free_mib <= gpu.memory_total_mib,
            "{gpu:?}"
        );
        assert!(gpu.uuid.starts_with("GPU-"), "{gpu:?}");
        assert!(inventory.driver_version.is_some() && inventory.cuda_version.is_some());
    }
}
