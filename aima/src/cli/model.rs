use std::path::PathBuf;

use chrono::Utc;
use clap::{Args, Subcommand, ValueEnum};

use super::listing::{self, ListArgs};
use super::output::{self, OutputFormat, age, columns_of, fields, or_dash, path_segment};
use super::{CliError, Client};
use crate::api::dto::{CreateModelRequest, List, ModelDto};

#[derive(Debug, Subcommand)]
pub enum ModelCommand {
    /// Register a model: remote sources take --repo, local takes --path.
    Create(CreateArgs),
    /// List models, oldest first (filter keys: name, source).
    #[command(visible_alias = "ls")]
    List(ListArgs),
    /// Show one model.
    Get {
        /// The model: its id, its name, or a unique prefix of its id.
        #[arg(value_name = "ID|NAME")]
        id: String,
    },
    /// What AIMA knows of a model's weights and shape, where each number came from, and
    /// the GPU memory it needs with its parts.
    Inspect {
        /// The model: its id, its name, or a unique prefix of its id.
        #[arg(value_name = "ID|NAME")]
        id: String,
        /// The engine to estimate for (default: llamacpp for GGUF, vllm otherwise).
        #[arg(long, value_parser = ["vllm", "sglang", "llamacpp", "ollama"])]
        engine: Option<String>,
        /// Tokens of context to size the KV cache for (default: the model's own).
        #[arg(long, value_name = "TOKENS", value_parser = clap::value_parser!(u32).range(1..=100_000_000))]
        context: Option<u32>,
    },
    /// Download a Hugging Face model's files into the model root, resumably; its engine
    /// then mounts them instead of downloading.
    Pull(super::pull::PullArgs),
    /// Delete one or more models (refused while a service uses one).
    #[command(visible_alias = "rm")]
    Delete {
        /// Models: ids, names, or unique id prefixes.
        #[arg(value_name = "ID|NAME", required = true)]
        ids: Vec<String>,
    },
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    /// A name for people (1-128 characters).
    #[arg(long)]
    name: String,
    /// Where the weights come from.
    #[arg(long, value_enum)]
    source: Source,
    /// Repository for ollama, huggingface and modelscope (e.g. tinyllama, org/name).
    #[arg(long, conflicts_with = "path")]
    repo: Option<String>,
    /// Directory or file of the weights, for --source local.
    #[arg(long)]
    path: Option<PathBuf>,
    /// Size of the weights when AIMA cannot read them (16GiB, 4.5GB, bytes); it overrides
    /// what the files say.
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    size: Option<u64>,
    /// The longest context to plan GPU memory for, in tokens; overrides the model's own.
    #[arg(long, value_name = "TOKENS", value_parser = clap::value_parser!(u32).range(1..=100_000_000))]
    context: Option<u32>,
}

/// `16GiB`, `4.5 GB`, `512MiB` or a number of bytes.
fn parse_size(text: &str) -> Result<u64, String> {
    let size: bytesize::ByteSize = text
        .parse()
        .map_err(|_| format!("'{text}' is not a size; write it like 16GiB, 4.5GB or 1073741824"))?;
    if size.as_u64() == 0 {
        return Err("a model's size cannot be 0".to_owned());
    }
    Ok(size.as_u64())
}

/// Bytes in IEC units with two decimals, as model sizes are compared (`14.96 GiB`).
pub(super) fn bytes(n: u64) -> String {
    #[allow(clippy::cast_precision_loss)] // two decimals of a size
    let value = n as f64;
    match n {
        0 => "0 B".to_owned(),
        n if n >= 1 << 30 => format!("{:.2} GiB", value / f64::from(1u32 << 30)),
        n if n >= 1 << 20 => format!("{:.2} MiB", value / f64::from(1u32 << 20)),
        n if n >= 1 << 10 => format!("{:.2} KiB", value / 1024.0),
        n => format!("{n} B"),
    }
}

