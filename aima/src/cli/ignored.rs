//! Settings that belong to the daemon (`DOCKER_HOST`, the port range, engine images…)
//! change nothing in a client's environment. When a command's environment sets one to
//! something other than what the daemon uses, the command says so, once per setting,
//! and how to change it for real; then it goes on.

use super::Client;
use crate::api::dto::DaemonSettingsDto;
use crate::config::PortRange;

/// Client-side variables that only the daemon reads.
fn daemon_only(key: &str) -> bool {
    matches!(
        key,
        "DOCKER_HOST"
            | "AIMA_PORT_RANGE"
            | "AIMA_PUBLISH_ADDR"
            | "AIMA_MODEL_ROOTS"
            | "AIMA_SIMULATE_GPUS"
    ) || key.starts_with("AIMA_ENGINE_IMAGE_")
}

/// Prints a `warning:` line for each daemon-only setting this environment sets
/// differently; asks the daemon only when there is one to compare.
pub async fn warn(client: &Client) {
    let set: Vec<(String, String)> = std::env::vars()
        .filter(|(key, value)| daemon_only(key) && !value.trim().is_empty())
        .collect();
    if set.is_empty() {
        return;
    }
    // The command itself reports a daemon that does not answer.
    let Ok(daemon) = client.get::<DaemonSettingsDto>("/api/v1/settings").await else {
        return;
    };
    for (key, value) in set {
        if let Some(used) = differs(&daemon, &key, &value) {
            eprintln!(
                "warning: {key}={} here does not change the daemon, which uses {used}; set it where the daemon starts (its environment or $AIMA_HOME/config.toml) and restart it",
                crate::domain::one_line(&value)
            );
        }
    }
}

/// What the daemon uses for `key`, when it is not what `value` asks for.
fn differs(daemon: &DaemonSettingsDto, key: &str, value: &str) -> Option<String> {
    let value = value.trim();
    let (used, same) = match key {
        "DOCKER_HOST" => (daemon.docker_host.clone(), daemon.docker_host == value),
        "AIMA_PORT_RANGE" => (
            daemon.port_range.clone(),
            PortRange::parse(value).is_some_and(|r| r.to_string() == daemon.port_range),
        ),
        "AIMA_PUBLISH_ADDR" => (daemon.publish_addr.clone(), daemon.publish_addr == value),
        "AIMA_MODEL_ROOTS" => {
            let used = daemon.model_roots.join(":");
            let same = used == value;
            (used, same)
        }
        "AIMA_SIMULATE_GPUS" => match &daemon.simulated_gpus {
            Some(gpus) => (gpus.clone(), gpus == value),
            None => ("real GPUs (no AIMA_SIMULATE_GPUS)".to_owned(), false),
        },
        _ => {
            let engine = key.strip_prefix("AIMA_ENGINE_IMAGE_")?.to_lowercase();
            let used = daemon.engine_images.get(&engine)?.clone();
            let same = used == value;
            (used, same)
        }
    };
    (!same).then_some(used)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn daemon() -> DaemonSettingsDto {
        DaemonSettingsDto {
            docker_host: "unix:///var/run/docker.sock".into(),
            port_range: "8000-8999".into(),
            publish_addr: "127.0.0.1".into(),
            model_roots: vec!["/home/a/.aima/models".into()],
            engine_images: [("vllm".to_owned(), "vllm/vllm-openai:v0.6.3".to_owned())].into(),
            simulated_gpus: None,
        }
    }

    #[test]
    fn only_settings_that_differ_are_reported() {
        let d = daemon();
        assert_eq!(
            differs(&d, "DOCKER_HOST", "unix:///var/run/docker.sock"),
            None
        );
        assert_eq!(
            differs(&d, "DOCKER_HOST", "tcp://10.0.0.5:2376").as_deref(),
            Some("unix:///var/run/docker.sock")
        );
        assert_eq!(differs(&d, "AIMA_PORT_RANGE", " 8000-8999"), None);
        assert_eq!(
            differs(&d, "AIMA_PORT_RANGE", "9000-9099").as_deref(),
            Some("8000-8999")
        );
        assert_eq!(
            differs(&d, "AIMA_ENGINE_IMAGE_VLLM", "vllm/vllm-openai:v0.6.3"),
            None
        );
        assert_eq!(
            differs(&d, "AIMA_ENGINE_IMAGE_VLLM", "stub").as_deref(),
            Some("vllm/vllm-openai:v0.6.3")
        );
        assert_eq!(
            differs(&d, "AIMA_ENGINE_IMAGE_TGI", "x"),
            None,
            "not an engine here"
        );
        assert_eq!(
            differs(&d, "AIMA_SIMULATE_GPUS", "H100:81920").as_deref(),
            Some("real GPUs (no AIMA_SIMULATE_GPUS)")
        );
    }
}
