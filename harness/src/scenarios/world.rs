//! One scenario's world: its own AIMA home, API address, service port range and daemon
//! process, the real `aima` binary for CLI steps and an HTTP client for API steps. Every
//! process, blocker and container it made is cleaned up on drop, even after a failed step.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex, OnceLock, mpsc};
use std::time::{Duration, Instant};

use serde_json::Value;

/// What every world of a run shares: which binaries and image to use.
#[derive(Debug, Clone)]
pub struct RunConfig {
    pub aima: PathBuf,
    pub stub_binary: PathBuf,
    pub engine_image: String,
    /// Where the scenarios' service ports come from (`--port-range`), if not the default.
    pub ports: Option<(u16, u16)>,
    /// Keep the home, daemon log and containers of a failing scenario.
    pub keep_on_failure: bool,
}

static CONFIG: OnceLock<RunConfig> = OnceLock::new();

/// Set once by the runner before any scenario starts.
pub fn configure(config: RunConfig) {
    let _ = CONFIG.set(config);
}

fn config() -> &'static RunConfig {
    CONFIG
        .get()
        .expect("the runner configures the world before scenarios run")
}

/// A private slice of 10 host ports for one world, and the lock that keeps it private.
/// With `--port-range`, slices are handed out round-robin within it (QA keeps concurrent
/// runs apart). By default each slice of 24000-31999 (below the kernel's ephemeral ports,
/// which outgoing connections borrow) is claimed with a lock file, so harness processes
/// running side by side (tests run in parallel) never share one.
fn port_range() -> ((u16, u16), Option<nix::fcntl::Flock<std::fs::File>>) {
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let next = NEXT.fetch_add(1, Ordering::Relaxed);
    if let Some((first, last)) = CONFIG.get().and_then(|c| c.ports) {
        let slots = (last - first + 1) / 10;
        let start = first + (next % slots.max(1)) * 10;
        return ((start, start + 9), None);
    }
    const FIRST: u16 = 24_000;
    const SLOTS: u16 = 800;
    // A fixed place every harness process sees, whatever its TMPDIR.
    let dir = Path::new("/tmp/aima-harness-ports");
    let _ = std::fs::create_dir_all(dir);
    let spread = (std::process::id() % u32::from(SLOTS)) as u16;
    for offset in 0..SLOTS {
        let slot = (spread + next.wrapping_mul(7) + offset) % SLOTS;
        let first = FIRST + slot * 10;
        let Ok(file) = std::fs::File::create(dir.join(first.to_string())) else {
            break;
        };
        if let Ok(lock) = nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock)
        {
            return ((first, first + 9), Some(lock));
        }
    }
    // No lock directory, or every slice taken: share one rather than fail.
    let first = FIRST + ((spread + next) % SLOTS) * 10;
    ((first, first + 9), None)
}

/// Output of one `aima` invocation.
#[derive(Debug, Clone)]
pub struct CliRun {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
}

/// A service the scenario created, by the name the feature gives it.
#[derive(Debug, Clone)]
pub struct ServiceRef {
    pub id: String,
    pub port: u16,
}

/// One start/stop cycle of scenario 06.
#[derive(Debug, Clone)]
pub struct Cycle {
    pub start: CliRun,
    pub status_after_start: String,
    pub container: Option<String>,
    pub port: u16,
    pub stop: CliRun,
    pub status_after_stop: String,
    pub container_alive_after_stop: bool,
}

/// `aima start` as a child process; its stderr lines are collected for log checks.
#[derive(Debug)]
pub struct DaemonProcess {
    pub child: Child,
    pub addr: SocketAddr,
    pub stderr: Arc<Mutex<Vec<String>>>,
}

