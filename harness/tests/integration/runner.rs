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

/// A features directory with one feature, `qa-probe`, whose one criterion runs a service
/// and then checks `then` (a step that fails, or one that waits long enough to interrupt).
fn probe_features(then: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("features dir");
    std::fs::write(
        dir.path().join("qa-probe.feature"),
        format!(
            "@qa-probe\nFeature: QA probe\n\n  Scenario: 1. A running service, then a check\n    Given a running AIMA daemon\n    And a registered model \"probe-model\"\n    And a running service \"probe\" for model \"probe-model\"\n    Then {then}\n"
        ),
    )
    .expect("write the feature");
    dir
}

/// `harness run qa-probe` from `features`, with its own TMPDIR (homes and ledgers go
/// there) and report dir.
fn probe_run(features: &Path, tmp: &Path, reports: &Path, extra: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_harness"));
    cmd.args(["run", "qa-probe", "--features-dir"])
        .arg(features)
        .arg("--aima")
        .arg(aima())
        .arg("--report-dir")
        .arg(reports)
        .args(extra)
        .env("TMPDIR", tmp);
    cmd
}

/// Ids of the containers carrying `label`.
fn containers(label: &str) -> Vec<String> {
    let out = Command::new("docker")
        .args(["ps", "-aq", "--filter", &format!("label={label}")])
        .output()
        .expect("docker ps");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}

/// The `aima.instance` of every home a harness recorded in the ledgers under `tmp`.
fn recorded_instances(tmp: &Path) -> Vec<String> {
    let mut found = Vec::new();
    for ledger in std::fs::read_dir(tmp.join("aima-harness-runs"))
        .into_iter()
        .flatten()
        .flatten()
    {
        let text = std::fs::read_to_string(ledger.path()).unwrap_or_default();
        for home in text.lines().filter_map(|l| l.splitn(3, ' ').nth(2)) {
            let db = Path::new(home).join("data/aima.db");
            if let Ok(conn) = rusqlite::Connection::open_with_flags(
                &db,
                rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
            ) && let Ok(id) = conn.query_row(
                "SELECT value FROM meta WHERE key = 'instance_id'",
                [],
                |r| r.get::<_, String>(0),
            ) {
                found.push(id);
            }
        }
    }
    found
}

