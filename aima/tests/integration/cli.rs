//! The real `aima` binary against an in-process daemon: tables, JSON, YAML, exit codes
//! and error lines (snapshotted with insta).

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::{TestDaemon, cli_for};

/// Runs the CLI and returns (exit code, stdout, stderr).
fn run(cmd: &mut assert_cmd::Command) -> (i32, String, String) {
    let out = cmd.output().expect("run aima");
    (
        out.status.code().expect("exit code"),
        String::from_utf8(out.stdout).expect("utf-8 stdout"),
        String::from_utf8(out.stderr).expect("utf-8 stderr"),
    )
}

fn create(d: &TestDaemon, name: &str, repo: &str) -> String {
    let (code, stdout, stderr) = run(d.cli().args([
        "model", "create", "--name", name, "--source", "ollama", "--repo", repo,
    ]));
    assert_eq!(code, 0, "{stderr}");
    stdout.trim().to_owned()
}

/// Ids, ages and times change every run; snapshots keep the shape.
fn with_stable_values(check: impl FnOnce()) {
    let mut settings = insta::Settings::clone_current();
    settings.add_filter(r"model-[0-9a-f]{8}", "model-XXXXXXXX");
    settings.add_filter(r"(?m)  \d+[smhd]$", "  AGE");
    settings.add_filter(
        r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ \(\d+[smhd] ago\)",
        "TIME (AGE ago)",
    );
    settings.bind(check);
}

#[test]
fn model_list_table() {
    let d = TestDaemon::start();
    let (code, stdout, _) = run(d.cli().args(["model", "list"]));
    assert_eq!(code, 0);
    assert_eq!(
        stdout, "ID  NAME  SOURCE  REPO/PATH  STATUS  AGE\n",
        "an empty list still has its header"
    );

    create(&d, "tinyllama", "tinyllama");
    create(&d, "phi", "microsoft/phi-2");
    let weights = d.model_dir("weights");
    let (code, _, stderr) = run(d
        .cli()
        .args([
            "model",
            "create",
            "--name",
            "local-weights",
            "--source",
            "local",
            "--path",
        ])
        .arg(&weights));
    assert_eq!(code, 0, "{stderr}");
    let (code, stdout, _) = run(d.cli().args(["model", "list"]));
    assert_eq!(code, 0);
    let table = stdout.replace(weights.to_str().expect("utf-8"), "/WEIGHTS");
    with_stable_values(|| insta::assert_snapshot!(table));
}

#[test]
fn model_get_table() {
    let d = TestDaemon::start();
    let id = create(&d, "tinyllama", "tinyllama");
    let (code, stdout, _) = run(d.cli().args(["model", "get", &id]));
    assert_eq!(code, 0);
    with_stable_values(|| insta::assert_snapshot!(stdout));
}

#[test]
fn json_and_yaml_outputs_have_the_contract_shapes() {
    let d = TestDaemon::start();
    let (code, stdout, _) = run(d.cli().args([
        "-o",
        "json",
        "model",
        "create",
        "--name",
        "first",
        "--source",
        "ollama",
        "--repo",
        "tinyllama",
    ]));
    assert_eq!(code, 0);
    let first: Value = serde_json::from_str(&stdout).expect("create -o json is an object");
    assert_eq!(first["name"], "first");
    let second = create(&d, "second", "phi");

    let (_, stdout, _) = run(d.cli().args(["model", "list", "--output", "json"]));
    let list: Value = serde_json::from_str(&stdout).expect("json");
    let items = list["items"].as_array().expect("items");
    assert_eq!(
        items.first().expect("first")["id"],
        first["id"],
        ".items[0] is the oldest"
    );
    assert_eq!(
        items.last().expect("last")["id"],
        second.as_str(),
        ".items[-1] is the newest"
    );

    let (_, stdout, _) = run(d.cli().args(["model", "get", &second, "-o", "json"]));
    let got: Value = serde_json::from_str(&stdout).expect("json");
    assert_eq!(got["id"], second.as_str());
    assert_eq!(got, items[1]);

    let (_, stdout, _) = run(d.cli().args(["model", "list", "-o", "yaml"]));
    let yaml: Value = serde_yaml_ng::from_str(&stdout).expect("yaml");
    assert_eq!(yaml, list, "yaml carries the same document as json");

    let (code, stdout, _) = run(d.cli().args(["model", "delete", &second]));
    assert_eq!((code, stdout.trim()), (0, second.as_str()));
    let (_, stdout, _) = run(d.cli().args(["model", "list", "-o", "json"]));
    let list: Value = serde_json::from_str(&stdout).expect("json");
    assert_eq!(list["items"].as_array().expect("items").len(), 1);
}

