//! `harness`: runs AIMA's operator scenarios (features/*.feature) against a real Docker
//! engine. The scenario runner and reports arrive with the scenario issue; until then
//! `run` says so and fails. `image build` packages the stub engine image.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use harness::stub_image::{self, STUB_IMAGE};

#[derive(Debug, Parser)]
#[command(
    name = "harness",
    version,
    about = "Executable operator scenarios for AIMA"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// List the scenario features found in features/.
    List,
    /// Run a scenario (scenario-NN) or all of them.
    Run { scenario: String },
    /// Manage the stub engine image (aima-stub-engine:latest).
    #[command(subcommand)]
    Image(ImageCommand),
}

#[derive(Debug, Subcommand)]
enum ImageCommand {
    /// Build aima-stub-engine:latest from the stub binary, unless it is already current.
    Build {
        /// The stub binary to package [default: aima-stub-engine next to this executable].
        #[arg(long, value_name = "PATH")]
        binary: Option<PathBuf>,
        /// Rebuild even when the image already packages this binary.
        #[arg(long)]
        force: bool,
    },
}

fn features_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../features")
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::List => {
            let mut names: Vec<String> = std::fs::read_dir(features_dir())
                .into_iter()
                .flatten()
                .flatten()
                .map(|entry| entry.file_name().to_string_lossy().into_owned())
                .filter(|name| name.ends_with(".feature"))
                .collect();
            names.sort();
            if names.is_empty() {
                eprintln!("no scenario features in {} yet", features_dir().display());
            }
            for name in names {
                println!("{name}");
            }
            ExitCode::SUCCESS
        }
        Command::Run { scenario } => {
            eprintln!(
                "error: cannot run {scenario}: the scenario runner is not built yet (planned with the scenario harness issue)"
            );
            ExitCode::from(2)
        }
        Command::Image(ImageCommand::Build { binary, force }) => match image_build(binary, force) {
            Ok(()) => ExitCode::SUCCESS,
            Err(err) => {
                eprintln!("error: {err:#}");
                ExitCode::FAILURE
            }
        },
    }
}

fn image_build(binary: Option<PathBuf>, force: bool) -> anyhow::Result<()> {
    let binary = match binary {
        Some(path) if !path.is_file() => anyhow::bail!(
            "--binary {}: no such file; build it with `cargo build -p harness --bin aima-stub-engine`",
            path.display()
        ),
        Some(path) => path,
        None => stub_image::locate_stub_binary()?,
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let image = runtime.block_on(async {
        let docker = harness::docker::connect().await?;
        stub_image::ensure_image(&docker, &binary, STUB_IMAGE, force).await
    })?;
    let state = if image.rebuilt {
        "built"
    } else {
        "already current"
    };
    println!(
        "{} {} {state} ({:.1} MB, binary {} sha256 {})",
        image.tag,
        image.id,
        image.size_bytes as f64 / 1e6,
        binary.display(),
        image
            .binary_sha256
            .get(..12)
            .unwrap_or(&image.binary_sha256)
    );
    Ok(())
}
