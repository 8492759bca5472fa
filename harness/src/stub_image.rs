//! Packages `aima-stub-engine` as the local image `aima-stub-engine:latest`.
//!
//! There is no registry and no base image, so the image is built `FROM scratch` out of
//! the stub binary plus every shared library `ldd` names for it (the dynamic loader
//! included), each at its absolute path. The image carries the binary's SHA-256 as a
//! label, so `ensure_*` rebuilds only when the image is missing or the binary changed.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, anyhow, bail};
use bollard::Docker;
use bollard::query_parameters::{BuildImageOptionsBuilder, RemoveImageOptionsBuilder};
use futures::StreamExt;
use sha2::{Digest, Sha256};

use crate::docker::plain_reason;

/// The tag tests and `AIMA_ENGINE_IMAGE_VLLM` use.
pub const STUB_IMAGE: &str = "aima-stub-engine:latest";
/// Image label holding the hex SHA-256 of the packaged binary.
pub const SHA256_LABEL: &str = "aima.stub.sha256";
/// Tells AIMA this image runs without a GPU even as a GPU engine (vLLM).
pub const GPU_OPTIONAL_LABEL: &str = "ai.aima.gpu=optional";
/// The binary's name in `target/<profile>/` and its path inside the image.
pub const STUB_BINARY_NAME: &str = "aima-stub-engine";
const ENTRYPOINT: &str = "/aima-stub-engine";

/// Builds from different tests or threads would race on the tag; one at a time per
/// process. (tokio's Mutex is not tied to a runtime, so separate `#[tokio::test]`s share it.)
static BUILD_LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A stub image that exists in the engine and matches the binary it was ensured for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StubImage {
    pub tag: String,
    /// `sha256:...`, the engine's image id.
    pub id: String,
    /// Hex SHA-256 of the packaged binary (the `aima.stub.sha256` label).
    pub binary_sha256: String,
    /// Image size in bytes as the engine reports it.
    pub size_bytes: u64,
    /// Whether this call built it (false: it was already current).
    pub rebuilt: bool,
    /// Whether it carries [`GPU_OPTIONAL_LABEL`] (images from older builds do not).
    pub gpu_optional: bool,
}

/// Finds the stub binary next to the current executable or in its parent directory, so
/// both `target/debug/harness` and `target/debug/deps/<test>` find
/// `target/debug/aima-stub-engine`.
pub fn locate_stub_binary() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()
        .context("cannot find the current executable to look for aima-stub-engine next to it")?;
    let name = format!("{STUB_BINARY_NAME}{}", std::env::consts::EXE_SUFFIX);
    let candidates: Vec<PathBuf> = exe
        .ancestors()
        .skip(1)
        .take(2)
        .map(|dir| dir.join(&name))
        .collect();
    candidates
        .iter()
        .find(|path| path.is_file())
        .cloned()
        .ok_or_else(|| {
            let looked: Vec<String> = candidates.iter().map(|p| p.display().to_string()).collect();
            anyhow!(
                "the stub engine binary is not built (looked for {}); run `cargo build -p harness --bin aima-stub-engine`",
                looked.join(" and ")
            )
        })
}

/// Hex SHA-256 of a file.
pub fn file_sha256(path: &Path) -> anyhow::Result<String> {
    let bytes = std::fs::read(path)
        .with_context(|| format!("cannot read the stub binary {}", path.display()))?;
    let mut hex = String::with_capacity(64);
    for byte in Sha256::digest(&bytes) {
        // Writing to a String cannot fail.
        let _ = write!(hex, "{byte:02x}");
    }
    Ok(hex)
}

/// Makes sure `aima-stub-engine:latest` exists and packages `stub_binary`.
pub async fn ensure_stub_image(docker: &Docker, stub_binary: &Path) -> anyhow::Result<StubImage> {
    ensure_image(docker, stub_binary, STUB_IMAGE, false).await
}

/// Makes sure `tag` exists and packages `stub_binary`: builds when the image is
/// missing, its label names another binary, or `force` is set (then without the build
/// cache); otherwise only inspects. After a rebuild the image the tag used to name is
/// removed if nothing else names or uses it.
pub async fn ensure_image(
    docker: &Docker,
    stub_binary: &Path,
    tag: &str,
    force: bool,
) -> anyhow::Result<StubImage> {
    let sha = file_sha256(stub_binary)?;
    let _guard = BUILD_LOCK.lock().await;
    let existing = inspect(docker, tag).await?;
    if let Some(current) = &existing
        && !force
        && current.binary_sha256 == sha
        && current.gpu_optional
    {
        return Ok(current.clone());
    }

    let context = build_context(stub_binary, &sha)?;
    build(docker, tag, context, force).await?;

    let mut built = inspect(docker, tag)
        .await?
        .ok_or_else(|| anyhow!("docker reported building {tag} but it does not exist"))?;
    if built.binary_sha256 != sha {
        bail!(
            "the image {tag} has label {SHA256_LABEL}={} after building, expected {sha}; was it retagged concurrently?",
            built.binary_sha256
        );
    }
    if let Some(old) = existing.filter(|old| old.id != built.id) {
        remove_if_untagged(docker, &old.id).await;
    }
    built.rebuilt = true;
    Ok(built)
}