impl DaemonProcess {
    /// Runs `aima start` on `home` with `AIMA_ADDR=127.0.0.1:0` and waits for its
    /// "listening on" line; stderr is collected for log checks.
    pub fn spawn(aima: &Path, home: &Path, env: &[(String, String)]) -> anyhow::Result<Self> {
        let mut cmd = Command::new(aima);
        cmd.arg("start")
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", home)
            .env("AIMA_HOME", home)
            .env("AIMA_ADDR", "127.0.0.1:0")
            .env("RUST_LOG", "info,tower_http=debug")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (key, value) in env {
            cmd.env(key, value);
        }
        let mut child = cmd
            .spawn()
            .map_err(|e| anyhow::anyhow!("cannot run {}: {e}", aima.display()))?;
        crate::ledger::record_daemon(child.id(), home);
        let pipe = child
            .stderr
            .take()
            .ok_or_else(|| anyhow::anyhow!("no stderr pipe"))?;
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let (ready_tx, ready_rx) = mpsc::channel();
        let sink = Arc::clone(&stderr);
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                if let Some(rest) = line.split("listening on http://").nth(1)
                    && let Some(Ok(addr)) =
                        rest.split_whitespace().next().map(str::parse::<SocketAddr>)
                {
                    let _ = ready_tx.send(addr);
                }
                sink.lock().expect("lock").push(line);
            }
        });
        match ready_rx.recv_timeout(Duration::from_secs(20)) {
            Ok(addr) => Ok(Self {
                child,
                addr,
                stderr,
            }),
            Err(_) => {
                let _ = child.kill();
                anyhow::bail!(
                    "aima start did not listen within 20 s: {:?}",
                    stderr.lock().expect("lock")
                )
            }
        }
    }

    /// True when a stderr line contains `needle`.
    pub fn logged(&self, needle: &str) -> bool {
        self.stderr
            .lock()
            .expect("lock")
            .iter()
            .any(|l| l.contains(needle))
    }

    /// Kills the process (SIGKILL) and reaps it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A request sent halfway, to be finished after a signal.
#[derive(Debug)]
pub struct InFlight {
    pub stream: TcpStream,
    pub rest: String,
}

/// One answer of the model gateway, as a client saw it.
#[derive(Debug, Clone)]
pub struct GatewayAnswer {
    pub status: u16,
    /// `x-aima-service`: the service that answered.
    pub service: Option<String>,
    pub body: String,
    /// The body broke off (the connection failed) rather than ending cleanly.
    pub broken: bool,
    pub elapsed: Duration,
}

#[derive(Debug, cucumber::World)]
#[world(init = Self::new)]
pub struct AimaWorld {
    pub home: tempfile::TempDir,
    pub port_range: (u16, u16),
    /// Holds `port_range` for this world alone until it goes.
    _port_claim: Option<nix::fcntl::Flock<std::fs::File>>,
    pub docker_host: Option<String>,
    /// `AIMA_SIMULATE_GPUS` for the daemon, when the scenario simulates GPUs.
    pub simulate_gpus: Option<String>,
    /// More settings for the daemon (`AIMA_GATEWAY_QUEUE=2`), applied at its next start.
    pub daemon_env: Vec<(String, String)>,
    pub daemon: Option<DaemonProcess>,
    /// The `aima.instance` label of this world's containers.
    pub instance: Option<String>,
    pub models: BTreeMap<String, String>,
    pub services: BTreeMap<String, ServiceRef>,
    /// Container each running service was first seen in, by service name.
    pub containers: BTreeMap<String, String>,
    pub blockers: Vec<Child>,
    pub foreign_containers: Vec<String>,
    pub cycles: Vec<Cycle>,
    pub starts: Vec<CliRun>,
    /// `aima service stop` runs, in order.
    pub stops: Vec<CliRun>,
    /// The fault-injecting proxy the daemon reaches Docker through, once a fault needs it.
    pub docker_proxy: Option<crate::docker_proxy::DockerProxy>,
    pub in_flight: Option<InFlight>,
    pub exit: Option<ExitStatus>,
    /// When a fault removed a container, for "within N ms" checks.
    pub removed_at: Option<Instant>,
    pub events: Option<Arc<Mutex<Vec<Value>>>>,
    pub recommendation: Option<Value>,
    /// What the model gateway answered, in order.
    pub answers: Vec<GatewayAnswer>,
    /// Statuses of a service seen while something else went on (a stream).
    pub statuses_seen: Vec<String>,
    /// Facts for the report: output excerpts, timings, ports, container counts.
    pub evidence: Vec<String>,
    pub started: Instant,
    /// Stderr of the daemons this scenario stopped, for its daemon log.
    pub earlier_daemon_log: Vec<String>,
    /// `--keep-on-failure` kept this scenario: its containers stay when it goes.
    pub kept: bool,
    /// An engine image tag of this scenario's own (removed when it goes).
    pub scenario_image: Option<String>,
    /// An AI agent's MCP session with `aima mcp` (features/mcp.feature).
    pub agent: Option<super::steps::Agent>,
}

