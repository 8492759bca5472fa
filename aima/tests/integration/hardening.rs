//! Hardening: who may use the API, what a caller may make AIMA do on the host, and what
//! idle or hostile clients cannot wear down. Real daemons, real sockets, real files.

use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use reqwest::StatusCode;
use reqwest::header::{HOST, ORIGIN, WWW_AUTHENTICATE};
use serde_json::{Value, json};

use crate::support::{
    Cleanup, DaemonProcess, TestDaemon, bin_dir, cli_for, containers_with_label, ensure_stub_image,
    poll, port_range,
};

const TOKEN: &str = "test-token-0123456789abcdef";

fn run(cmd: &mut assert_cmd::Command) -> (i32, String, String) {
    let out = cmd.output().expect("run aima");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client")
}

async fn post_model(url: String, body: Value) -> (StatusCode, Value) {
    let response = client().post(url).json(&body).send().await.expect("post");
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

fn message(body: &Value) -> String {
    body["error"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn model_paths_outside_the_roots_are_refused_and_nothing_is_written() {
    let d = TestDaemon::start();
    let root = d.model_dir("");
    let elsewhere = tempfile::tempdir().expect("elsewhere");
    std::os::unix::fs::symlink("/etc", root.join("escape")).expect("symlink out");
    std::fs::create_dir(root.join("a:b")).expect("dir with a colon");
    let socket = ["/var/run/docker.sock", "/run/docker.sock"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .unwrap_or("/etc/hostname");
    let outside = [
        "/".to_owned(),
        socket.to_owned(),
        root.join("escape").display().to_string(),
        root.join("..").display().to_string(),
        elsewhere.path().display().to_string(),
    ];
    for path in &outside {
        let (status, body) = post_model(
            d.url("/api/v1/models"),
            json!({"name": "m", "source": "local", "path": path}),
        )
        .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{path}: {body}");
        let text = message(&body);
        assert!(
            text.contains("outside the model roots")
                && text.contains(root.to_str().expect("utf-8").trim_end_matches('/'))
                && text.contains("AIMA_MODEL_ROOTS"),
            "{path}: {text}"
        );
    }
    let (status, body) = post_model(
        d.url("/api/v1/models"),
        json!({"name": "m", "source": "local", "path": root.join("escape")}),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(message(&body).contains("resolved to /etc"), "{body}");
    let (status, body) = post_model(
        d.url("/api/v1/models"),
        json!({"name": "m", "source": "local", "path": root.join("a:b")}),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(message(&body).contains("contains ':'"), "{body}");
    assert!(
        d.store.list_models().expect("list").is_empty(),
        "nothing was written"
    );

    // A link that stays inside a root is fine, and the model keeps the resolved path.
    let real = d.model_dir("real");
    std::os::unix::fs::symlink(&real, root.join("alias")).expect("symlink in");
    let (status, body) = post_model(
        d.url("/api/v1/models"),
        json!({"name": "m", "source": "local", "path": root.join("alias")}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["path"], real.to_str().expect("utf-8"));
}

#[test]
fn a_non_loopback_address_without_a_token_is_refused_and_with_one_is_served() {
    let home = tempfile::tempdir().expect("home");
    let (status, lines) = DaemonProcess::start_expecting_failure(home.path(), "0.0.0.0:0", &[]);
    assert_ne!(status.code(), Some(0));
    let error = lines
        .iter()
        .find(|l| l.starts_with("error:"))
        .expect("error line");
    assert!(
        error.contains("refusing to listen on 0.0.0.0:0 without an API token")
            && error.contains("AIMA_API_TOKEN"),
        "{error}"
    );
    assert!(!home.path().join("data").exists(), "nothing was created");

    let d = DaemonProcess::start_on(home.path(), "0.0.0.0:0", &[("AIMA_API_TOKEN", TOKEN)]);
    let local = SocketAddr::from(([127, 0, 0, 1], d.addr.port()));
    let mut cli = cli_for(local, home.path());
    let (code, stdout, stderr) = run(cli.env("AIMA_API_TOKEN", TOKEN).args(["model", "list"]));
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.starts_with("ID"), "{stdout}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_without_the_right_token_are_401_and_the_cli_says_how_to_set_it() {
    let home = tempfile::tempdir().expect("home");
    let d = DaemonProcess::start(home.path(), &[("AIMA_API_TOKEN", TOKEN)]);
    let http = client();
    let get = |path: &str, token: Option<&str>| {
        let mut request = http.get(d.url(path));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send()
    };
    for token in [None, Some("wrong-token-0123456789abcdef"), Some("")] {
        let response = get("/api/v1/models", token).await.expect("get");
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{token:?}");
        assert_eq!(
            response.headers()[WWW_AUTHENTICATE],
            "Bearer realm=\"aima\""
        );
        let body: Value = response.json().await.expect("json");
        assert_eq!(body["error"]["code"], "unauthorized");
    }
    assert_eq!(
        get("/metrics", None).await.expect("get").status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        get("/api/v1/models", Some(TOKEN))
            .await
            .expect("get")
            .status(),
        StatusCode::OK
    );
    assert_eq!(
        get("/api/v1/health", None).await.expect("get").status(),
        StatusCode::OK,
        "liveness probes need no token"
    );
    let refused = http
        .post(d.url("/api/v1/models"))
        .json(&json!({"name": "m", "source": "ollama", "repo": "r"}))
        .send()
        .await
        .expect("post");
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);

    // The CLI without a token, with a wrong one, and with the token file.
    let (code, _, stderr) = run(cli_for(d.addr, home.path()).args(["model", "list"]));
    assert_eq!(code, 1);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("requires an API token")
            && stderr.contains("sent no token")
            && stderr.contains("AIMA_API_TOKEN")
            && stderr.contains("$AIMA_HOME/token"),
        "{stderr}"
    );
    let (code, _, stderr) = run(cli_for(d.addr, home.path())
        .env("AIMA_API_TOKEN", "wrong-token-0123456789abcdef")
        .args(["model", "list"]));
    assert_eq!(code, 1);
    assert!(stderr.contains("was refused"), "{stderr}");
    let cli_home = tempfile::tempdir().expect("cli home");
    let token_file = cli_home.path().join("token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).expect("token file");
    std::fs::set_permissions(&token_file, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let (code, stdout, stderr) =
        run(cli_for(d.addr, cli_home.path()).args(["-o", "json", "model", "list"]));
    assert_eq!(code, 0, "{stderr}");
    let list: Value = serde_json::from_str(&stdout).expect("json");
    assert_eq!(list["items"], json!([]), "the refused create wrote nothing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cross_origin_writes_and_foreign_host_names_are_refused() {
    let d = TestDaemon::start();
    let http = client();
    let body = json!({"name": "m", "source": "ollama", "repo": "r"});
    let attempts = [
        (ORIGIN.as_str(), "https://evil.example"),
        (ORIGIN.as_str(), "null"),
        ("sec-fetch-site", "cross-site"),
        (HOST.as_str(), "evil.example:9090"),
    ];
    for (name, value) in attempts {
        let response = http
            .post(d.url("/api/v1/models"))
            .header(name, value)
            .json(&body)
            .send()
            .await
            .expect("post");
        assert_eq!(response.status(), StatusCode::FORBIDDEN, "{name}: {value}");
        let refused: Value = response.json().await.expect("json");
        assert_eq!(refused["error"]["code"], "forbidden");
    }
    // DNS rebinding: reading under a foreign name is refused too.
    let response = http
        .get(d.url("/api/v1/services"))
        .header(HOST, "evil.example")
        .send()
        .await
        .expect("get");
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    assert!(d.store.list_models().expect("list").is_empty());

    // The daemon's own origin (its page) may write.
    let response = http
        .post(d.url("/api/v1/models"))
        .header(ORIGIN, format!("http://{}", d.addr))
        .json(&body)
        .send()
        .await
        .expect("post");
    assert_eq!(response.status(), StatusCode::CREATED);
}

/// Raises this process's soft open-file limit to `needed`, or says why it cannot.
pub(crate) fn raise_file_limit(needed: u64) -> Result<(), String> {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).map_err(|e| e.to_string())?;
    if soft >= needed {
        return Ok(());
    }
    if hard < needed {
        return Err(format!(
            "the hard open-file limit is {hard}; this test needs {needed} (ulimit -Hn)"
        ));
    }
    setrlimit(Resource::RLIMIT_NOFILE, hard, hard).map_err(|e| e.to_string())
}

/// `aima start` with the soft open-file limit a login shell or older unit gives (1024).
fn daemon_with_default_file_limit(home: &Path, env: &[(&str, &str)]) -> DaemonProcess {
    let launcher = ["sh", "-c", "ulimit -S -n 1024 && exec \"$0\" \"$@\""];
    let cmd = DaemonProcess::command_via(&launcher, home, "127.0.0.1:0", env);
    DaemonProcess::launch(cmd, home)
}

fn service_json(d: &DaemonProcess, args: &[&str]) -> Value {
    let (code, stdout, stderr) = run(cli_for(d.addr, &d.home).arg("-o").arg("json").args(args));
    assert_eq!(code, 0, "{args:?}: {stderr}");
    serde_json::from_str(&stdout).expect("json")
}

#[test]
fn five_thousand_idle_connections_neither_stop_the_api_nor_fail_a_healthy_engine() {
    const IDLE: usize = 5000;
    if let Err(why) = raise_file_limit(IDLE as u64 + 512) {
        eprintln!("SKIPPED five_thousand_idle_connections: {why}");
        return;
    }
    let image = ensure_stub_image();
    let home = tempfile::tempdir().expect("home");
    let range = port_range();
    let range_text = format!("{}-{}", range.0, range.1);
    let d = daemon_with_default_file_limit(
        home.path(),
        &[
            ("AIMA_ENGINE_IMAGE_VLLM", image),
            ("AIMA_PORT_RANGE", &range_text),
        ],
    );
    let model = service_json(
        &d,
        &[
            "model", "create", "--name", "m", "--source", "ollama", "--repo", "r",
        ],
    );
    let service = service_json(
        &d,
        &[
            "service",
            "create",
            "--model-id",
            model["id"].as_str().expect("id"),
            "--engine-type",
            "vllm",
        ],
    );
    let id = service["id"].as_str().expect("id").to_owned();
    let instance = service_json(&d, &["status"])["instance"]
        .as_str()
        .expect("instance")
        .to_owned();
    // A failing assertion below must not leave the engine running.
    let _cleanup = Cleanup(instance.clone());
    let (code, _, stderr) = run(cli_for(d.addr, &d.home).args(["service", "start", &id, "--wait"]));
    assert_eq!(code, 0, "{stderr}");

    // Silent clients: connected, never a byte sent.
    let opened = Instant::now();
    let idle: Vec<TcpStream> = (0..IDLE)
        .map(|i| {
            TcpStream::connect_timeout(&d.addr, Duration::from_secs(5))
                .unwrap_or_else(|e| panic!("idle connection {i} of {IDLE}: {e}"))
        })
        .collect();
    eprintln!("{IDLE} idle connections open after {:?}", opened.elapsed());

    // Longer than the health monitor's five misses (about 10 s): a daemon out of file
    // handles would fail its own probes and mark the healthy engine failed.
    let held = Instant::now();
    let mut slowest = Duration::ZERO;
    while held.elapsed() < Duration::from_secs(12) {
        let asked = Instant::now();
        let (code, stdout, stderr) =
            run(cli_for(d.addr, &d.home).args(["-o", "json", "service", "list"]));
        slowest = slowest.max(asked.elapsed());
        assert_eq!(
            code, 0,
            "service list under {IDLE} idle connections: {stderr}"
        );
        let list: Value = serde_json::from_str(&stdout).expect("json");
        assert_eq!(
            list["items"][0]["status"], "running",
            "the healthy engine stays running: {list}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    eprintln!("slowest service list under load: {slowest:?}");
    assert!(
        slowest < Duration::from_secs(5),
        "service list took {slowest:?}"
    );
    drop(idle);
    let log = d.stderr().join("\n");
    assert!(!log.to_lowercase().contains("too many open files"), "{log}");
    let (code, _, stderr) =
        run(cli_for(d.addr, &d.home).args(["service", "delete", "--force", &id]));
    assert_eq!(code, 0, "{stderr}");
    assert!(containers_with_label(&format!("aima.instance={instance}")).is_empty());
}

#[test]
fn at_the_connection_cap_new_clients_wait_for_silent_ones_to_be_closed() {
    let home = tempfile::tempdir().expect("home");
    let d = DaemonProcess::start(home.path(), &[("AIMA_MAX_CONNECTIONS", "16")]);
    let mut silent: Vec<TcpStream> = (0..16)
        .map(|_| TcpStream::connect(d.addr).expect("connect"))
        .collect();
    d.wait_for_log("connection cap reached", Duration::from_secs(10));
    let asked = Instant::now();
    let (code, _, stderr) = run(cli_for(d.addr, home.path()).args(["model", "list"]));
    let waited = asked.elapsed();
    assert_eq!(
        code, 0,
        "the waiting client is served once a slot frees: {stderr}"
    );
    // The silent connections were closed by the daemon's header timeout (10 s).
    let first = silent.first_mut().expect("one");
    first
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let mut byte = [0u8; 1];
    let read = std::io::Read::read(first, &mut byte);
    assert!(
        matches!(read, Ok(0)) || read.is_err(),
        "a silent connection is closed: {read:?}"
    );
    assert!(
        waited < Duration::from_secs(20),
        "waited {waited:?} for a slot"
    );
    let log = d.stderr().join("\n");
    assert!(log.contains("raise AIMA_MAX_CONNECTIONS"), "{log}");
}

/// `aima start` for `home`, as the unprivileged user `nobody` when the tests run as root,
/// since root writes read-only files anyway. `nobody` runs a copy of the binary in a
/// directory anyone may enter: the checkout may lie under a private home.
fn unprivileged_daemon(home: &Path, bin_dir: &Path) -> Command {
    if !nix::unistd::Uid::effective().is_root() {
        return DaemonProcess::command(home, "127.0.0.1:0", &[]);
    }
    let nobody = 65534;
    let program = bin_dir.join("aima");
    std::fs::copy(crate::support::aima_bin(), &program).expect("copy aima");
    for path in [bin_dir, program.as_path()] {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }
    for entry in walk(home) {
        std::os::unix::fs::chown(&entry, Some(nobody), Some(nobody)).expect("chown");
    }
    let mut cmd = DaemonProcess::command_for(Command::new(program), home, "127.0.0.1:0", &[]);
    cmd.uid(nobody).gid(nobody);
    cmd
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut all = vec![dir.to_owned()];
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                all.extend(walk(&path));
            } else {
                all.push(path);
            }
        }
    }
    all
}

#[test]
fn a_read_only_database_is_reported_at_start() {
    let home = tempfile::tempdir().expect("home");
    let db = home.path().join("data/aima.db");
    std::fs::create_dir_all(db.parent().expect("data dir")).expect("data dir");
    drop(aima::store::Store::open(&db).expect("create the database"));
    std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o400)).expect("chmod");
    let bin_dir = tempfile::tempdir().expect("bin dir");
    let cmd = unprivileged_daemon(home.path(), bin_dir.path());
    let (status, lines) = DaemonProcess::launch_expecting_failure(cmd);
    assert_ne!(status.code(), Some(0));
    let error = lines
        .iter()
        .find(|l| l.starts_with("error:"))
        .expect("error line");
    assert!(
        error.contains(&format!("database {} is not writable", db.display()))
            && error.contains("fix its permissions"),
        "{error}"
    );
    assert!(
        !lines.iter().any(|l| l.contains("listening on")),
        "it never served: {lines:#?}"
    );
}

#[test]
fn home_and_database_files_are_private() {
    let home = tempfile::tempdir().expect("home");
    std::fs::set_permissions(home.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let mut d = DaemonProcess::start(home.path(), &[]);
    let (code, _, stderr) = run(cli_for(d.addr, home.path()).args([
        "model", "create", "--name", "m", "--source", "ollama", "--repo", "r",
    ]));
    assert_eq!(code, 0, "{stderr}");
    let mode = |p: &Path| std::fs::metadata(p).expect("stat").permissions().mode() & 0o777;
    assert_eq!(mode(home.path()), 0o700, "home");
    assert_eq!(mode(&home.path().join("data")), 0o700, "data dir");
    for file in ["data/aima.db", "data/aima.db-wal", "daemon.lock"] {
        assert_eq!(mode(&home.path().join(file)), 0o600, "{file}");
    }
    d.signal(Signal::SIGTERM);
    d.wait_exit(Duration::from_secs(15));
}

#[test]
fn a_cli_whose_daemon_dies_mid_request_exits_3() {
    let home = tempfile::tempdir().expect("home");
    let mut d = DaemonProcess::start(home.path(), &[]);
    let model = service_json(
        &d,
        &[
            "model", "create", "--name", "m", "--source", "ollama", "--repo", "r",
        ],
    );
    let service = service_json(
        &d,
        &[
            "service",
            "create",
            "--model-id",
            model["id"].as_str().expect("id"),
            "--engine-type",
            "vllm",
        ],
    );
    let id = service["id"].as_str().expect("id");
    let mut follower = Command::new(crate::support::aima_bin())
        .args(["service", "events", id, "--follow"])
        .env("AIMA_ADDR", d.addr.to_string())
        .env("AIMA_HOME", home.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("follow");
    let mut out = std::io::BufReader::new(follower.stdout.take().expect("stdout"));
    let mut first = String::new();
    std::io::BufRead::read_line(&mut out, &mut first).expect("first event");
    assert!(first.contains("creating"), "{first}");
    d.signal(Signal::SIGKILL);
    d.wait_exit(Duration::from_secs(10));
    let status = poll(Duration::from_secs(10), "the CLI to exit", || {
        follower.try_wait().expect("wait")
    });
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut follower.stderr.take().expect("stderr"), &mut stderr)
        .expect("stderr");
    assert_eq!(status.code(), Some(3), "{stderr}");
    assert!(stderr.contains("went away"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_and_reasons_stay_on_one_line() {
    // Its own port slice: no probing of the default range, where real services may run.
    let d = TestDaemon::with_engine();
    for name in ["invoice\u{202E}fdp.exe", "two\nlines", "\u{1b}[31mred"] {
        let (status, body) = post_model(
            d.url("/api/v1/models"),
            json!({"name": name, "source": "ollama", "repo": "r"}),
        )
        .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{name:?}: {body}");
    }
    let (status, model) = post_model(
        d.url("/api/v1/models"),
        json!({"name": "m", "source": "ollama", "repo": "r"}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);

    // A port holder whose command line spans lines and runs long.
    let port = (d.port_range.0..=d.port_range.1)
        .find(|p| std::net::TcpListener::bind(("0.0.0.0", *p)).is_ok())
        .expect("a free port in the daemon's range");
    let long = "x".repeat(400);
    let mut holder = Command::new(bin_dir().join("aima-stub-engine"))
        .args(["--port", &port.to_string(), "--host", "0.0.0.0"])
        .args(["--note", "first line\nsecond line", &long])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn the holder");
    poll(Duration::from_secs(10), "the holder to bind", || {
        std::net::TcpListener::bind(("0.0.0.0", port))
            .is_err()
            .then_some(())
    });
    let response = client()
        .post(d.url("/api/v1/services"))
        .json(&json!({"model_id": model["id"], "engine_type": "vllm", "port": port}))
        .send()
        .await
        .expect("post");
    let status = response.status();
    let body: Value = response.json().await.expect("json");
    let _ = holder.kill();
    let _ = holder.wait();
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    let text = message(&body);
    assert!(
        !text.contains('\n') && text.contains("first line\\nsecond line"),
        "{text}"
    );
    assert!(text.contains('…') && text.chars().count() < 300, "{text}");
}

#[test]
fn the_systemd_unit_is_hardened() {
    let unit = Path::new(env!("CARGO_MANIFEST_DIR")).join("../dist/systemd/aima.service");
    let Ok(out) = Command::new("systemd-analyze")
        .args(["security", "--offline=true"])
        .arg(&unit)
        .output()
    else {
        eprintln!("SKIPPED the_systemd_unit_is_hardened: systemd-analyze is not installed");
        return;
    };
    let text = String::from_utf8_lossy(&out.stdout);
    let exposure: f64 = text
        .lines()
        .find_map(|l| l.split("Overall exposure level for aima.service: ").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| {
            panic!(
                "no rating in: {text}{}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
    assert!(exposure <= 2.0, "exposure {exposure}:\n{text}");
}

/// A small tmpfs mounted over `dir` for one test; unmounted when dropped.
struct SmallDisk(std::path::PathBuf);

impl SmallDisk {
    /// `None`, with the reason, where this process may not mount (not root, no privilege).
    fn mount(dir: &Path, size: &str) -> Result<Self, String> {
        if !nix::unistd::Uid::effective().is_root() {
            return Err("mounting a small tmpfs needs root".into());
        }
        let out = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(dir)
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "mount -t tmpfs failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(Self(dir.to_owned()))
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        // Lazy: the daemon may still hold files there while it goes.
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Fills the file system under `file` until it refuses more.
fn fill(file: &Path) {
    use std::io::Write;
    let mut out = std::fs::File::create(file).expect("create the filler");
    let block = vec![0u8; 64 * 1024];
    while out.write_all(&block).and_then(|()| out.sync_data()).is_ok() {}
}

async fn health(url: &str) -> (StatusCode, Value) {
    let res = client().get(url).send().await.expect("health");
    let status = res.status();
    (status, res.json().await.expect("json health"))
}

/// Asks `/api/v1/health` until it answers `want`, for at most 15 s.
async fn health_until(url: &str, want: StatusCode) -> Value {
    let until = Instant::now() + Duration::from_secs(15);
    loop {
        let (status, body) = health(url).await;
        if status == want {
            return body;
        }
        assert!(
            Instant::now() < until,
            "health stayed {status} {body}, not {want}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_is_degraded_while_the_database_cannot_be_written() {
    let home = tempfile::tempdir().expect("home");
    let data = home.path().join("data");
    std::fs::create_dir_all(&data).expect("data dir");
    let _disk = match SmallDisk::mount(&data, "4m") {
        Ok(disk) => disk,
        Err(reason) => {
            eprintln!("skipped: {reason}; a full disk cannot be made here");
            return;
        }
    };
    let d = DaemonProcess::start(home.path(), &[]);
    let url = d.url("/api/v1/health");
    let body = health_until(&url, StatusCode::OK).await;
    assert_eq!(body["status"], "ok", "{body}");
    assert!(body.get("reason").is_none(), "{body}");

    // A full disk: every write fails, and health says so, with the database and the cause.
    let filler = data.join("filler");
    fill(&filler);
    let body = health_until(&url, StatusCode::SERVICE_UNAVAILABLE).await;
    assert_eq!(body["status"], "degraded", "{body}");
    let db = data.join("aima.db");
    let reason = body["reason"].as_str().expect("reason");
    assert!(
        reason.starts_with(&format!(
            "database {} is not writable: the disk is full (sqlite: ",
            db.display()
        )) && reason.contains("free disk space"),
        "{reason}"
    );
    assert_eq!(body["version"], aima::VERSION);
    // `aima version` still finds the daemon, and says what is wrong with it.
    let (code, stdout, stderr) = run(cli_for(d.addr, home.path()).arg("version"));
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.contains(&format!("\ndaemon: aima {}", aima::VERSION))
            && stdout.contains("; degraded: database "),
        "{stdout}"
    );
    // A write the API refuses says the same, as a 503 to retry.
    let (status, error) = post_model(
        d.url("/api/v1/models"),
        json!({"name": "m", "source": "ollama", "repo": "r"}),
    )
    .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{error}");
    let message = error["error"]["message"].as_str().expect("message");
    assert!(
        message.contains("is not writable: the disk is full"),
        "{message}"
    );

    // Room again: health recovers by itself.
    std::fs::remove_file(&filler).expect("remove the filler");
    let body = health_until(&url, StatusCode::OK).await;
    assert_eq!(body["status"], "ok", "{body}");
    let log = d.stderr().join("\n");
    assert!(
        log.contains("degraded: database") && log.contains("takes writes again"),
        "{log}"
    );
}
