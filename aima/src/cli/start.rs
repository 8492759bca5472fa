use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

use super::CliError;
use crate::config::Settings;

/// `aima start`: the daemon in the foreground, logging to stderr (`RUST_LOG` filters).
pub fn run(settings: Settings) -> Result<(), CliError> {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let runtime = super::async_runtime(tokio::runtime::Builder::new_multi_thread())?;
    runtime
        .block_on(crate::server::run(settings))
        .map_err(|e| CliError::new(CliError::FAILED, e.to_string()))
}
