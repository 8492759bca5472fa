use std::io::IsTerminal;
use std::time::{Duration, Instant};

use chrono::Utc;
use clap::{Args, Subcommand};
use futures::StreamExt;

use super::listing::{self, ListArgs};
use super::output::{self, OutputFormat, age, columns, columns_of, fields, or_dash, path_segment};
use super::{CliError, Client};
use crate::api::dto::{
    CreateServiceRequest, EventDto, List, LoadedDto, RecommendDto, ServiceDto,
    UpdateServiceRequest, UpdatedServiceDto,
};

#[derive(Debug, Subcommand)]
pub enum ServiceCommand {
    /// Create a service for a model; it holds its host port until deleted.
    Create(CreateArgs),
    /// Change a service's settings without deleting it (running or not).
    Update(UpdateArgs),
    /// List services, oldest first (filter keys: status, engine, model, name).
    #[command(visible_alias = "ls")]
    List(ListArgs),
    /// Show one service.
    Get {
        /// The service: its id, its name, or a unique prefix of its id.
        #[arg(value_name = "ID|NAME")]
        id: String,
    },
    /// Show a service's status and its reason.
    Status {
        /// The service: its id, its name, or a unique prefix of its id.
        #[arg(value_name = "ID|NAME")]
        id: String,
    },
    /// Start the engine containers of one or more services.
    Start {
        /// Services: ids, names, or unique id prefixes.
        #[arg(value_name = "ID|NAME", required = true)]
        ids: Vec<String>,
        /// Wait until the service runs (exit 0) or fails (exit 1), showing each phase.
        #[arg(long)]
        wait: bool,
        /// With --wait: give up waiting after this long (600, 10m; the start goes on).
        #[arg(long, value_name = "DURATION", default_value = "600", value_parser = parse_duration, requires = "wait")]
        timeout: Duration,
    },
    /// Stop one or more services; returns once their ports are free.
    Stop {
        /// Services: ids, names, or unique id prefixes.
        #[arg(value_name = "ID|NAME", required = true)]
        ids: Vec<String>,
    },
    /// Delete one or more services, freeing their ports.
    #[command(visible_alias = "rm")]
    Delete {
        /// Services: ids, names, or unique id prefixes.
        #[arg(value_name = "ID|NAME", required = true)]
        ids: Vec<String>,
        /// Stop a running or starting service first instead of refusing.
        #[arg(short, long)]
        force: bool,
    },
    /// Wait until a service is running, stopped or failed (exit 0), or give up (exit 1).
    Wait {
        /// The service: its id, its name, or a unique prefix of its id.
        #[arg(value_name = "ID|NAME")]
        id: String,
        /// The status to wait for.
        #[arg(long = "for", value_enum, value_name = "STATUS")]
        wanted: WaitFor,
        /// Give up after this long (600, 30s, 5m, 1h).
        #[arg(long, value_name = "DURATION", default_value = "10m", value_parser = parse_duration)]
        timeout: Duration,
    },
    /// Print the engine container's output (its last lines are kept after a stop or failure).
    Logs(LogsArgs),
    /// What fits on the GPUs now: per model the engine, GPU and memory utilization.
    Recommend {
        /// Only this model (default: every registered model).
        #[arg(long)]
        model_id: Option<String>,
    },
    /// Print the service's events (phases, status changes).
    Events {
        /// The service: its id, its name, or a unique prefix of its id.
        #[arg(value_name = "ID|NAME")]
        id: String,
        /// Keep printing new events.
        #[arg(short, long)]
        follow: bool,
    },
}

/// `service logs` and `aima logs`.
#[derive(Debug, Args)]
pub struct LogsArgs {
    /// The service, or a model it serves: an id, a name, or a unique prefix of an id.
    #[arg(value_name = "ID|NAME")]
    id: String,
    /// Keep printing new output.
    #[arg(short, long)]
    follow: bool,
    /// Only the last N lines.
    #[arg(long, value_name = "N")]
    tail: Option<usize>,
    /// Only output since then: 2026-12-02T10:00:00Z, unix seconds, or 10m ago.
    #[arg(long, value_name = "TIME")]
    since: Option<String>,
    /// Begin each line with the time it was written.
    #[arg(short, long)]
    timestamps: bool,
    /// The lines kept from the container before the current one (a crashed engine's).
    #[arg(short, long, conflicts_with = "follow")]
    previous: bool,
}

