use clap::Subcommand;

use super::output::{self, OutputFormat, columns};
use super::{CliError, Client};
use crate::api::dto::DevicesDto;

#[derive(Debug, Subcommand)]
pub enum DeviceCommand {
    /// Show the host's NVIDIA GPUs, their memory and the services placed on them.
    Detect,
}

pub async fn run(
    client: &Client,
    format: OutputFormat,
    command: DeviceCommand,
) -> Result<(), CliError> {
    match command {
        DeviceCommand::Detect => {
            let devices: DevicesDto = client.get("/api/v1/devices").await?;
            output::print(format, &devices, || table(&devices))
        }
    }
}

/// GPU rows, or one "none" line with the reason; exit 0 either way.
pub fn table(d: &DevicesDto) -> String {
    if d.gpus.is_empty() {
        return format!(
            "No NVIDIA GPU: {}",
            d.none_reason.as_deref().unwrap_or("none found")
        );
    }
    let mut text = columns(
        [
            "GPU",
            "NAME",
            "UUID",
            "MEMORY TOTAL",
            "USED",
            "FREE",
            "CLAIMED",
            "UTIL",
            "SERVICES",
        ],
        d.gpus.iter().map(|g| {
            [
                g.index.to_string(),
                g.name.clone(),
                g.uuid.clone(),
                format!("{} MiB", g.memory_total_mib),
                format!("{} MiB", g.memory_used_mib),
                format!("{} MiB", g.memory_free_mib),
                format!("{} MiB", g.memory_claimed_mib),
                g.utilization_percent
                    .map_or_else(|| "-".to_owned(), |u| format!("{u}%")),
                if g.services.is_empty() {
                    "-".to_owned()
                } else {
                    g.services.join(",")
                },
            ]
        }),
    );
    if d.simulated {
        text.push_str(
            "\n(simulated GPUs from AIMA_SIMULATE_GPUS: no device is passed to containers)",
        );
    } else {
        text.push_str(&format!(
            "\ndriver {}, CUDA {}",
            d.driver_version.as_deref().unwrap_or("?"),
            d.cuda_version.as_deref().unwrap_or("?")
        ));
    }
    text
}
