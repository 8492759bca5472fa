//! GPU awareness without a GPU: simulated GPUs for the admission math and placement,
//! and the host's real "none" (this machine and CI have no NVIDIA driver).

use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use crate::support::{TestDaemon, ensure_stub_image, poll};

fn json(cmd: &mut assert_cmd::Command) -> (i32, Value, String) {
    let out = cmd.args(["-o", "json"]).output().expect("run aima");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    (out.status.code().expect("code"), value, stderr)
}

fn simulated(gpus: &str) -> TestDaemon {
    let gpus = aima::gpu::parse_simulated(gpus).expect("valid spec");
    TestDaemon::with_engine_and(move |s| s.simulate_gpus = Some(gpus))
}

fn model(d: &TestDaemon) -> String {
    let (_, m, _) = json(d.cli().args([
        "model",
        "create",
        "--name",
        "m",
        "--source",
        "huggingface",
        "--repo",
        "org/r",
    ]));
    m["id"].as_str().expect("id").to_owned()
}

fn service(d: &TestDaemon, model: &str, fraction: &str, env: &[&str]) -> String {
    let mut cmd = d.cli();
    cmd.args([
        "service",
        "create",
        "--model-id",
        model,
        "--engine-type",
        "vllm",
        "--gpu-memory-utilization",
        fraction,
    ]);
    for e in env {
        cmd.args(["--env", e]);
    }
    let (code, s, stderr) = json(&mut cmd);
    assert_eq!(code, 0, "{stderr}");
    s["id"].as_str().expect("id").to_owned()
}