/// What `service wait --for` waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum WaitFor {
    Running,
    Stopped,
    Failed,
}

impl WaitFor {
    fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Stopped => "stopped",
            Self::Failed => "failed",
        }
    }
}

/// A duration flag's value, by the domain's one rule (bare seconds or units); clap's
/// error names the flag and the value.
fn parse_duration(text: &str) -> Result<Duration, String> {
    crate::domain::parse_duration(text)
        .ok_or_else(|| format!("not a duration; {}", crate::domain::DURATION_FORMS))
}

/// The keys `service list --filter` takes (the API's list filters).
const FILTER_KEYS: [&str; 4] = ["status", "engine", "model", "name"];

impl super::listing::Listed for ServiceDto {
    fn id(&self) -> &str {
        &self.id
    }
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    /// Model to serve: its id, its name or a unique id prefix (see 'aima model list').
    #[arg(long, value_name = "ID|NAME")]
    model_id: String,
    /// Inference engine: vllm, sglang, llamacpp or ollama.
    #[arg(long)]
    engine_type: String,
    /// A name for people (default: MODEL-ENGINE).
    #[arg(long)]
    name: Option<String>,
    /// Host port (default: the lowest free port of AIMA_PORT_RANGE).
    #[arg(long)]
    port: Option<u16>,
    /// Fraction of GPU memory the engine may use, in (0, 1].
    // The words people reach for, so a typo hint never offers --gpu (an index) instead.
    #[arg(long, value_name = "F", aliases = ["gpu-share", "gpu-memory", "gpu-util", "mem-fraction-static"])]
    gpu_memory_utilization: Option<f64>,
    /// Environment for the engine container; repeatable.
    #[arg(long = "env", value_name = "KEY=VALUE")]
    env: Vec<String>,
    /// The gateway stops the engine after this long without requests (600, 10m, 1h).
    #[arg(long, value_name = "DURATION")]
    idle_timeout: Option<String>,
    /// How long a gateway request waits for the engine to load [default: 10m].
    #[arg(long, value_name = "DURATION")]
    load_timeout: Option<String>,
    /// Requests the gateway passes to the engine at once; the rest wait their turn.
    #[arg(long, value_name = "N")]
    max_concurrency: Option<u32>,
    /// Run it on this GPU (its index in 'aima device detect') [default: the GPU where
    /// its model fits best, as 'aima service recommend' ranks them].
    #[arg(long, value_name = "N")]
    gpu: Option<u32>,
    /// When a service like it exists (this --name, or else this model and engine), print
    /// that one instead of creating another.
    #[arg(long)]
    if_not_exists: bool,
    /// Never stop this service to make room for another engine on its GPU.
    #[arg(long)]
    pinned: bool,
    /// Send the gateway's requests for this model here when none of its services runs.
    #[arg(long)]
    default: bool,
    #[command(flatten)]
    healing: HealingArgs,
}

/// Restart policy and health checks, for `create` and `update`.
#[derive(Debug, Args)]
pub struct HealingArgs {
    /// When AIMA starts a stopped engine again: no, on-failure[:MAX] or always
    /// [default: on-failure:5].
    #[arg(long, value_name = "POLICY")]
    restart: Option<String>,
    /// Longest a start may take until the engine answers (20m) [default: the engine's].
    #[arg(long, value_name = "DURATION")]
    start_timeout: Option<String>,
    /// How often a running engine is probed [default: 2s].
    #[arg(long, value_name = "DURATION")]
    health_interval: Option<String>,
    /// Missed probes in a row before a running engine counts as failed [default: 5].
    #[arg(long, value_name = "N")]
    health_retries: Option<u32>,
}

