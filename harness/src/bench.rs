//! `harness bench`: what AIMA costs on top of the floor it sits on (raw Docker with the
//! same image and ports), measured side by side in one run against the real engine and
//! the stub image. It reports; it does not gate `cargo test`.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use serde_json::{Value, json};

use crate::scenarios::world::DaemonProcess;

/// What to run and where to write it.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    pub quick: bool,
    pub aima: PathBuf,
    pub stub_binary: PathBuf,
    pub image: String,
    /// Only the real-engine rows.
    pub real_engines_only: bool,
}

/// Every key of the issue, with the raw numbers behind the ratios.
pub type BenchResults = BTreeMap<String, Value>;

/// A daemon of the bench with its own home, port range and instance label.
pub(crate) struct Daemon {
    process: DaemonProcess,
    home: tempfile::TempDir,
    aima: PathBuf,
    pub(crate) instance: String,
}

impl Daemon {
    pub(crate) fn start(
        options: &BenchOptions,
        ports: (u16, u16),
        extra: &[(&str, &str)],
    ) -> anyhow::Result<Self> {
        let home = tempfile::Builder::new().prefix("aima-bench-").tempdir()?;
        Self::start_on(options, home, ports, extra)
    }

    fn start_on(
        options: &BenchOptions,
        home: tempfile::TempDir,
        ports: (u16, u16),
        extra: &[(&str, &str)],
    ) -> anyhow::Result<Self> {
        let mut env = vec![
            (
                "AIMA_PORT_RANGE".to_owned(),
                format!("{}-{}", ports.0, ports.1),
            ),
            ("AIMA_ENGINE_IMAGE_VLLM".to_owned(), options.image.clone()),
            ("RUST_LOG".to_owned(), "info".to_owned()),
        ];
        env.extend(
            extra
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
        );
        let process = DaemonProcess::spawn(&options.aima, home.path(), &env)?;
        let mut daemon = Self {
            process,
            home,
            aima: options.aima.clone(),
            instance: String::new(),
        };
        wait_until(Duration::from_secs(30), || {
            daemon.process.logged("ready") || daemon.process.logged("ready without")
        })
        .context("the daemon never became ready")?;
        daemon.instance = daemon.cli_json(&["status"])?["instance"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        Ok(daemon)
    }

    /// SIGTERM, wait for the exit, and hand back the home; the engine containers stay.
    fn stop_keeping_containers(mut self) -> anyhow::Result<tempfile::TempDir> {
        let pid = nix::unistd::Pid::from_raw(self.process.child.id() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM)?;
        self.process.child.wait()?;
        self.instance.clear();
        let placeholder = tempfile::tempdir()?;
        Ok(std::mem::replace(&mut self.home, placeholder))
    }

    fn cli(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(&self.aima);
        cmd.args(args)
            .env("AIMA_ADDR", self.process.addr.to_string())
            .env("AIMA_HOME", self.home.path())
            .stdin(Stdio::null());
        cmd
    }

    /// Runs the CLI, returns (success, wall time, stderr).
    pub(crate) fn timed(&self, args: &[&str]) -> anyhow::Result<(bool, Duration, String)> {
        let started = Instant::now();
        let out = self.cli(args).output()?;
        Ok((
            out.status.success(),
            started.elapsed(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        ))
    }

    pub(crate) fn cli_json(&self, args: &[&str]) -> anyhow::Result<Value> {
        let out = self.cli(args).args(["-o", "json"]).output()?;
        ensure!(
            out.status.success(),
            "aima {args:?}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
        Ok(serde_json::from_slice(&out.stdout)?)
    }

    /// Registers a model and returns its id.
    fn create_model(&self) -> anyhow::Result<String> {
        let model = self.cli_json(&[
            "model",
            "create",
            "--name",
            "bench",
            "--source",
            "ollama",
            "--repo",
            "tinyllama",
        ])?;
        Ok(model["id"].as_str().unwrap_or_default().to_owned())
    }

    /// Creates a vLLM service for `model` and returns its id.
    fn create_service(&self, model: &str) -> anyhow::Result<String> {
        let service = self.cli_json(&[
            "service",
            "create",
            "--model-id",
            model,
            "--engine-type",
            "vllm",
        ])?;
        Ok(service["id"].as_str().unwrap_or_default().to_owned())
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.process.addr)
    }

    fn rss_mib(&self) -> f64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.process.child.id()))
            .unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
            .map_or(0.0, |kib| kib / 1024.0)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.process.kill();
        if !self.instance.is_empty() {
            crate::ledger::remove_labelled(&format!("aima.instance={}", self.instance));
        }
    }
}

