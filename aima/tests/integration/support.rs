//! Test fixtures: an in-process daemon, the `aima` binary as a child process, and polling.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use aima::config::{Flags, Settings};
use aima::daemon::Daemon;
use aima::runtime::DockerRuntime;
use aima::server::ServeOptions;
use aima::store::Store;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// Path of the `aima` binary under test.
pub fn aima_bin() -> &'static str {
    env!("CARGO_BIN_EXE_aima")
}

/// Polls `check` until it returns `Some`, or panics with `what` after `deadline`.
pub fn poll<T>(deadline: Duration, what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let until = Instant::now() + deadline;
    let mut pause = Duration::from_millis(5);
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(
            Instant::now() < until,
            "timed out after {deadline:?} waiting for {what}"
        );
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(100));
    }
}

/// Settings for a daemon rooted in `home`, with no environment leaking in.
pub fn settings_for(home: &Path) -> Settings {
    let mut settings = Settings::resolve_with(
        &Flags {
            home: Some(home.to_owned()),
            addr: Some("127.0.0.1:0".into()),
        },
        |_| None,
        Vec::new(),
    )
    .expect("test settings resolve");
    // No hub here: registrations find it unreachable at once and go ahead.
    settings.hf_endpoint = "http://127.0.0.1:9".to_owned();
    settings
}

/// The image the tests run as vLLM.
pub const STUB_IMAGE: &str = "aima-stub-engine:latest";

/// Directory holding the workspace's binaries (`aima`, `harness`, `aima-stub-engine`).
pub fn bin_dir() -> PathBuf {
    Path::new(aima_bin()).parent().expect("bin dir").to_owned()
}

