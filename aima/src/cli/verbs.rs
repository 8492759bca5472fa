//! The verbs people type first, as Ollama and docker users know them: `run`, `chat`,
//! `stop`, `restart`, `logs`. Each takes a model's name or a service's.

use std::io::{IsTerminal, Write};
use std::time::Duration;

use clap::Args;
use futures::StreamExt;
use serde_json::{Value, json};

use super::output::{self, OutputFormat, path_segment};
use super::service::{self, ServiceCommand};
use super::{CliError, Client};
use crate::api::dto::ServiceDto;

#[derive(Debug, Args)]
pub struct RunArgs {
    /// The model (or service) to run: its name, id or a unique id prefix.
    #[arg(value_name = "MODEL")]
    model: String,
    /// Ask this and print the answer; without it, chat on a terminal, or ask what stdin
    /// holds.
    #[arg(value_name = "PROMPT", trailing_var_arg = true)]
    prompt: Vec<String>,
    /// Give up waiting for the engine to start after this long (600, 10m).
    #[arg(long, value_name = "DURATION", default_value = "600", value_parser = duration)]
    timeout: Duration,
}

#[derive(Debug, Args)]
pub struct ChatArgs {
    /// The model or service to talk to (the gateway starts it when it is cold).
    #[arg(value_name = "MODEL")]
    model: String,
    /// Ask this and print the answer; without it, chat on a terminal, or ask what stdin
    /// holds.
    #[arg(value_name = "PROMPT", trailing_var_arg = true)]
    prompt: Vec<String>,
}

#[derive(Debug, Args)]
pub struct RestartArgs {
    /// Models or services: names, ids or unique id prefixes.
    #[arg(value_name = "NAME", required = true)]
    names: Vec<String>,
    /// Give up waiting for each start after this long (600, 10m).
    #[arg(long, value_name = "DURATION", default_value = "600", value_parser = duration)]
    timeout: Duration,
}

fn duration(text: &str) -> Result<Duration, String> {
    crate::domain::parse_duration(text)
        .ok_or_else(|| format!("not a duration; {}", crate::domain::DURATION_FORMS))
}

/// `aima run MODEL [PROMPT]`: makes sure the model has a service (creating one with the
/// engine its files call for; a Hugging Face `org/name` not registered yet is pulled
/// first), starts it with its phases on stderr, then answers.
pub async fn run(client: &Client, args: RunArgs) -> Result<(), CliError> {
    let path = format!("/api/v1/models/{}/service", path_segment(&args.model));
    let (created, service) = match client
        .post_with_status::<_, ServiceDto>(&path, &json!({}))
        .await
    {
        Ok(answer) => answer,
        // `aima run org/name`, as `ollama run`: pull it first (which registers it).
        Err(unknown) if args.model.contains('/') => {
            if super::pull::pull(client, OutputFormat::Table, &args.model, true)
                .await
                .is_err()
            {
                return Err(unknown);
            }
            let name = args.model.rsplit('/').next().unwrap_or(&args.model);
            let path = format!("/api/v1/models/{}/service", path_segment(name));
            client.post_with_status(&path, &json!({})).await?
        }
        Err(e) => return Err(e),
    };
    if created {
        eprintln!(
            "created service {} ({} on port {}) for model {}",
            service.name,
            service.engine,
            service.port,
            service.model_name.as_deref().unwrap_or(&args.model)
        );
    }
    service::start_service(client, None, &service.name, true, args.timeout).await?;
    converse(client, &service.name, args.prompt).await
}

/// `aima chat MODEL [PROMPT]`: talks to a model through the gateway.
pub async fn chat(client: &Client, args: ChatArgs) -> Result<(), CliError> {
    converse(client, &args.model, args.prompt).await
}

/// `aima restart NAME…`: stop, then start and wait, one after another.
pub async fn restart(
    client: &Client,
    format: OutputFormat,
    args: RestartArgs,
) -> Result<(), CliError> {
    super::each(&args.names, |name| async move {
        let path = format!("/api/v1/services/{}/stop", path_segment(name));
        let _: ServiceDto = client.post(&path, &json!({})).await?;
        service::start_service(client, Some(format), name, true, args.timeout)
            .await
            .map(drop)
    })
    .await
}