#[test]
fn relative_local_paths_are_sent_as_absolute() {
    let d = TestDaemon::start();
    let weights = d.model_dir("weights");
    let cwd = weights.parent().expect("model root");
    let (code, stdout, stderr) = run(d.cli().current_dir(cwd).args([
        "-o", "json", "model", "create", "--name", "m", "--source", "local", "--path", "weights",
    ]));
    assert_eq!(code, 0, "{stderr}");
    let model: Value = serde_json::from_str(&stdout).expect("json");
    assert_eq!(model["path"], weights.to_str().expect("utf-8"));
}

#[test]
fn error_lines() {
    let d = TestDaemon::start();
    let missing = d.home.path().join("no-such-weights");
    let cases: Vec<(&str, Vec<String>, i32)> = vec![
        (
            "unknown id",
            vec!["model".into(), "get".into(), "model-00000000".into()],
            1,
        ),
        (
            "repo with local",
            vec![
                "model".into(),
                "create".into(),
                "--name".into(),
                "m".into(),
                "--source".into(),
                "local".into(),
                "--repo".into(),
                "r".into(),
            ],
            1,
        ),
        (
            "missing local path",
            vec![
                "model".into(),
                "create".into(),
                "--name".into(),
                "m".into(),
                "--source".into(),
                "local".into(),
                "--path".into(),
                missing.display().to_string(),
            ],
            1,
        ),
        (
            "empty name",
            vec![
                "model".into(),
                "create".into(),
                "--name".into(),
                "".into(),
                "--source".into(),
                "ollama".into(),
                "--repo".into(),
                "r".into(),
            ],
            1,
        ),
        (
            "overlong name",
            vec![
                "model".into(),
                "create".into(),
                "--name".into(),
                "n".repeat(129),
                "--source".into(),
                "ollama".into(),
                "--repo".into(),
                "r".into(),
            ],
            1,
        ),
        (
            "unknown source",
            vec![
                "model".into(),
                "create".into(),
                "--name".into(),
                "m".into(),
                "--source".into(),
                "s3".into(),
            ],
            2,
        ),
        (
            "missing name",
            vec![
                "model".into(),
                "create".into(),
                "--source".into(),
                "ollama".into(),
            ],
            2,
        ),
        (
            "repo and path",
            vec![
                "model".into(),
                "create".into(),
                "--name".into(),
                "m".into(),
                "--source".into(),
                "local".into(),
                "--repo".into(),
                "r".into(),
                "--path".into(),
                "/tmp".into(),
            ],
            2,
        ),
        (
            "bad output",
            vec!["-o".into(), "xml".into(), "model".into(), "list".into()],
            2,
        ),
    ];
    let mut lines = Vec::new();
    for (what, args, expected_code) in cases {
        let (code, stdout, stderr) = run(d.cli().args(&args));
        assert_eq!(code, expected_code, "{what}: {stderr}");
        assert!(
            stdout.is_empty(),
            "{what}: nothing on stdout, got {stdout:?}"
        );
        assert_eq!(
            stderr.lines().count(),
            1,
            "{what}: one line, got {stderr:?}"
        );
        assert!(stderr.starts_with("error: "), "{what}: {stderr:?}");
        lines.push(format!(
            "{what}: {}",
            stderr
                .trim_end()
                .replace(&missing.display().to_string(), "/MISSING")
        ));
    }
    assert!(
        d.store.list_models().expect("list").is_empty(),
        "refused creates wrote nothing"
    );
    insta::assert_snapshot!(lines.join("\n"));
}

#[test]
fn unreachable_daemon_is_reported_in_one_line_under_a_second() {
    // Bind then drop to find a port nothing listens on.
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr");
    let home = tempfile::tempdir().expect("home");
    let started = Instant::now();
    let (code, stdout, stderr) = run(cli_for(addr, home.path()).args(["model", "list"]));
    let elapsed = started.elapsed();
    assert_eq!(code, 3, "{stderr}");
    assert!(stdout.is_empty());
    assert_eq!(stderr.lines().count(), 1, "{stderr:?}");
    assert!(
        stderr.contains(&addr.to_string()) && stderr.contains("aima start"),
        "{stderr}"
    );
    assert!(elapsed < Duration::from_secs(1), "took {elapsed:?}");
    insta::assert_snapshot!(stderr.replace(&addr.to_string(), "ADDR").trim_end());
}