/// Builds `tag` from a tar build context, failing with the step Docker failed at.
pub async fn build(
    docker: &Docker,
    tag: &str,
    context: Vec<u8>,
    nocache: bool,
) -> anyhow::Result<()> {
    let options = BuildImageOptionsBuilder::default()
        .dockerfile("Dockerfile")
        .t(tag)
        .rm(true)
        .forcerm(true)
        .nocache(nocache)
        .build();
    let mut progress = docker.build_image(options, None, Some(bollard::body_full(context.into())));
    // The last step the builder announced, to say where a failure happened.
    let mut last_step = String::new();
    while let Some(item) = progress.next().await {
        let info =
            item.map_err(|e| anyhow!("docker could not build {tag}: {}", plain_reason(&e)))?;
        if let Some(detail) = info.error_detail {
            bail!(
                "docker could not build {tag} at `{last_step}`: {}",
                detail.message.unwrap_or_default().trim()
            );
        }
        if let Some(step) = info.stream.as_deref().map(str::trim)
            && step.starts_with("Step ")
        {
            step.clone_into(&mut last_step);
        }
    }
    Ok(())
}

/// Removes a superseded image unless another tag still names it (the build cache can
/// give two tags the same id) or a container still uses it; best effort.
async fn remove_if_untagged(docker: &Docker, id: &str) {
    let Ok(image) = docker.inspect_image(id).await else {
        return;
    };
    if image.repo_tags.is_some_and(|tags| !tags.is_empty()) {
        return;
    }
    let options = RemoveImageOptionsBuilder::default().build();
    let _ = docker.remove_image(id, Some(options), None).await;
}

/// The image behind `tag`, or `None` if there is none.
async fn inspect(docker: &Docker, tag: &str) -> anyhow::Result<Option<StubImage>> {
    match docker.inspect_image(tag).await {
        Ok(image) => {
            let mut labels = image.config.and_then(|c| c.labels).unwrap_or_default();
            let (gpu_key, gpu_value) = GPU_OPTIONAL_LABEL.split_once('=').unwrap_or_default();
            Ok(Some(StubImage {
                tag: tag.to_owned(),
                id: image.id.unwrap_or_default(),
                gpu_optional: labels.get(gpu_key).is_some_and(|v| v == gpu_value),
                binary_sha256: labels.remove(SHA256_LABEL).unwrap_or_default(),
                size_bytes: image.size.and_then(|s| u64::try_from(s).ok()).unwrap_or(0),
                rebuilt: false,
            }))
        }
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 404, ..
        }) => Ok(None),
        Err(err) => Err(anyhow!(
            "cannot inspect the image {tag}: {}",
            plain_reason(&err)
        )),
    }
}

/// The tar build context: `Dockerfile` plus `rootfs/` holding the binary and its
/// libraries at their absolute paths (symlinks resolved to regular files, since the
/// scratch image has none of the link targets).
fn build_context(stub_binary: &Path, sha: &str) -> anyhow::Result<Vec<u8>> {
    scratch_context(
        stub_binary,
        ENTRYPOINT,
        &format!("{SHA256_LABEL}=\"{sha}\" {GPU_OPTIONAL_LABEL}"),
    )
}

/// A `FROM scratch` build context: `binary` at `entrypoint` and every shared library it
/// needs at its absolute path, with `labels` (`key="value" ...`) on the image.
pub fn scratch_context(binary: &Path, entrypoint: &str, labels: &str) -> anyhow::Result<Vec<u8>> {
    let dockerfile =
        format!("FROM scratch\nCOPY rootfs/ /\nLABEL {labels}\nENTRYPOINT [\"{entrypoint}\"]\n");
    let mut tar = tar::Builder::new(Vec::new());
    append(&mut tar, "Dockerfile", dockerfile.as_bytes(), 0o644)?;

    let bytes = std::fs::read(binary)
        .with_context(|| format!("cannot read the engine binary {}", binary.display()))?;
    append(&mut tar, &format!("rootfs{entrypoint}"), &bytes, 0o755)?;
    for library in shared_libraries(binary)? {
        let bytes = std::fs::read(&library).with_context(|| {
            format!(
                "cannot read {} (a shared library of {})",
                library.display(),
                binary.display()
            )
        })?;
        let inside = library.strip_prefix("/").unwrap_or(&library);
        append(
            &mut tar,
            &format!("rootfs/{}", inside.display()),
            &bytes,
            0o755,
        )?;
    }
    tar.into_inner()
        .context("cannot finish the build context archive")
}

