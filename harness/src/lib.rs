//! The harness library: what AIMA's scenario runner and integration tests share with the
//! `harness` binary. That is the Docker connection, the stub engine image, the real engine images and tiny
//! models, and the operator scenarios.

pub mod bench;
mod bench_real;
pub mod docker;
pub mod docker_proxy;
pub mod engine_images;
pub mod ledger;
pub mod scenarios;
pub mod stub_image;

/// Under cargo (`cargo harness run …`, `cargo test`), builds the `aima` and
/// `aima-stub-engine` binaries next to this one first, so a run never tests a stale or
/// missing build (a mutation run changes aima's source between runs). Outside cargo, the
/// binaries given or found are used as they are.
pub fn build_under_cargo() -> anyhow::Result<()> {
    let Some(cargo) = std::env::var_os("CARGO") else {
        return Ok(());
    };
    let exe = std::env::current_exe()?;
    let release = exe.ancestors().take(3).any(|dir| dir.ends_with("release"));
    let mut cmd = std::process::Command::new(cargo);
    cmd.args([
        "build",
        "-p",
        "aima",
        "--bin",
        "aima",
        "-p",
        "harness",
        "--bin",
        "aima-stub-engine",
    ]);
    if release {
        cmd.arg("--release");
    }
    // Cargo's own progress follows on stderr; a first build takes minutes.
    eprintln!(
        "harness: building aima and aima-stub-engine ({} build; the first one takes minutes, later ones seconds)",
        if release { "release" } else { "debug" }
    );
    let status = cmd.status()?;
    anyhow::ensure!(
        status.success(),
        "building aima and aima-stub-engine failed"
    );
    Ok(())
}
