//! The first hour: a model's name is enough (`aima run`, `chat`, `stop`, `logs`,
//! `restart`), a model is placed where its size fits or on the GPU `--gpu` names, and the
//! small things a newcomer trips on (a rerun create, a port to change).

use std::process::Command;

use crate::support::{TestDaemon, remove_containers_with_label, run, run_json};

fn hf_model(d: &TestDaemon, name: &str, size: Option<&str>) {
    let mut cmd = d.cli();
    let repo = format!("org/{name}");
    cmd.args([
        "model",
        "create",
        "--name",
        name,
        "--source",
        "huggingface",
        "--repo",
        &repo,
    ]);
    if let Some(size) = size {
        cmd.args(["--size", size, "--context", "4096"]);
    }
    let (code, _, stderr) = run(&mut cmd);
    assert_eq!(code, 0, "{stderr}");
}

fn events_text(d: &TestDaemon, service: &str) -> String {
    run(d.cli().args(["service", "events", service])).1
}

/// The `--gpu-memory-utilization` the engine container was given.
fn share_given(d: &TestDaemon, service: &str) -> f64 {
    let svc = run_json(d.cli().args(["service", "get", service]));
    let container = svc["container_id"].as_str().expect("container");
    let out = Command::new("docker")
        .args(["inspect", "-f", "{{json .Config.Cmd}}", container])
        .output()
        .expect("inspect");
    let args: Vec<String> = serde_json::from_slice(&out.stdout).expect("cmd");
    let at = args
        .iter()
        .position(|a| a == "--gpu-memory-utilization")
        .expect("a share");
    args[at + 1].parse().expect("a number")
}

fn start(d: &TestDaemon, service: &str) -> (i32, String) {
    let (code, _, stderr) = run(d.cli().args(["service", "start", service, "--wait"]));
    (code, stderr)
}

#[test]
fn a_big_model_goes_to_the_gpu_where_it_fits_with_a_share_that_holds_it_and_gpu_pins() {
    // The host: an H200 with about 98 GiB free beside another service, and an L4.
    let gpus = aima::gpu::parse_simulated("H200:143771,L4:23034").expect("spec");
    let d = TestDaemon::with_engine_and(move |s| s.simulate_gpus = Some(gpus));
    hf_model(&d, "other", None);
    let (code, _, stderr) = run(d.cli().args([
        "service",
        "create",
        "--model-id",
        "other",
        "--engine-type",
        "vllm",
        "--gpu",
        "0",
        "--gpu-memory-utilization",
        "0.3",
    ]));
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(start(&d, "other-vllm").0, 0);

    hf_model(&d, "big", Some("64GiB"));
    let (code, name, stderr) = run(d.cli().args([
        "service",
        "create",
        "--model-id",
        "big",
        "--engine-type",
        "vllm",
    ]));
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(name.trim(), "big-vllm", "create prints the name");
    let (code, stderr) = start(&d, "big-vllm");
    assert_eq!(code, 0, "{stderr}");
    let events = events_text(&d, "big-vllm");
    assert!(
        events.contains("on GPU 0 (H200") && events.contains("the share that holds the model"),
        "{events}"
    );
    assert!(!events.contains("warning"), "{events}");
    let svc = run_json(d.cli().args(["service", "get", "big"]));
    let needed_mib = svc["estimate"]["total"].as_u64().expect("estimate") >> 20;
    let share = share_given(&d, "big-vllm");
    assert!(
        share * 143_771.0 >= needed_mib as f64 && share <= 0.7,
        "share {share} for {needed_mib} MiB"
    );
    assert!(
        svc["gpu_memory_utilization"].is_null(),
        "the chosen share is the start's, not a setting: {svc}"
    );
    // The placed share survives a restart of the engine's bookkeeping: the service keeps
    // running with the container it has.
    let (code, _, stderr) = run(d.cli().args(["stop", "big"]));
    assert_eq!(code, 0, "{stderr}");

    // --gpu 1 pins it to the L4, where it cannot fit even whole: a warning that names no
    // share that cannot be given.
    let (code, _, stderr) = run(d.cli().args([
        "service",
        "create",
        "--model-id",
        "big",
        "--engine-type",
        "vllm",
        "--name",
        "big-on-l4",
        "--gpu",
        "1",
    ]));
    assert_eq!(code, 0, "{stderr}");
    let (code, stderr) = start(&d, "big-on-l4");
    assert_eq!(code, 0, "{stderr}");
    let events = events_text(&d, "big-on-l4");
    assert!(events.contains("on GPU 1 (L4"), "{events}");
    assert!(
        events.contains("does not fit on GPU 1 even whole") && !events.contains(" or more"),
        "{events}"
    );
    let svc = run_json(d.cli().args(["service", "get", "big-on-l4"]));
    assert_eq!(svc["gpu"], 1);

    // A GPU the host does not have fails the start with the ones it has.
    let (code, _, stderr) = run(d
        .cli()
        .args(["service", "update", "big-on-l4", "--gpu", "7"]));
    assert_eq!(code, 0, "{stderr}");
    run(d.cli().args(["stop", "big-on-l4"]));
    let (code, stderr) = start(&d, "big-on-l4");
    assert_eq!(code, 1);
    assert!(
        stderr.contains(
            "pinned to GPU 7, which this host does not have (it has GPU 0 (H200), 1 (L4))"
        ),
        "{stderr}"
    );
    remove_containers_with_label(&d.instance_label());
}