/// Builds the stub engine image once per test run, through the real `harness image build`.
/// `cargo test --workspace` builds the harness binaries; run alone, this builds them.
pub fn ensure_stub_image() -> &'static str {
    static BUILT: std::sync::OnceLock<()> = std::sync::OnceLock::new();
    BUILT.get_or_init(|| {
        let harness = bin_dir().join("harness");
        if !harness.exists() || !bin_dir().join("aima-stub-engine").exists() {
            let status = Command::new(env!("CARGO"))
                .args(["build", "-p", "harness", "--bins"])
                .status()
                .expect("run cargo build -p harness");
            assert!(status.success(), "cargo build -p harness --bins failed");
        }
        let out = Command::new(&harness)
            .args(["image", "build"])
            .output()
            .expect("run harness image build");
        assert!(
            out.status.success(),
            "harness image build failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    });
    STUB_IMAGE
}

/// A private slice of host ports per test daemon, so parallel tests never compete.
pub fn port_range() -> (u16, u16) {
    static NEXT: std::sync::atomic::AtomicU16 = std::sync::atomic::AtomicU16::new(0);
    let slot = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let first = 21000 + slot * 40;
    (first, first + 39)
}

/// Ids of containers (running or not) carrying `label`, asked of the docker CLI so the
/// check does not depend on the code under test.
pub fn containers_with_label(label: &str) -> Vec<String> {
    let out = Command::new("docker")
        .args(["ps", "-a", "-q", "--filter", &format!("label={label}")])
        .output()
        .expect("run docker ps");
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

/// Force-removes containers carrying `label` (cleanup after a failed test).
pub fn remove_containers_with_label(label: &str) {
    let ids = containers_with_label(label);
    if !ids.is_empty() {
        let _ = Command::new("docker")
            .args(["rm", "-f"])
            .args(&ids)
            .output();
    }
}

/// Removes every container of an AIMA instance when the test ends, passed or not.
pub struct Cleanup(pub String);

impl Drop for Cleanup {
    fn drop(&mut self) {
        remove_containers_with_label(&format!("aima.instance={}", self.0));
    }
}

/// The daemon served in-process on `127.0.0.1:0`, on its own runtime thread; stopped
/// through its shutdown channel on drop.
pub struct TestDaemon {
    pub addr: SocketAddr,
    pub home: tempfile::TempDir,
    pub store: Store,
    /// The `aima.instance` label of this daemon's containers.
    pub instance: String,
    pub port_range: (u16, u16),
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl TestDaemon {
    pub fn start() -> Self {
        Self::start_with(ServeOptions {
            drain_timeout: Duration::from_secs(5),
            request_timeout: ServeOptions::DEFAULT_REQUEST_TIMEOUT,
            ..ServeOptions::default()
        })
    }

    pub fn start_with(options: ServeOptions) -> Self {
        Self::start_configured(options, |_| {})
    }

    /// A daemon that runs the stub engine image as vLLM, with its own port range.
    pub fn with_engine() -> Self {
        Self::with_engine_and(|_| {})
    }

    /// Like [`TestDaemon::with_engine`], with extra settings (simulated GPUs, images).
    pub fn with_engine_and(extra: impl FnOnce(&mut Settings)) -> Self {
        let image = ensure_stub_image();
        let range = port_range();
        Self::start_configured(
            ServeOptions {
                drain_timeout: Duration::from_secs(5),
                request_timeout: ServeOptions::DEFAULT_REQUEST_TIMEOUT,
                ..ServeOptions::default()
            },
            |settings| {
                settings.engine_images.insert("vllm".into(), image.into());
                settings.port_range = aima::config::PortRange {
                    first: range.0,
                    last: range.1,
                };
                extra(settings);
            },
        )
    }

    fn start_configured(options: ServeOptions, configure: impl FnOnce(&mut Settings)) -> Self {
        let home = tempfile::tempdir().expect("temp home");
        let mut settings = settings_for(home.path());
        configure(&mut settings);
        let port_range = (settings.port_range.first, settings.port_range.last);
        std::fs::create_dir_all(settings.data_dir()).expect("data dir");
        let store = Store::open(&settings.database_path()).expect("store");
        let instance = store.instance_id().expect("instance id");
        let (addr_tx, addr_rx) = mpsc::channel();
        let (shutdown_tx, shutdown_rx) = tokio::sync::oneshot::channel::<()>();
        let daemon = Daemon::new(settings, store.clone(), Arc::new(DockerRuntime::from_env()))
            .expect("daemon");
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                    .await
                    .expect("bind");
                addr_tx
                    .send(listener.local_addr().expect("addr"))
                    .expect("send addr");
                let shutdown = async {
                    let _ = shutdown_rx.await;
                };
                aima::server::serve(listener, daemon, shutdown, options)
                    .await
                    .expect("serve");
            });
        });
        let addr = addr_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("daemon bound");
        Self {
            addr,
            home,
            store,
            instance,
            port_range,
            shutdown: Some(shutdown_tx),
            thread: Some(thread),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// The `aima` binary pointed at this daemon.
    pub fn cli(&self) -> assert_cmd::Command {
        cli_for(self.addr, self.home.path())
    }

    /// A fresh directory of weights under this daemon's model root (`$AIMA_HOME/models`):
    /// a tiny model (one tensor) in Hugging Face's layout, written with the `safetensors`
    /// crate, so AIMA accepts it as a model.
    pub fn model_dir(&self, name: &str) -> PathBuf {
        let dir = self.home.path().join("models").join(name);
        std::fs::create_dir_all(&dir).expect("model dir");
        write_tiny_model(&dir);
        dir
    }

    /// The `aima.instance=…` label selecting this daemon's containers.
    pub fn instance_label(&self) -> String {
        format!("aima.instance={}", self.instance)
    }

    /// Containers of this daemon's instance, per the docker CLI.
    pub fn containers(&self) -> Vec<String> {
        containers_with_label(&self.instance_label())
    }
}

impl Drop for TestDaemon {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        // Tests assert "no container left" themselves; this only cleans up after a failure.
        remove_containers_with_label(&self.instance_label());
    }
}

/// `aima` with a clean environment aimed at `addr` and `home`.
pub fn cli_for(addr: SocketAddr, home: &Path) -> assert_cmd::Command {
    let mut cmd = assert_cmd::Command::new(aima_bin());
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", home)
        .env("AIMA_HOME", home)
        .env("AIMA_ADDR", addr.to_string())
        .timeout(Duration::from_secs(30));
    cmd
}

/// `aima start` as a real child process, with its stderr collected line by line.
pub struct DaemonProcess {
    pub child: Child,
    pub addr: SocketAddr,
    pub home: PathBuf,
    stderr: Arc<Mutex<Vec<String>>>,
}

impl DaemonProcess {
    /// Starts `aima start --addr 127.0.0.1:0` and waits for its "listening" line.
    pub fn start(home: &Path, env: &[(&str, &str)]) -> Self {
        Self::start_on(home, "127.0.0.1:0", env)
    }

    /// Starts `aima start --addr addr` and waits for its "listening" line.
    pub fn start_on(home: &Path, addr: &str, env: &[(&str, &str)]) -> Self {
        Self::launch(Self::command(home, addr, env), home)
    }

    /// `aima start` with a clean environment aimed at `home` and `addr`, not yet spawned,
    /// for tests that run it differently (another user, other limits).
    pub fn command(home: &Path, addr: &str, env: &[(&str, &str)]) -> Command {
        Self::command_via(&[], home, addr, env)
    }

    /// Like [`DaemonProcess::command`], run through `launcher` (for example a shell that
    /// lowers a limit first): `launcher… aima start`.
    pub fn command_via(
        launcher: &[&str],
        home: &Path,
        addr: &str,
        env: &[(&str, &str)],
    ) -> Command {
        let cmd = match launcher.split_first() {
            Some((program, args)) => {
                let mut cmd = Command::new(program);
                cmd.args(args).arg(aima_bin());
                cmd
            }
            None => Command::new(aima_bin()),
        };
        Self::command_for(cmd, home, addr, env)
    }

    /// `cmd` (an `aima` binary, or a launcher of one) made into `… start` with a clean
    /// environment aimed at `home` and `addr`.
    pub fn command_for(mut cmd: Command, home: &Path, addr: &str, env: &[(&str, &str)]) -> Command {
        cmd.arg("start")
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", home)
            .env("AIMA_HOME", home)
            .env("AIMA_ADDR", addr)
            .env("RUST_LOG", "info,tower_http=debug")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (key, value) in env {
            cmd.env(key, value);
        }
        cmd
    }

    /// Spawns `cmd` (from [`DaemonProcess::command`]) and waits for its "listening" line.
    pub fn launch(cmd: Command, home: &Path) -> Self {
        let (child, stderr, ready) = Self::spawn(cmd);
        let addr = match ready.recv_timeout(Duration::from_secs(20)) {
            Ok(addr) => addr,
            Err(_) => panic!(
                "daemon did not report its address; stderr:\n{}",
                stderr.lock().expect("lock").join("\n")
            ),
        };
        Self {
            child,
            addr,
            home: home.to_owned(),
            stderr,
        }
    }

    /// Runs `aima start` expecting it to refuse: returns its exit status and stderr.
    pub fn start_expecting_failure(
        home: &Path,
        addr: &str,
        env: &[(&str, &str)],
    ) -> (ExitStatus, Vec<String>) {
        Self::launch_expecting_failure(Self::command(home, addr, env))
    }

    /// Spawns `cmd` expecting it to refuse: returns its exit status and stderr.
    pub fn launch_expecting_failure(cmd: Command) -> (ExitStatus, Vec<String>) {
        let (mut child, stderr, _ready) = Self::spawn(cmd);
        let status = poll(Duration::from_secs(20), "the daemon to exit", || {
            child.try_wait().expect("wait")
        });
        // The reader thread may still be draining the pipe after exit.
        let lines = poll(Duration::from_secs(5), "stderr to be read", || {
            let lines = stderr.lock().expect("lock");
            lines
                .iter()
                .any(|l| l.starts_with("error:"))
                .then(|| lines.clone())
        });
        (status, lines)
    }

    fn spawn(mut cmd: Command) -> (Child, Arc<Mutex<Vec<String>>>, mpsc::Receiver<SocketAddr>) {
        let mut child = cmd.spawn().expect("spawn aima start");
        let pipe = child.stderr.take().expect("stderr");
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let (ready_tx, ready_rx) = mpsc::channel();
        let sink = Arc::clone(&stderr);
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                if let Some(rest) = line.split("listening on http://").nth(1) {
                    // Text logs end the address with a space, JSON logs with a quote.
                    let addr = rest
                        .split(|c: char| !(c.is_ascii_alphanumeric() || ".:[]".contains(c)))
                        .next()
                        .unwrap_or_default();
                    if let Ok(addr) = addr.parse() {
                        let _ = ready_tx.send(addr);
                    }
                }
                sink.lock().expect("lock").push(line);
            }
        });
        (child, stderr, ready_rx)
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn signal(&self, signal: Signal) {
        kill(Pid::from_raw(self.child.id() as i32), signal).expect("send signal");
    }

    /// Waits for the process to exit within `deadline`.
    pub fn wait_exit(&mut self, deadline: Duration) -> ExitStatus {
        poll(deadline, "the daemon to exit", || {
            self.child.try_wait().expect("wait")
        })
    }

    /// Waits until a stderr line contains `needle`.
    pub fn wait_for_log(&self, needle: &str, deadline: Duration) {
        poll(deadline, needle, || {
            self.stderr
                .lock()
                .expect("lock")
                .iter()
                .any(|l| l.contains(needle))
                .then_some(())
        });
    }

    pub fn stderr(&self) -> Vec<String> {
        self.stderr.lock().expect("lock").clone()
    }
}