pub(crate) fn wait_until(
    deadline: Duration,
    mut check: impl FnMut() -> bool,
) -> anyhow::Result<()> {
    let until = Instant::now() + deadline;
    while !check() {
        ensure!(Instant::now() < until, "timed out after {deadline:?}");
        std::thread::sleep(Duration::from_millis(2));
    }
    Ok(())
}

pub(crate) fn port_free(port: u16) -> bool {
    TcpListener::bind((Ipv4Addr::UNSPECIFIED, port)).is_ok()
}

pub(crate) fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n == 0 {
        return f64::NAN;
    }
    if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}

pub(crate) fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

pub(crate) fn round(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}

/// Runs every measurement and returns the results keyed as the issue names them.
pub async fn run(options: BenchOptions) -> anyhow::Result<BenchResults> {
    let swept = crate::ledger::sweep_interrupted();
    if !swept.is_empty() {
        println!("removed what interrupted harness runs left: {swept}");
    }
    let mut results = BenchResults::new();
    let cycles = if options.quick { 10 } else { 20 };
    // Below the kernel's ephemeral ports, which outgoing connections borrow for a moment.
    let base = 10_000 + (std::process::id() % 10) as u16 * 100;
    if options.real_engines_only {
        crate::bench_real::run(&options, base + 2600, &mut results).await?;
        crate::ledger::close();
        return Ok(results);
    }

    // -- start and stop, AIMA against raw docker, interleaved
    let daemon = tokio::task::block_in_place(|| Daemon::start(&options, (base, base + 49), &[]))?;
    let model = daemon.create_model()?;
    let service = daemon.cli_json(&[
        "service",
        "create",
        "--model-id",
        &model,
        "--engine-type",
        "vllm",
    ])?;
    let id = service["id"].as_str().unwrap_or_default().to_owned();
    let raw_port = base + 60;
    let raw_label = crate::ledger::run_label();
    let http = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(2))
        .build()?;
    let (mut aima_start, mut aima_stop, mut raw_start, mut raw_stop) =
        (vec![], vec![], vec![], vec![]);
    for _ in 0..cycles {
        let (ok, took, err) =
            tokio::task::block_in_place(|| daemon.timed(&["service", "start", &id, "--wait"]))?;
        ensure!(ok, "aima start failed: {err}");
        aima_start.push(ms(took));
        let (ok, took, err) =
            tokio::task::block_in_place(|| daemon.timed(&["service", "stop", &id]))?;
        ensure!(ok, "aima stop failed: {err}");
        aima_stop.push(ms(took));

        let started = Instant::now();
        let out = Command::new("docker")
            .args([
                "run",
                "-d",
                "--name",
                &format!("bench-raw-{}", std::process::id()),
                "--label",
                &raw_label,
                "-p",
            ])
            .arg(format!("{raw_port}:8000"))
            .arg(&options.image)
            .output()?;
        ensure!(
            out.status.success(),
            "docker run: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let url = format!("http://127.0.0.1:{raw_port}/health");
        loop {
            if http
                .get(&url)
                .send()
                .await
                .is_ok_and(|r| r.status().is_success())
            {
                break;
            }
            ensure!(
                started.elapsed() < Duration::from_secs(30),
                "raw container never answered"
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        raw_start.push(ms(started.elapsed()));
        let started = Instant::now();
        let out = Command::new("docker")
            .args(["rm", "-f", &format!("bench-raw-{}", std::process::id())])
            .output()?;
        ensure!(
            out.status.success(),
            "docker rm -f: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        tokio::task::block_in_place(|| {
            wait_until(Duration::from_secs(10), || port_free(raw_port))
        })?;
        raw_stop.push(ms(started.elapsed()));
    }
    let (start_aima, start_raw) = (median(&mut aima_start), median(&mut raw_start));
    let (stop_aima, stop_raw) = (median(&mut aima_stop), median(&mut raw_stop));
    results.insert("start_aima_ms".into(), json!(round(start_aima)));
    results.insert("start_raw_ms".into(), json!(round(start_raw)));
    results.insert("start_ratio".into(), json!(round(start_aima / start_raw)));
    results.insert("stop_aima_ms".into(), json!(round(stop_aima)));
    results.insert("stop_raw_ms".into(), json!(round(stop_raw)));
    results.insert("stop_ratio".into(), json!(round(stop_aima / stop_raw)));
    results.insert("cycles".into(), json!(cycles));

    // -- port conflict: a real process holds the service's port
    let port = service["port"].as_u64().unwrap_or_default() as u16;
    let mut blocker = Command::new(&options.stub_binary)
        .args(["--port", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    tokio::task::block_in_place(|| wait_until(Duration::from_secs(10), || !port_free(port)))?;
    let mut conflict = Vec::new();
    for _ in 0..5 {
        let (ok, took, err) =
            tokio::task::block_in_place(|| daemon.timed(&["service", "start", &id, "--wait"]))?;
        ensure!(
            !ok && err.contains("already in use"),
            "expected a port conflict, got: {err}"
        );
        conflict.push(ms(took));
    }
    let _ = blocker.kill();
    let _ = blocker.wait();
    results.insert("conflict_ms".into(), json!(round(median(&mut conflict))));

    // -- concurrent starts: 10 services at once against one
    let ten: Vec<String> = (0..10)
        .map(|_| daemon.create_service(&model))
        .collect::<anyhow::Result<_>>()?;
    let started = Instant::now();
    let children: Vec<_> = ten
        .iter()
        .map(|svc| {
            daemon
                .cli(&["service", "start", svc, "--wait"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
        })
        .collect::<Result<_, _>>()?;
    for mut child in children {
        ensure!(
            tokio::task::block_in_place(|| child.wait())?.success(),
            "a concurrent start failed"
        );
    }
    let concurrent = ms(started.elapsed());
    let list = daemon.cli_json(&["service", "list"])?;
    let ports: std::collections::BTreeSet<u64> = list["items"]
        .as_array()
        .map(|items| {
            items
                .iter()
                .filter(|s| s["status"] == "running")
                .filter_map(|s| s["port"].as_u64())
                .collect()
        })
        .unwrap_or_default();
    ensure!(
        ports.len() == 10,
        "expected 10 running services on unique ports, found {}",
        ports.len()
    );
    results.insert("concurrent10_ms".into(), json!(round(concurrent)));
    results.insert(
        "concurrent10_ratio".into(),
        json!(round(concurrent / start_aima)),
    );
    // The floor: ten raw `docker run -d -p` at once, each polled until it answers.
    let started = Instant::now();
    let raw_children: Vec<_> = (0..10u16)
        .map(|i| {
            Command::new("docker")
                .args(["run", "-d", "--label", &raw_label, "-p"])
                .arg(format!("{}:8000", raw_port + 1 + i))
                .arg(&options.image)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
        })
        .collect::<Result<_, _>>()?;
    for mut child in raw_children {
        ensure!(
            tokio::task::block_in_place(|| child.wait())?.success(),
            "a raw docker run failed"
        );
    }
    for i in 0..10u16 {
        let url = format!("http://127.0.0.1:{}/health", raw_port + 1 + i);
        while !http
            .get(&url)
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            ensure!(
                started.elapsed() < Duration::from_secs(60),
                "raw containers never answered"
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    let concurrent_raw = ms(started.elapsed());
    results.insert("concurrent10_raw_ms".into(), json!(round(concurrent_raw)));
    results.insert(
        "concurrent10_vs_raw".into(),
        json!(round(concurrent / concurrent_raw)),
    );
    crate::ledger::remove_labelled(&format!("aima.instance={}", daemon.instance));
    crate::ledger::remove_labelled(&raw_label);
    drop(daemon);

    // -- Docker unreachable
    let unreachable = tokio::task::block_in_place(|| {
        Daemon::start(
            &options,
            (base + 80, base + 89),
            &[("DOCKER_HOST", "tcp://127.0.0.1:9")],
        )
    })?;
    let model = unreachable.create_model()?;
    let svc = unreachable.create_service(&model)?;
    let mut times = Vec::new();
    for _ in 0..5 {
        let (ok, took, err) = tokio::task::block_in_place(|| {
            unreachable.timed(&["service", "start", &svc, "--wait"])
        })?;
        ensure!(
            !ok && err.contains("unreachable"),
            "expected docker unreachable, got: {err}"
        );
        times.push(ms(took));
    }
    results.insert(
        "docker_unreachable_ms".into(),
        json!(round(median(&mut times))),
    );
    drop(unreachable);

    // -- memory and the API under load with 1000 services
    let api =
        tokio::task::block_in_place(|| Daemon::start(&options, (base + 1100, base + 2200), &[]))?;
    results.insert("rss_idle_mib".into(), json!(round(api.rss_mib())));
    let model = api.create_model()?;
    let (http_ref, api_ref, model_ref) = (&http, &api, &model);
    let create = |n: usize| async move {
        let (http, api, model) = (http_ref, api_ref, model_ref);
        for _ in 0..n {
            let res = http
                .post(api.url("/api/v1/services"))
                .json(&json!({"model_id": model, "engine_type": "vllm"}))
                .send()
                .await?;
            ensure!(res.status() == 201, "create answered {}", res.status());
        }
        anyhow::Ok(())
    };
    create(100).await?;
    results.insert("rss_100_mib".into(), json!(round(api.rss_mib())));
    create(900).await?;
    let duration = Duration::from_secs(if options.quick { 3 } else { 10 });
    let (aima_rps, aima_p50, aima_p99) = load(&api.url("/api/v1/services"), duration).await?;
    let empty = empty_server().await?;
    let (empty_rps, empty_p50, empty_p99) =
        load(&format!("http://{empty}/api/v1/services"), duration).await?;
    results.insert("api_rps".into(), json!(round(aima_rps)));
    results.insert("api_p50_ms".into(), json!(round(aima_p50)));
    results.insert("api_p99_ms".into(), json!(round(aima_p99)));
    results.insert("api_empty_rps".into(), json!(round(empty_rps)));
    results.insert("api_empty_p50_ms".into(), json!(round(empty_p50)));
    results.insert("api_empty_p99_ms".into(), json!(round(empty_p99)));
    results.insert("api_ratio".into(), json!(round(aima_rps / empty_rps)));
    let mut list_times = Vec::new();
    for _ in 0..5 {
        let (ok, took, err) = tokio::task::block_in_place(|| api.timed(&["service", "list"]))?;
        ensure!(ok, "service list failed: {err}");
        list_times.push(ms(took));
    }
    results.insert("cli_list_ms".into(), json!(round(median(&mut list_times))));
    drop(api);

    // -- reconcile 50 running services at start
    let ports = (base + 2300, base + 2360);
    let daemon = tokio::task::block_in_place(|| Daemon::start(&options, ports, &[]))?;
    let model = daemon.create_model()?;
    for _ in 0..50 {
        let svc = daemon.create_service(&model)?;
        let (ok, _, err) =
            tokio::task::block_in_place(|| daemon.timed(&["service", "start", &svc]))?;
        ensure!(ok, "start: {err}");
    }
    tokio::task::block_in_place(|| {
        wait_until(Duration::from_secs(120), || {
            daemon.cli_json(&["service", "list"]).is_ok_and(|l| {
                l["items"]
                    .as_array()
                    .is_some_and(|i| i.iter().filter(|s| s["status"] == "running").count() == 50)
            })
        })
    })
    .with_context(|| {
        let list = daemon.cli_json(&["service", "list"]).unwrap_or_default();
        let not_running: Vec<String> = list["items"]
            .as_array()
            .map(|items| {
                items
                    .iter()
                    .filter(|s| s["status"] != "running")
                    .map(|s| format!("{} {} {}", s["id"], s["status"], s["status_reason"]))
                    .collect()
            })
            .unwrap_or_default();
        format!("50 services did not all run: {not_running:?}")
    })?;
    let instance = daemon.instance.clone();
    let home = tokio::task::block_in_place(|| daemon.stop_keeping_containers())?;
    let started = Instant::now();
    let restarted = tokio::task::block_in_place(|| Daemon::start_on(&options, home, ports, &[]))?;
    let reconcile50 = ms(started.elapsed());
    let adopted = restarted
        .process
        .stderr
        .lock()
        .map(|l| l.iter().any(|l| l.contains("adopted: 50")))
        .unwrap_or(false);
    ensure!(adopted, "the restart did not adopt all 50 services");
    results.insert("reconcile50_ms".into(), json!(round(reconcile50)));
    drop(restarted);
    crate::ledger::remove_labelled(&format!("aima.instance={instance}"));

    gateway(&options, base + 2400, &mut results).await?;
    crate::bench_real::run(&options, base + 2600, &mut results).await?;
    crate::ledger::close();
    Ok(results)
}

/// The p-th quantile of sorted milliseconds.
fn quantile(sorted: &[f64], q: f64) -> f64 {
    sorted[((sorted.len() as f64 * q) as usize).min(sorted.len() - 1)]
}

/// One chat request to `url`, read to its end: its wall time.
async fn chat_once(http: &reqwest::Client, url: &str, body: &Value) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let res = http.post(url).json(body).send().await?;
    ensure!(res.status().is_success(), "{url} answered {}", res.status());
    res.bytes().await?;
    Ok(started.elapsed())
}

/// The gateway against the same stub engine called directly: added latency for
/// sequential requests and for 64 concurrent streams, a cold start through the gateway
/// against `service start --wait`, and a swap between two models that cannot share the GPU.
async fn gateway(
    options: &BenchOptions,
    base: u16,
    results: &mut BenchResults,
) -> anyhow::Result<()> {
    let sequential = if options.quick { 400 } else { 2000 };
    let cold_cycles = if options.quick { 5 } else { 10 };
    let http = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(60))
        .build()?;

    let daemon = tokio::task::block_in_place(|| Daemon::start(options, (base, base + 9), &[]))?;
    let model = daemon.create_model()?;
    let service = daemon.cli_json(&[
        "service",
        "create",
        "--model-id",
        &model,
        "--engine-type",
        "vllm",
        "--name",
        "gw",
    ])?;
    let id = service["id"].as_str().unwrap_or_default().to_owned();
    let port = service["port"].as_u64().unwrap_or_default();
    let gateway_url = daemon.url("/v1/chat/completions");
    let direct_url = format!("http://127.0.0.1:{port}/v1/chat/completions");
    let ask = json!({"model": "gw", "messages": [{"role": "user", "content": "hello"}]});

    // Cold start: the first gateway request against `service start --wait`, interleaved.
    let (mut cli_start, mut cold) = (Vec::new(), Vec::new());
    for _ in 0..cold_cycles {
        let (ok, took, err) =
            tokio::task::block_in_place(|| daemon.timed(&["service", "start", &id, "--wait"]))?;
        ensure!(ok, "start: {err}");
        cli_start.push(ms(took));
        let (ok, _, err) = tokio::task::block_in_place(|| daemon.timed(&["service", "stop", &id]))?;
        ensure!(ok, "stop: {err}");
        cold.push(ms(chat_once(&http, &gateway_url, &ask).await?));
        let (ok, _, err) = tokio::task::block_in_place(|| daemon.timed(&["service", "stop", &id]))?;
        ensure!(ok, "stop: {err}");
    }
    let (cli_start, cold) = (median(&mut cli_start), median(&mut cold));
    results.insert("gateway_cold_start_ms".into(), json!(round(cold)));
    results.insert("gateway_cold_start_cli_ms".into(), json!(round(cli_start)));
    results.insert(
        "gateway_cold_start_added_ms".into(),
        json!(round(cold - cli_start)),
    );

    // Warm: sequential requests, direct and through the gateway, interleaved.
    chat_once(&http, &gateway_url, &ask).await?;
    let (mut direct, mut through) = (Vec::new(), Vec::new());
    for _ in 0..20 {
        chat_once(&http, &direct_url, &ask).await?;
        chat_once(&http, &gateway_url, &ask).await?;
    }
    for _ in 0..sequential {
        direct.push(ms(chat_once(&http, &direct_url, &ask).await?));
        through.push(ms(chat_once(&http, &gateway_url, &ask).await?));
    }
    direct.sort_by(f64::total_cmp);
    through.sort_by(f64::total_cmp);
    results.insert(
        "gateway_direct_p50_ms".into(),
        json!(round(quantile(&direct, 0.5))),
    );
    results.insert(
        "gateway_direct_p99_ms".into(),
        json!(round(quantile(&direct, 0.99))),
    );
    results.insert(
        "gateway_added_p50_ms".into(),
        json!(round(quantile(&through, 0.5) - quantile(&direct, 0.5))),
    );
    results.insert(
        "gateway_added_p99_ms".into(),
        json!(round(quantile(&through, 0.99) - quantile(&direct, 0.99))),
    );

    // 64 concurrent streams of 32 tokens, rounds direct and through the gateway
    // interleaved, so both see the same machine: once paced at 10 ms a token (100 tokens
    // a second, an engine decoding), once as fast as the stub can write (all cores busy).
    let paced = daemon.cli_json(&[
        "service",
        "create",
        "--model-id",
        &model,
        "--engine-type",
        "vllm",
        "--name",
        "paced",
        "--env",
        "STUB_TOKEN_DELAY_MS=10",
    ])?;
    let paced_id = paced["id"].as_str().unwrap_or_default().to_owned();
    let (ok, _, err) =
        tokio::task::block_in_place(|| daemon.timed(&["service", "start", &paced_id, "--wait"]))?;
    ensure!(ok, "start: {err}");
    let paced_url = format!(
        "http://127.0.0.1:{}/v1/chat/completions",
        paced["port"].as_u64().unwrap_or_default()
    );
    let rounds = if options.quick { 10 } else { 30 };
    for (key, model, direct) in [("", "paced", &paced_url), ("_unpaced", "gw", &direct_url)] {
        let stream = json!({"model": model, "stream": true, "max_tokens": 32, "ignore_eos": true,
                            "messages": [{"role": "user", "content": "go on"}]});
        let (mut direct64, mut through64) = (Vec::new(), Vec::new());
        for _ in 0..rounds {
            for (url, all) in [(direct, &mut direct64), (&gateway_url, &mut through64)] {
                let round = (0..64).map(|_| chat_once(&http, url, &stream));
                for took in futures::future::join_all(round).await {
                    all.push(ms(took?));
                }
            }
        }
        direct64.sort_by(f64::total_cmp);
        through64.sort_by(f64::total_cmp);
        for (q, name) in [(0.5, "p50"), (0.99, "p99")] {
            results.insert(
                format!("gateway_stream64{key}_direct_{name}_ms"),
                json!(round(quantile(&direct64, q))),
            );
            results.insert(
                format!("gateway_stream64{key}_added_{name}_ms"),
                json!(round(quantile(&through64, q) - quantile(&direct64, q))),
            );
        }
    }
    let instance = daemon.instance.clone();
    drop(daemon);
    crate::ledger::remove_labelled(&format!("aima.instance={instance}"));

    // Swap: two models at 60% of one simulated GPU each, requests alternating.
    let daemon = tokio::task::block_in_place(|| {
        Daemon::start(
            options,
            (base + 10, base + 19),
            &[("AIMA_SIMULATE_GPUS", "H100:81920")],
        )
    })?;
    for name in ["left", "right"] {
        daemon.cli_json(&[
            "model", "create", "--name", name, "--source", "ollama", "--repo", name,
        ])?;
        daemon.cli_json(&[
            "service",
            "create",
            "--model-id",
            name,
            "--engine-type",
            "vllm",
            "--gpu-memory-utilization",
            "0.6",
        ])?;
    }
    let (mut failed, mut swaps) = (0, Vec::new());
    for n in 0..200 {
        let name = if n % 2 == 0 { "left" } else { "right" };
        let body = json!({"model": name, "messages": [{"role": "user", "content": "swap"}]});
        match chat_once(&http, &gateway_url_of(&daemon), &body).await {
            Ok(took) => swaps.push(ms(took)),
            Err(e) => {
                failed += 1;
                eprintln!("swap request {n} failed: {e:#}");
            }
        }
    }
    results.insert("gateway_swap_requests".into(), json!(200));
    results.insert("gateway_swap_failed".into(), json!(failed));
    results.insert(
        "gateway_swap_median_ms".into(),
        json!(round(median(&mut swaps))),
    );
    let instance = daemon.instance.clone();
    drop(daemon);
    crate::ledger::remove_labelled(&format!("aima.instance={instance}"));
    Ok(())
}

fn gateway_url_of(daemon: &Daemon) -> String {
    daemon.url("/v1/chat/completions")
}

/// Keep-alive load from `CONNECTIONS` concurrent clients for `duration`: (rps, p50 ms, p99 ms).
async fn load(url: &str, duration: Duration) -> anyhow::Result<(f64, f64, f64)> {
    const CONNECTIONS: usize = 8;
    let client = reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(CONNECTIONS)
        .build()?;
    // Warm up connections and caches.
    for _ in 0..20 {
        client.get(url).send().await?.bytes().await?;
    }
    let until = Instant::now() + duration;
    let url: Arc<str> = Arc::from(url);
    let workers: Vec<_> = (0..CONNECTIONS)
        .map(|_| {
            let (client, url) = (client.clone(), Arc::clone(&url));
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                while Instant::now() < until {
                    let started = Instant::now();
                    let res = client.get(&*url).send().await?;
                    if !res.status().is_success() {
                        bail!("GET answered {}", res.status());
                    }
                    res.bytes().await?;
                    latencies.push(ms(started.elapsed()));
                }
                anyhow::Ok(latencies)
            })
        })
        .collect();
    let mut all = Vec::new();
    for worker in workers {
        all.extend(worker.await??);
    }
    all.sort_by(f64::total_cmp);
    let pick = |q: f64| all[((all.len() as f64 * q) as usize).min(all.len() - 1)];
    Ok((
        all.len() as f64 / duration.as_secs_f64(),
        pick(0.5),
        pick(0.99),
    ))
}

/// The floor for the API: an axum handler that does nothing, served the same way.
async fn empty_server() -> anyhow::Result<std::net::SocketAddr> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let app = axum::Router::new().route("/api/v1/services", axum::routing::get(|| async { "" }));
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(addr)
}

/// The results as a table for the terminal.
pub fn table(results: &BenchResults) -> String {
    let targets: BTreeMap<&str, &str> = BTreeMap::from([
        ("start_ratio", "≤ 1.15"),
        ("stop_ratio", "≤ 1.15"),
        ("conflict_ms", "< 100"),
        ("docker_unreachable_ms", "< 200"),
        ("api_p99_ms", "< 10"),
        ("gateway_added_p50_ms", "≤ 0.3"),
        ("gateway_added_p99_ms", "≤ 1"),
        ("gateway_stream64_added_p99_ms", "≤ 1"),
        ("gateway_cold_start_added_ms", "≤ 50"),
        ("gateway_swap_failed", "0 of 200"),
        ("real_llamacpp_start_ratio", "≤ 1.05"),
        ("real_llamacpp_stop_ratio", "≤ 1.05"),
        ("real_llamacpp_tokens_per_s_ratio", "≥ 0.98"),
        ("real_vllm_start_ratio", "≤ 1.05"),
        ("real_vllm_stop_ratio", "≤ 1.05"),
        ("real_vllm_tokens_per_s_ratio", "≥ 0.98"),
    ]);
    let mut out = String::from("KEY                               VALUE      TARGET\n");
    for (key, value) in results {
        out.push_str(&format!(
            "{key:<33} {:<10} {}\n",
            value.to_string(),
            targets.get(key.as_str()).unwrap_or(&"")
        ));
    }
    out
}

/// Writes the JSON results.
pub fn write_json(results: &BenchResults, path: &Path) -> anyhow::Result<()> {
    std::fs::write(path, serde_json::to_string_pretty(results)?)
        .with_context(|| format!("cannot write {}", path.display()))
}
