//! `cargo test` entry for the operator scenarios: runs every feature except `@wip`, and
//! `@gpu` only with `--features gpu`; fails when any criterion fails.

use std::process::ExitCode;

use harness::scenarios::{RunOptions, run};

#[tokio::main]
async fn main() -> ExitCode {
    // `cargo test -p harness` alone does not build the aima binary the scenarios run.
    if let Err(e) = harness::build_under_cargo() {
        eprintln!("error: {e:#}");
        return ExitCode::FAILURE;
    }
    let mut options =
        RunOptions::new(std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("harness-reports"));
    options.gpu = cfg!(feature = "gpu");
    match run(options.clone()).await {
        Ok(report) => {
            println!("{}", report.table());
            println!("reports: {}", options.report_dir.display());
            // A plain closing line that test-log readers understand.
            println!(
                "scenarios: {} passed, {} failed, {} skipped",
                report.count("PASS"),
                report.failed(),
                report.count("SKIPPED") + report.count("PENDING")
            );
            if report.failed() == 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
