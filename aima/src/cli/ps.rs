//! `aima ps`: what is loaded, on which GPU with how much memory, how busy, and when the
//! gateway unloads it (as `ollama ps`).

use chrono::Utc;

use super::output::{self, OutputFormat, age, columns};
use super::{CliError, Client};
use crate::api::dto::{List, LoadedDto};

pub async fn run(client: &Client, format: OutputFormat) -> Result<(), CliError> {
    let loaded: List<LoadedDto> = client.get("/api/v1/ps").await?;
    output::print(format, &loaded, || table(&loaded.items))
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
                s.last_request_at
                    .map_or_else(|| "-".to_owned(), |at| format!("{} ago", age(at, now))),
                until,
            ]
        }),
    )
}
