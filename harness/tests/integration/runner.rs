//! `harness run` as QA calls it: feature names, tag expressions, port ranges, and one
//! clear line for a bad option.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The `aima` binary beside the harness, built when `cargo test -p harness` ran alone.
fn aima() -> PathBuf {
    let harness = Path::new(env!("CARGO_BIN_EXE_harness"));
    let aima = harness.parent().expect("bin dir").join("aima");
    if !aima.exists() {
        let status = Command::new(env!("CARGO"))
            .args(["build", "-p", "aima", "--bin", "aima"])
            .status()
            .expect("cargo build -p aima");
        assert!(status.success(), "cargo build -p aima failed");
    }
    aima
}

fn harness(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_harness"))
        .args(args)
        .output()
        .expect("run harness");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn tags_select_the_criteria_of_a_feature() {
    let reports = tempfile::tempdir().expect("report dir");
    let aima = aima();
    let (code, stdout, stderr) = harness(&[
        "run",
        "scenario-16",
        "--tags",
        "@gpu",
        "--aima",
        aima.to_str().expect("utf-8"),
        "--report-dir",
        reports.path().to_str().expect("utf-8"),
    ]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(stdout.contains("SKIPPED  7a."), "{stdout}");
    assert!(
        !stdout.contains("PASS     1."),
        "criteria without @gpu are left out: {stdout}"
    );
}

#[test]
fn bad_options_are_refused_in_one_line() {
    for (args, expected) in [
        (
            &["run", "gateway", "--tags", "and or"][..],
            "is not a tag expression",
        ),
        (
            &["run", "gateway", "--port-range", "5-9"][..],
            "is not a port range",
        ),
        (&["run", "no-such-feature"][..], "is not a feature"),
    ] {
        let (code, _, stderr) = harness(args);
        assert_ne!(code, 0, "{args:?}");
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
    }
}
