//! The engine catalog: what each inference engine needs to run as a container. Data,
//! not code paths: adding an engine means adding an entry here.

use std::collections::BTreeMap;

/// One inference engine as AIMA runs it.
#[derive(Debug, Clone, PartialEq)]
pub struct EngineSpec {
    /// `[a-z0-9]+`; appears in service ids.
    pub name: &'static str,
    pub default_image: &'static str,
    /// Port the engine listens on inside its container.
    pub container_port: u16,
    /// Path that answers 2xx once the engine can serve.
    pub health_path: &'static str,
    /// Container arguments; `{model}`, `{served_name}` (the AIMA model's name, which the
    /// engine answers to and names in its replies), `{port}` and
    /// `{gpu_memory_utilization}` are filled in.
    pub args: &'static [&'static str],
    /// The engine takes one file, not a directory: for a local model directory, `{model}`
    /// is its file with this extension (the first part of a split model).
    pub model_file: Option<&'static str>,
    /// `/dev/shm` the engine's processes share tensors through; `None`: the runtime's
    /// default (Docker's 64 MiB).
    pub shm_size_bytes: Option<u64>,
    /// Extra environment the engine needs.
    pub env: &'static [(&'static str, &'static str)],
    pub needs_gpu: bool,
    /// GPU memory fraction passed when the service does not set one.
    pub default_gpu_memory_utilization: f64,
    /// Log lines that explain a failure: (substring, diagnosis). First match wins.
    pub log_signatures: &'static [(&'static str, &'static str)],
    /// How the daemon's health probes (one every 2 s per running service) stay out of
    /// the engine's access log.
    pub quiet_probes: QuietProbes,
    /// Longest a start may take from container start to a healthy answer, unless the
    /// service sets `--start-timeout`: loading weights and compiling kernels is slow.
    pub start_timeout: std::time::Duration,
    /// What the engine needs besides weights and KV cache, for memory estimates.
    pub memory: crate::domain::EngineMemory,
    /// For an engine that runs on the CPU or a GPU (`needs_gpu` false): how it runs on a
    /// GPU when the host has one. It then claims its memory estimate, not a share.
    pub gpu_offload: Option<GpuOffload>,
    /// How the engine is told the context its memory was planned for, when the model
    /// states one: arguments with `{context}`, or an environment variable.
    pub context: ContextSetting,
}

/// Where an engine takes its context length from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContextSetting {
    Args(&'static [&'static str]),
    Env(&'static str),
}

/// How a CPU-or-GPU engine runs on a GPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GpuOffload {
    /// The image built with CUDA (when the operator has not chosen an image).
    pub image: &'static str,
    /// Arguments that put the model on the GPU, after the template's.
    pub args: &'static [&'static str],
}

/// `/dev/shm` of vLLM and SGLang: their workers exchange tensors through it, and Docker's
/// 64 MiB default stops vLLM at engine init ("Insufficient space in /dev/shm", seen on a
/// real vLLM; its docs ask for `--ipc=host` or `--shm-size` on GPU hosts too). A limit,
/// not an allocation: tmpfs holds only what is written.
const PYTHON_ENGINE_SHM: u64 = 8 << 30;

/// Python engines that load large models and capture CUDA graphs.
const LONG_LOAD: std::time::Duration = std::time::Duration::from_secs(30 * 60);
/// Engines that only map a GGUF file.
const SHORT_LOAD: std::time::Duration = std::time::Duration::from_secs(10 * 60);

/// How health probes keep out of an engine's log: about 43,000 lines a day per service
/// otherwise.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuietProbes {
    /// The engine has a switch for it: these arguments follow the template's.
    Switch(&'static [&'static str]),
    /// The engine leaves the health path out of its access log by itself.
    NotLogged,
    /// The engine logs every HTTP request and has no switch: once it runs, the probe
    /// only checks that its port accepts connections (the start still waits for the
    /// health path to answer).
    ConnectOnly,
}

/// The diagnosis of an engine that ran out of GPU memory.
pub const OUT_OF_MEMORY: &str =
    "engine ran out of GPU memory; lower --gpu-memory-utilization or stop services sharing the GPU";
const NO_GPU: &str =
    "engine found no usable NVIDIA GPU; check the driver and the NVIDIA container toolkit";
const MODEL_MISSING: &str =
    "engine could not find or download the model; check the model's repo or path";
const PORT_TAKEN: &str = "engine could not bind its port inside the container";

