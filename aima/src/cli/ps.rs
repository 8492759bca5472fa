//! `aima ps`: what is loaded, on which GPU with how much memory, how busy and how fast
//! (tokens per second, time to the first token, over the last 5 minutes), and when the
//! gateway unloads it (as `ollama ps`); `aima top` shows it live.

use chrono::Utc;

use super::output::{self, OutputFormat, age, columns};
use super::{CliError, Client};
use crate::api::dto::{List, LoadedDto};

pub async fn run(client: &Client, format: OutputFormat) -> Result<(), CliError> {
    let loaded: List<LoadedDto> = client.get("/api/v1/ps").await?;
    output::print(format, &loaded, || table(&loaded.items))
}

/// How often `aima top` looks again.
const TOP_EVERY: std::time::Duration = std::time::Duration::from_secs(2);

/// `aima top`: `aima ps` again every two seconds, in place on a terminal, until Ctrl-C.
pub async fn top(client: &Client, format: OutputFormat) -> Result<(), CliError> {
    use std::io::IsTerminal;
    let tty = std::io::stdout().is_terminal() && format == OutputFormat::Table;
    loop {
        let loaded: List<LoadedDto> = client.get("/api/v1/ps").await?;
        if tty {
            // Home and clear, as top does, so the table stays in place.
            output::write(b"\x1b[H\x1b[2J")?;
        }
        output::print(format, &loaded, || table(&loaded.items))?;
        if !tty {
            output::write(b"\n")?;
        }
        tokio::select! {
            _ = tokio::signal::ctrl_c() => return Ok(()),
            () = tokio::time::sleep(TOP_EVERY) => {}
        }
    }
}

fn table(loaded: &[LoadedDto]) -> String {
    let now = Utc::now();
    columns(
        [
            "NAME",
            "MODEL",
            "ENGINE",
            "PORT",
            "STATUS",
            "GPU",
            "MEMORY",
            "IN FLIGHT",
            "TOK/S",
            "TTFT",
            "LAST REQUEST",
            "UNTIL",
        ],
        loaded.iter().map(|s| {
            let until = match (&s.unload_at, s.in_flight, &s.idle_timeout) {
                (Some(at), _, _) if *at > now => format!("in {}", age(now, *at)),
                (Some(_), _, _) => "now".to_owned(),
                (None, n, Some(_)) if n > 0 => "busy".to_owned(),
                _ => "forever".to_owned(),
            };
            [
                s.name.clone(),
                s.model.clone(),
                s.engine.clone(),
                s.port.to_string(),
                s.status.clone(),
                s.gpu.map_or_else(|| "-".to_owned(), |g| g.to_string()),
                match (s.gpu_memory_mib, s.host_memory_mib) {
                    (Some(m), _) => format!("{m} MiB"),
                    (None, Some(m)) => format!("{m} MiB RAM"),
                    (None, None) => "-".to_owned(),
                },
                s.in_flight.to_string(),
                s.tokens_per_second
                    .map_or_else(|| "-".to_owned(), |t| format!("{t:.1}")),
                s.time_to_first_token_ms
                    .map_or_else(|| "-".to_owned(), |ms| format!("{ms} ms")),
                s.last_request_at
                    .map_or_else(|| "-".to_owned(), |at| format!("{} ago", age(at, now))),
                until,
            ]
        }),
    )
}
