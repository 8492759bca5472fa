//! `aima version`: this binary's version, commit and build date, and the daemon's when it
//! answers (like `kubectl version`); an unreachable daemon is reported, not an error.

use serde::Serialize;

use super::output::{self, OutputFormat};
use super::{CliError, Client};

#[derive(Debug, Serialize)]
struct Versions {
    client: Build,
    /// Null when the daemon does not answer.
    daemon: Option<Build>,
}

#[derive(Debug, Serialize)]
struct Build {
    version: String,
    commit: String,
    build_date: String,
    /// Why the daemon is degraded (its database cannot be written); absent when ok.
    #[serde(skip_serializing_if = "Option::is_none")]
    degraded: Option<String>,
}

pub async fn run(client: &Client, format: OutputFormat) -> Result<(), CliError> {
    let versions = Versions {
        client: Build {
            version: crate::VERSION.to_owned(),
            commit: crate::COMMIT.to_owned(),
            build_date: crate::BUILD_DATE.to_owned(),
            degraded: None,
        },
        daemon: client.health().await.ok().map(|h| Build {
            version: h.version,
            commit: h.commit,
            build_date: h.build_date,
            degraded: h.reason,
        }),
    };
    output::print(format, &versions, || {
        let line = |who: &str, b: &Build| {
            let mut line = format!(
                "{who}: aima {} (commit {}, built {})",
                b.version, b.commit, b.build_date
            );
            if let Some(reason) = &b.degraded {
                line.push_str(&format!("; degraded: {reason}"));
            }
            line
        };
        let daemon = versions.daemon.as_ref().map_or_else(
            || format!("daemon: not reachable at {}", client.addr()),
            |b| line("daemon", b),
        );
        format!("{}\n{daemon}", line("client", &versions.client))
    })
}