/// Failure signatures shared by the Python engines (vLLM, SGLang).
const PYTHON_ENGINE_SIGNATURES: &[(&str, &str)] = &[
    ("CUDA out of memory", OUT_OF_MEMORY),
    ("OutOfMemoryError", OUT_OF_MEMORY),
    ("No available memory for the cache blocks", OUT_OF_MEMORY),
    ("No CUDA GPUs are available", NO_GPU),
    ("Found no NVIDIA driver", NO_GPU),
    ("CUDA driver version is insufficient", NO_GPU),
    ("Repository Not Found", MODEL_MISSING),
    ("does not appear to have a file named", MODEL_MISSING),
    ("OSError: We couldn't connect", MODEL_MISSING),
    ("Address already in use", PORT_TAKEN),
];

pub const CATALOG: &[EngineSpec] = &[
    EngineSpec {
        name: "vllm",
        default_image: "vllm/vllm-openai:latest",
        container_port: 8000,
        health_path: "/health",
        // vLLM answers only to its served name (the `--model` path otherwise, which for a
        // local model is /aima/model): it serves the AIMA model's name.
        args: &[
            "--model",
            "{model}",
            "--served-model-name",
            "{served_name}",
            "--host",
            "0.0.0.0",
            "--port",
            "{port}",
            "--gpu-memory-utilization",
            "{gpu_memory_utilization}",
        ],
        model_file: None,
        shm_size_bytes: Some(PYTHON_ENGINE_SHM),
        env: &[],
        needs_gpu: true,
        default_gpu_memory_utilization: 0.9,
        log_signatures: PYTHON_ENGINE_SIGNATURES,
        // vLLM's uvicorn access log, less the probed path (vLLM 0.10.2 and later).
        quiet_probes: QuietProbes::Switch(&["--disable-access-log-for-endpoints", "/health"]),
        start_timeout: LONG_LOAD,
        memory: crate::domain::EngineMemory::PYTHON_ENGINE,
        gpu_offload: None,
        context: ContextSetting::Args(&["--max-model-len", "{context}"]),
    },
    EngineSpec {
        name: "sglang",
        default_image: "lmsysorg/sglang:latest",
        container_port: 30000,
        health_path: "/health",
        args: &[
            "python3",
            "-m",
            "sglang.launch_server",
            "--model-path",
            "{model}",
            "--served-model-name",
            "{served_name}",
            "--host",
            "0.0.0.0",
            "--port",
            "{port}",
            "--mem-fraction-static",
            "{gpu_memory_utilization}",
        ],
        model_file: None,
        shm_size_bytes: Some(PYTHON_ENGINE_SHM),
        env: &[],
        needs_gpu: true,
        default_gpu_memory_utilization: 0.88,
        log_signatures: PYTHON_ENGINE_SIGNATURES,
        // SGLang has no per-path filter: its HTTP log level above info drops the access
        // lines (requests reach the gateway's metrics and AIMA's log instead).
        quiet_probes: QuietProbes::Switch(&["--log-level-http", "warning"]),
        start_timeout: LONG_LOAD,
        memory: crate::domain::EngineMemory::PYTHON_ENGINE,
        gpu_offload: None,
        context: ContextSetting::Args(&["--context-length", "{context}"]),
    },
    EngineSpec {
        name: "llamacpp",
        default_image: "ghcr.io/ggml-org/llama.cpp:server",
        container_port: 8080,
        health_path: "/health",
        // llama-server names its answers after `-m` unless given an alias, and serves
        // /metrics only when asked (both checked against the real server).
        args: &[
            "-m",
            "{model}",
            "--host",
            "0.0.0.0",
            "--port",
            "{port}",
            "--alias",
            "{served_name}",
            "--metrics",
        ],
        // `-m` must name the GGUF file: a directory fails with "failed to read magic".
        model_file: Some("gguf"),
        shm_size_bytes: None,
        env: &[],
        needs_gpu: false,
        default_gpu_memory_utilization: 0.9,
        log_signatures: &[
            ("failed to allocate", OUT_OF_MEMORY),
            ("out of memory", OUT_OF_MEMORY),
            ("failed to open", MODEL_MISSING),
            ("failed to load model", MODEL_MISSING),
            ("couldn't bind", PORT_TAKEN),
        ],
        // llama-server skips /health in its request log (server-http.cpp).
        quiet_probes: QuietProbes::NotLogged,
        start_timeout: SHORT_LOAD,
        memory: crate::domain::EngineMemory::LLAMA_CPP,
        // The CUDA build of llama-server, every layer offloaded (more than any model has).
        gpu_offload: Some(GpuOffload {
            image: "ghcr.io/ggml-org/llama.cpp:server-cuda",
            args: &["--n-gpu-layers", "999"],
        }),
        context: ContextSetting::Args(&["--ctx-size", "{context}"]),
    },
    EngineSpec {
        name: "ollama",
        default_image: "ollama/ollama:latest",
        container_port: 11434,
        health_path: "/api/version",
        args: &["serve"],
        model_file: None,
        shm_size_bytes: None,
        env: &[("OLLAMA_HOST", "0.0.0.0:{port}")],
        needs_gpu: false,
        default_gpu_memory_utilization: 0.9,
        log_signatures: &[
            ("out of memory", OUT_OF_MEMORY),
            ("address already in use", PORT_TAKEN),
        ],
        // Ollama's gin logger writes a line for every request, with no switch to turn
        // it off or skip a path.
        quiet_probes: QuietProbes::ConnectOnly,
        // `ollama serve` answers at once; models load on their first request.
        start_timeout: SHORT_LOAD,
        memory: crate::domain::EngineMemory::OLLAMA,
        // Ollama's image carries CUDA and offloads by itself once it sees a device.
        gpu_offload: Some(GpuOffload {
            image: "ollama/ollama:latest",
            args: &[],
        }),
        context: ContextSetting::Env("OLLAMA_CONTEXT_LENGTH"),
    },
];