/// Polls until `check` holds, or fails naming `what`.
fn wait_for(what: &str, mut check: impl FnMut() -> bool) {
    let until = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !check() {
        assert!(
            std::time::Instant::now() < until,
            "timed out waiting for {what}"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// Removes containers and homes a test kept on purpose, even when it fails.
struct RemoveAfter(Vec<String>);

impl Drop for RemoveAfter {
    fn drop(&mut self) {
        for label in &self.0 {
            let ids = containers(label);
            if !ids.is_empty() {
                let _ = Command::new("docker")
                    .args(["rm", "-f"])
                    .args(&ids)
                    .output();
            }
        }
    }
}

#[test]
fn keep_on_failure_keeps_the_home_log_and_containers_and_the_reports_point_to_them() {
    let features = probe_features("exactly 5 containers of this run are left");
    let tmp = tempfile::tempdir().expect("tmp");
    let reports = tempfile::tempdir().expect("reports");
    let out = probe_run(
        features.path(),
        tmp.path(),
        reports.path(),
        &["--keep-on-failure"],
    )
    .output()
    .expect("run harness");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let kept_line = stdout
        .lines()
        .find(|l| l.contains("kept home "))
        .unwrap_or_default()
        .to_owned();
    let instance = kept_line
        .split("label=aima.instance=")
        .nth(1)
        .unwrap_or_default()
        .trim()
        .to_owned();
    let _remove = RemoveAfter(vec![format!("aima.instance={instance}")]);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(!instance.is_empty(), "no kept line: {stdout}");

    // The home and its daemon log stay, and so does the engine container.
    let home = kept_line
        .split("kept home ")
        .nth(1)
        .and_then(|rest| rest.split(", daemon log").next())
        .expect("the home");
    let log = std::fs::read_to_string(Path::new(home).join("daemon.log")).expect("daemon.log");
    assert!(log.contains("listening on"), "{log}");
    assert_eq!(containers(&format!("aima.instance={instance}")).len(), 1);
    assert!(
        stdout.contains("not counting 1 kept by --keep-on-failure"),
        "{stdout}"
    );

    // report.md links the failing criterion to its daemon log.
    let report = std::fs::read_to_string(reports.path().join("report.md")).expect("report.md");
    assert!(
        report.contains("([daemon log](logs/qa-probe-1.log))"),
        "{report}"
    );
    let linked = std::fs::read_to_string(reports.path().join("logs/qa-probe-1.log"))
        .expect("the linked log");
    assert!(linked.contains("listening on"), "{linked}");

    // JUnit: the feature as classname, the evidence as system-out, the reason as failure.
    let junit = std::fs::read_to_string(reports.path().join("junit.xml")).expect("junit.xml");
    assert!(junit.contains(r#"classname="qa-probe""#), "{junit}");
    assert!(
        junit.contains("<system-out>daemon on 127.0.0.1:"),
        "{junit}"
    );
    assert!(junit.contains("<failure"), "{junit}");
    assert!(junit.contains("daemon log: logs/qa-probe-1.log"), "{junit}");

    // A later sweep leaves a kept home alone.
    let clean = Command::new(env!("CARGO_BIN_EXE_harness"))
        .arg("clean")
        .env("TMPDIR", tmp.path())
        .output()
        .expect("harness clean");
    assert!(clean.status.success());
    assert!(Path::new(home).join("daemon.log").exists());
    assert_eq!(containers(&format!("aima.instance={instance}")).len(), 1);
}

/// Starts the probe with a check that waits a minute, and returns once its engine runs.
fn probe_with_a_running_engine(tmp: &Path, reports: &Path) -> (std::process::Child, String) {
    let features = probe_features(
        "within 60000 ms service \"probe\" is \"failed\" with a reason mentioning \"never\"",
    );
    let child = probe_run(features.path(), tmp, reports, &[])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn harness");
    let mut instance = String::new();
    wait_for("the probe's engine container", || {
        instance = recorded_instances(tmp).pop().unwrap_or_default();
        !instance.is_empty() && !containers(&format!("aima.instance={instance}")).is_empty()
    });
    (child, instance)
}

#[test]
fn sigterm_makes_the_harness_remove_what_it_started() {
    let tmp = tempfile::tempdir().expect("tmp");
    let reports = tempfile::tempdir().expect("reports");
    let (mut child, instance) = probe_with_a_running_engine(tmp.path(), reports.path());
    let _remove = RemoveAfter(vec![format!("aima.instance={instance}")]);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .expect("SIGTERM");
    let status = child.wait().expect("wait");
    assert_eq!(status.code(), Some(143), "{status}");
    assert!(
        containers(&format!("aima.instance={instance}")).is_empty(),
        "the engine container outlived the harness"
    );
    let ledgers: Vec<_> = std::fs::read_dir(tmp.path().join("aima-harness-runs"))
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(ledgers.is_empty(), "ledgers left: {ledgers:?}");
    let homes: Vec<_> = std::fs::read_dir(tmp.path())
        .expect("tmp")
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("aima-scenario-")
        })
        .collect();
    assert!(homes.is_empty(), "homes left: {homes:?}");
}

#[test]
fn a_run_killed_outright_is_cleaned_up_by_the_next_one() {
    let tmp = tempfile::tempdir().expect("tmp");
    let reports = tempfile::tempdir().expect("reports");
    let (mut child, instance) = probe_with_a_running_engine(tmp.path(), reports.path());
    let _remove = RemoveAfter(vec![format!("aima.instance={instance}")]);
    child.kill().expect("SIGKILL");
    child.wait().expect("wait");
    // Nothing ran its cleanup: the engine and its daemon are still there.
    assert_eq!(containers(&format!("aima.instance={instance}")).len(), 1);
    let out = Command::new(env!("CARGO_BIN_EXE_harness"))
        .arg("clean")
        .env("TMPDIR", tmp.path())
        .output()
        .expect("harness clean");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(
        stdout.contains("removed 1 daemons, 1 containers and 1 homes of 1 harness runs"),
        "{stdout}"
    );
    assert!(containers(&format!("aima.instance={instance}")).is_empty());
}

#[test]
fn steps_lists_every_phrase_by_subject_with_an_example() {
    let (code, stdout, stderr) = harness(&["steps"]);
    assert_eq!(code, 0, "{stderr}");
    for subject in [
        "containers",
        "daemon",
        "faults",
        "gateway",
        "gpu",
        "monitoring",
        "services",
    ] {
        assert!(
            stdout.lines().any(|l| l == subject),
            "no {subject} group:\n{stdout}"
        );
    }
    assert!(
        stdout.contains(
            "  Given a service {string} for model {string} with env {string}\n      e.g. Given a service \""
        ),
        "{stdout}"
    );
    assert!(
        stdout.contains("  Then exactly {int} container(s) of this run is|are left"),
        "{stdout}"
    );
    // Every phrase reads as words, not as a regex.
    for line in stdout.lines() {
        assert!(
            !line.contains("(?") && !line.contains('\\'),
            "unreadable phrase: {line}"
        );
    }
}
