use std::io::IsTerminal;

use clap::Args;
use tracing_subscriber::EnvFilter;

use super::CliError;
use crate::config::Settings;

#[derive(Debug, Args)]
pub struct StartArgs {
    /// Log lines as text for people or JSON for log shippers [env: AIMA_LOG_FORMAT] [default: text]
    #[arg(long, value_name = "text|json")]
    log_format: Option<String>,
}

/// How the daemon writes its log lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LogFormat {
    Text,
    Json,
}

impl LogFormat {
    /// The flag, else `AIMA_LOG_FORMAT`, else text; a bad value names where it came from.
    fn resolve(flag: Option<&str>, env: Option<&str>) -> Result<Self, CliError> {
        let (setting, value) = match (flag, env.filter(|v| !v.is_empty())) {
            (Some(v), _) => ("--log-format", v),
            (None, Some(v)) => ("AIMA_LOG_FORMAT", v),
            (None, None) => return Ok(Self::Text),
        };
        match value {
            "text" => Ok(Self::Text),
            "json" => Ok(Self::Json),
            other => Err(CliError::new(
                CliError::USAGE,
                format!(
                    "{setting} '{}' is not a log format; use text or json",
                    crate::domain::one_line(other)
                ),
            )),
        }
    }
}

/// `aima start`: the daemon in the foreground, logging to stderr (`RUST_LOG` filters).
pub fn run(settings: Settings, args: &StartArgs) -> Result<(), CliError> {
    let format = LogFormat::resolve(
        args.log_format.as_deref(),
        std::env::var("AIMA_LOG_FORMAT").ok().as_deref(),
    )?;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // Colours only for a person at a terminal who has not asked for none (no-color.org).
    let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => logs
            .with_ansi(std::io::stderr().is_terminal() && !no_color)
            .init(),
        // One JSON object per line, fields flattened: what Loki, Vector or jq expect.
        LogFormat::Json => logs
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .init(),
    }
    let runtime = super::async_runtime(tokio::runtime::Builder::new_multi_thread())?;
    runtime
        .block_on(crate::server::run(settings))
        .map_err(|e| CliError::new(CliError::FAILED, e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_flag_wins_over_the_environment_and_bad_values_are_named() {
        assert_eq!(
            LogFormat::resolve(None, None).expect("default"),
            LogFormat::Text
        );
        assert_eq!(
            LogFormat::resolve(None, Some("json")).expect("env"),
            LogFormat::Json
        );
        assert_eq!(
            LogFormat::resolve(Some("text"), Some("json")).expect("flag"),
            LogFormat::Text
        );
        let err = LogFormat::resolve(None, Some("xml")).expect_err("bad");
        assert_eq!(err.exit, CliError::USAGE);
        assert_eq!(
            err.message,
            "AIMA_LOG_FORMAT 'xml' is not a log format; use text or json"
        );
    }
}