/// The catalog with the operator's image overrides applied.
#[derive(Debug, Clone)]
pub struct Engines {
    images: BTreeMap<String, String>,
}

/// An engine ready to run: its spec and the image to run it from.
#[derive(Debug, Clone)]
pub struct Engine {
    pub spec: &'static EngineSpec,
    pub image: String,
    /// The image when it runs on a GPU: the operator's image if they chose one, else the
    /// catalog's CUDA build for a CPU-or-GPU engine.
    pub gpu_image: String,
}

impl Engines {
    /// `overrides` maps engine name → image (from `AIMA_ENGINE_IMAGE_<ENGINE>` or config.toml).
    pub fn new(overrides: &BTreeMap<String, String>) -> Self {
        Self {
            images: overrides.clone(),
        }
    }

    pub fn get(&self, name: &str) -> Option<Engine> {
        let spec = CATALOG.iter().find(|e| e.name == name)?;
        let image = self
            .images
            .get(name)
            .cloned()
            .unwrap_or_else(|| spec.default_image.to_owned());
        let gpu_image = match (self.images.get(name), spec.gpu_offload) {
            (None, Some(offload)) => offload.image.to_owned(),
            _ => image.clone(),
        };
        Some(Engine {
            spec,
            image,
            gpu_image,
        })
    }

    /// Engine names, for messages.
    pub fn names() -> String {
        CATALOG
            .iter()
            .map(|e| e.name)
            .collect::<Vec<_>>()
            .join(", ")
    }
}

impl Engine {
    /// The container's arguments for `model` (a repo or an in-container path); `on_gpu`
    /// adds a CPU-or-GPU engine's offload arguments.
    pub fn args(
        &self,
        model: &str,
        served_name: &str,
        gpu_memory_utilization: f64,
        on_gpu: bool,
        context: Option<u32>,
    ) -> Vec<String> {
        let quiet: &[&str] = match self.spec.quiet_probes {
            QuietProbes::Switch(args) => args,
            QuietProbes::NotLogged | QuietProbes::ConnectOnly => &[],
        };
        let offload: &[&str] = match self.spec.gpu_offload {
            Some(offload) if on_gpu => offload.args,
            _ => &[],
        };
        let sized: &[&str] = match (self.spec.context, context) {
            (ContextSetting::Args(args), Some(_)) => args,
            _ => &[],
        };
        self.spec
            .args
            .iter()
            .chain(quiet)
            .chain(offload)
            .chain(sized)
            .map(|a| self.fill(a, model, served_name, gpu_memory_utilization, context))
            .collect()
    }

    /// The image a start runs: the CUDA build when a CPU-or-GPU engine got a GPU.
    pub fn image_for(&self, on_gpu: bool) -> &str {
        if on_gpu && self.spec.gpu_offload.is_some() {
            &self.gpu_image
        } else {
            &self.image
        }
    }

    /// The container's environment from the catalog (before the service's own `--env`).
    pub fn env(
        &self,
        model: &str,
        served_name: &str,
        gpu_memory_utilization: f64,
        context: Option<u32>,
    ) -> Vec<String> {
        let mut env: Vec<String> = self
            .spec
            .env
            .iter()
            .map(|(k, v)| {
                format!(
                    "{k}={}",
                    self.fill(v, model, served_name, gpu_memory_utilization, context)
                )
            })
            .collect();
        if let (ContextSetting::Env(key), Some(context)) = (self.spec.context, context) {
            env.push(format!("{key}={context}"));
        }
        env
    }

