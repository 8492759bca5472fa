//! `harness`: runs AIMA's operator scenarios (features/*.feature) against a real Docker
//! engine. This is the skeleton: the scenario runner, the stub engine image and the
//! reports arrive with the scenario issue; until then the commands say so and fail.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

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
    }
}
