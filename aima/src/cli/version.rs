//! `aima version`: this binary's version, commit and build date, and the daemon's when it
//! answers (like `kubectl version`); an unreachable daemon is reported, not an error.

use serde::Serialize;

use super::output::{self, OutputFormat};
use super::{CliError, Client};
use crate::api::dto::Health;

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
}

pub async fn run(client: &Client, format: OutputFormat) -> Result<(), CliError> {
    let versions = Versions {
        client: Build {
            version: crate::VERSION.to_owned(),
            commit: crate::COMMIT.to_owned(),
            build_date: crate::BUILD_DATE.to_owned(),
        },
        daemon: client
            .get::<Health>("/api/v1/health")
            .await
            .ok()
            .map(|h| Build {
                version: h.version,
                commit: h.commit,
                build_date: h.build_date,
            }),
    };
    output::print(format, &versions, || {
        let line = |who: &str, b: &Build| {
            format!(
                "{who}: aima {} (commit {}, built {})",
                b.version, b.commit, b.build_date
            )
        };
        let daemon = versions.daemon.as_ref().map_or_else(
            || format!("daemon: not reachable at {}", client.addr()),
            |b| line("daemon", b),
        );
        format!("{}\n{daemon}", line("client", &versions.client))
    })
}
