//! GPUs and memory admission: whether a service's claim fits on a GPU beside the claims
//! of the services already there and the memory the GPU says is free. Pure math.

/// One GPU as the probe sees it now.
#[derive(Debug, Clone, PartialEq)]
pub struct Gpu {
    pub index: u32,
    pub uuid: String,
    pub name: String,
    pub memory_total_mib: u64,
    pub memory_used_mib: u64,
    pub memory_free_mib: u64,
    pub utilization_percent: Option<u32>,
}

/// What the host has: its GPUs, or why there are none.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct GpuInventory {
    pub gpus: Vec<Gpu>,
    /// From `AIMA_SIMULATE_GPUS`: no real device, no device requests.
    pub simulated: bool,
    pub driver_version: Option<String>,
    pub cuda_version: Option<String>,
    /// Why no GPU was found, when none was.
    pub none_reason: Option<String>,
}

/// Memory a service holds on a GPU.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GpuClaim {
    pub service_id: String,
    pub gpu_uuid: String,
    pub claim_mib: u64,
}

/// The memory a service asks for: its fraction of the GPU's total.
pub fn claim_mib(gpu: &Gpu, memory_fraction: f64) -> u64 {
    (gpu.memory_total_mib as f64 * memory_fraction).ceil() as u64
}

/// What a GPU can still give a new service: the smaller of what AIMA's bookkeeping
/// leaves (total minus claims) and what the GPU measures as free (which also counts
/// processes AIMA does not know about). Engines that are loading have not allocated
/// yet, so the bookkeeping keeps two starts from both seeing the same free memory.
pub fn available_mib(gpu: &Gpu, claims: &[GpuClaim]) -> u64 {
    let claimed: u64 = claims
        .iter()
        .filter(|c| c.gpu_uuid == gpu.uuid)
        .map(|c| c.claim_mib)
        .sum();
    gpu.memory_total_mib
        .saturating_sub(claimed)
        .min(gpu.memory_free_mib)
}

/// Why a claim does not fit, with the numbers an operator needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DoesNotFit {
    pub message: String,
}

/// Picks the GPU for a claim of `memory_fraction`: the one with the most memory left
/// among those where it fits.
pub fn place<'a>(
    gpus: &'a [Gpu],
    claims: &[GpuClaim],
    memory_fraction: f64,
) -> Result<(&'a Gpu, u64), DoesNotFit> {
    let best = gpus
        .iter()
        .map(|gpu| {
            (
                gpu,
                claim_mib(gpu, memory_fraction),
                available_mib(gpu, claims),
            )
        })
        .filter(|(_, want, left)| want <= left)
        .max_by_key(|(_, _, left)| *left);
    match best {
        Some((gpu, want, _)) => Ok((gpu, want)),
        None => {
            let detail: Vec<String> = gpus
                .iter()
                .map(|gpu| {
                    let claimed: u64 = claims.iter().filter(|c| c.gpu_uuid == gpu.uuid).map(|c| c.claim_mib).sum();
                    format!(
                        "GPU {} ({}) needs {} for {memory_fraction} of {}, has {} left ({} claimed by services, {} free)",
                        gpu.index,
                        gpu.name,
                        mib(claim_mib(gpu, memory_fraction)),
                        mib(gpu.memory_total_mib),
                        mib(available_mib(gpu, claims)),
                        mib(claimed),
                        mib(gpu.memory_free_mib)
                    )
                })
                .collect();
            Err(DoesNotFit {
                message: format!(
                    "not enough GPU memory: {}; lower --gpu-memory-utilization or stop a service",
                    detail.join("; ")
                ),
            })
        }
    }
}

/// Picks the GPU for a claim of `want_mib` (an engine that takes what its model needs):
/// the one with the most memory left among those where it fits. `what` says what the
/// claim is made of, for the refusal.
pub fn place_mib<'a>(
    gpus: &'a [Gpu],
    claims: &[GpuClaim],
    want_mib: u64,
    what: &str,
) -> Result<(&'a Gpu, u64), DoesNotFit> {
    let best = gpus
        .iter()
        .map(|gpu| (gpu, available_mib(gpu, claims)))
        .filter(|(_, left)| want_mib <= *left)
        .max_by_key(|(_, left)| *left);
    match best {
        Some((gpu, _)) => Ok((gpu, want_mib)),
        None => {
            let left: Vec<String> = gpus
                .iter()
                .map(|gpu| {
                    format!(
                        "GPU {} ({}) has {} left",
                        gpu.index,
                        gpu.name,
                        mib(available_mib(gpu, claims))
                    )
                })
                .collect();
            Err(DoesNotFit {
                message: format!(
                    "not enough GPU memory: the model needs {} ({what}); {}; stop a service, or register the model with a shorter --context",
                    mib(want_mib),
                    left.join("; ")
                ),
            })
        }
    }
}