#[test]
fn a_models_name_is_enough_for_run_chat_logs_restart_and_stop() {
    let d = TestDaemon::with_engine();
    hf_model(&d, "tiny", None);
    let answer = "Hello from the aima stub engine serving tiny.";

    let (code, stdout, stderr) = run(d.cli().args(["run", "tiny", "hello"]));
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(stdout.trim(), answer, "stdout is the answer alone");
    assert!(
        stderr.contains("created service tiny-vllm (vllm on port"),
        "{stderr}"
    );
    // Again: the service is there and running; nothing is made or started twice.
    let (code, stdout, stderr) = run(d.cli().args(["run", "tiny", "hello", "again"]));
    assert_eq!((code, stdout.trim()), (0, answer), "{stderr}");
    assert!(!stderr.contains("created"), "{stderr}");

    let (code, stdout, stderr) = run(d.cli().args(["chat", "tiny", "hi"]));
    assert_eq!((code, stdout.trim()), (0, answer), "{stderr}");
    // A prompt on stdin.
    let (code, stdout, stderr) = run(d
        .cli()
        .args(["chat", "tiny"])
        .write_stdin("hi from a pipe\n"));
    assert_eq!((code, stdout.trim()), (0, answer), "{stderr}");

    let (code, stdout, stderr) = run(d.cli().args(["logs", "tiny", "--tail", "20"]));
    assert_eq!(code, 0, "{stderr}");
    assert!(!stdout.is_empty(), "the engine's log lines");

    let (code, stdout, stderr) = run(d.cli().args(["restart", "tiny"]));
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("running on port"), "{stdout}");

    // `aima top` prints ps again and again until stopped.
    let mut top = std::process::Command::new(crate::support::aima_bin())
        .args(["top"])
        .env("AIMA_ADDR", d.addr.to_string())
        .env("AIMA_HOME", d.home.path())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("aima top");
    let mut seen = String::new();
    let mut reader = std::io::BufReader::new(top.stdout.take().expect("stdout"));
    while seen.matches("NAME").count() < 2 {
        let mut line = String::new();
        if std::io::BufRead::read_line(&mut reader, &mut line).expect("read") == 0 {
            break;
        }
        seen.push_str(&line);
    }
    top.kill().expect("kill top");
    let _ = top.wait();
    assert_eq!(seen.matches("NAME").count(), 2, "two tables: {seen}");
    assert!(
        seen.contains("tiny-vllm") && seen.contains("TOK/S"),
        "{seen}"
    );

    let (code, stdout, stderr) = run(d.cli().args(["stop", "tiny"]));
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("stopped"), "{stdout}");
    let svc = run_json(d.cli().args(["service", "status", "tiny"]));
    assert_eq!(svc["status"], "stopped");
    assert_eq!(svc["name"], "tiny-vllm");
    assert_eq!(svc["model_name"], "tiny");

    // The list shows the model's name (its id with -o wide).
    let (_, table, _) = run(d.cli().args(["service", "list"]));
    let row = table.lines().nth(1).expect("a row");
    assert!(row.contains(" tiny ") && !row.contains("model-"), "{table}");

    // A model with no service says how to give it one.
    hf_model(&d, "bare", None);
    let (code, _, stderr) = run(d.cli().args(["stop", "bare"]));
    assert_eq!(code, 1);
    assert_eq!(
        stderr,
        "error: model 'bare' has no service; create one with 'aima run bare' or 'aima service create --model-id bare --engine-type ENGINE'\n"
    );
    remove_containers_with_label(&d.instance_label());
}

