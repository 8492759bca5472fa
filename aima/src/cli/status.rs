use super::output::{self, OutputFormat, fields};
use super::{CliError, Client};
use crate::api::dto::StatusDto;

/// `aima status`: exits 0 whenever the daemon answers, whatever Docker's state.
pub async fn run(client: &Client, format: OutputFormat) -> Result<(), CliError> {
    let status: StatusDto = client.get("/api/v1/status").await?;
    output::print(format, &status, || describe(&status))
}

fn describe(s: &StatusDto) -> String {
    let docker = if s.docker.reachable {
        format!(
            "reachable at {} (engine {}, API {})",
            s.docker.address,
            s.docker.server_version.as_deref().unwrap_or("?"),
            s.docker.api_version.as_deref().unwrap_or("?")
        )
    } else {
        format!(
            "unreachable: {}",
            s.docker.error.as_deref().unwrap_or("no answer")
        )
    };
    let gpus = if s.gpus.is_empty() {
        format!(
            "none ({})",
            s.gpus_none_reason
                .as_deref()
                .unwrap_or("no NVIDIA GPU found")
        )
    } else {
        let names: Vec<String> = s
            .gpus
            .iter()
            .map(|g| format!("{} {}", g.index, g.name))
            .collect();
        let simulated = if s.gpus.iter().any(|g| g.simulated) {
            " (simulated)"
        } else {
            ""
        };
        format!("{}{simulated}", names.join(", "))
    };
    fields(&[
        ("Version", s.version.clone()),
        ("Daemon", format!("pid {}, up {}s", s.pid, s.uptime_secs)),
        ("Home", s.home.clone()),
        ("Database", s.database.clone()),
        (
            "Instance",
            format!("{} (the aima.instance label on its containers)", s.instance),
        ),
        ("Docker", docker),
        ("GPUs", gpus),
    ])
}