/// The largest fraction (in steps of 0.05, at most `cap`) that fits on `gpu` now.
pub fn largest_fitting_fraction(gpu: &Gpu, claims: &[GpuClaim], cap: f64) -> Option<f64> {
    let left = available_mib(gpu, claims);
    let mut steps = (cap * 20.0).floor() as u32;
    while steps >= 1 {
        let fraction = f64::from(steps) / 20.0;
        if claim_mib(gpu, fraction) <= left {
            return Some(fraction);
        }
        steps -= 1;
    }
    None
}

/// Where a model that needs `needed_mib` fits now: every GPU with room, the one with the
/// most memory left first, with the share a fixed-share engine (vLLM, SGLang) would take
/// there: the largest step of 0.05 up to `cap` that fits, so the KV cache gets the rest
/// of what the GPU can spare. An engine that takes what it needs (`cap` None) claims
/// the estimate itself.
pub fn fitting_gpus<'a>(
    gpus: &'a [Gpu],
    claims: &[GpuClaim],
    needed_mib: u64,
    cap: Option<f64>,
) -> Vec<(&'a Gpu, Option<f64>)> {
    let mut fits: Vec<(&Gpu, Option<f64>, u64)> = gpus
        .iter()
        .filter_map(|gpu| {
            let left = available_mib(gpu, claims);
            let share = match cap {
                Some(cap) => {
                    let share = largest_fitting_fraction(gpu, claims, cap)?;
                    (claim_mib(gpu, share) >= needed_mib).then_some(Some(share))?
                }
                None => (needed_mib <= left).then_some(None)?,
            };
            Some((gpu, share, left))
        })
        .collect();
    fits.sort_by_key(|(_, _, left)| std::cmp::Reverse(*left));
    fits.into_iter()
        .map(|(gpu, share, _)| (gpu, share))
        .collect()
}

/// Where a fixed-share engine (vLLM, SGLang) goes, by its model's size when known:
/// with no `share` given, the GPU and share `fitting_gpus` ranks first (as `recommend`
/// does), so a big model lands where it fits rather than where the default share does;
/// with a `share`, a GPU where that share holds the model before one where it does not.
/// Nowhere holding the model, or its size unknown, it is placed by the share alone (the
/// caller warns). Returns the GPU, the claim in MiB and the share taken.
pub fn place_sized<'a>(
    gpus: &'a [Gpu],
    claims: &[GpuClaim],
    share: Option<f64>,
    default_share: f64,
    needed_mib: Option<u64>,
) -> Result<(&'a Gpu, u64, f64), DoesNotFit> {
    if let Some(needed) = needed_mib {
        let holding = match share {
            None => fitting_gpus(gpus, claims, needed, Some(default_share))
                .into_iter()
                .find_map(|(gpu, share)| Some((gpu, share?))),
            Some(share) => gpus
                .iter()
                .filter(|gpu| {
                    let want = claim_mib(gpu, share);
                    want >= needed && want <= available_mib(gpu, claims)
                })
                .max_by_key(|gpu| available_mib(gpu, claims))
                .map(|gpu| (gpu, share)),
        };
        if let Some((gpu, share)) = holding {
            return Ok((gpu, claim_mib(gpu, share), share));
        }
    }
    let share = share.unwrap_or(default_share);
    place(gpus, claims, share).map(|(gpu, claim)| (gpu, claim, share))
}

/// The share of `gpu` (a step of 0.05) that holds `needed_mib`, or `None` when even the
/// whole GPU does not: advice never names a share that cannot be given.
pub fn share_that_holds(gpu: &Gpu, needed_mib: u64) -> Option<f64> {
    let steps = (needed_mib as f64 / gpu.memory_total_mib.max(1) as f64 * 20.0).ceil();
    (steps <= 20.0).then(|| steps.max(1.0) / 20.0)
}

/// Bytes to whole MiB, rounded up.
pub fn bytes_to_mib(bytes: u64) -> u64 {
    bytes.div_ceil(1 << 20)
}

/// GPU memory one process holds, as NVML accounts it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessMemory {
    pub gpu_uuid: String,
    pub pid: u32,
    pub bytes: u64,
}

/// What the processes `pids` (one container's) hold on the GPUs together.
pub fn memory_of_pids(pids: &[u32], processes: &[ProcessMemory]) -> u64 {
    processes
        .iter()
        .filter(|p| pids.contains(&p.pid))
        .map(|p| p.bytes)
        .sum()
}

