//! The `aima` command line: `aima start` runs the daemon; every other command is a thin
//! HTTP client of it. Exit codes scripts can rely on: 0 success, 1 the daemon refused or
//! failed the request, 2 bad usage or settings, 3 the daemon is unreachable.

mod client;
mod device;
mod ignored;
mod listing;
mod model;
mod output;
mod ps;
mod pull;
mod service;
mod start;
mod status;
mod verbs;
mod version;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

pub use client::Client;
pub use model::estimate_path;
pub use output::{OutputFormat, path_segment};

use crate::config::{Flags, Settings};

#[derive(Debug, Parser)]
#[command(
    name = "aima",
    version,
    about = "Run several LLM inference engines on one GPU host"
)]
struct Cli {
    /// Output format.
    #[arg(short = 'o', long = "output", global = true, value_enum, default_value_t = OutputFormat::Table)]
    output: OutputFormat,
    /// AIMA home: database, config and logs [env: AIMA_HOME] [default: ~/.aima]
    #[arg(long, global = true, value_name = "DIR")]
    home: Option<PathBuf>,
    /// Daemon API address: the daemon binds it, the CLI dials it [env: AIMA_ADDR] [default: 127.0.0.1:9090]
    #[arg(long, global = true, value_name = "HOST:PORT")]
    addr: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the daemon in the foreground (SIGTERM or Ctrl-C stops it gracefully).
    Start(start::StartArgs),
    /// Show the daemon's version, home, database, Docker and GPUs.
    Status,
    /// Register and inspect models.
    #[command(subcommand)]
    Model(model::ModelCommand),
    /// Create, start, stop and inspect inference services.
    #[command(subcommand)]
    Service(service::ServiceCommand),
    /// Inspect the host's GPUs.
    #[command(subcommand)]
    Device(device::DeviceCommand),
    /// Run a model: give it a service if it has none, start it, then answer PROMPT (or
    /// chat on a terminal).
    Run(verbs::RunArgs),
    /// Download a Hugging Face model's files into the model root (org/name registers it).
    Pull(pull::PullArgs),
    /// Talk to a model or service through the gateway (which starts it when cold).
    Chat(verbs::ChatArgs),
    /// Stop services (or the service of a model); returns once their ports are free.
    Stop {
        /// Services or models: names, ids or unique id prefixes.
        #[arg(value_name = "NAME", required = true)]
        names: Vec<String>,
    },
    /// Stop and start services again, waiting for each to run.
    Restart(verbs::RestartArgs),
    /// Print a service's (or a model's service's) engine output.
    Logs(service::LogsArgs),
    /// What is loaded: engines starting or running, their GPU, traffic, speed and unload time.
    Ps,
    /// 'aima ps' live: again every 2 seconds until Ctrl-C.
    Top,
    /// Every service's and model's events, oldest first (an audit trail, as docker events).
    Events {
        /// Keep printing new events.
        #[arg(short, long)]
        follow: bool,
    },
    /// Show this binary's version, commit and build date, and the daemon's.
    Version,
    /// Serve AIMA's tools to an AI agent over the Model Context Protocol on stdin/stdout
    /// (register it with your MCP client; it talks to the running daemon).
    Mcp,
    /// Print a shell completion script: aima completions bash > /etc/bash_completion.d/aima
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
}

/// A failure to report as one `error:` line, with the exit code scripts see.
#[derive(Debug)]
pub struct CliError {
    pub message: String,
    pub exit: u8,
}

impl CliError {
    pub const FAILED: u8 = 1;
    pub const USAGE: u8 = 2;
    pub const UNREACHABLE: u8 = 3;

    pub fn new(exit: u8, message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            exit,
        }
    }
}

/// Entry point of the `aima` binary.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return usage_error(e),
    };
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // Commands over several ids print each failure as it happens.
            if !e.message.is_empty() {
                eprintln!("error: {}", crate::domain::one_line(&e.message));
            }
            ExitCode::from(e.exit)
        }
    }
}

