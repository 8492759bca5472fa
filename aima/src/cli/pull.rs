//! `aima pull` and `aima model pull`: a Hugging Face model's files into the daemon's
//! first model root, with byte progress (a bar on a terminal, a line per file otherwise,
//! the daemon's JSON lines with `-o json`). Ctrl-C stops it; pulling again resumes.

use std::io::IsTerminal;

use clap::Args;
use futures::StreamExt;

use super::output::{self, OutputFormat, path_segment};
use super::{CliError, Client};
use crate::api::dto::{CreateModelRequest, ModelDto, PullProgressDto};

#[derive(Debug, Args)]
pub struct PullArgs {
    /// A registered model (name, id or id prefix), or a Hugging Face repository
    /// (org/name), which is registered under its name first.
    #[arg(value_name = "MODEL|ORG/NAME")]
    model: String,
}

pub async fn run(client: &Client, format: OutputFormat, args: PullArgs) -> Result<(), CliError> {
    pull(client, format, &args.model, false).await
}

/// Pulls `reference` (a registered model, or `org/name`, registered first); with
/// `on_stderr` its lines go to stderr (`aima run` keeps stdout for the answer).
pub async fn pull(
    client: &Client,
    format: OutputFormat,
    reference: &str,
    on_stderr: bool,
) -> Result<(), CliError> {
    let say = |text: String| -> Result<(), CliError> {
        if on_stderr {
            eprintln!("{text}");
            Ok(())
        } else {
            output::line(&text)
        }
    };
    let model = match client
        .get::<ModelDto>(&format!("/api/v1/models/{}", path_segment(reference)))
        .await
    {
        Ok(model) => model,
        Err(unknown) => match reference.split_once('/') {
            // `aima pull org/name`, as `ollama pull NAME`: register it, then pull.
            Some((_, name)) if !name.is_empty() && !name.contains('/') => {
                let request = CreateModelRequest {
                    name: name.to_owned(),
                    source: "huggingface".to_owned(),
                    repo: Some(reference.to_owned()),
                    ..CreateModelRequest::default()
                };
                let model: ModelDto = client.post("/api/v1/models", &request).await?;
                eprintln!(
                    "registered model {} from huggingface {reference}",
                    model.name
                );
                model
            }
            _ => return Err(unknown),
        },
    };
    let path = format!("/api/v1/models/{}/pull", path_segment(&model.id));
    let response = client.post_stream(&path, &serde_json::json!({})).await?;
    let mut body = response.bytes_stream();
    let bar = (format == OutputFormat::Table && std::io::stderr().is_terminal()).then(|| {
        let bar =
            indicatif::ProgressBar::with_draw_target(None, indicatif::ProgressDrawTarget::stderr());
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} {eta}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        bar
    });
    let mut pending = Vec::new();
    let mut last_file = String::new();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| {
            CliError::new(
                CliError::UNREACHABLE,
                format!(
                    "the pull broke off: the aima daemon went away ({e}); pull again to resume"
                ),
            )
        })?;
        pending.extend_from_slice(&chunk);
        while let Some(end) = pending.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = pending.drain(..=end).collect();
            let Ok(update) = serde_json::from_slice::<PullProgressDto>(&line) else {
                continue;
            };
            if matches!(format, OutputFormat::Json | OutputFormat::Yaml) {
                output::line(&serde_json::to_string(&update).unwrap_or_default())?;
            }
            match update.status.as_str() {
                "downloading" => {
                    let file = update.file.unwrap_or_default();
                    if let Some(bar) = &bar {
                        bar.set_length(update.all_total.unwrap_or(0));
                        bar.set_position(update.all_completed.unwrap_or(0));
                        bar.set_message(file);
                    } else if format == OutputFormat::Table
                        && file != last_file
                        && update.completed == Some(0)
                    {
                        say(format!(
                            "downloading {file} ({} bytes)",
                            update.total.unwrap_or(0)
                        ))?;
                        last_file = file;
                    }
                }
                "success" => {
                    if let Some(bar) = &bar {
                        bar.finish_and_clear();
                    }
                    if format == OutputFormat::Table {
                        say(format!(
                            "pulled {} ({} bytes) into {}",
                            model.name,
                            update.all_total.unwrap_or(0),
                            update.path.unwrap_or_default()
                        ))?;
                    }
                    return Ok(());
                }
                _ => {
                    if let Some(bar) = &bar {
                        bar.abandon();
                    }
                    return Err(CliError::new(
                        CliError::FAILED,
                        update.error.unwrap_or_else(|| "the pull failed".to_owned()),
                    ));
                }
            }
        }
    }
    Err(CliError::new(
        CliError::FAILED,
        "the daemon ended the pull without saying how it went; check 'aima events' and pull again",
    ))
}
