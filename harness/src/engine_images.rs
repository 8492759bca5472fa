//! Real engines for machines without a GPU or a registry: local images built from the
//! registries we have, by recipes kept in `harness/engines/`. Each image carries its
//! recipe's SHA-256 as a label, so a machine builds it once and again only when the
//! recipe changes. Today: llama.cpp's `llama-server` for the CPU (`aima-llamacpp-cpu`).

use std::fmt::Write as _;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context, anyhow, bail};
use bollard::Docker;
use sha2::{Digest, Sha256};

use crate::docker::plain_reason;

/// The label holding the hex SHA-256 of the recipe an image was built from.
pub const RECIPE_LABEL: &str = "aima.recipe.sha256";

/// A real engine image this harness knows how to build.
#[derive(Debug, Clone, Copy)]
pub struct EngineImage {
    /// What `harness image build --engine` calls it.
    pub engine: &'static str,
    pub tag: &'static str,
    /// The recipe: a script that leaves the engine binary in `$OUT`.
    recipe: &'static str,
    /// The binary the recipe leaves in `$OUT`, and its path in the image.
    binary: &'static str,
}

/// llama.cpp's server for the CPU, from the sources llama-cpp-python vendors.
pub const LLAMACPP_CPU: EngineImage = EngineImage {
    engine: "llama.cpp",
    tag: "aima-llamacpp-cpu:latest",
    recipe: include_str!("../engines/llamacpp-cpu.sh"),
    binary: "llama-server",
};

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
        eprintln!(
            "building {} from its recipe (sha256 {})",
            self.tag,
            &self.recipe_sha256()[..12]
        );
        run_recipe(&script, &out, started)?;
        let binary = out.join(self.binary);
        let labels = format!(
            "{RECIPE_LABEL}=\"{}\" ai.aima.engine=\"{}\"",
            self.recipe_sha256(),
            self.engine
        );
        let context =
            crate::stub_image::scratch_context(&binary, &format!("/{}", self.binary), &labels)?;
        eprintln!(
            "[{:>4}s] packaging {} with its shared libraries into {}",
            started.elapsed().as_secs(),
            self.binary,
            self.tag
        );
        crate::stub_image::build(docker, self.tag, context, force).await?;
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

/// Runs the recipe with `OUT=out`, echoing its lines with the time since `started`.
fn run_recipe(script: &Path, out: &Path, started: Instant) -> anyhow::Result<()> {
    let mut child = Command::new("bash")
        .arg(script)
        .env("OUT", out)
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
        _ => None,
    }
}

/// Writes the tiny real models into `out`: `tiny-llama/tiny-llama.gguf` (llama.cpp).
pub fn build_models(out: &Path) -> anyhow::Result<Vec<std::path::PathBuf>> {
    const WRITER: &str = include_str!("../models/tiny_gguf.py");
    let dir = out.join("tiny-llama");
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let gguf = dir.join("tiny-llama.gguf");
    let script = tempfile::NamedTempFile::new().context("cannot make a temporary file")?;
    std::fs::write(script.path(), WRITER).context("cannot write the model writer")?;
    let output = Command::new("python3")
        .arg(script.path())
        .arg(&gguf)
        .output()
        .context("cannot run python3; install it with the gguf and numpy packages")?;
    if !output.status.success() {
        bail!(
            "writing {} failed: {} (needs PyPI's gguf and numpy: pip install gguf numpy)",
            gguf.display(),
            String::from_utf8_lossy(&output.stderr)
                .trim()
                .lines()
                .last()
                .unwrap_or("")
        );
    }
    Ok(vec![gguf])
}