fn start(d: &TestDaemon, id: &str) -> (i32, String) {
    let out = d
        .cli()
        .args(["service", "start", id, "--wait", "--timeout", "60"])
        .output()
        .expect("start");
    (
        out.status.code().expect("code"),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn two_services_fit_a_third_is_refused_with_numbers_and_a_stop_releases_the_claim() {
    let d = simulated("H200:100000");
    let m = model(&d);
    let ids: Vec<String> = (0..3).map(|_| service(&d, &m, "0.4", &[])).collect();
    assert_eq!(start(&d, &ids[0]).0, 0);
    assert_eq!(start(&d, &ids[1]).0, 0);
    let (code, stderr) = start(&d, &ids[2]);
    assert_eq!(code, 1);
    assert!(stderr.contains("not enough GPU memory"), "{stderr}");
    assert!(
        stderr.contains("needs 40000 MiB (39.1 GiB)")
            && stderr.contains("has 20000 MiB (19.5 GiB) left"),
        "{stderr}"
    );
    assert_eq!(
        d.containers().len(),
        2,
        "the refused start created no container"
    );

    let (_, devices, _) = json(d.cli().args(["device", "detect"]));
    assert_eq!(devices["simulated"], true);
    assert_eq!(devices["gpus"][0]["memory_claimed_mib"], 80_000);
    let placed: Vec<&str> = devices["gpus"][0]["services"]
        .as_array()
        .expect("services")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(placed, [ids[0].as_str(), ids[1].as_str()]);

    let out = d
        .cli()
        .args(["service", "stop", &ids[0]])
        .output()
        .expect("stop");
    assert!(out.status.success());
    assert_eq!(
        start(&d, &ids[2]).0,
        0,
        "the stopped service's claim was released"
    );
    let (_, devices, _) = json(d.cli().args(["device", "detect"]));
    assert_eq!(devices["gpus"][0]["memory_claimed_mib"], 80_000);
    // The engine is told its share.
    let (_, svc, _) = json(d.cli().args(["service", "get", &ids[2]]));
    let container = svc["container_id"].as_str().expect("container");
    let args = Command::new("docker")
        .args(["inspect", "-f", "{{json .Config.Cmd}}", container])
        .output()
        .expect("inspect");
    assert!(String::from_utf8_lossy(&args.stdout).contains("\"--gpu-memory-utilization\",\"0.4\""));
    let requests = Command::new("docker")
        .args([
            "inspect",
            "-f",
            "{{json .HostConfig.DeviceRequests}}",
            container,
        ])
        .output()
        .expect("inspect");
    assert_eq!(
        String::from_utf8_lossy(&requests.stdout).trim(),
        "null",
        "simulated GPUs pass no device"
    );
}

#[test]
fn starts_on_one_gpu_wait_for_the_loading_engine() {
    let d = simulated("H200:100000");
    let m = model(&d);
    let first = service(&d, &m, "0.3", &["STUB_START_DELAY_MS=1500"]);
    let second = service(&d, &m, "0.3", &[]);
    for id in [&first, &second] {
        let out = d
            .cli()
            .args(["service", "start", id])
            .output()
            .expect("start");
        assert!(out.status.success());
    }
    for id in [&first, &second] {
        poll(Duration::from_secs(20), "both to run", || {
            let (_, s, _) = json(d.cli().args(["service", "get", id]));
            (s["status"] == "running").then_some(())
        });
    }
    let events = |id: &str| -> Vec<Value> {
        let out = d
            .cli()
            .args(["service", "events", id, "-o", "json"])
            .output()
            .expect("events");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| serde_json::from_str(l).expect("event"))
            .collect()
    };
    let first_running = events(&first)
        .into_iter()
        .find(|e| e["status"] == "running")
        .expect("running event");
    let second_events = events(&second);
    assert!(
        second_events.iter().any(|e| e["message"]
            .as_str()
            .is_some_and(|m| m.contains("another engine is loading"))),
        "the second start waited: {second_events:?}"
    );
    let second_create = second_events
        .iter()
        .find(|e| e["phase"] == "create")
        .expect("create event");
    assert!(
        second_create["seq"].as_i64() > first_running["seq"].as_i64(),
        "the second engine began loading only after the first was healthy"
    );
}

#[test]
fn recommend_places_models_and_says_when_nothing_fits() {
    let d = simulated("H200:100000,L4:20000");
    let m = model(&d);
    let (code, advice, stderr) = json(d.cli().args(["service", "recommend", "--model-id", &m]));
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(advice["models"][0]["fits"], true);
    assert_eq!(
        advice["models"][0]["gpu_index"], 0,
        "the GPU with the most room"
    );
    assert_eq!(advice["models"][0]["engine"], "vllm");
    assert_eq!(advice["models"][0]["gpu_memory_utilization"], 0.9);
    assert_eq!(advice["devices"]["gpus"].as_array().expect("gpus").len(), 2);

    let big = service(&d, &m, "0.95", &[]);
    assert_eq!(start(&d, &big).0, 0);
    let (_, advice, _) = json(d.cli().args(["service", "recommend"]));
    assert_eq!(
        advice["models"][0]["gpu_index"], 1,
        "the H200 is nearly full, the L4 is not"
    );
    let reason = advice["models"][0]["reason"].as_str().expect("reason");
    assert!(reason.contains("GPU 1 (L4)"), "{reason}");
    let (code, _, stderr) =
        json(
            d.cli()
                .args(["service", "recommend", "--model-id", "model-00000000"]),
        );
    assert_eq!(code, 1);
    assert!(stderr.contains("no model with id"), "{stderr}");
}

#[test]
fn without_a_gpu_device_detect_says_none_and_recommend_suggests_the_cpu() {
    let d = TestDaemon::start();
    let out = d.cli().args(["device", "detect"]).output().expect("detect");
    let stdout = String::from_utf8_lossy(&out.stdout);
    if cfg!(feature = "gpu") {
        assert!(out.status.success() && stdout.contains("GPU"), "{stdout}");
        return;
    }
    assert!(out.status.success(), "none is not an error");
    assert!(stdout.starts_with("No NVIDIA GPU: "), "{stdout}");
    let m = model(&d);
    let (_, advice, _) = json(d.cli().args(["service", "recommend"]));
    assert_eq!(advice["models"][0]["model_id"], m.as_str());
    assert_eq!(advice["models"][0]["engine"], "llamacpp");
    assert!(
        advice["models"][0]["reason"]
            .as_str()
            .expect("reason")
            .contains("llamacpp or ollama")
    );
}

#[test]
fn a_gpu_engine_without_a_gpu_fails_clearly_unless_its_image_runs_on_cpu() {
    if cfg!(feature = "gpu") {
        return; // A GPU runner has a GPU; the refusal cannot happen there.
    }
    // The same stub, labelled as needing a GPU.
    let image = format!("aima-stub-engine:needs-gpu-{}", std::process::id());
    let mut build = Command::new("docker")
        .args(["build", "-q", "-t", &image, "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("docker build");
    std::io::Write::write_all(
        build.stdin.as_mut().expect("stdin"),
        format!("FROM {}\nLABEL ai.aima.gpu=required\n", ensure_stub_image()).as_bytes(),
    )
    .expect("dockerfile");
    drop(build.stdin.take());
    assert!(build.wait().expect("build").success());
    let needs_gpu = image.clone();
    let d = TestDaemon::with_engine_and(move |s| {
        s.engine_images.insert("vllm".into(), needs_gpu);
    });
    let m = model(&d);
    let id = service(&d, &m, "0.5", &[]);
    let (code, stderr) = start(&d, &id);
    let _ = Command::new("docker").args(["rmi", &image]).output();
    assert_eq!(code, 1);
    assert!(
        stderr.contains("engine vllm needs an NVIDIA GPU and this host has none"),
        "{stderr}"
    );
    assert!(
        stderr.contains("run llamacpp or ollama on the CPU"),
        "{stderr}"
    );
    assert!(d.containers().is_empty(), "refused before any container");
}

/// A daemon that runs the stub engine image for vLLM and llama.cpp alike.
fn with_llamacpp(gpus: Option<&str>) -> TestDaemon {
    let image = ensure_stub_image();
    let gpus = gpus.map(|g| aima::gpu::parse_simulated(g).expect("valid spec"));
    TestDaemon::with_engine_and(move |s| {
        s.engine_images.insert("llamacpp".into(), image.into());
        s.simulate_gpus = gpus;
    })
}

fn sized_model(d: &TestDaemon, name: &str, size: &str) -> String {
    let (code, m, stderr) = json(d.cli().args([
        "model",
        "create",
        "--name",
        name,
        "--source",
        "huggingface",
        "--repo",
        "org/m",
        "--size",
        size,
        "--context",
        "4096",
    ]));
    assert_eq!(code, 0, "{stderr}");
    m["id"].as_str().expect("id").to_owned()
}

fn engine_service(d: &TestDaemon, model: &str, engine: &str, extra: &[&str]) -> String {
    let (code, s, stderr) = json(
        d.cli()
            .args([
                "service",
                "create",
                "--model-id",
                model,
                "--engine-type",
                engine,
            ])
            .args(extra),
    );
    assert_eq!(code, 0, "{stderr}");
    s["id"].as_str().expect("id").to_owned()
}

fn container_cmd(d: &TestDaemon, id: &str) -> String {
    let (_, svc, _) = json(d.cli().args(["service", "get", id]));
    let container = svc["container_id"].as_str().expect("container");
    let out = Command::new("docker")
        .args(["inspect", "-f", "{{json .Config.Cmd}}", container])
        .output()
        .expect("inspect");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn events_text(d: &TestDaemon, id: &str) -> String {
    let out = d
        .cli()
        .args(["service", "events", id])
        .output()
        .expect("events");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn llamacpp_runs_on_a_gpu_when_there_is_one_and_claims_its_estimate() {
    let d = with_llamacpp(Some("L4:23034"));
    // 2 GB of weights, no known shape: the estimate is weights + llama.cpp's overhead.
    let m = sized_model(&d, "two-gb", "2GB");
    let id = engine_service(&d, &m, "llamacpp", &[]);
    assert_eq!(start(&d, &id).0, 0);
    let expected_mib = (2_000_000_000_u64 + (768 << 20)).div_ceil(1 << 20);
    let (_, devices, _) = json(d.cli().args(["device", "detect"]));
    assert_eq!(
        devices["gpus"][0]["memory_claimed_mib"], expected_mib,
        "{devices}"
    );
    let cmd = container_cmd(&d, &id);
    assert!(
        cmd.contains("\"--n-gpu-layers\",\"999\""),
        "every layer offloaded: {cmd}"
    );
    assert!(
        cmd.contains("\"--ctx-size\",\"4096\""),
        "the context its memory was planned for: {cmd}"
    );
    let events = events_text(&d, &id);
    assert!(
        events.contains(&format!("claimed {expected_mib} MiB"))
            && events.contains("its estimate: weights"),
        "{events}"
    );

    // A model whose estimate exceeds what the GPU has left is refused before any container.
    let big = sized_model(&d, "thirty-gb", "30GB");
    let refused = engine_service(&d, &big, "llamacpp", &[]);
    let (code, stderr) = start(&d, &refused);
    assert_eq!(code, 1);
    assert!(
        stderr.contains("not enough GPU memory: the model needs")
            && stderr.contains("its estimate"),
        "{stderr}"
    );
    assert_eq!(d.containers().len(), 1);
    // Through the gateway too, at once: no room can be made for an estimate that fits on
    // no GPU, so the request is not held for the load timeout (10 minutes).
    let asked = std::time::Instant::now();
    let (status, body) = tokio::runtime::Runtime::new()
        .expect("runtime")
        .block_on(async {
            let answer = crate::support::http()
                .post(d.url("/v1/chat/completions"))
                .json(&serde_json::json!({"model": "thirty-gb",
                    "messages": [{"role": "user", "content": "hi"}]}))
                .send()
                .await
                .expect("answered");
            (answer.status(), answer.text().await.unwrap_or_default())
        });
    assert_eq!(status, reqwest::StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(body.contains("not enough GPU memory"), "{body}");
    assert!(
        asked.elapsed() < std::time::Duration::from_secs(10),
        "refused after {:?}",
        asked.elapsed()
    );

    // vLLM with a share smaller than the weights starts, with a warning in its events.
    let vllm = engine_service(&d, &m, "vllm", &["--gpu-memory-utilization", "0.05"]);
    assert_eq!(start(&d, &vllm).0, 0);
    let events = events_text(&d, &vllm);
    assert!(
        events.contains("warning: a share of 0.05")
            && events.contains("smaller than the model needs")
            && events.contains("or more"),
        "{events}"
    );
    crate::support::remove_containers_with_label(&d.instance_label());
}

#[test]
fn without_a_gpu_llamacpp_runs_on_the_cpu() {
    let d = with_llamacpp(None);
    let m = sized_model(&d, "two-gb", "2GB");
    let id = engine_service(&d, &m, "llamacpp", &[]);
    assert_eq!(start(&d, &id).0, 0);
    assert!(
        !container_cmd(&d, &id).contains("--n-gpu-layers"),
        "no offload on the CPU"
    );
    let (_, devices, _) = json(d.cli().args(["device", "detect"]));
    assert_eq!(devices["gpus"], Value::Array(Vec::new()), "{devices}");
    crate::support::remove_containers_with_label(&d.instance_label());
}

/// On a host without a GPU, engines on the CPU claim their estimate against host memory
/// (a budget, and what the kernel reports available): refused early with the numbers,
/// listed in `ps`, measured once running, and made room for by the gateway's swaps.
#[test]
fn without_a_gpu_engines_are_admitted_against_host_memory() {
    let image = ensure_stub_image();
    let d = TestDaemon::with_engine_and(move |s| {
        s.engine_images.insert("llamacpp".into(), image.into());
        s.host_ram_budget = Some(4 << 30);
    });
    // 2 GB of weights, no known shape: weights + llama.cpp's overhead, 2676 MiB.
    let first = sized_model(&d, "two-gb", "2GB");
    let second = sized_model(&d, "other-two-gb", "2GB");
    let a = engine_service(&d, &first, "llamacpp", &[]);
    let b = engine_service(&d, &second, "llamacpp", &[]);
    assert_eq!(start(&d, &a).0, 0);
    let expected_mib = (2_000_000_000_u64 + (768 << 20)).div_ceil(1 << 20);
    let events = events_text(&d, &a);
    assert!(
        events.contains(&format!("claimed {expected_mib} MiB (2.6 GiB) of host RAM")),
        "{events}"
    );
    let (_, ps, _) = json(d.cli().args(["ps"]));
    assert_eq!(ps["items"][0]["host_memory_mib"], expected_mib, "{ps}");
    assert_eq!(ps["items"][0]["gpu_memory_mib"], Value::Null, "{ps}");

    let (code, stderr) = start(&d, &b);
    assert_eq!(code, 1);
    assert!(
        stderr.contains("not enough host memory: the model needs 2676 MiB")
            && stderr.contains("a budget of 4096 MiB")
            && stderr.contains("2676 MiB (2.6 GiB) claimed by services")
            && stderr.contains("AIMA_HOST_RAM_BUDGET"),
        "{stderr}"
    );
    assert_eq!(
        d.containers().len(),
        1,
        "the refused start created no container"
    );

    // What the running container holds joins the model's facts (docker stats' number).
    let measured = poll(
        Duration::from_secs(30),
        "the host memory measurement",
        || {
            let (_, model, _) = json(d.cli().args(["model", "get", &first]));
            model["facts"]["measured_ram"]["llamacpp"]["value"].as_u64()
        },
    );
    assert!(measured > 0 && measured < 1 << 30, "{measured}");

    // The gateway makes room on host memory as on a GPU: the idle service is evicted.
    let (status, body) = tokio::runtime::Runtime::new()
        .expect("runtime")
        .block_on(async {
            let answer = crate::support::http()
                .post(d.url("/v1/chat/completions"))
                .json(&serde_json::json!({"model": "other-two-gb",
                    "messages": [{"role": "user", "content": "hi"}]}))
                .send()
                .await
                .expect("answered");
            (answer.status(), answer.text().await.unwrap_or_default())
        });
    assert_eq!(status, reqwest::StatusCode::OK, "{body}");
    let (_, evicted, _) = json(d.cli().args(["service", "get", &a]));
    assert_eq!(evicted["status"], "stopped", "{evicted}");
    assert!(
        events_text(&d, &a).contains("evicted by the gateway: host RAM needed 2676 MiB"),
        "{}",
        events_text(&d, &a)
    );
    crate::support::remove_containers_with_label(&d.instance_label());
}

/// The Docker half of measuring a running engine's GPU memory: the host pids of its
/// container's processes (NVML accounts memory by host pid).
#[test]
fn a_running_containers_host_pids_are_known() {
    use aima::runtime::ContainerRuntime;
    let d = with_llamacpp(None);
    let m = sized_model(&d, "two-gb", "2GB");
    let id = engine_service(&d, &m, "vllm", &[]);
    assert_eq!(start(&d, &id).0, 0);
    // vLLM is told the context the estimate planned for, and says so in its args line.
    assert!(container_cmd(&d, &id).contains("\"--max-model-len\",\"4096\""));
    let logs = d
        .cli()
        .args(["service", "logs", &id])
        .output()
        .expect("logs");
    assert!(
        String::from_utf8_lossy(&logs.stdout).contains("max_model_len=4096"),
        "{}",
        String::from_utf8_lossy(&logs.stdout)
    );
    let (_, svc, _) = json(d.cli().args(["service", "get", &id]));
    let container = svc["container_id"].as_str().expect("container").to_owned();
    let out = Command::new("docker")
        .args(["inspect", "-f", "{{.State.Pid}}", &container])
        .output()
        .expect("inspect");
    let main: u32 = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("a pid");
    let runtime = aima::runtime::DockerRuntime::from_env();
    let pids = tokio::runtime::Runtime::new()
        .expect("runtime")
        .block_on(runtime.container_pids(&container))
        .expect("top");
    assert!(pids.contains(&main), "{main} in {pids:?}");
    crate::support::remove_containers_with_label(&d.instance_label());
}

/// The NVML half, on a GPU runner: a CUDA process holding 1 GiB is seen with at least
/// that much under its own pid (PyTorch allocates it).
#[cfg(feature = "gpu")]
#[test]
fn nvml_accounts_a_cuda_processs_memory_by_pid() {
    use aima::gpu::GpuProbe;
    use std::io::BufRead;
    let mut holder = Command::new("python3")
        .args([
            "-c",
            "import sys, torch; x = torch.empty(1 << 28, dtype=torch.float32, device='cuda'); print('ready', flush=True); sys.stdin.readline()",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3 with torch");
    let mut line = String::new();
    std::io::BufReader::new(holder.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("ready");
    assert_eq!(line.trim(), "ready");
    let probe = aima::gpu::NvmlProbe::default();
    assert!(!probe.detect().gpus.is_empty(), "a GPU runner has a GPU");
    let held = probe.process_memory();
    let pid = holder.id();
    let bytes = aima::domain::memory_of_pids(&[pid], &held);
    drop(holder.stdin.take());
    let _ = holder.wait();
    assert!(bytes >= 1 << 30, "pid {pid} holds {bytes} bytes: {held:?}");
}