#[derive(Debug, Args)]
pub struct UpdateArgs {
    /// The service: its id, its name, or a unique prefix of its id.
    #[arg(value_name = "ID|NAME")]
    id: String,
    #[command(flatten)]
    healing: HealingArgs,
    /// Fraction of GPU memory the engine may use, in (0, 1] (at the next start).
    #[arg(long, value_name = "F", aliases = ["gpu-share", "gpu-memory", "gpu-util", "mem-fraction-static"])]
    gpu_memory_utilization: Option<f64>,
    /// Replace the container's environment; repeatable (at the next start).
    #[arg(long = "env", value_name = "KEY=VALUE")]
    env: Vec<String>,
    /// Remove every --env entry (at the next start).
    #[arg(long, conflicts_with = "env")]
    clear_env: bool,
    /// The gateway stops the engine after this long without requests; never turns it off.
    #[arg(long, value_name = "DURATION")]
    idle_timeout: Option<String>,
    /// How long a gateway request waits for the engine to load.
    #[arg(long, value_name = "DURATION")]
    load_timeout: Option<String>,
    /// Requests the gateway passes to the engine at once.
    #[arg(long, value_name = "N")]
    max_concurrency: Option<u32>,
    /// Run it on this GPU, or any: where its model fits best (at the next start).
    #[arg(long, value_name = "N|any")]
    gpu: Option<String>,
    /// A new host port (while the engine does not run; stop it first).
    #[arg(long, value_name = "PORT")]
    port: Option<u16>,
    /// Never stop this service to make room for another engine.
    #[arg(long, value_name = "BOOL")]
    pinned: Option<bool>,
    /// Send the gateway's requests for this model here when none of its services runs.
    #[arg(long, value_name = "BOOL")]
    default: Option<bool>,
}

pub async fn run(
    client: &Client,
    format: OutputFormat,
    command: ServiceCommand,
) -> Result<(), CliError> {
    match command {
        ServiceCommand::Create(args) => {
            let request = CreateServiceRequest {
                model_id: args.model_id,
                engine_type: args.engine_type,
                name: args.name,
                port: args.port,
                gpu_memory_utilization: args.gpu_memory_utilization,
                env: args.env,
                idle_timeout: args.idle_timeout,
                load_timeout: args.load_timeout,
                max_concurrency: args.max_concurrency,
                pinned: args.pinned,
                default: args.default,
                restart: args.healing.restart,
                start_timeout: args.healing.start_timeout,
                health_interval: args.healing.health_interval,
                health_retries: args.healing.health_retries,
                gpu: args.gpu,
                if_not_exists: args.if_not_exists,
            };
            let service: ServiceDto = client.post("/api/v1/services", &request).await?;
            if matches!(format, OutputFormat::Table | OutputFormat::Wide) {
                created_notes(client, &service, args.if_not_exists).await;
            }
            // Stdout stays the name alone (the id with -o wide), for scripts.
            output::print(format, &service, || match format {
                OutputFormat::Wide => service.id.clone(),
                _ => service.name.clone(),
            })
        }
        ServiceCommand::Update(args) => {
            let env = if args.clear_env {
                Some(Vec::new())
            } else {
                (!args.env.is_empty()).then_some(args.env)
            };
            let request = UpdateServiceRequest {
                gpu_memory_utilization: args.gpu_memory_utilization,
                env,
                idle_timeout: args.idle_timeout,
                load_timeout: args.load_timeout,
                max_concurrency: args.max_concurrency,
                pinned: args.pinned,
                default: args.default,
                restart: args.healing.restart,
                start_timeout: args.healing.start_timeout,
                health_interval: args.healing.health_interval,
                health_retries: args.healing.health_retries,
                gpu: args.gpu,
                port: args.port,
            };
            let path = format!("/api/v1/services/{}", path_segment(&args.id));
            let updated: UpdatedServiceDto = client.patch(&path, &request).await?;
            output::print(format, &updated, || {
                let id = &updated.service.id;
                if updated.applies_at_next_start.is_empty() {
                    format!("{id} updated")
                } else {
                    format!(
                        "{id} updated; {} apply at its next start (aima service stop {id} && aima service start {id})",
                        updated.applies_at_next_start.join(", ")
                    )
                }
            })
        }
        ServiceCommand::List(args) => list(client, format, &args).await,
        ServiceCommand::Get { id } => {
            let service = get(client, &id).await?;
            output::print(format, &service, || describe(&service))
        }
        ServiceCommand::Status { id } => {
            let service = get(client, &id).await?;
            output::print(format, &service, || status_line(&service))
        }
        ServiceCommand::Start { ids, wait, timeout } => {
            super::each(&ids, |id| start(client, format, id, wait, timeout)).await
        }
        ServiceCommand::Stop { ids } => {
            super::each(&ids, |id| async move {
                let path = format!("/api/v1/services/{}/stop", path_segment(id));
                let service: ServiceDto = client.post(&path, &serde_json::json!({})).await?;
                // What was typed, as docker stop echoes it.
                output::print(format, &service, || format!("{id} stopped"))
            })
            .await
        }
        ServiceCommand::Delete { ids, force } => {
            super::each(&ids, |id| async move {
                let mut path = format!("/api/v1/services/{}", path_segment(id));
                if force {
                    path.push_str("?force=true");
                }
                let service: ServiceDto = client.delete(&path).await?;
                output::print(format, &service, || id.to_owned())
            })
            .await
        }
        ServiceCommand::Wait {
            id,
            wanted,
            timeout,
        } => wait_for(client, format, &id, wanted, timeout).await,
        ServiceCommand::Logs(LogsArgs {
            id,
            follow,
            tail,
            since,
            timestamps,
            previous,
        }) => {
            let mut query = form_urlencoded::Serializer::new(String::new());
            if previous {
                query.append_pair("previous", "true");
            }
            query.append_pair("follow", &follow.to_string());
            if let Some(n) = tail {
                query.append_pair("tail", &n.to_string());
            }
            if let Some(since) = &since {
                query.append_pair("since", since);
            }
            if timestamps {
                query.append_pair("timestamps", "true");
            }
            let path = format!(
                "/api/v1/services/{}/logs?{}",
                path_segment(&id),
                query.finish()
            );
            let mut body = client.stream(&path).await?.bytes_stream();
            while let Some(chunk) = body.next().await {
                let chunk = chunk.map_err(|e| {
                    CliError::new(
                        CliError::UNREACHABLE,
                        format!(
                            "log stream broke: the aima daemon went away ({e}); check 'aima status'"
                        ),
                    )
                })?;
                // A closed pipe (`| head`) ends the command quietly.
                output::write(&chunk)?;
            }
            Ok(())
        }
        ServiceCommand::Recommend { model_id } => {
            let path = match &model_id {
                Some(id) => format!("/api/v1/recommend?model_id={}", path_segment(id)),
                None => "/api/v1/recommend".to_owned(),
            };
            let advice: RecommendDto = client.get(&path).await?;
            output::print(format, &advice, || recommend_table(&advice))
        }
        ServiceCommand::Events { id, follow } => {
            let path = format!(
                "/api/v1/services/{}/events?follow={follow}",
                path_segment(&id)
            );
            print_events(client, format, &path).await
        }
    }
}