    fn fill(
        &self,
        template: &str,
        model: &str,
        served_name: &str,
        gpu_memory_utilization: f64,
        context: Option<u32>,
    ) -> String {
        template
            .replace("{model}", model)
            .replace("{served_name}", served_name)
            .replace(
                "{context}",
                &context.map(|c| c.to_string()).unwrap_or_default(),
            )
            .replace("{port}", &self.spec.container_port.to_string())
            .replace(
                "{gpu_memory_utilization}",
                &format!("{gpu_memory_utilization}"),
            )
    }

    /// Whether the engine answers to the AIMA model's name (it is given `{served_name}`),
    /// so a request must name that model, not the service.
    pub fn serves_model_name(&self) -> bool {
        self.spec.args.contains(&"{served_name}")
    }

    /// Explains a failure from the container's last log lines, if a signature matches.
    pub fn diagnose(&self, logs: &str) -> Option<&'static str> {
        self.spec
            .log_signatures
            .iter()
            .find(|(needle, _)| logs.contains(needle))
            .map(|(_, diagnosis)| *diagnosis)
    }
}

/// The engine a service of `model` most likely runs on, for its memory estimate and the
/// recommendation, and the one a service made for it runs: Ollama for Ollama's library,
/// llama.cpp for GGUF weights, vLLM otherwise.
pub fn default_engine_for(model: &crate::domain::Model) -> &'static str {
    if model.source == crate::domain::ModelSource::Ollama {
        // Ollama's names (`llama3.2:1b`) mean Ollama's library: only Ollama loads them.
        "ollama"
    } else if model.facts.format.as_deref() == Some("gguf") {
        "llamacpp"
    } else {
        "vllm"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::is_engine_name;

    #[test]
    fn catalog_names_fit_service_ids_and_are_unique() {
        let mut names: Vec<_> = CATALOG.iter().map(|e| e.name).collect();
        assert!(names.iter().all(|n| is_engine_name(n)));
        names.dedup();
        assert_eq!(names.len(), CATALOG.len());
    }

    #[test]
    fn vllm_arguments_follow_the_template() {
        let vllm = Engines::new(&BTreeMap::new()).get("vllm").expect("vllm");
        assert_eq!(vllm.image, "vllm/vllm-openai:latest");
        assert_eq!(
            vllm.args("org/model", "model", 0.45, false, None),
            [
                "--model",
                "org/model",
                "--served-model-name",
                "model",
                "--host",
                "0.0.0.0",
                "--port",
                "8000",
                "--gpu-memory-utilization",
                "0.45",
                "--disable-access-log-for-endpoints",
                "/health"
            ]
        );
    }

    #[test]
    fn llama_cpp_answers_to_the_model_name_and_serves_its_metrics() {
        let llama = Engines::new(&BTreeMap::new())
            .get("llamacpp")
            .expect("llamacpp");
        assert_eq!(
            llama.args("/aima/model/tiny.gguf", "tiny", 0.9, false, Some(2048)),
            [
                "-m",
                "/aima/model/tiny.gguf",
                "--host",
                "0.0.0.0",
                "--port",
                "8080",
                "--alias",
                "tiny",
                "--metrics",
                "--ctx-size",
                "2048"
            ]
        );
        assert_eq!(llama.spec.model_file, Some("gguf"));
    }

    #[test]
    fn overrides_replace_the_image() {
        let overrides = [("vllm".to_owned(), "aima-stub-engine:latest".to_owned())].into();
        let engines = Engines::new(&overrides);
        assert_eq!(
            engines.get("vllm").expect("vllm").image,
            "aima-stub-engine:latest"
        );
        assert_eq!(
            engines.get("sglang").expect("sglang").image,
            "lmsysorg/sglang:latest"
        );
        assert!(engines.get("tgi").is_none());
    }

    #[test]
    fn ollama_gets_its_listen_address_from_env() {
        let ollama = Engines::new(&BTreeMap::new())
            .get("ollama")
            .expect("ollama");
        assert_eq!(
            ollama.env("m", "m", 0.9, None),
            ["OLLAMA_HOST=0.0.0.0:11434"]
        );
        // A stated context reaches Ollama through its environment.
        assert_eq!(
            ollama.env("m", "m", 0.9, Some(8192)),
            ["OLLAMA_HOST=0.0.0.0:11434", "OLLAMA_CONTEXT_LENGTH=8192"]
        );
    }

    #[test]
    fn diagnosis_reads_log_signatures() {
        let vllm = Engines::new(&BTreeMap::new()).get("vllm").expect("vllm");
        let logs =
            "Traceback...\ntorch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB";
        assert!(
            vllm.diagnose(logs)
                .expect("diagnosed")
                .contains("out of GPU memory")
        );
        assert_eq!(vllm.diagnose("all fine"), None);
    }
}