impl Drop for DaemonProcess {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// True when nothing accepts TCP connections on `addr`.
pub fn refuses_connections(addr: SocketAddr) -> bool {
    std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err()
}

/// Runs the CLI; returns (exit code, stdout, stderr).
pub fn run(cmd: &mut assert_cmd::Command) -> (i32, String, String) {
    let out = cmd.output().expect("run aima");
    (
        out.status.code().expect("exit code"),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Runs the CLI with `-o json`, expecting success.
pub fn run_json(cmd: &mut assert_cmd::Command) -> serde_json::Value {
    let (code, stdout, stderr) = run(cmd.args(["-o", "json"]));
    assert_eq!(code, 0, "stderr: {stderr}");
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("not json ({e}): {stdout}"))
}

/// An HTTP client for the API: no proxy, a 30 s bound per request.
pub fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client")
}

/// POSTs `body` as JSON to the daemon, expecting success; returns the JSON answer.
pub async fn post_ok(d: &TestDaemon, path: &str, body: serde_json::Value) -> serde_json::Value {
    let response = http()
        .post(d.url(path))
        .json(&body)
        .send()
        .await
        .expect("post");
    assert!(
        response.status().is_success(),
        "{path}: {}",
        response.status()
    );
    response.json().await.expect("json")
}

/// `model.safetensors` with one 4×4 F16 tensor (32 bytes) and a `config.json`, in `dir`.
pub fn write_tiny_model(dir: &Path) {
    let data = [0u8; 32];
    let view = safetensors::tensor::TensorView::new(safetensors::Dtype::F16, vec![4, 4], &data)
        .expect("tensor view");
    safetensors::tensor::serialize_to_file([("w", view)], None, &dir.join("model.safetensors"))
        .expect("write model.safetensors");
    std::fs::write(
        dir.join("config.json"),
        r#"{"model_type": "llama", "num_hidden_layers": 1, "num_attention_heads": 1, "hidden_size": 4, "max_position_embeddings": 128}"#,
    )
    .expect("write config.json");
}