/// What a person creating a service should know, on stderr: what its model needs, and
/// that its model already had a service of this engine (a rerun script's second create).
async fn created_notes(client: &Client, service: &ServiceDto, if_not_exists: bool) {
    if let Some(estimate) = &service.estimate {
        eprintln!("{} will need {}", service.name, needs(estimate));
    }
    let path = format!(
        "/api/v1/services?model={}&engine={}",
        path_segment(&service.model_id),
        path_segment(&service.engine)
    );
    let Ok(List { items }) = client.get::<List<ServiceDto>>(&path).await else {
        return;
    };
    let others: Vec<&str> = items
        .iter()
        .filter(|s| s.id != service.id)
        .map(|s| s.name.as_str())
        .collect();
    if !others.is_empty() && !if_not_exists {
        eprintln!(
            "note: {} is another {} service of its model beside {}; pass --if-not-exists to reuse one instead",
            service.name,
            service.engine,
            others.join(", ")
        );
    }
}

/// Prints an event stream as it comes: a line per event, JSON lines, or a YAML stream.
pub async fn print_events(
    client: &Client,
    format: OutputFormat,
    path: &str,
) -> Result<(), CliError> {
    let mut events = std::pin::pin!(client.events(path).await?);
    while let Some(event) = events.next().await {
        let event = event?;
        match format {
            OutputFormat::Table | OutputFormat::Wide => output::line(&event_line(&event))?,
            OutputFormat::Json => output::line(&serde_json::to_string(&event).unwrap_or_default())?,
            // A YAML stream: one document per event, each opened by `---`.
            OutputFormat::Yaml => output::write(
                format!(
                    "---\n{}",
                    serde_yaml_ng::to_string(&event).unwrap_or_default()
                )
                .as_bytes(),
            )?,
        }
    }
    Ok(())
}

