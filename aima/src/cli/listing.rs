//! What every list command shares, as in `kubectl get` and `docker ps`: `-q` for ids
//! only, `--filter KEY=VALUE`, `-o wide`, and `--watch` to keep printing what changes.

use std::collections::BTreeMap;
use std::time::Duration;

use clap::Args;
use futures::{Stream, StreamExt};
use serde::Serialize;

use super::CliError;
use super::output::OutputFormat;

/// How often `--watch` looks again when nothing tells it that something changed.
const WATCH_POLL: Duration = Duration::from_secs(2);

#[derive(Debug, Args)]
pub struct ListArgs {
    /// Print only ids, one per line.
    #[arg(short, long)]
    pub quiet: bool,
    /// Only items whose KEY is VALUE; repeat for several (all must match).
    #[arg(long = "filter", value_name = "KEY=VALUE")]
    pub filters: Vec<String>,
    /// After the list, print each item again whenever it changes (Ctrl-C ends).
    #[arg(short, long)]
    pub watch: bool,
}

impl ListArgs {
    /// The filters as a query string (`?status=running&engine=vllm`), or a usage error
    /// naming the filter and the keys this list takes.
    pub fn query(&self, keys: &[&str]) -> Result<String, CliError> {
        let mut query = form_urlencoded::Serializer::new(String::new());
        for filter in &self.filters {
            let usage = |why: &str| {
                CliError::new(
                    CliError::USAGE,
                    format!(
                        "--filter '{}' {why}; write KEY=VALUE with KEY one of {}",
                        crate::domain::one_line(filter),
                        keys.join(", ")
                    ),
                )
            };
            let (key, value) = filter.split_once('=').ok_or_else(|| usage("has no '='"))?;
            if !keys.contains(&key) {
                return Err(usage("has an unknown key"));
            }
            query.append_pair(key, value);
        }
        let query = query.finish();
        Ok(if query.is_empty() {
            String::new()
        } else {
            format!("?{query}")
        })
    }
}

/// A list the CLI can print and watch.
pub trait Listed: Serialize + Clone + PartialEq {
    fn id(&self) -> &str;
}

/// Prints `items` in `format`: ids only with `quiet`, else a table from `table` (which
/// gets whether `-o wide` asked for more columns), JSON or YAML as `{"items": […]}`.
pub fn print<T: Listed>(
    format: OutputFormat,
    quiet: bool,
    items: &[T],
    table: impl Fn(&[T], bool) -> String,
) -> Result<(), CliError> {
    if quiet {
        for item in items {
            super::output::line(item.id())?;
        }
        return Ok(());
    }
    let list = crate::api::dto::List {
        items: items.to_vec(),
    };
    super::output::print(format, &list, || table(items, format == OutputFormat::Wide))
}

/// After the first listing: waits for a change (the next event of `changes`, or every
/// [`WATCH_POLL`]), lists again and prints the items that are new or changed, without a
/// header; JSON prints one object per line, YAML one document each.
pub async fn watch<T, F, Fut, S>(
    format: OutputFormat,
    quiet: bool,
    first: Vec<T>,
    fetch: F,
    table: impl Fn(&[T], bool) -> String,
    changes: Option<S>,
) -> Result<(), CliError>
where
    T: Listed,
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<Vec<T>, CliError>>,
    S: Stream + Unpin,
{
    let mut seen: BTreeMap<String, T> = first.into_iter().map(|i| (i.id().to_owned(), i)).collect();
    let mut changes = changes;
    loop {
        match changes.as_mut() {
            Some(stream) => {
                tokio::select! {
                    next = stream.next() => if next.is_none() {
                        return Err(CliError::new(
                            CliError::UNREACHABLE,
                            "the watch ended: the aima daemon went away; check 'aima status'",
                        ));
                    },
                    () = tokio::time::sleep(WATCH_POLL) => {}
                }
            }
            None => tokio::time::sleep(WATCH_POLL).await,
        }
        let now = fetch().await?;
        let changed: Vec<T> = now
            .into_iter()
            .filter(|item| seen.get(item.id()) != Some(item))
            .collect();
        for item in &changed {
            seen.insert(item.id().to_owned(), item.clone());
        }
        if changed.is_empty() {
            continue;
        }
        print_changes(format, quiet, &changed, &table)?;
    }
}

fn print_changes<T: Listed>(
    format: OutputFormat,
    quiet: bool,
    changed: &[T],
    table: &impl Fn(&[T], bool) -> String,
) -> Result<(), CliError> {
    let render = |e: &dyn std::fmt::Display| {
        CliError::new(CliError::FAILED, format!("cannot render the output: {e}"))
    };
    for item in changed {
        if quiet {
            super::output::line(item.id())?;
            continue;
        }
        match format {
            OutputFormat::Json => {
                super::output::line(&serde_json::to_string(item).map_err(|e| render(&e))?)?
            }
            OutputFormat::Yaml => super::output::write(
                format!(
                    "---\n{}",
                    serde_yaml_ng::to_string(item).map_err(|e| render(&e))?
                )
                .as_bytes(),
            )?,
            OutputFormat::Table | OutputFormat::Wide => {}
        }
    }
    if !quiet && matches!(format, OutputFormat::Table | OutputFormat::Wide) {
        // The rows under the header already printed, as `kubectl get -w` does.
        let rows = table(changed, format == OutputFormat::Wide);
        for line in rows.lines().skip(1) {
            super::output::line(line)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(filters: &[&str]) -> ListArgs {
        ListArgs {
            quiet: false,
            filters: filters.iter().map(|f| (*f).to_owned()).collect(),
            watch: false,
        }
    }

    #[test]
    fn filters_become_a_query_and_mistakes_name_the_keys() {
        let keys = ["status", "engine"];
        assert_eq!(args(&[]).query(&keys).expect("empty"), "");
        assert_eq!(
            args(&["status=running", "engine=v llm"])
                .query(&keys)
                .expect("query"),
            "?status=running&engine=v+llm"
        );
        let err = args(&["stauts=running"]).query(&keys).expect_err("bad key");
        assert_eq!(err.exit, CliError::USAGE);
        assert_eq!(
            err.message,
            "--filter 'stauts=running' has an unknown key; write KEY=VALUE with KEY one of status, engine"
        );
        let err = args(&["running"]).query(&keys).expect_err("no =");
        assert!(err.message.contains("has no '='"), "{}", err.message);
    }
}