impl AimaWorld {
    fn new() -> Self {
        let (port_range, port_claim) = port_range();
        Self {
            home: tempfile::Builder::new()
                .prefix("aima-scenario-")
                .tempdir()
                .expect("temp home"),
            port_range,
            _port_claim: port_claim,
            docker_host: None,
            simulate_gpus: None,
            daemon_env: Vec::new(),
            daemon: None,
            instance: None,
            models: BTreeMap::new(),
            services: BTreeMap::new(),
            containers: BTreeMap::new(),
            blockers: Vec::new(),
            foreign_containers: Vec::new(),
            cycles: Vec::new(),
            starts: Vec::new(),
            stops: Vec::new(),
            docker_proxy: None,
            in_flight: None,
            exit: None,
            removed_at: None,
            events: None,
            recommendation: None,
            answers: Vec::new(),
            statuses_seen: Vec::new(),
            evidence: Vec::new(),
            started: Instant::now(),
            earlier_daemon_log: Vec::new(),
            kept: false,
            scenario_image: None,
            agent: None,
        }
    }

    pub fn config(&self) -> &'static RunConfig {
        config()
    }

    /// Notes a fact for the report.
    pub fn note(&mut self, fact: impl Into<String>) {
        self.evidence.push(fact.into());
    }

    pub fn addr(&self) -> SocketAddr {
        self.daemon
            .as_ref()
            .expect("a running AIMA daemon (add the Given step)")
            .addr
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr())
    }

    pub fn service(&self, name: &str) -> ServiceRef {
        self.services
            .get(name)
            .unwrap_or_else(|| panic!("no service named \"{name}\" in this scenario"))
            .clone()
    }

    pub fn model(&self, name: &str) -> String {
        self.models
            .get(name)
            .unwrap_or_else(|| panic!("no model named \"{name}\" in this scenario"))
            .clone()
    }

    /// Starts `aima start` for this world's home and waits until it listens.
    pub fn start_daemon(&mut self) {
        let mut env = vec![
            (
                "AIMA_PORT_RANGE".to_owned(),
                format!("{}-{}", self.port_range.0, self.port_range.1),
            ),
            (
                "AIMA_ENGINE_IMAGE_VLLM".to_owned(),
                config().engine_image.clone(),
            ),
        ];
        if let Some(host) = &self.docker_host {
            env.push(("DOCKER_HOST".to_owned(), host.clone()));
        }
        if let Some(gpus) = &self.simulate_gpus {
            env.push(("AIMA_SIMULATE_GPUS".to_owned(), gpus.clone()));
        }
        env.extend(self.daemon_env.iter().cloned());
        let daemon = DaemonProcess::spawn(&config().aima, self.home.path(), &env)
            .unwrap_or_else(|e| panic!("{e:#}"));
        if let Some(earlier) = self.daemon.replace(daemon) {
            let lines = std::mem::take(&mut *earlier.stderr.lock().expect("lock"));
            self.earlier_daemon_log.extend(lines);
            self.earlier_daemon_log
                .push("---- the harness started the daemon again ----".to_owned());
        }
        self.exit = None;
    }

    /// Runs the real `aima` binary against this world's daemon.
    pub async fn aima<I, S>(&self, args: I) -> CliRun
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        let started = Instant::now();
        let out = tokio::process::Command::new(&config().aima)
            .args(args)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", self.home.path())
            .env("AIMA_HOME", self.home.path())
            .env("AIMA_ADDR", self.addr().to_string())
            .output()
            .await
            .expect("run aima");
        CliRun {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            elapsed: started.elapsed(),
        }
    }

    /// Runs `aima … -o json`, expecting success.
    pub async fn aima_json<I, S>(&self, args: I) -> Value
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        let mut all: Vec<std::ffi::OsString> =
            args.into_iter().map(|a| a.as_ref().to_owned()).collect();
        all.extend(["-o".into(), "json".into()]);
        let run = self.aima(&all).await;
        assert_eq!(run.code, 0, "aima {all:?} failed: {}", run.stderr.trim());
        serde_json::from_str(&run.stdout)
            .unwrap_or_else(|e| panic!("aima {all:?} printed no JSON ({e}): {}", run.stdout))
    }

    /// The service as the daemon reports it now.
    pub async fn service_state(&self, name: &str) -> Value {
        let id = self.service(name).id;
        self.aima_json(["service", "get", id.as_str()]).await
    }

    /// Asks for and remembers this daemon's instance label.
    pub async fn learn_instance(&mut self) {
        let status: Value = reqwest::get(self.url("/api/v1/status"))
            .await
            .expect("GET /api/v1/status")
            .json()
            .await
            .expect("status JSON");
        self.instance = status["instance"].as_str().map(str::to_owned);
    }

    pub fn instance_label(&self) -> String {
        format!(
            "aima.instance={}",
            self.instance
                .as_deref()
                .expect("the daemon's instance is known")
        )
    }

    /// Sends a signal to the daemon process.
    pub fn signal(&self, signal: nix::sys::signal::Signal) {
        let daemon = self.daemon.as_ref().expect("a daemon");
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(daemon.child.id() as i32), signal)
            .expect("kill");
    }

    /// Waits for the daemon to exit and records its status.
    pub fn wait_daemon_exit(&mut self, deadline: Duration) -> ExitStatus {
        if let Some(status) = self.exit {
            return status;
        }
        let daemon = self.daemon.as_mut().expect("a daemon");
        let until = Instant::now() + deadline;
        let status = loop {
            if let Some(status) = daemon.child.try_wait().expect("wait") {
                break status;
            }
            assert!(
                Instant::now() < until,
                "the daemon did not exit within {deadline:?}"
            );
            std::thread::sleep(Duration::from_millis(10));
        };
        self.exit = Some(status);
        status
    }

    /// Everything the scenario's daemons wrote to stderr, across restarts.
    pub fn daemon_log(&self) -> Vec<String> {
        let mut lines = self.earlier_daemon_log.clone();
        if let Some(daemon) = &self.daemon {
            lines.extend(daemon.stderr.lock().expect("lock").iter().cloned());
        }
        lines
    }

    /// Keeps the home, the daemon log and the containers when the world goes
    /// (`--keep-on-failure`), and says where they are.
    pub fn keep(&mut self) -> String {
        self.kept = true;
        self.home.disable_cleanup(true);
        crate::ledger::record_kept(self.home.path());
        let log = self.home.path().join("daemon.log");
        let _ = std::fs::write(&log, self.daemon_log().join("\n") + "\n");
        let containers = self
            .instance
            .as_ref()
            .map(|i| format!("docker ps -a --filter label=aima.instance={i}"))
            .unwrap_or_else(|| "none (the daemon never answered)".to_owned());
        format!(
            "kept home {}, daemon log {}, containers: {containers}",
            self.home.path().display(),
            log.display()
        )
    }

    /// How many daemon stderr lines contain `needle`.
    pub fn daemon_log_count(&self, needle: &str) -> usize {
        self.daemon.as_ref().map_or(0, |d| {
            d.stderr
                .lock()
                .expect("lock")
                .iter()
                .filter(|l| l.contains(needle))
                .count()
        })
    }
}