async fn list(client: &Client, format: OutputFormat, args: &ListArgs) -> Result<(), CliError> {
    let path = format!("/api/v1/services{}", args.query(&FILTER_KEYS)?);
    let fetch = || async { Ok(client.get::<List<ServiceDto>>(&path).await?.items) };
    let items = fetch().await?;
    // The table adds the gateway's traffic; JSON and YAML stay the service objects.
    let loaded: List<LoadedDto> = match format {
        OutputFormat::Table | OutputFormat::Wide if !args.quiet => client.get("/api/v1/ps").await?,
        _ => List { items: Vec::new() },
    };
    let render = |services: &[ServiceDto], wide: bool| table(services, &loaded.items, wide);
    listing::print(format, args.quiet, &items, render)?;
    if !args.watch {
        return Ok(());
    }
    // Every change of a service is an event: list again on each.
    let changes = Box::pin(client.events("/api/v1/events?after=latest").await?);
    listing::watch(format, args.quiet, items, fetch, render, Some(changes)).await
}

/// `service wait`: polls the service until it reaches `wanted`. Waiting for `running`
/// ends early, with exit 1 and the reason, when the service fails instead.
async fn wait_for(
    client: &Client,
    format: OutputFormat,
    id: &str,
    wanted: WaitFor,
    timeout: Duration,
) -> Result<(), CliError> {
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_millis(50);
    loop {
        let service = get(client, id).await?;
        if service.status == wanted.as_str() {
            return output::print(format, &service, || status_line(&service));
        }
        if wanted == WaitFor::Running && service.status == "failed" {
            return Err(CliError::new(
                CliError::FAILED,
                format!(
                    "{} failed instead of running: {}",
                    service.id,
                    service
                        .status_reason
                        .as_deref()
                        .unwrap_or("no reason recorded")
                ),
            ));
        }
        if Instant::now() >= deadline {
            return Err(CliError::new(
                CliError::FAILED,
                format!(
                    "timed out after {}: {} is {}, not {}",
                    humantime::format_duration(timeout),
                    service.id,
                    service.status,
                    wanted.as_str()
                ),
            ));
        }
        tokio::time::sleep(pause.min(deadline - Instant::now())).await;
        pause = (pause * 2).min(Duration::from_millis(500));
    }
}

pub(super) async fn get(client: &Client, id: &str) -> Result<ServiceDto, CliError> {
    client
        .get(&format!("/api/v1/services/{}", path_segment(id)))
        .await
}

/// `start`, and with `--wait` the phases as they happen until running or failed.
async fn start(
    client: &Client,
    format: OutputFormat,
    id: &str,
    wait: bool,
    timeout: Duration,
) -> Result<(), CliError> {
    start_service(client, Some(format), id, wait, timeout)
        .await
        .map(drop)
}