/// Parameters the way model cards write them (`8.03B`, `124M`).
fn count(n: u64) -> String {
    #[allow(clippy::cast_precision_loss)] // two decimals of a count
    let n = n as f64;
    if n >= 1e9 {
        format!("{:.2}B", n / 1e9)
    } else if n >= 1e6 {
        format!("{:.0}M", n / 1e6)
    } else if n >= 1e3 {
        format!("{:.0}K", n / 1e3)
    } else {
        format!("{n}")
    }
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Source {
    Ollama,
    #[value(alias = "hf")]
    Huggingface,
    #[value(alias = "ms")]
    Modelscope,
    Local,
}

impl Source {
    fn as_str(self) -> &'static str {
        match self {
            Self::Ollama => "ollama",
            Self::Huggingface => "huggingface",
            Self::Modelscope => "modelscope",
            Self::Local => "local",
        }
    }
}

pub async fn run(
    client: &Client,
    format: OutputFormat,
    command: ModelCommand,
) -> Result<(), CliError> {
    match command {
        ModelCommand::Create(args) => {
            let request = CreateModelRequest {
                name: args.name,
                source: args.source.as_str().to_owned(),
                repo: args.repo,
                // The daemon has its own working directory, so send an absolute path.
                path: args.path.map(|p| absolute(p).display().to_string()),
                size_bytes: args.size,
                context_length: args.context,
            };
            let model: ModelDto = client.post("/api/v1/models", &request).await?;
            output::print(format, &model, || model.id.clone())
        }
        ModelCommand::List(args) => {
            let path = format!("/api/v1/models{}", args.query(&FILTER_KEYS)?);
            let fetch = || async { Ok(client.get::<List<ModelDto>>(&path).await?.items) };
            let items = fetch().await?;
            listing::print(format, args.quiet, &items, table)?;
            if args.watch {
                // No event tells of model changes: the watch looks every few seconds.
                let never: Option<futures::stream::Pending<()>> = None;
                listing::watch(format, args.quiet, items, fetch, table, never).await?;
            }
            Ok(())
        }
        ModelCommand::Get { id } => {
            let model: ModelDto = client
                .get(&format!("/api/v1/models/{}", path_segment(&id)))
                .await?;
            output::print(format, &model, || describe(&model))
        }
        ModelCommand::Inspect {
            id,
            engine,
            context,
        } => {
            let model: ModelDto = client
                .get(&estimate_path(&id, engine.as_deref(), context))
                .await?;
            output::print(format, &model, || inspect(&model))
        }
        ModelCommand::Pull(args) => super::pull::run(client, format, args).await,
        ModelCommand::Delete { ids } => {
            super::each(&ids, |id| async move {
                let model: ModelDto = client
                    .delete(&format!("/api/v1/models/{}", path_segment(id)))
                    .await?;
                output::print(format, &model, || model.id.clone())
            })
            .await
        }
    }
}

/// `GET /api/v1/models/{id}` with the engine and context its estimate is for.
pub fn estimate_path(id: &str, engine: Option<&str>, context: Option<u32>) -> String {
    let mut query = Vec::new();
    if let Some(engine) = engine {
        query.push(format!("engine={}", path_segment(engine)));
    }
    if let Some(context) = context {
        query.push(format!("context_length={context}"));
    }
    let query = if query.is_empty() {
        String::new()
    } else {
        format!("?{}", query.join("&"))
    };
    format!("/api/v1/models/{}{query}", path_segment(id))
}

fn absolute(path: PathBuf) -> PathBuf {
    std::path::absolute(&path).unwrap_or(path)
}

/// The keys `model list --filter` takes (the API's list filters).
const FILTER_KEYS: [&str; 2] = ["name", "source"];

impl super::listing::Listed for ModelDto {
    fn id(&self) -> &str {
        &self.id
    }
}