fn run(cli: Cli) -> Result<(), CliError> {
    let flags = Flags {
        home: cli.home,
        addr: cli.addr,
    };
    let settings =
        Settings::resolve(&flags).map_err(|e| CliError::new(CliError::USAGE, e.to_string()))?;
    match cli.command {
        Command::Start(args) => return start::run(settings, &args),
        Command::Completions { shell } => {
            // Generated from the same definition clap parses, so it never drifts.
            let mut command = <Cli as clap::CommandFactory>::command();
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut command, "aima", &mut script);
            // A closed pipe (`| head`) ends the command quietly.
            let _ = std::io::Write::write_all(&mut std::io::stdout(), &script);
            return Ok(());
        }
        _ => {}
    }
    // A client makes one request at a time: one thread is plenty.
    let runtime = async_runtime(tokio::runtime::Builder::new_current_thread())?;
    let client = Client::new(settings.addr, settings.api_token.clone());
    runtime.block_on(async {
        if !matches!(cli.command, Command::Version | Command::Mcp) {
            ignored::warn(&client).await;
        }
        match cli.command {
            Command::Start(_) | Command::Completions { .. } => unreachable!("handled above"),
            Command::Version => version::run(&client, cli.output).await,
            Command::Status => status::run(&client, cli.output).await,
            Command::Model(command) => model::run(&client, cli.output, command).await,
            Command::Service(command) => service::run(&client, cli.output, command).await,
            Command::Device(command) => device::run(&client, cli.output, command).await,
            Command::Ps => ps::run(&client, cli.output).await,
            Command::Top => ps::top(&client, cli.output).await,
            Command::Run(args) => verbs::run(&client, args).await,
            Command::Chat(args) => verbs::chat(&client, args).await,
            Command::Pull(args) => pull::run(&client, cli.output, args).await,
            Command::Stop { names } => {
                let command = service::ServiceCommand::Stop { ids: names };
                verbs::as_service(&client, cli.output, command).await
            }
            Command::Restart(args) => verbs::restart(&client, cli.output, args).await,
            Command::Logs(args) => {
                let command = service::ServiceCommand::Logs(args);
                verbs::as_service(&client, cli.output, command).await
            }
            Command::Mcp => crate::mcp::serve_stdio(client).await,
            Command::Events { follow } => {
                let path = format!("/api/v1/events?follow={follow}");
                service::print_events(&client, cli.output, &path).await
            }
        }
    })
}

/// Runs `action` for each id in turn, as `docker stop a b` does: a failure is reported on
/// its own `error:` line and the rest still run; the command fails if any did.
async fn each<'a, F, Fut>(ids: &'a [String], action: F) -> Result<(), CliError>
where
    F: Fn(&'a str) -> Fut,
    Fut: std::future::Future<Output = Result<(), CliError>>,
{
    let mut last_error = None;
    for id in ids {
        if let Err(e) = action(id).await {
            if ids.len() == 1 {
                return Err(e);
            }
            eprintln!("error: {}", crate::domain::one_line(&e.message));
            last_error = Some(e);
        }
    }
    match last_error {
        // Each error is printed already; the exit code says one went wrong.
        Some(e) => Err(CliError::new(e.exit, String::new())),
        None => Ok(()),
    }
}

/// Builds the tokio runtime a command runs on.
fn async_runtime(
    mut builder: tokio::runtime::Builder,
) -> Result<tokio::runtime::Runtime, CliError> {
    builder.enable_all().build().map_err(|e| {
        CliError::new(
            CliError::FAILED,
            format!("cannot start the async runtime: {e}"),
        )
    })
}

/// clap's errors span several lines; scripts and people get one: the problem, then usage.
fn usage_error(err: clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    match err.kind() {
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => {
            let _ = err.print();
            return ExitCode::SUCCESS;
        }
        ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            let _ = err.print();
            return ExitCode::from(CliError::USAGE);
        }
        _ => {}
    }
    eprintln!("{}", one_line(&err.render().to_string()));
    ExitCode::from(CliError::USAGE)
}

fn one_line(rendered: &str) -> String {
    let mut problem = Vec::new();
    let mut usage = None;
    for line in rendered.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if line.starts_with("For more information") {
            continue;
        }
        match line.strip_prefix("Usage: ") {
            Some(u) => usage = Some(u.to_owned()),
            None => problem.push(line.to_owned()),
        }
    }
    let mut text = problem.join(" ");
    if !text.starts_with("error:") {
        text = format!("error: {text}");
    }
    match usage {
        Some(usage) => format!("{text}; usage: {usage}"),
        None => format!("{text}; see 'aima --help'"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clap_errors_become_one_line() {
        let err = Cli::try_parse_from(["aima", "model", "create", "--source", "s3"])
            .expect_err("bad source");
        let line = one_line(&err.render().to_string());
        assert!(!line.contains('\n'), "{line}");
        assert!(
            line.starts_with("error: invalid value 's3' for '--source <SOURCE>'"),
            "{line}"
        );
        assert!(
            line.contains("ollama, huggingface, modelscope, local"),
            "{line}"
        );
    }

    #[test]
    fn typo_hints_name_the_flag_people_meant() {
        let hint = |args: &[&str]| {
            let err = Cli::try_parse_from(args).expect_err("a typo");
            one_line(&err.render().to_string())
        };
        // --gpu-share is accepted as the share; a near miss is not steered to --gpu.
        assert!(
            Cli::try_parse_from([
                "aima",
                "service",
                "create",
                "--model-id",
                "m",
                "--engine-type",
                "vllm",
                "--gpu-share",
                "0.5",
            ])
            .is_ok()
        );
        let line = hint(&[
            "aima",
            "service",
            "create",
            "--model-id",
            "m",
            "--engine-type",
            "vllm",
            "--gpu-shares",
            "0.5",
        ]);
        assert!(
            line.contains("similar argument exists: '--gpu-share'")
                && line.contains("--gpu-memory-utilization <F>"),
            "{line}"
        );
        assert!(
            Cli::try_parse_from([
                "aima", "model", "create", "--name", "x", "--source", "hf", "--repo", "a/b"
            ])
            .is_ok()
        );
    }

    #[test]
    fn cli_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