#[test]
fn a_rerun_create_reuses_with_if_not_exists_or_says_so_and_a_stopped_service_changes_port() {
    let d = TestDaemon::with_engine();
    hf_model(&d, "qwen", None);
    let create = |extra: &[&str]| {
        let mut cmd = d.cli();
        cmd.args([
            "service",
            "create",
            "--model-id",
            "qwen",
            "--engine-type",
            "vllm",
        ])
        .args(extra);
        run(&mut cmd)
    };
    let (code, first, stderr) = create(&[]);
    assert_eq!((code, first.trim()), (0, "qwen-vllm"), "{stderr}");
    assert!(!stderr.contains("note:"), "{stderr}");
    let (code, again, stderr) = create(&["--if-not-exists"]);
    assert_eq!((code, again.trim()), (0, "qwen-vllm"), "{stderr}");
    let list = run_json(d.cli().args(["service", "list"]));
    assert_eq!(list["items"].as_array().expect("items").len(), 1);
    // Without it a second one is made, as scripts of several services expect, and said.
    let (code, second, stderr) = create(&[]);
    assert_eq!((code, second.trim()), (0, "qwen-vllm-2"), "{stderr}");
    assert!(
        stderr.contains("note: qwen-vllm-2 is another vllm service of its model beside qwen-vllm; pass --if-not-exists"),
        "{stderr}"
    );
    // A name that another model's service holds is not "like it".
    hf_model(&d, "other", None);
    let (code, _, stderr) = run(d.cli().args([
        "service",
        "create",
        "--model-id",
        "other",
        "--engine-type",
        "vllm",
        "--name",
        "qwen-vllm",
        "--if-not-exists",
    ]));
    assert_eq!(code, 1);
    assert!(
        stderr.contains("serves another model or engine"),
        "{stderr}"
    );

    // A port changes while the engine does not run.
    let svc = run_json(d.cli().args(["service", "get", "qwen-vllm-2"]));
    let port = svc["port"].as_u64().expect("port") as u16;
    let free = (d.port_range.0..=d.port_range.1)
        .rev()
        .find(|p| *p != port && std::net::TcpListener::bind(("0.0.0.0", *p)).is_ok())
        .expect("a free port");
    let (code, _, stderr) = run(d.cli().args([
        "service",
        "update",
        "qwen-vllm-2",
        "--port",
        &free.to_string(),
    ]));
    assert_eq!(code, 0, "{stderr}");
    let svc = run_json(d.cli().args(["service", "get", "qwen-vllm-2"]));
    assert_eq!(svc["port"], u64::from(free));
    assert_eq!(start(&d, "qwen-vllm-2").0, 0);
    let (code, _, stderr) = run(d.cli().args([
        "service",
        "update",
        "qwen-vllm-2",
        "--port",
        &port.to_string(),
    ]));
    assert_eq!(code, 1);
    assert!(
        stderr.contains("is running: its engine holds port")
            && stderr.contains("'aima stop qwen-vllm-2'"),
        "{stderr}"
    );
    // The port another service holds is refused.
    let held = run_json(d.cli().args(["service", "get", "qwen-vllm"]))["port"]
        .as_u64()
        .expect("port")
        .to_string();
    run(d.cli().args(["stop", "qwen-vllm-2"]));
    let (code, _, stderr) =
        run(d
            .cli()
            .args(["service", "update", "qwen-vllm-2", "--port", &held]));
    assert_eq!(code, 1);
    assert!(
        stderr.contains(&format!("port {held} is held by another service")),
        "{stderr}"
    );
    remove_containers_with_label(&d.instance_label());
}
