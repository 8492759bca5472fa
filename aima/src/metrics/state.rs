//! Gauges of what is, read when `/metrics` is scraped: models, services by status, each
//! service's up/down with its port and GPU, and each GPU's memory in bytes.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::domain::ServiceStatus;

const MIB: i64 = 1024 * 1024;

/// One service as the gauges show it.
#[derive(Debug, Clone)]
pub struct ServiceState {
    pub id: String,
    pub name: String,
    pub engine: String,
    pub port: u16,
    pub status: ServiceStatus,
    /// The GPU index it claims memory on, and how much.
    pub gpu: Option<(u32, u64)>,
}

/// One GPU's memory as NVML (or the simulation) measures it, and what services claim.
#[derive(Debug, Clone)]
pub struct GpuState {
    pub index: u32,
    pub uuid: String,
    pub name: String,
    pub total_mib: u64,
    pub used_mib: u64,
    pub free_mib: u64,
    pub claimed_mib: u64,
}

/// What the daemon manages now.
#[derive(Debug, Clone, Default)]
pub struct State {
    pub models: usize,
    pub services: Vec<ServiceState>,
    pub gpus: Vec<GpuState>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Build {
    version: &'static str,
    commit: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Status {
    status: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Up {
    service: String,
    name: String,
    engine: String,
    port: u16,
    gpu: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ServiceGpu {
    service: String,
    name: String,
    gpu: u32,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Device {
    gpu: u32,
    uuid: String,
    name: String,
}

/// One of a GPU's memory numbers, in MiB.
type GpuReading = fn(&GpuState) -> u64;

fn bytes(mib: u64) -> i64 {
    i64::try_from(mib).unwrap_or(i64::MAX / MIB) * MIB
}

fn count(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

impl State {
    /// A registry holding this state's gauges, encoded once and dropped.
    pub(super) fn registry(&self) -> Registry {
        let mut registry = Registry::with_prefix("aima");
        let up = Gauge::<i64>::default();
        up.set(1);
        registry.register("up", "Whether the AIMA daemon answers", up);
        let build = Family::<Build, Gauge>::default();
        build
            .get_or_create(&Build {
                version: crate::VERSION,
                commit: crate::COMMIT,
            })
            .set(1);
        registry.register("build_info", "The running AIMA version and commit", build);
        let models = Gauge::<i64>::default();
        models.set(count(self.models));
        registry.register("models", "Registered models", models);

        let by_status = Family::<Status, Gauge>::default();
        for status in ServiceStatus::ALL {
            let n = self.services.iter().filter(|s| s.status == status).count();
            by_status
                .get_or_create(&Status {
                    status: status.as_str(),
                })
                .set(count(n));
        }
        registry.register("services", "Services by status", by_status);

        let service_up = Family::<Up, Gauge>::default();
        let service_claims = Family::<ServiceGpu, Gauge>::default();
        for service in &self.services {
            service_up
                .get_or_create(&Up {
                    service: service.id.clone(),
                    name: service.name.clone(),
                    engine: service.engine.clone(),
                    port: service.port,
                    gpu: service
                        .gpu
                        .map(|(index, _)| index.to_string())
                        .unwrap_or_default(),
                })
                .set(i64::from(service.status == ServiceStatus::Running));
            if let Some((gpu, claimed)) = service.gpu {
                service_claims
                    .get_or_create(&ServiceGpu {
                        service: service.id.clone(),
                        name: service.name.clone(),
                        gpu,
                    })
                    .set(bytes(claimed));
            }
        }
        registry.register(
            "service_up",
            "1 while a service is running (its engine healthy), 0 otherwise",
            service_up,
        );
        registry.register(
            "service_gpu_memory_claimed_bytes",
            "GPU memory a starting or running service claims",
            service_claims,
        );

        let families: [(&str, &str, GpuReading); 4] = [
            (
                "gpu_memory_total_bytes",
                "A GPU's memory",
                |g: &GpuState| g.total_mib,
            ),
            (
                "gpu_memory_used_bytes",
                "A GPU's memory in use, as measured (NVML, or the simulation)",
                |g: &GpuState| g.used_mib,
            ),
            (
                "gpu_memory_free_bytes",
                "A GPU's free memory, as measured",
                |g: &GpuState| g.free_mib,
            ),
            (
                "gpu_memory_claimed_bytes",
                "A GPU's memory claimed by starting and running services",
                |g: &GpuState| g.claimed_mib,
            ),
        ];
        for (name, help, value) in families {
            let family = Family::<Device, Gauge>::default();
            for gpu in &self.gpus {
                family
                    .get_or_create(&Device {
                        gpu: gpu.index,
                        uuid: gpu.uuid.clone(),
                        name: gpu.name.clone(),
                    })
                    .set(bytes(value(gpu)));
            }
            registry.register(name, help, family);
        }
        registry
    }
}