/// `aima stop` and `aima logs` are `aima service stop` and `aima service logs`.
pub async fn as_service(
    client: &Client,
    format: OutputFormat,
    command: ServiceCommand,
) -> Result<(), CliError> {
    service::run(client, format, command).await
}

/// One answer to `prompt`, or a conversation on a terminal, or one answer to stdin.
async fn converse(client: &Client, model: &str, prompt: Vec<String>) -> Result<(), CliError> {
    let mut history = Vec::new();
    if !prompt.is_empty() {
        return ask(client, model, &mut history, prompt.join(" ")).await;
    }
    if !std::io::stdin().is_terminal() {
        let text = tokio::task::spawn_blocking(|| std::io::read_to_string(std::io::stdin()))
            .await
            .map_err(|e| CliError::new(CliError::FAILED, format!("cannot read stdin: {e}")))?
            .map_err(|e| CliError::new(CliError::FAILED, format!("cannot read stdin: {e}")))?;
        if text.trim().is_empty() {
            return Err(CliError::new(
                CliError::USAGE,
                format!(
                    "nothing to ask: give a prompt ('aima run {model} \"Hello\"') or pipe one in"
                ),
            ));
        }
        return ask(client, model, &mut history, text).await;
    }
    eprintln!("chatting with {model}; /bye or Ctrl-D ends");
    loop {
        eprint!(">>> ");
        let line = tokio::task::spawn_blocking(|| {
            let mut line = String::new();
            std::io::stdin().read_line(&mut line).map(|n| (n, line))
        })
        .await
        .map_err(|e| CliError::new(CliError::FAILED, format!("cannot read stdin: {e}")))?
        .map_err(|e| CliError::new(CliError::FAILED, format!("cannot read stdin: {e}")))?;
        let (read, line) = line;
        let line = line.trim();
        if read == 0 || line == "/bye" {
            eprintln!();
            return Ok(());
        }
        if !line.is_empty() {
            ask(client, model, &mut history, line.to_owned()).await?;
        }
    }
}

/// Sends the conversation with `prompt` to the gateway and prints the answer as it
/// streams in; the answer joins the history.
async fn ask(
    client: &Client,
    model: &str,
    history: &mut Vec<Value>,
    prompt: String,
) -> Result<(), CliError> {
    history.push(json!({"role": "user", "content": prompt}));
    let body = json!({"model": model, "messages": history, "stream": true});
    let response = client.post_stream("/v1/chat/completions", &body).await?;
    let mut bytes = response.bytes_stream();
    let mut pending = String::new();
    let mut answer = String::new();
    let broke = |e: reqwest::Error| {
        CliError::new(
            CliError::UNREACHABLE,
            format!("the answer broke off: the aima daemon went away ({e}); check 'aima status'"),
        )
    };
    'stream: while let Some(chunk) = bytes.next().await {
        pending.push_str(&String::from_utf8_lossy(&chunk.map_err(broke)?));
        while let Some(end) = pending.find('\n') {
            let line: String = pending.drain(..=end).collect();
            let Some(data) = line.trim_end().strip_prefix("data:") else {
                continue; // blank lines, and the gateway's `: loading` comments
            };
            let data = data.trim_start();
            if data == "[DONE]" {
                break 'stream;
            }
            let event: Value = serde_json::from_str(data).unwrap_or(Value::Null);
            if let Some(message) = event.pointer("/error/message").and_then(Value::as_str) {
                return Err(CliError::new(CliError::FAILED, message.to_owned()));
            }
            if let Some(text) = event
                .pointer("/choices/0/delta/content")
                .and_then(Value::as_str)
            {
                answer.push_str(text);
                output::write(text.as_bytes())?;
                let _ = std::io::stdout().flush();
            }
        }
    }
    output::write(b"\n")?;
    history.push(json!({"role": "assistant", "content": answer}));
    Ok(())
}