/// Ids of containers carrying `label`, from the docker CLI (independent of AIMA's code).
pub fn containers_with_label(label: &str, running_only: bool) -> Vec<String> {
    let mut cmd = Command::new("docker");
    cmd.arg("ps")
        .arg("-q")
        .args(["--filter", &format!("label={label}")]);
    if !running_only {
        cmd.arg("-a");
    }
    let out = cmd.output().expect("run docker ps");
    assert!(
        out.status.success(),
        "docker ps failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}

impl Drop for AimaWorld {
    fn drop(&mut self) {
        if let Some(daemon) = &mut self.daemon
            && daemon.child.try_wait().ok().flatten().is_none()
        {
            let _ = daemon.child.kill();
            let _ = daemon.child.wait();
        }
        for blocker in &mut self.blockers {
            let _ = blocker.kill();
            let _ = blocker.wait();
        }
        if !self.foreign_containers.is_empty() {
            let _ = Command::new("docker")
                .args(["rm", "-f"])
                .args(&self.foreign_containers)
                .output();
        }
        if let Some(instance) = self.instance.as_ref().filter(|_| !self.kept) {
            crate::ledger::remove_labelled(&format!("aima.instance={instance}"));
        }
        if let Some(tag) = &self.scenario_image {
            let _ = Command::new("docker").args(["rmi", tag]).output();
        }
    }
}