/// The model table; `wide` adds when it was created.
fn table(models: &[ModelDto], wide: bool) -> String {
    let now = Utc::now();
    let mut header = vec!["ID", "NAME", "SOURCE", "REPO/PATH", "STATUS", "AGE"];
    if wide {
        header.push("CREATED");
    }
    columns_of(
        header,
        models.iter().map(|m| {
            let mut row = vec![
                m.id.clone(),
                m.name.clone(),
                m.source.clone(),
                or_dash(m.repo.as_deref().or(m.path.as_deref())),
                m.status.clone(),
                age(m.created_at, now),
            ];
            if wide {
                row.push(
                    m.created_at
                        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                );
            }
            row
        }),
    )
}

fn describe(m: &ModelDto) -> String {
    fields(&[
        ("ID", m.id.clone()),
        ("Name", m.name.clone()),
        ("Source", m.source.clone()),
        ("Repo", or_dash(m.repo.as_deref())),
        ("Path", or_dash(m.path.as_deref())),
        ("Status", m.status.clone()),
        ("Size", or_dash(m.size_bytes.map(bytes).as_deref())),
        ("Params", or_dash(m.params.map(count).as_deref())),
        ("Quantization", or_dash(m.quantization.as_deref())),
        (
            "Context",
            or_dash(m.context_length.map(|c| c.to_string()).as_deref()),
        ),
        ("GPU memory", estimate_line(m)),
        (
            "Created",
            format!(
                "{} ({} ago)",
                m.created_at
                    .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                age(m.created_at, Utc::now())
            ),
        ),
    ])
}

/// `17.96 GiB on vllm (weights 14.96 GiB + KV cache 1.00 GiB + overhead 2.00 GiB)`.
fn estimate_line(m: &ModelDto) -> String {
    match &m.estimate {
        Some(e) => format!(
            "{} on {} (weights {} + KV cache {} + overhead {})",
            bytes(e.total),
            e.engine,
            bytes(e.weights),
            bytes(e.kv_cache),
            bytes(e.overhead)
        ),
        None => "unknown: AIMA could not read the weights; state them with --size".to_owned(),
    }
}

/// `model inspect`: every fact with its origin, then the estimate and its assumptions.
fn inspect(m: &ModelDto) -> String {
    let mut out = format!("{} ({})\n\n", m.name, m.id);
    let facts = m.facts.as_object().cloned().unwrap_or_default();
    let rows = facts.iter().filter_map(|(key, fact)| {
        let value = &fact["value"];
        let shown = match (key.as_str(), value.as_u64()) {
            ("size_bytes", Some(n)) => bytes(n),
            ("params", Some(n)) => count(n),
            _ => value
                .as_str()
                .map_or_else(|| value.to_string(), str::to_owned),
        };
        Some(vec![key.clone(), shown, fact["from"].as_str()?.to_owned()])
    });
    let rows: Vec<Vec<String>> = rows.collect();
    if rows.is_empty() {
        out.push_str("AIMA knows nothing of this model's weights: it reads local GGUF and safetensors files; for other sources state --size and --context.\n");
    } else {
        out.push_str(&columns_of(vec!["FACT", "VALUE", "FROM"], rows));
    }
    out.push('\n');
    match &m.estimate {
        Some(e) => {
            out.push_str(&format!(
                "GPU memory on {}: {}\n  weights   {}\n  KV cache  {} ({} tokens x {} sequence(s))\n  overhead  {}\nAssumptions:\n",
                e.engine,
                bytes(e.total),
                bytes(e.weights),
                bytes(e.kv_cache),
                e.context_length,
                e.sequences,
                bytes(e.overhead)
            ));
            for a in &e.assumptions {
                out.push_str(&format!("  - {a}\n"));
            }
            if let Some(measured) = e.measured {
                out.push_str(&format!(
                    "Measured on this host (NVML, a running {}): {}\n",
                    e.engine,
                    bytes(measured)
                ));
            }
        }
        None => out.push_str("GPU memory: unknown until the weights' size is known\n"),
    }
    out.trim_end().to_owned()
}