/// `81920 MiB (80.0 GiB)`.
pub fn mib(value: u64) -> String {
    format!("{value} MiB ({:.1} GiB)", value as f64 / 1024.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gpu(uuid: &str, total: u64, free: u64) -> Gpu {
        Gpu {
            index: 0,
            uuid: uuid.into(),
            name: "H200".into(),
            memory_total_mib: total,
            memory_used_mib: total - free,
            memory_free_mib: free,
            utilization_percent: None,
        }
    }

    fn claim(uuid: &str, mib: u64) -> GpuClaim {
        GpuClaim {
            service_id: "svc-vllm-00000000".into(),
            gpu_uuid: uuid.into(),
            claim_mib: mib,
        }
    }

    #[test]
    fn two_claims_fit_and_a_third_is_refused_with_numbers() {
        let gpus = [gpu("g0", 100_000, 100_000)];
        let mut claims = Vec::new();
        for _ in 0..2 {
            let (g, want) = place(&gpus, &claims, 0.4).expect("fits");
            assert_eq!(want, 40_000);
            claims.push(claim(&g.uuid, want));
        }
        let err = place(&gpus, &claims, 0.4).expect_err("third does not fit");
        assert!(
            err.message.contains("needs 40000 MiB (39.1 GiB)"),
            "{}",
            err.message
        );
        assert!(
            err.message.contains("has 20000 MiB (19.5 GiB) left"),
            "{}",
            err.message
        );
        assert!(
            err.message.contains("80000 MiB (78.1 GiB) claimed"),
            "{}",
            err.message
        );
        // A released claim makes room again.
        claims.pop();
        assert!(place(&gpus, &claims, 0.4).is_ok());
    }

    #[test]
    fn measured_free_memory_limits_too() {
        // A foreign process uses 70 GB: bookkeeping alone would admit 0.5.
        let gpus = [gpu("g0", 100_000, 30_000)];
        assert!(place(&gpus, &[], 0.5).is_err());
        assert!(place(&gpus, &[], 0.25).is_ok());
    }

    #[test]
    fn placement_prefers_the_gpu_with_most_room() {
        let mut a = gpu("a", 80_000, 80_000);
        a.index = 0;
        let mut b = gpu("b", 80_000, 80_000);
        b.index = 1;
        let claims = [claim("a", 40_000)];
        let gpus = [a, b];
        let (chosen, _) = place(&gpus, &claims, 0.3).expect("fits");
        assert_eq!(chosen.uuid, "b");
    }

    #[test]
    fn a_sized_model_goes_where_it_fits_with_a_share_that_holds_it() {
        // The host: an H200 with 98 GiB free, an L4 with 22.5 GiB.
        let (h200, l4) = (gpu("h200", 143_771, 100_352), gpu("l4", 23_034, 23_034));
        let gpus = [l4, h200];
        let model = 64 * 1024 + 2 * 1024; // 64 GiB of weights and a little more
        let (gpu, claim, share) =
            place_sized(&gpus, &[], None, 0.9, Some(model)).expect("fits on the H200");
        assert_eq!(gpu.uuid, "h200");
        assert!(claim >= model && claim <= 100_352, "{claim}");
        assert!((share - 0.65).abs() < 1e-9, "{share}");
        // By the default share alone the L4 was the only place: 0.9 of the H200 is more
        // than it has free.
        assert_eq!(place(&gpus, &[], 0.9).expect("L4").0.uuid, "l4");
        // A given share goes where it holds the model.
        let (gpu, _, share) = place_sized(&gpus, &[], Some(0.5), 0.9, Some(model)).expect("H200");
        assert_eq!((gpu.uuid.as_str(), share), ("h200", 0.5));
        // Unsized, the share decides.
        let (gpu, _, _) = place_sized(&gpus, &[], None, 0.9, None).expect("L4");
        assert_eq!(gpu.uuid, "l4");
        // Held nowhere: placed by the share (the caller warns).
        let (gpu, _, share) = place_sized(&gpus, &[], None, 0.9, Some(200_000)).expect("L4");
        assert_eq!((gpu.uuid.as_str(), share), ("l4", 0.9));
        assert_eq!(share_that_holds(&gpus[1], 200_000), None);
        assert_eq!(share_that_holds(&gpus[1], 71_000), Some(0.5));
    }

    #[test]
    fn largest_fitting_fraction_steps_down() {
        let g = gpu("g0", 100_000, 100_000);
        assert_eq!(largest_fitting_fraction(&g, &[], 0.9), Some(0.9));
        assert_eq!(
            largest_fitting_fraction(&g, &[claim("g0", 70_000)], 0.9),
            Some(0.3)
        );
        assert_eq!(
            largest_fitting_fraction(&g, &[claim("g0", 98_000)], 0.9),
            None
        );
    }

    #[test]
    fn a_containers_gpu_memory_is_what_its_processes_hold() {
        let held = |pid, bytes| ProcessMemory {
            gpu_uuid: "GPU-a".into(),
            pid,
            bytes,
        };
        let processes = [held(10, 1 << 30), held(11, 2 << 30), held(99, 5 << 30)];
        assert_eq!(memory_of_pids(&[10, 11, 12], &processes), 3 << 30);
        assert_eq!(memory_of_pids(&[], &processes), 0);
    }
}