#[test]
fn status_reports_version_paths_docker_and_gpus() {
    let d = TestDaemon::start();
    let (code, stdout, stderr) = run(d.cli().args(["status", "-o", "json"]));
    assert_eq!(code, 0, "{stderr}");
    let status: Value = serde_json::from_str(&stdout).expect("json");
    assert_eq!(status["version"], aima::VERSION);
    assert_eq!(status["home"], d.home.path().to_str().expect("utf-8"));
    assert_eq!(
        status["database"],
        d.home.path().join("data/aima.db").to_str().expect("utf-8")
    );
    assert_eq!(
        status["docker"]["reachable"], true,
        "the test machine runs a Docker engine: {status}"
    );
    if !cfg!(feature = "gpu") {
        assert_eq!(
            status["gpus"],
            serde_json::json!([]),
            "this machine has no NVIDIA GPU"
        );
    }

    let (code, stdout, _) = run(d.cli().arg("status"));
    assert_eq!(code, 0);
    let labels: Vec<_> = stdout
        .lines()
        .map(|l| l.split(':').next().unwrap_or_default())
        .collect();
    assert_eq!(
        labels,
        [
            "Version", "Daemon", "Home", "Database", "Instance", "Docker", "GPUs"
        ]
    );
    assert!(stdout.contains("Docker:   reachable at"), "{stdout}");
    if !cfg!(feature = "gpu") {
        assert!(stdout.contains("GPUs:     none ("), "{stdout}");
    }
}

#[test]
fn gpu_selecting_env_is_refused_in_one_line() {
    let d = TestDaemon::start();
    create(&d, "m", "r");
    let expected = "error: env CUDA_VISIBLE_DEVICES selects GPUs, and AIMA places GPUs itself; leave it out and use --gpu-memory-utilization to size the engine's share ('aima service recommend' shows what fits where)\n";
    let (code, stdout, stderr) = run(d.cli().args([
        "service",
        "create",
        "--model-id",
        "m",
        "--engine-type",
        "vllm",
        "--env",
        "CUDA_VISIBLE_DEVICES=1",
    ]));
    assert_eq!((code, stdout.as_str(), stderr.as_str()), (1, "", expected));
    let (code, id, stderr) = run(d.cli().args([
        "service",
        "create",
        "--model-id",
        "m",
        "--engine-type",
        "vllm",
        "--env",
        "HF_HOME=/cache",
    ]));
    assert_eq!(code, 0, "{stderr}");
    let (code, _, stderr) = run(d.cli().args([
        "service",
        "update",
        id.trim(),
        "--env",
        "CUDA_VISIBLE_DEVICES=1",
    ]));
    assert_eq!((code, stderr.as_str()), (1, expected));
}

/// Runs the CLI with stdout a pipe nobody reads any more (`aima … | head` after head has
/// gone), and returns its exit status and stderr.
fn into_a_closed_pipe(d: &TestDaemon, args: &[&str]) -> (std::process::ExitStatus, String) {
    use std::io::Read;
    let (reader, writer) = std::io::pipe().expect("pipe");
    drop(reader);
    let mut child = std::process::Command::new(crate::support::aima_bin())
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", d.home.path())
        .env("AIMA_HOME", d.home.path())
        .env("AIMA_ADDR", d.addr.to_string())
        .args(args)
        .stdout(writer)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn aima");
    let status = crate::support::poll(Duration::from_secs(30), "aima to exit", || {
        child.try_wait().expect("wait")
    });
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut stderr)
        .expect("read stderr");
    (status, stderr)
}

#[test]
fn a_closed_pipe_ends_the_output_quietly_with_exit_0() {
    let d = TestDaemon::start();
    create(&d, "m", "r");
    let (code, _, stderr) = run(d.cli().args([
        "service",
        "create",
        "--model-id",
        "m",
        "--engine-type",
        "vllm",
    ]));
    assert_eq!(code, 0, "{stderr}");
    for args in [
        &["service", "list", "-o", "json"][..],
        &["service", "list"],
        &["service", "list", "-q"],
        &["model", "list"],
        &["model", "list", "-o", "yaml"],
        &["model", "get", "m"],
        &["events"],
        &["events", "-o", "json"],
        &["events", "-o", "yaml"],
    ] {
        let (status, stderr) = into_a_closed_pipe(&d, args);
        assert!(
            status.success() && stderr.is_empty(),
            "aima {args:?}: {status}, stderr {stderr:?}"
        );
    }
}
