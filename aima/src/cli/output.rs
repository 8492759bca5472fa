use chrono::{DateTime, Utc};
use comfy_table::{ColumnConstraint, Table, presets};
use serde::Serialize;

use super::CliError;

/// `-o table|wide|json|yaml`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    Table,
    /// The table with more columns, as `kubectl get -o wide`.
    Wide,
    Json,
    Yaml,
}

/// Prints `value` as JSON or YAML, or as the given human table.
pub fn print<T: Serialize>(
    format: OutputFormat,
    value: &T,
    table: impl FnOnce() -> String,
) -> Result<(), CliError> {
    let text = match format {
        OutputFormat::Table | OutputFormat::Wide => table(),
        OutputFormat::Json => serde_json::to_string_pretty(value).map_err(render_error)?,
        OutputFormat::Yaml => serde_yaml_ng::to_string(value).map_err(render_error)?,
    };
    line(text.trim_end())
}

/// Writes `text` and a newline to stdout.
pub fn line(text: &str) -> Result<(), CliError> {
    write(format!("{text}\n").as_bytes())
}

/// Writes `bytes` to stdout. When the reader has gone (`aima … | head`), the command ends
/// here with exit 0 and no message, as Unix tools do: nobody reads what would follow.
pub fn write(bytes: &[u8]) -> Result<(), CliError> {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(bytes).and_then(|()| stdout.flush()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => std::process::exit(0),
        Err(e) => Err(CliError::new(
            CliError::FAILED,
            format!("cannot write the output: {e}"),
        )),
    }
}

fn render_error(e: impl std::fmt::Display) -> CliError {
    CliError::new(CliError::FAILED, format!("cannot render the output: {e}"))
}

/// Columns separated by two spaces with no borders, like `docker ps` and `kubectl get`.
pub fn columns<const N: usize>(
    header: [&str; N],
    rows: impl IntoIterator<Item = [String; N]>,
) -> String {
    columns_of(header.to_vec(), rows.into_iter().map(Vec::from))
}

/// [`columns`] for tables whose width is known only at run time (`-o wide`).
pub fn columns_of(header: Vec<&str>, rows: impl IntoIterator<Item = Vec<String>>) -> String {
    let mut table = Table::new();
    table.load_preset(presets::NOTHING);
    table.set_header(header);
    for row in rows {
        table.add_row(row);
    }
    for column in table.column_iter_mut() {
        column.set_padding((0, 2));
        column.set_constraint(ColumnConstraint::ContentWidth);
    }
    table
        .lines()
        .map(|l| l.trim_end().to_owned())
        .collect::<Vec<_>>()
        .join("\n")
}

/// `Key:  value` lines with the values aligned, like `kubectl describe`.
pub fn fields(pairs: &[(&str, String)]) -> String {
    let width = pairs.iter().map(|(k, _)| k.len()).max().unwrap_or(0) + 2;
    pairs
        .iter()
        .map(|(k, v)| format!("{:<width$}{v}", format!("{k}:")))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Age in kubectl's style: 45s, 12m, 5h, 3d.
pub fn age(since: DateTime<Utc>, now: DateTime<Utc>) -> String {
    let secs = (now - since).num_seconds().max(0);
    match secs {
        0..120 => format!("{secs}s"),
        120..7200 => format!("{}m", secs / 60),
        7200..172_800 => format!("{}h", secs / 3600),
        _ => format!("{}d", secs / 86_400),
    }
}

/// A dash for values that are not set.
pub fn or_dash(value: Option<&str>) -> String {
    value.filter(|v| !v.is_empty()).unwrap_or("-").to_owned()
}

/// Ids go into the URL path; anything unusual is percent-encoded rather than trusted.
pub fn path_segment(id: &str) -> String {
    id.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            other => format!("%{other:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_read_like_kubectl() {
        let now = Utc::now();
        let ago = |s: i64| age(now - chrono::Duration::seconds(s), now);
        assert_eq!(ago(5), "5s");
        assert_eq!(ago(150), "2m");
        assert_eq!(ago(3 * 3600), "3h");
        assert_eq!(ago(5 * 86_400), "5d");
        assert_eq!(ago(-3), "0s");
    }

    #[test]
    fn columns_align_without_borders() {
        let text = columns(
            ["ID", "NAME"],
            [
                ["a".to_owned(), "long-name".to_owned()],
                ["bbbb".to_owned(), "x".to_owned()],
            ],
        );
        assert_eq!(text, "ID    NAME\na     long-name\nbbbb  x");
    }
}
