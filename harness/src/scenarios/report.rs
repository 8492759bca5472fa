//! The outcome of a run: one row per criterion, printed as a table and written as
//! Markdown (cucumber writes the JUnit XML beside it).

use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

/// How a criterion ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Pass,
    Fail(String),
    Skipped(String),
    Pending(String),
}

impl Verdict {
    pub fn label(&self) -> &'static str {
        match self {
            Self::Pass => "PASS",
            Self::Fail(_) => "FAIL",
            Self::Skipped(_) => "SKIPPED",
            Self::Pending(_) => "PENDING",
        }
    }

    fn detail(&self) -> Option<&str> {
        match self {
            Self::Pass => None,
            Self::Fail(d) | Self::Skipped(d) | Self::Pending(d) => Some(d),
        }
    }
}

/// One criterion's result with its evidence.
#[derive(Debug, Clone)]
pub struct Row {
    pub scenario: String,
    pub criterion: String,
    pub verdict: Verdict,
    pub took: Option<Duration>,
    pub evidence: Vec<String>,
    /// A failing scenario's daemon log, relative to the report dir.
    pub daemon_log: Option<String>,
}

/// All rows of a run.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub rows: Vec<Row>,
    pub took: Duration,
}

impl Report {
    pub fn failed(&self) -> usize {
        self.count("FAIL")
    }

    pub fn count(&self, label: &str) -> usize {
        self.rows
            .iter()
            .filter(|r| r.verdict.label() == label)
            .count()
    }

    /// The criterion table for the terminal, with evidence under each row.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let mut current = "";
        for row in &self.rows {
            if row.scenario != current {
                current = &row.scenario;
                let _ = writeln!(out, "\n{current}");
            }
            let took = row
                .took
                .map(|t| format!(" ({:.1}s)", t.as_secs_f64()))
                .unwrap_or_default();
            let _ = writeln!(out, "  {:<8} {}{took}", row.verdict.label(), row.criterion);
            if let Some(detail) = row.verdict.detail() {
                let _ = writeln!(out, "           reason: {}", one_line(detail));
            }
            for fact in &row.evidence {
                let _ = writeln!(out, "           - {}", one_line(fact));
            }
        }
        let _ = writeln!(out, "\n{}", self.summary());
        out
    }

    /// `N passed, N failed, N skipped`, plus pending, and the time taken.
    pub fn summary(&self) -> String {
        format!(
            "{} passed, {} failed, {} skipped, {} pending in {:.1}s",
            self.count("PASS"),
            self.count("FAIL"),
            self.count("SKIPPED"),
            self.count("PENDING"),
            self.took.as_secs_f64()
        )
    }

    /// The Markdown report for QA.
    pub fn markdown(&self, title: &str) -> String {
        let mut out = format!("# {title}\n\n{}\n\n", self.summary());
        out.push_str("| scenario | criterion | result | time | reason |\n|---|---|---|---|---|\n");
        for row in &self.rows {
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} |",
                row.scenario,
                escape(&row.criterion),
                row.verdict.label(),
                row.took
                    .map(|t| format!("{:.1}s", t.as_secs_f64()))
                    .unwrap_or_default(),
                escape(row.verdict.detail().unwrap_or(""))
                    + &row
                        .daemon_log
                        .as_ref()
                        .map(|log| format!(" ([daemon log]({log}))"))
                        .unwrap_or_default()
            );
        }
        out.push_str("\n## Evidence\n");
        for row in &self.rows {
            let _ = writeln!(
                out,
                "\n### {}: {} ({})\n",
                row.scenario,
                row.criterion,
                row.verdict.label()
            );
            if let Some(detail) = row.verdict.detail() {
                let _ = writeln!(out, "Reason:\n\n```\n{detail}\n```\n");
            }
            if let Some(log) = &row.daemon_log {
                let _ = writeln!(out, "Daemon log: [{log}]({log})\n");
            }
            for fact in &row.evidence {
                let _ = writeln!(out, "- {}", escape(fact));
            }
        }
        out
    }

    pub fn write_markdown(&self, path: &Path, title: &str) -> anyhow::Result<()> {
        std::fs::write(path, self.markdown(title))
            .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))
    }

    /// JUnit XML for CI: a test suite per feature, a test case per criterion with the
    /// feature as its classname and the criterion's evidence as its `<system-out>`.
    pub fn junit(&self, title: &str) -> anyhow::Result<String> {
        use quick_junit::{NonSuccessKind, TestCase, TestCaseStatus, TestSuite};
        let mut report = quick_junit::Report::new(title);
        let mut suites: Vec<TestSuite> = Vec::new();
        for row in &self.rows {
            if suites
                .last()
                .is_none_or(|s| s.name.as_str() != row.scenario)
            {
                suites.push(TestSuite::new(row.scenario.as_str()));
            }
            let status = match &row.verdict {
                Verdict::Pass => TestCaseStatus::success(),
                Verdict::Fail(reason) => {
                    let mut status = TestCaseStatus::non_success(NonSuccessKind::Failure);
                    status
                        .set_message(one_line(reason))
                        .set_description(reason.as_str());
                    status
                }
                Verdict::Skipped(reason) | Verdict::Pending(reason) => {
                    let mut status = TestCaseStatus::skipped();
                    status.set_message(one_line(reason));
                    status
                }
            };
            let mut case = TestCase::new(row.criterion.as_str(), status);
            case.set_classname(row.scenario.as_str());
            if let Some(took) = row.took {
                case.set_time(took);
            }
            let mut out = row.evidence.join("\n");
            if let Some(log) = &row.daemon_log {
                out.push_str(&format!("\ndaemon log: {log}"));
            }
            if !out.is_empty() {
                case.set_system_out(out);
            }
            suites
                .last_mut()
                .expect("a suite for this row")
                .add_test_case(case);
        }
        report.add_test_suites(suites);
        Ok(report.to_string()?)
    }

    pub fn write_junit(&self, path: &Path, title: &str) -> anyhow::Result<()> {
        std::fs::write(path, self.junit(title)?)
            .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))
    }
}

fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn escape(text: &str) -> String {
    one_line(text).replace('|', "\\|")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(verdict: Verdict) -> Row {
        Row {
            scenario: "scenario-20".into(),
            criterion: "1. a | b".into(),
            verdict,
            took: Some(Duration::from_millis(1500)),
            evidence: vec!["port 30000\nheld".into()],
            daemon_log: None,
        }
    }

    #[test]
    fn summary_counts_each_verdict() {
        let report = Report {
            rows: vec![
                row(Verdict::Pass),
                row(Verdict::Fail("boom".into())),
                row(Verdict::Skipped("needs a GPU".into())),
                row(Verdict::Pending("issue 5".into())),
            ],
            took: Duration::from_secs(3),
        };
        assert_eq!(
            report.summary(),
            "1 passed, 1 failed, 1 skipped, 1 pending in 3.0s"
        );
        assert_eq!(report.failed(), 1);
        let table = report.table();
        assert!(
            table.contains("  FAIL     1. a | b (1.5s)") && table.contains("reason: boom"),
            "{table}"
        );
        assert!(table.contains("- port 30000 held"), "{table}");
        let markdown = report.markdown("t");
        assert!(
            markdown.contains("| scenario-20 | 1. a \\| b | FAIL | 1.5s | boom |"),
            "{markdown}"
        );
    }
}
