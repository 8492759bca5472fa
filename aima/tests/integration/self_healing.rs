//! Restart policies through the CLI and the API against the real Docker engine: a killed
//! engine comes back in a fresh container with the crashed one's lines kept for
//! `logs --previous`, `service update` changes settings in place and says what waits for
//! the next start, and bad policies are one clear line. The crash-loop flows (give up
//! after MAX, stop during back-off, a daemon killed during back-off, a missing image) are
//! the harness feature `features/self-healing.feature`.

use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use crate::support::{TestDaemon, poll, run, run_json};

fn daemon() -> TestDaemon {
    TestDaemon::with_engine_and(|settings| {
        settings.restart_backoff = aima::domain::Backoff {
            first: Duration::from_millis(300),
        };
    })
}

fn service(d: &TestDaemon, extra: &[&str]) -> String {
    run_json(d.cli().args([
        "model",
        "create",
        "--name",
        "tiny",
        "--source",
        "ollama",
        "--repo",
        "tinyllama",
    ]));
    let created = run_json(
        d.cli()
            .args([
                "service",
                "create",
                "--model-id",
                "tiny",
                "--engine-type",
                "vllm",
            ])
            .args(extra),
    );
    created["id"].as_str().expect("id").to_owned()
}

fn get(d: &TestDaemon, id: &str) -> Value {
    run_json(d.cli().args(["service", "get", id]))
}

#[test]
fn a_killed_engine_comes_back_in_a_new_container_and_its_last_lines_stay_readable() {
    let d = daemon();
    let id = service(&d, &[]);
    let (code, _, stderr) = run(d.cli().args(["service", "start", &id, "--wait"]));
    assert_eq!(code, 0, "{stderr}");
    let first = get(&d, &id);
    assert_eq!(first["restart"], "on-failure:5", "the default policy");
    let killed = Command::new("docker")
        .args(["kill", &format!("aima-{id}")])
        .output()
        .expect("docker kill");
    assert!(killed.status.success());
    let back = poll(Duration::from_secs(30), "the engine to run again", || {
        let service = get(&d, &id);
        (service["status"] == "running" && service["container_id"] != first["container_id"])
            .then_some(service)
    });
    assert_eq!(back["port"], first["port"], "the same port");
    assert_eq!(back["restarts"], 1);
    assert_eq!(back["last_exit_code"], 137);

    // The restart's story, in order: backoff with its reason, restarted, then running.
    let (_, events, _) = run(d.cli().args(["service", "events", &id, "-o", "json"]));
    let kinds: Vec<String> = events
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).expect("event"))
        .map(|e| {
            format!(
                "{}{}",
                e["type"].as_str().unwrap_or(""),
                e["status"]
                    .as_str()
                    .map(|s| format!(":{s}"))
                    .unwrap_or_default()
            )
        })
        .collect();
    let tail: Vec<&str> = kinds
        .iter()
        .map(String::as_str)
        .skip_while(|k| *k != "status:backoff")
        .filter(|k| k.starts_with("status") || *k == "restarted")
        .collect();
    assert_eq!(
        tail,
        [
            "status:backoff",
            "restarted",
            "status:starting",
            "status:running"
        ],
        "{events}"
    );

    // `--previous` reads the killed container's lines; they end before the new ones begin.
    let (code, previous, stderr) =
        run(d
            .cli()
            .args(["service", "logs", &id, "--previous", "--timestamps"]));
    assert_eq!(code, 0, "{stderr}");
    let (code, current, _) = run(d.cli().args(["service", "logs", &id, "--timestamps"]));
    assert_eq!(code, 0);
    let stamp = |line: &str| {
        let text = line.split(' ').next().unwrap_or_default();
        chrono::DateTime::parse_from_rfc3339(text)
            .unwrap_or_else(|e| panic!("{text:?} is not a time ({e}) in {line:?}"))
    };
    let last_previous = previous.lines().last().map(stamp).expect("kept lines");
    let first_current = current.lines().next().map(stamp).expect("current lines");
    assert!(
        last_previous < first_current,
        "previous ends {last_previous}, current begins {first_current}"
    );
    assert!(previous.contains("Uvicorn running"), "{previous}");
    let (code, _, stderr) = run(d
        .cli()
        .args(["service", "logs", &id, "--previous", "--follow"]));
    assert_eq!(code, 2, "clap refuses --previous with --follow: {stderr}");

    // The list counts restarts as kubectl does.
    let (_, table, _) = run(d.cli().args(["service", "list"]));
    let header: Vec<&str> = table
        .lines()
        .next()
        .expect("header")
        .split_whitespace()
        .collect();
    let row: Vec<&str> = table
        .lines()
        .nth(1)
        .expect("row")
        .split_whitespace()
        .collect();
    let column = header
        .iter()
        .position(|h| *h == "RESTARTS")
        .expect("RESTARTS column");
    assert_eq!(row[column], "1", "{table}");
    crate::support::remove_containers_with_label(&d.instance_label());
}

#[test]
fn update_changes_settings_in_place_and_says_what_waits_for_the_next_start() {
    let d = daemon();
    let id = service(&d, &["--restart", "no"]);
    let (code, _, stderr) = run(d.cli().args(["service", "start", &id, "--wait"]));
    assert_eq!(code, 0, "{stderr}");
    let before = get(&d, &id);

    let (code, stdout, stderr) = run(d.cli().args([
        "service",
        "update",
        &id,
        "--restart",
        "always",
        "--health-interval",
        "1s",
        "--env",
        "EXTRA=1",
    ]));
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(
        stdout,
        format!(
            "{id} updated; env apply at its next start (aima service stop {id} && aima service start {id})\n"
        )
    );
    let after = get(&d, &id);
    assert_eq!(after["restart"], "always");
    assert_eq!(after["health_interval"], "1s");
    assert_eq!(
        after["status"], "running",
        "an update never restarts the engine"
    );
    assert_eq!(after["container_id"], before["container_id"]);

    // A stopped service takes everything at its next start, so nothing is said to wait.
    run(d.cli().args(["service", "stop", &id]));
    let updated = run_json(
        d.cli()
            .args(["service", "update", &id, "--start-timeout", "5m"]),
    );
    assert_eq!(updated["applies_at_next_start"], serde_json::json!([]));
    assert_eq!(updated["service"]["start_timeout"], "5m");

    for (args, message) in [
        (
            vec!["--restart", "sometimes"],
            "error: restart policy 'sometimes' is not one of no, on-failure, on-failure:MAX (MAX 1 or more), always\n",
        ),
        (
            vec!["--health-retries", "0"],
            "error: health-retries must be 1 to 1000 missed probes in a row\n",
        ),
        (
            vec![],
            "error: nothing to change; pass at least one setting, such as --restart on-failure:3\n",
        ),
    ] {
        let (code, _, stderr) = run(d.cli().args(["service", "update", &id]).args(&args));
        assert_eq!((code, stderr.as_str()), (1, message), "{args:?}");
    }
    let (code, _, stderr) = run(d.cli().args([
        "service",
        "create",
        "--model-id",
        "tiny",
        "--engine-type",
        "vllm",
        "--restart",
        "on-failure:0",
    ]));
    assert_eq!(code, 1);
    assert!(
        stderr.starts_with("error: restart policy 'on-failure:0' is not one of"),
        "{stderr}"
    );
    crate::support::remove_containers_with_label(&d.instance_label());
}