/// Starts a service (and waits, showing each phase, with `wait`); prints the outcome in
/// `format`, or with `None` shows the phases on stderr and prints nothing, for commands
/// whose stdout is something else (`aima run`'s answer).
pub(super) async fn start_service(
    client: &Client,
    format: Option<OutputFormat>,
    id: &str,
    wait: bool,
    timeout: Duration,
) -> Result<ServiceDto, CliError> {
    let (format, quiet) = match format {
        Some(format) => (format, false),
        None => (OutputFormat::Json, true),
    };
    let print = |service: &ServiceDto, text: String| {
        if quiet {
            Ok(())
        } else {
            output::print(format, service, || text)
        }
    };
    let segment = path_segment(id);
    // Subscribe before starting, so no phase is missed.
    let events = if wait {
        Some(
            client
                .events(&format!("/api/v1/services/{segment}/events?after=latest"))
                .await?,
        )
    } else {
        None
    };
    let started = Instant::now();
    let service: ServiceDto = client
        .post(
            &format!("/api/v1/services/{segment}/start"),
            &serde_json::json!({}),
        )
        .await?;
    let Some(events) = events else {
        print(&service, format!("{} {}", service.id, service.status))?;
        return Ok(service);
    };
    if service.status == "running" {
        print(
            &service,
            format!("{} is already running on port {}", service.id, service.port),
        )?;
        return Ok(service);
    }
    let progress = Progress::new(format);
    let mut events = std::pin::pin!(events);
    let mut last_phase = String::from("start");
    let outcome = tokio::time::timeout(timeout, async {
        while let Some(event) = events.next().await {
            let event = event?;
            if let Some(phase) = &event.phase {
                last_phase.clone_from(phase);
            }
            progress.show(&event);
            match event.status.as_deref() {
                Some("running") => return Ok(true),
                Some("failed" | "stopped" | "stopping") => return Ok(false),
                _ => {}
            }
        }
        Err(CliError::new(
            CliError::FAILED,
            "the daemon closed the event stream before the start finished",
        ))
    })
    .await;
    progress.finish();
    let service = get(client, id).await?;
    match outcome {
        Ok(Ok(true)) => {
            let text = format!(
                "{} running on port {} ({:.1}s)",
                service.id,
                service.port,
                started.elapsed().as_secs_f64()
            );
            print(&service, text)?;
            Ok(service)
        }
        Ok(Ok(false)) => Err(CliError::new(
            CliError::FAILED,
            format!(
                "{} did not start: {}",
                service.id,
                service.status_reason.as_deref().unwrap_or(&service.status)
            ),
        )),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(CliError::new(
            CliError::FAILED,
            format!(
                "{} is still {} after {} (last phase: {last_phase}); the start goes on: follow it with 'aima service events {} --follow'",
                service.name,
                service.status,
                humantime::format_duration(timeout),
                service.name
            ),
        )),
    }
}

/// Phase display: a live line on a terminal, one line per phase otherwise. With
/// `-o json|yaml` the phases go to stderr so stdout stays machine-readable.
struct Progress {
    bar: Option<indicatif::ProgressBar>,
    to_stderr: bool,
}

impl Progress {
    fn new(format: OutputFormat) -> Self {
        let to_stderr = format != OutputFormat::Table;
        let tty = if to_stderr {
            std::io::stderr().is_terminal()
        } else {
            std::io::stdout().is_terminal()
        };
        let bar = tty.then(|| {
            let bar = if to_stderr {
                indicatif::ProgressBar::with_draw_target(
                    None,
                    indicatif::ProgressDrawTarget::stderr(),
                )
            } else {
                indicatif::ProgressBar::with_draw_target(
                    None,
                    indicatif::ProgressDrawTarget::stdout(),
                )
            };
            bar.set_style(
                indicatif::ProgressStyle::with_template("{spinner} [{elapsed}] {msg}")
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
            );
            bar.enable_steady_tick(Duration::from_millis(100));
            bar
        });
        Self { bar, to_stderr }
    }

