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
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Source {
    Ollama,
    Huggingface,
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