fn append(
    tar: &mut tar::Builder<Vec<u8>>,
    path: &str,
    bytes: &[u8],
    mode: u32,
) -> anyhow::Result<()> {
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(tar::EntryType::Regular);
    header.set_size(bytes.len() as u64);
    header.set_mode(mode);
    header.set_mtime(0);
    header.set_uid(0);
    header.set_gid(0);
    tar.append_data(&mut header, path, bytes)
        .with_context(|| format!("cannot add {path} to the build context archive"))
}

/// Absolute paths of the shared libraries `ldd` lists for `binary`, loader included;
/// empty for a static binary.
fn shared_libraries(binary: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let output = Command::new("ldd").arg(binary).output().with_context(|| {
        format!(
            "cannot run ldd to list the shared libraries of {}; install it (glibc's libc-bin) or build the stub statically",
            binary.display()
        )
    })?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    if stdout.contains("statically linked") || stderr.contains("not a dynamic executable") {
        return Ok(Vec::new());
    }
    if !output.status.success() {
        bail!(
            "ldd {} failed ({}): {}",
            binary.display(),
            output.status,
            stderr.trim()
        );
    }
    parse_ldd(&stdout).map_err(|missing| {
        anyhow!(
            "ldd cannot find {missing}, a shared library of {}; install it on this host",
            binary.display()
        )
    })
}

/// Parses ldd's lines: `libc.so.6 => /lib/.../libc.so.6 (0x..)` and the loader's bare
/// `/lib64/ld-linux-x86-64.so.2 (0x..)`; the vDSO has no file and is skipped.
/// `Err` names a library ldd reports as `not found`.
fn parse_ldd(stdout: &str) -> Result<Vec<PathBuf>, String> {
    let mut paths = BTreeSet::new();
    for line in stdout.lines().map(str::trim) {
        let target = match line.split_once("=>") {
            Some((name, target)) => {
                if target.trim() == "not found" {
                    return Err(name.trim().to_owned());
                }
                target
            }
            None => line,
        };
        if let Some(path) = target
            .split_whitespace()
            .next()
            .filter(|p| p.starts_with('/'))
        {
            paths.insert(PathBuf::from(path));
        }
    }
    Ok(paths.into_iter().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ldd_output_yields_libraries_and_loader_but_not_the_vdso() {
        let out = "\tlinux-vdso.so.1 (0x00007ffc)\n\
                   \tlibgcc_s.so.1 => /lib/x86_64-linux-gnu/libgcc_s.so.1 (0x00007f1)\n\
                   \tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f2)\n\
                   \t/lib64/ld-linux-x86-64.so.2 (0x00007f3)\n";
        let paths = parse_ldd(out).expect("all libraries resolve");
        assert_eq!(
            paths,
            [
                "/lib/x86_64-linux-gnu/libc.so.6",
                "/lib/x86_64-linux-gnu/libgcc_s.so.1",
                "/lib64/ld-linux-x86-64.so.2",
            ]
            .map(PathBuf::from)
        );
    }

    #[test]
    fn ldd_not_found_names_the_library() {
        let out = "\tlibfoo.so.1 => not found\n\tlibc.so.6 => /lib/libc.so.6 (0x1)\n";
        assert_eq!(parse_ldd(out), Err("libfoo.so.1".to_owned()));
    }

    #[test]
    fn build_context_has_dockerfile_binary_and_label() {
        let dir = tempfile::tempdir().expect("temp dir");
        let binary = dir.path().join("stub");
        // A shell script is "not a dynamic executable" to ldd: no libraries.
        std::fs::write(&binary, b"#!/bin/sh\n").expect("write fake binary");
        let context = build_context(&binary, "abc123").expect("context builds");
        let mut archive = tar::Archive::new(context.as_slice());
        let mut names = Vec::new();
        let mut dockerfile = String::new();
        for entry in archive.entries().expect("readable archive") {
            let mut entry = entry.expect("entry");
            let name = entry.path().expect("path").display().to_string();
            if name == "Dockerfile" {
                std::io::Read::read_to_string(&mut entry, &mut dockerfile).expect("utf-8");
            }
            names.push(name);
        }
        assert_eq!(names, ["Dockerfile", "rootfs/aima-stub-engine"]);
        assert!(dockerfile.starts_with("FROM scratch\n"), "{dockerfile}");
        assert!(
            dockerfile.contains("LABEL aima.stub.sha256=\"abc123\""),
            "{dockerfile}"
        );
    }
}