    fn show(&self, event: &EventDto) {
        let line = event_line(event);
        match &self.bar {
            Some(bar) => bar.set_message(line),
            None if self.to_stderr => eprintln!("{line}"),
            None => {
                // A closed pipe ends the command there; other write errors can wait for
                // the outcome's line.
                let _ = output::line(&line);
            }
        }
    }

    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

fn event_line(event: &EventDto) -> String {
    let what = match (&event.phase, &event.status) {
        (Some(phase), _) => phase.clone(),
        (_, Some(status)) => format!("status {status}"),
        _ => event.kind.clone(),
    };
    let time = event.time.format("%H:%M:%S%.3f");
    let subject = event
        .service_id
        .as_deref()
        .or(event.model_id.as_deref())
        .unwrap_or("-");
    if event.message.is_empty() {
        format!("{time} {subject} {what}")
    } else {
        format!("{time} {subject} {what}: {}", event.message)
    }
}

/// The service table; `wide` adds GPU memory, idle timeout, container and reason.
fn table(services: &[ServiceDto], loaded: &[LoadedDto], wide: bool) -> String {
    let now = Utc::now();
    let mut header = vec![
        "ID",
        "NAME",
        "MODEL",
        "ENGINE",
        "PORT",
        "STATUS",
        "RESTARTS",
        "IN FLIGHT",
        "LAST REQUEST",
        "AGE",
    ];
    if wide {
        header.extend(["GPU MEM", "IDLE TIMEOUT", "CONTAINER", "REASON"]);
    }
    columns_of(
        header,
        services.iter().map(|s| {
            let traffic = loaded.iter().find(|l| l.id == s.id);
            let mut row = vec![
                s.id.clone(),
                s.name.clone(),
                // The name people route by; the id with -o wide.
                match (&s.model_name, wide) {
                    (Some(name), false) => name.clone(),
                    _ => s.model_id.clone(),
                },
                s.engine.clone(),
                s.port.to_string(),
                s.status.clone(),
                s.restarts.to_string(),
                traffic.map_or_else(|| "-".to_owned(), |t| t.in_flight.to_string()),
                traffic
                    .and_then(|t| t.last_request_at)
                    .map_or_else(|| "-".to_owned(), |at| format!("{} ago", age(at, now))),
                age(s.created_at, now),
            ];
            if wide {
                row.extend([
                    s.gpu_memory_utilization
                        .map_or_else(|| "-".to_owned(), |f| f.to_string()),
                    or_dash(s.idle_timeout.as_deref()),
                    or_dash(s.container_id.as_deref().map(|c| c.get(..12).unwrap_or(c))),
                    or_dash(s.status_reason.as_deref()),
                ]);
            }
            row
        }),
    )
}

fn status_line(s: &ServiceDto) -> String {
    match &s.status_reason {
        Some(reason) if !reason.is_empty() => {
            format!("{} {} (port {}): {reason}", s.id, s.status, s.port)
        }
        _ => format!("{} {} (port {})", s.id, s.status, s.port),
    }
}

/// `17.96 GiB of GPU memory (weights … + KV cache … for 8192 tokens + overhead …)`.
fn needs(e: &crate::api::dto::EstimateDto) -> String {
    use super::model::bytes;
    format!(
        "{} of GPU memory (weights {} + KV cache {} for {} tokens + overhead {})",
        bytes(e.total),
        bytes(e.weights),
        bytes(e.kv_cache),
        e.context_length,
        bytes(e.overhead)
    )
}

fn describe(s: &ServiceDto) -> String {
    fields(&[
        ("ID", s.id.clone()),
        ("Name", s.name.clone()),
        ("Model", s.model_id.clone()),
        ("Engine", s.engine.clone()),
        ("Port", s.port.to_string()),
        ("Status", s.status.clone()),
        ("Reason", or_dash(s.status_reason.as_deref())),
        (
            "Restart",
            format!(
                "{} ({} restarts, {} in a row{})",
                s.restart,
                s.restarts,
                s.restarts_in_a_row,
                s.next_restart_at
                    .map(|at| format!(", next at {}", at.format("%H:%M:%S")))
                    .unwrap_or_default()
            ),
        ),
        (
            "Health",
            format!(
                "every {}, {} misses; start timeout {}",
                s.health_interval,
                s.health_retries,
                s.start_timeout.as_deref().unwrap_or("engine default")
            ),
        ),
        (
            "Container",
            or_dash(s.container_id.as_deref().map(|c| c.get(..12).unwrap_or(c))),
        ),
        (
            "GPU memory",
            s.gpu_memory_utilization
                .map_or_else(|| "engine default".to_owned(), |f| format!("{f}")),
        ),
        (
            "Model needs",
            s.estimate
                .as_ref()
                .map_or_else(|| "unknown: the model's size is unknown".to_owned(), needs),
        ),
        ("Created", format!("{} ago", age(s.created_at, Utc::now()))),
        ("Updated", format!("{} ago", age(s.updated_at, Utc::now()))),
    ])
}

fn recommend_table(r: &RecommendDto) -> String {
    let gpus = super::device::table(&r.devices);
    let models = columns(
        [
            "MODEL",
            "NAME",
            "FITS",
            "ENGINE",
            "GPU",
            "UTILIZATION",
            "WHY",
        ],
        r.models.iter().map(|m| {
            [
                m.model_id.clone(),
                m.model_name.clone(),
                if m.fits { "yes" } else { "no" }.to_owned(),
                m.engine.clone(),
                m.gpu_index
                    .map_or_else(|| "-".to_owned(), |i| i.to_string()),
                m.gpu_memory_utilization
                    .map_or_else(|| "-".to_owned(), |u| u.to_string()),
                m.reason.clone(),
            ]
        }),
    );
    format!("{gpus}\n\n{models}")
}
