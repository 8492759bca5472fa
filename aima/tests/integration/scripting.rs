//! The CLI and API as scripts use them, with docker's and kubectl's conventions: list
//! filters, `-q`, `-o wide`, `--watch`, several ids at once, `delete --force`, `service
//! wait`, `version`, `completions`, and a YAML stream of events.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};

use crate::support::{TestDaemon, aima_bin, poll};

fn run(cmd: &mut assert_cmd::Command) -> (i32, String, String) {
    let out = cmd.output().expect("run aima");
    (
        out.status.code().expect("exit code"),
        String::from_utf8(out.stdout).expect("utf-8 stdout"),
        String::from_utf8(out.stderr).expect("utf-8 stderr"),
    )
}

/// `aima … -o json`, expected to succeed.
fn json(d: &TestDaemon, args: &[&str]) -> Value {
    let (code, stdout, stderr) = run(d.cli().args(args).args(["-o", "json"]));
    assert_eq!(code, 0, "aima {args:?}: {stderr}");
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

fn model(d: &TestDaemon, name: &str, source: &str) -> String {
    let mut args = vec!["model", "create", "--name", name, "--source", source];
    let dir;
    if source == "local" {
        dir = d.model_dir(name);
        args.extend(["--path", dir.to_str().expect("utf-8")]);
    } else {
        args.extend(["--repo", "tinyllama"]);
    }
    json(d, &args)["id"].as_str().expect("id").to_owned()
}

fn service(d: &TestDaemon, model: &str, name: &str, extra: &[&str]) -> String {
    let mut args = vec![
        "service",
        "create",
        "--model-id",
        model,
        "--engine-type",
        "vllm",
        "--name",
        name,
    ];
    args.extend(extra);
    json(d, &args)["id"].as_str().expect("id").to_owned()
}

fn ids(list: &Value) -> Vec<String> {
    list["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|i| i["id"].as_str().expect("id").to_owned())
        .collect()
}

async fn get(d: &TestDaemon, path: &str) -> (u16, Value) {
    let response = reqwest::get(d.url(path)).await.expect("GET");
    let status = response.status().as_u16();
    (status, response.json().await.expect("JSON body"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lists_filter_by_key_on_the_api_and_the_cli_and_refuse_unknown_parameters() {
    let d = tokio::task::spawn_blocking(TestDaemon::start)
        .await
        .expect("daemon");
    let (chat, code) = tokio::task::block_in_place(|| {
        let chat = model(&d, "chat", "ollama");
        let code = model(&d, "code", "local");
        service(&d, &chat, "chat-a", &[]);
        service(&d, &chat, "chat-b", &[]);
        service(&d, &code, "code-a", &[]);
        (chat, code)
    });

    // The API: each filter narrows, a model matches by id or name, all must hold.
    let names = |list: &Value| -> Vec<String> {
        list["items"]
            .as_array()
            .expect("items")
            .iter()
            .map(|i| i["name"].as_str().expect("name").to_owned())
            .collect()
    };
    let (status, list) = get(&d, "/api/v1/services?model=chat").await;
    assert_eq!(status, 200);
    assert_eq!(names(&list), ["chat-a", "chat-b"]);
    let (_, list) = get(
        &d,
        &format!("/api/v1/services?model={code}&status=creating"),
    )
    .await;
    assert_eq!(names(&list), ["code-a"]);
    let (_, list) = get(&d, "/api/v1/services?engine=vllm&name=chat-b").await;
    assert_eq!(names(&list), ["chat-b"]);
    let (_, list) = get(&d, "/api/service/list?status=running").await;
    assert_eq!(names(&list), Vec::<String>::new());
    let (_, list) = get(&d, "/api/v1/models?source=local").await;
    assert_eq!(ids(&list), vec![code.clone()]);

    // Mistakes are 400s that name the parameter or value and the accepted ones.
    for (path, message) in [
        (
            "/api/v1/services?stauts=running",
            "unknown query parameter 'stauts' for GET /api/v1/services; it takes engine, model, name, status",
        ),
        (
            "/api/v1/services?status=runing",
            "status 'runing' is not one of creating, starting, running, stopping, stopped, failed, backoff",
        ),
        (
            "/api/v1/services?engine=tgi",
            "engine 'tgi' is not one of vllm, sglang, llamacpp, ollama",
        ),
        (
            "/api/v1/models/chat?verbose=1",
            "unknown query parameter 'verbose' for GET /api/v1/models/chat; it takes context_length, engine",
        ),
        (
            "/api/v1/health?x",
            "unknown query parameter 'x' for GET /api/v1/health; it takes none",
        ),
    ] {
        let (status, body) = get(&d, path).await;
        assert_eq!(status, 400, "{path}: {body}");
        assert_eq!(
            body,
            json!({"error": {"code": "bad_request", "message": message}}),
            "{path}"
        );
    }

    tokio::task::block_in_place(|| {
        // The CLI: --filter, -q (ids only), -o wide (more columns).
        let (code_, stdout, stderr) = run(d.cli().args([
            "service",
            "list",
            "-q",
            "--filter",
            "model=chat",
            "--filter",
            "name=chat-b",
        ]));
        assert_eq!(code_, 0, "{stderr}");
        let chat_b = json(&d, &["service", "get", "chat-b"])["id"]
            .as_str()
            .expect("id")
            .to_owned();
        assert_eq!(stdout, format!("{chat_b}\n"));
        let (_, stdout, _) = run(d.cli().args(["service", "list", "-o", "wide"]));
        let header: Vec<&str> = stdout
            .lines()
            .next()
            .expect("header")
            .split("  ")
            .filter(|c| !c.is_empty())
            .map(str::trim)
            .collect();
        assert_eq!(
            header,
            [
                "ID",
                "NAME",
                "MODEL",
                "ENGINE",
                "PORT",
                "STATUS",
                "RESTARTS",
                "IN FLIGHT",
                "LAST REQUEST",
                "AGE",
                "GPU MEM",
                "IDLE TIMEOUT",
                "CONTAINER",
                "REASON"
            ]
        );
        assert_eq!(stdout.lines().count(), 4, "{stdout}");
        let (_, stdout, _) =
            run(d
                .cli()
                .args(["model", "list", "-q", "--filter", "source=ollama"]));
        assert_eq!(stdout, format!("{chat}\n"));
        let listed = json(&d, &["service", "list", "--filter", "status=creating"]);
        assert_eq!(ids(&listed).len(), 3);
        // A filter the list does not take is a usage error (exit 2) before any request.
        let (code_, _, stderr) = run(d.cli().args(["service", "list", "--filter", "port=8000"]));
        assert_eq!(code_, 2);
        assert_eq!(
            stderr,
            "error: --filter 'port=8000' has an unknown key; write KEY=VALUE with KEY one of status, engine, model, name\n"
        );
    });
}

#[test]
fn start_stop_and_delete_take_several_services_and_report_each_failure() {
    let d = TestDaemon::with_engine();
    let m = model(&d, "m", "ollama");
    let a = service(&d, &m, "a", &[]);
    let b = service(&d, &m, "b", &[]);

    let (code, stdout, stderr) = run(d.cli().args(["service", "start", "a", "b", "--wait"]));
    assert_eq!(code, 0, "{stderr}");
    for id in [&a, &b] {
        assert!(
            stdout.contains(&format!("{id} running on port")),
            "{stdout}"
        );
    }
    // A running engine is deleted only with --force; each refusal is its own line.
    let (code, stdout, stderr) = run(d.cli().args(["service", "delete", "a", "b"]));
    assert_eq!((code, stdout.as_str()), (1, ""));
    assert_eq!(
        stderr,
        format!(
            "error: service {a} is running; stop it first ('aima stop {a}'), or force the delete ('aima service delete --force {a}')\nerror: service {b} is running; stop it first ('aima stop {b}'), or force the delete ('aima service delete --force {b}')\n"
        )
    );
    // One unknown id among several: the others are still stopped, and the exit says so.
    let (code, stdout, stderr) = run(d.cli().args(["service", "stop", "a", "nope", "b"]));
    assert_eq!(code, 1);
    // What was typed comes back, as docker stop echoes it.
    assert_eq!(stdout, "a stopped\nb stopped\n");
    assert_eq!(
        stderr,
        "error: no service with id, name or id prefix 'nope'; list them with 'aima service list'\n"
    );
    let (code, stdout, stderr) = run(d.cli().args(["service", "delete", "a", "b"]));
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(stdout, "a\nb\n");
    assert_eq!(ids(&json(&d, &["service", "list"])), Vec::<String>::new());
    assert!(d.containers().is_empty());
}

#[test]
fn service_wait_gives_scripts_an_exit_code() {
    let d = TestDaemon::with_engine();
    let m = model(&d, "m", "ollama");
    let ok = service(&d, &m, "ok", &["--env", "STUB_START_DELAY_MS=500"]);
    service(&d, &m, "doomed", &["--env", "STUB_FAIL=oom"]);

    let (code, _, stderr) = run(d.cli().args(["service", "start", "ok", "doomed"]));
    assert_eq!(code, 0, "{stderr}");
    let (code, stdout, stderr) = run(d.cli().args([
        "service",
        "wait",
        "ok",
        "--for",
        "running",
        "--timeout",
        "60s",
    ]));
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.starts_with(&format!("{ok} running (port ")),
        "{stdout}"
    );

    // Waiting for running ends at once when the service fails instead.
    let (code, _, stderr) = run(d.cli().args([
        "service",
        "wait",
        "doomed",
        "--for",
        "running",
        "--timeout",
        "60s",
    ]));
    assert_eq!(code, 1);
    assert!(
        stderr.starts_with("error: ")
            && stderr.contains("failed instead of running: ")
            && stderr.contains("out of GPU memory"),
        "{stderr}"
    );
    let waited = json(&d, &["service", "wait", "doomed", "--for", "failed"]);
    assert_eq!(waited["status"], "failed");

    // A timeout is exit 1 with what the service is instead.
    let (code, _, stderr) = run(d.cli().args([
        "service",
        "wait",
        "ok",
        "--for",
        "stopped",
        "--timeout",
        "300ms",
    ]));
    assert_eq!(code, 1);
    assert_eq!(
        stderr,
        format!("error: timed out after 300ms: {ok} is running, not stopped\n")
    );
    let (code, _, stderr) = run(d.cli().args(["service", "wait", "ok", "--for", "gone"]));
    assert_eq!(code, 2, "{stderr}");
    let (code, _, stderr) = run(d.cli().args([
        "service",
        "wait",
        "ok",
        "--for",
        "stopped",
        "--timeout",
        "soon",
    ]));
    assert_eq!(code, 2);
    assert!(
        stderr.contains("'soon' for '--timeout <DURATION>': not a duration"),
        "{stderr}"
    );
    run(d
        .cli()
        .args(["service", "delete", "--force", "ok", "doomed"]));
}

#[test]
fn service_list_watch_prints_each_change() {
    let d = TestDaemon::with_engine();
    let m = model(&d, "m", "ollama");
    let id = service(&d, &m, "watched", &[]);
    let mut watch = Command::new(aima_bin())
        .args(["service", "list", "--watch", "-o", "json"])
        .env("AIMA_HOME", d.home.path())
        .env("AIMA_ADDR", d.addr.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("aima service list --watch");
    let (lines_tx, lines) = std::sync::mpsc::channel();
    let stdout = watch.stdout.take().expect("stdout");
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = lines_tx.send(line);
        }
    });
    // The first listing is the pretty {"items": [...]} object; changes come one per line.
    let mut seen = Vec::new();
    poll(Duration::from_secs(10), "the first listing", || {
        seen.extend(lines.try_iter());
        (seen.last().map(String::as_str) == Some("}")).then_some(())
    });
    let (code, _, stderr) = run(d.cli().args(["service", "start", "watched", "--wait"]));
    assert_eq!(code, 0, "{stderr}");
    let statuses: Vec<String> = poll(Duration::from_secs(10), "a running line", || {
        seen.extend(lines.try_iter());
        let statuses: Vec<String> = seen
            .iter()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|v| v["id"] == id.as_str())
            .map(|v| v["status"].as_str().unwrap_or_default().to_owned())
            .collect();
        statuses.contains(&"running".to_owned()).then_some(statuses)
    });
    let _ = watch.kill();
    let _ = watch.wait();
    assert_eq!(
        statuses.last().map(String::as_str),
        Some("running"),
        "{statuses:?}"
    );
    run(d.cli().args(["service", "delete", "--force", "watched"]));
}

#[test]
fn events_as_yaml_are_a_stream_of_documents() {
    let d = TestDaemon::with_engine();
    let m = model(&d, "m", "ollama");
    service(&d, &m, "s", &[]);
    let (code, _, stderr) = run(d.cli().args(["service", "start", "s", "--wait"]));
    assert_eq!(code, 0, "{stderr}");
    let (_, as_json, _) = run(d.cli().args(["service", "events", "s", "-o", "json"]));
    let (code, as_yaml, stderr) = run(d.cli().args(["service", "events", "s", "-o", "yaml"]));
    assert_eq!(code, 0, "{stderr}");
    let from_json: Vec<Value> = as_json
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON event a line"))
        .collect();
    let from_yaml: Vec<Value> = serde_yaml_ng::Deserializer::from_str(&as_yaml)
        .map(|doc| serde::Deserialize::deserialize(doc).expect("a YAML document"))
        .collect();
    assert!(from_json.len() >= 8, "{as_json}");
    assert_eq!(from_yaml, from_json);
    assert!(as_yaml.starts_with("---\n"), "{as_yaml}");
    run(d.cli().args(["service", "delete", "--force", "s"]));
}

#[test]
fn version_shows_client_and_daemon_and_completions_come_from_the_same_definition() {
    let d = TestDaemon::start();
    let versions = json(&d, &["version"]);
    let build = json!({
        "version": aima::VERSION,
        "commit": aima::COMMIT,
        "build_date": aima::BUILD_DATE,
    });
    assert_eq!(versions, json!({"client": build, "daemon": build}));
    assert!(
        aima::COMMIT.len() >= 12 && aima::BUILD_DATE.len() == 10,
        "{} {}",
        aima::COMMIT,
        aima::BUILD_DATE
    );
    // No daemon is no error: the client's version still prints.
    let (code, stdout, _) = run(assert_cmd::Command::new(aima_bin())
        .args(["version"])
        .env("AIMA_HOME", d.home.path())
        .env("AIMA_ADDR", "127.0.0.1:9"));
    assert_eq!(code, 0);
    assert_eq!(
        stdout,
        format!(
            "client: aima {} (commit {}, built {})\ndaemon: not reachable at 127.0.0.1:9\n",
            aima::VERSION,
            aima::COMMIT,
            aima::BUILD_DATE
        )
    );
    for (shell, marker) in [
        ("bash", "_aima()"),
        ("zsh", "#compdef aima"),
        ("fish", "complete -c aima"),
    ] {
        let (code, stdout, stderr) = run(d.cli().args(["completions", shell]));
        assert_eq!(code, 0, "{stderr}");
        assert!(stdout.contains(marker), "{shell}: {stdout}");
        assert!(stdout.contains("wait"), "{shell} lacks service wait");
    }
    let (code, _, stderr) = run(d.cli().args(["completions", "tcsh"]));
    assert_eq!(code, 2);
    assert!(
        stderr.starts_with("error: invalid value 'tcsh'"),
        "{stderr}"
    );
}

#[test]
fn a_daemon_setting_in_the_clients_environment_is_named_with_the_fix() {
    let d = TestDaemon::start();
    let used = json(&d, &["status"])["docker"]["address"]
        .as_str()
        .expect("docker address")
        .to_owned();
    let (code, stdout, stderr) = run(d
        .cli()
        .args(["model", "list", "-q"])
        .env("DOCKER_HOST", "tcp://10.9.9.9:2375")
        .env(
            "AIMA_PORT_RANGE",
            format!(" {}-{}", d.port_range.0, d.port_range.1),
        ));
    assert_eq!((code, stdout.as_str()), (0, ""));
    assert_eq!(
        stderr,
        format!(
            "warning: DOCKER_HOST=tcp://10.9.9.9:2375 here does not change the daemon, which uses {used}; set it where the daemon starts (its environment or $AIMA_HOME/config.toml) and restart it\n"
        ),
        "one line, for DOCKER_HOST only: the port range is the daemon's own"
    );
    // The daemon's own values are no news.
    let (code, _, stderr) = run(d.cli().args(["model", "list"]).env("DOCKER_HOST", &used));
    assert_eq!((code, stderr.as_str()), (0, ""));
}

#[test]
fn logs_are_kept_after_a_stop_and_take_since_and_timestamps() {
    let d = TestDaemon::with_engine();
    let m = model(&d, "m", "ollama");
    service(&d, &m, "s", &[]);
    let (code, _, stderr) = run(d.cli().args(["service", "start", "s", "--wait"]));
    assert_eq!(code, 0, "{stderr}");
    let (_, live, _) = run(d.cli().args(["service", "logs", "s", "--timestamps"]));
    let (code, _, stderr) = run(d.cli().args(["service", "stop", "s"]));
    assert_eq!(code, 0, "{stderr}");
    assert!(d.containers().is_empty());

    // Right after the stop the engine's last lines are there, its shutdown included.
    let (code, kept, stderr) = run(d.cli().args(["service", "logs", "s"]));
    assert_eq!(code, 0, "{stderr}");
    assert!(kept.contains("Uvicorn running on"), "{kept}");
    assert!(kept.contains("Shutting down"), "{kept}");
    // --timestamps: each line begins with the RFC 3339 time Docker recorded, live and kept.
    let (_, stamped, _) = run(d.cli().args(["service", "logs", "s", "--timestamps"]));
    for text in [&live, &stamped] {
        assert!(!text.is_empty());
        for line in text.lines() {
            let stamp = line.split(' ').next().unwrap_or_default();
            assert!(
                chrono::DateTime::parse_from_rfc3339(stamp).is_ok(),
                "no time at the start of {line:?}"
            );
        }
    }
    assert_eq!(stamped.lines().count(), kept.lines().count());
    // --since: a duration ago, or a time; a time to come selects nothing.
    let (_, recent, _) = run(d.cli().args(["service", "logs", "s", "--since", "1h"]));
    assert_eq!(recent, kept);
    let (_, none, _) =
        run(d
            .cli()
            .args(["service", "logs", "s", "--since", "2100-01-01T00:00:00Z"]));
    assert_eq!(none, "");
    let (code, _, stderr) = run(d.cli().args(["service", "logs", "s", "--since", "soon"]));
    assert_eq!(code, 1);
    assert_eq!(
        stderr,
        "error: since 'soon' is not valid; write an RFC 3339 time (2026-12-02T10:00:00Z), unix seconds, or a duration ago such as 10m\n"
    );
    run(d.cli().args(["service", "delete", "s"]));
}

/// The `id:` lines of a server-sent event stream that ends.
async fn sse_ids(d: &TestDaemon, path: &str, last_event_id: Option<&str>) -> (u16, Vec<i64>) {
    let mut request = reqwest::Client::new().get(d.url(path));
    if let Some(id) = last_event_id {
        request = request.header("Last-Event-ID", id);
    }
    let response = request.send().await.expect("GET events");
    let status = response.status().as_u16();
    let body = response.text().await.expect("body");
    let ids = body
        .lines()
        .filter_map(|l| l.strip_prefix("id:"))
        .map(|id| id.trim().parse().expect("a numeric event id"))
        .collect();
    (status, ids)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_stream_resumes_after_last_event_id() {
    let d = tokio::task::spawn_blocking(TestDaemon::start)
        .await
        .expect("daemon");
    tokio::task::block_in_place(|| {
        let m = model(&d, "m", "ollama");
        service(&d, &m, "a", &[]);
        service(&d, &m, "b", &[]);
    });
    for path in [
        "/api/v1/events?follow=false",
        "/api/v1/services/a/events?follow=false",
    ] {
        let (status, all) = sse_ids(&d, path, None).await;
        assert_eq!(status, 200);
        assert!(!all.is_empty(), "{path}");
        let first = all[0].to_string();
        let (status, resumed) = sse_ids(&d, path, Some(&first)).await;
        assert_eq!(status, 200);
        assert_eq!(
            resumed,
            all[1..],
            "{path}: resumes right after event {first}"
        );
        let (status, _) = sse_ids(&d, path, Some("yesterday")).await;
        assert_eq!(status, 400, "{path}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_service_leaves_its_history_and_a_deleted_event_in_the_global_stream() {
    let d = tokio::task::spawn_blocking(TestDaemon::start)
        .await
        .expect("daemon");
    let id = tokio::task::block_in_place(|| {
        let m = model(&d, "m", "ollama");
        let id = service(&d, &m, "short-lived", &[]);
        let (code, _, stderr) = run(d.cli().args(["service", "delete", "short-lived"]));
        assert_eq!(code, 0, "{stderr}");
        id
    });
    let body = reqwest::get(d.url("/api/v1/events?follow=false"))
        .await
        .expect("GET events")
        .text()
        .await
        .expect("body");
    let kinds: Vec<String> = body
        .lines()
        .filter_map(|l| l.strip_prefix("data:"))
        .filter_map(|data| serde_json::from_str::<Value>(data.trim()).ok())
        .filter(|e| e["service_id"] == id.as_str())
        .map(|e| e["type"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(
        kinds.first().map(String::as_str),
        Some("status"),
        "{kinds:?}"
    );
    assert_eq!(
        kinds.last().map(String::as_str),
        Some("deleted"),
        "{kinds:?}"
    );
    let (status, _) = get(&d, &format!("/api/v1/services/{id}")).await;
    assert_eq!(status, 404);
}

#[test]
fn models_have_created_and_deleted_events_in_the_global_stream() {
    let d = TestDaemon::start();
    let id = model(&d, "audited", "ollama");
    let (code, _, stderr) = run(d.cli().args(["model", "delete", "audited"]));
    assert_eq!(code, 0, "{stderr}");

    let (code, stdout, stderr) = run(d.cli().args(["events", "-o", "json"]));
    assert_eq!(code, 0, "{stderr}");
    let events: Vec<Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .filter(|e: &Value| e["model_id"] == id.as_str())
        .collect();
    let kinds: Vec<&str> = events.iter().filter_map(|e| e["type"].as_str()).collect();
    assert_eq!(kinds, ["created", "deleted"], "{stdout}");
    assert!(
        events.iter().all(|e| e.get("service_id").is_none()),
        "{stdout}"
    );
    assert_eq!(
        events[0]["message"],
        "registered audited from ollama tinyllama"
    );
    assert_eq!(events[1]["message"], "deleted audited");

    // The people's view names the model in each line.
    let (code, stdout, _) = run(d.cli().args(["events"]));
    assert_eq!(code, 0);
    let lines: Vec<&str> = stdout.lines().filter(|l| l.contains(&id)).collect();
    assert_eq!(lines.len(), 2, "{stdout}");
    assert!(
        lines[0].ends_with(&format!(
            "{id} created: registered audited from ollama tinyllama"
        )),
        "{stdout}"
    );
    assert!(
        lines[1].ends_with(&format!("{id} deleted: deleted audited")),
        "{stdout}"
    );
}

#[test]
fn every_duration_flag_takes_bare_seconds_as_well_as_units() {
    let d = TestDaemon::with_engine();
    let m = model(&d, "m", "ollama");
    let id = service(
        &d,
        &m,
        "timed",
        &[
            "--idle-timeout",
            "600",
            "--load-timeout",
            "90",
            "--start-timeout",
            "1200",
            "--health-interval",
            "3",
        ],
    );
    let got = json(&d, &["service", "get", &id]);
    assert_eq!(
        (
            &got["idle_timeout"],
            &got["load_timeout"],
            &got["start_timeout"],
            &got["health_interval"]
        ),
        (&json!("10m"), &json!("1m 30s"), &json!("20m"), &json!("3s")),
        "{got}"
    );
    let updated = json(&d, &["service", "update", &id, "--idle-timeout", "300"]);
    assert_eq!(updated["service"]["idle_timeout"], "5m", "{updated}");

    // `start --wait --timeout` takes units too, and `service wait --timeout` bare seconds.
    let (code, _, stderr) =
        run(d
            .cli()
            .args(["service", "start", &id, "--wait", "--timeout", "1m"]));
    assert_eq!(code, 0, "{stderr}");
    let (code, stdout, stderr) =
        run(d
            .cli()
            .args(["service", "wait", &id, "--for", "running", "--timeout", "5"]));
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.starts_with(&format!("{id} running")), "{stdout}");

    // A bad value: one line naming the flag and both forms.
    let (code, _, stderr) = run(d.cli().args([
        "service",
        "wait",
        &id,
        "--for",
        "running",
        "--timeout",
        "soon",
    ]));
    assert_eq!(code, 2);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with(
            "error: invalid value 'soon' for '--timeout <DURATION>': not a duration; give seconds (600) or a duration with a unit (10m, 30s)"
        ),
        "{stderr}"
    );
    let (code, _, stderr) = run(d.cli().args([
        "service",
        "update",
        &id,
        "--load-timeout",
        "10 minutes please",
    ]));
    assert_eq!(code, 1);
    assert_eq!(
        stderr,
        "error: load-timeout '10 minutes please' is not a duration; give seconds (600) or a duration with a unit (10m, 30s)\n"
    );
    run(d.cli().args(["service", "delete", "--force", &id]));
}
