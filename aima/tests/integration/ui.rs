//! The dashboard in a real headless Chromium (Debian's `chromium` and `chromedriver`,
//! driven over WebDriver by fantoccini): it loads with no console error, follows the daemon
//! live (a start from the CLI shows without a reload), its buttons stop and delete for
//! real (checked with the docker CLI), a failed start shows its reason, and the GPU bars
//! add up on simulated GPUs. Screenshots go to `target/tmp/ui/`; with
//! `AIMA_UPDATE_SCREENSHOT=1` the overview also replaces `docs/dashboard.png`, the
//! README's picture.
//!
//! `.ci/run` installs the browser with apt and sets `AIMA_REQUIRE_TOOLS=1`, so in CI a
//! missing browser fails these tests; elsewhere they are skipped with the reason.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};

use crate::support::{TestDaemon, run, run_json};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// The system browser, or `None` (after saying why) when the test may be skipped.
fn browser_installed() -> bool {
    let found = Path::new(CHROMIUM).is_file() && Path::new(CHROMEDRIVER).is_file();
    if !found {
        let why =
            "chromium and chromedriver are not installed; apt-get install chromium chromium-driver";
        assert!(
            std::env::var_os("AIMA_REQUIRE_TOOLS").is_none(),
            "AIMA_REQUIRE_TOOLS is set and {why}"
        );
        eprintln!("SKIPPED: {why}");
    }
    found
}

/// chromedriver on a free port, killed when dropped.
struct Driver {
    child: Child,
    port: u16,
}

impl Driver {
    fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let child = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        Self { child, port }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn browser(driver: &Driver) -> Client {
    let mut capabilities = serde_json::Map::new();
    capabilities.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": CHROMIUM,
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--window-size=1400,1000", "--force-prefers-reduced-motion"],
        }),
    );
    capabilities.insert("goog:loggingPrefs".into(), json!({"browser": "ALL"}));
    let url = format!("http://127.0.0.1:{}", driver.port);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        match ClientBuilder::new(connector)
            .capabilities(capabilities.clone())
            .connect(&url)
            .await
        {
            Ok(client) => return client,
            Err(e) if Instant::now() < deadline => {
                eprintln!("chromedriver not ready yet: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("cannot open a browser session: {e}"),
        }
    }
}

/// Chromium's console, through chromedriver's log endpoint.
#[derive(Debug)]
struct BrowserLog;

impl fantoccini::wd::WebDriverCompatibleCommand for BrowserLog {
    fn endpoint(
        &self,
        base_url: &url::Url,
        session_id: Option<&str>,
    ) -> Result<url::Url, url::ParseError> {
        base_url.join(&format!(
            "session/{}/se/log",
            session_id.unwrap_or_default()
        ))
    }

    fn method_and_body(&self, _: &url::Url) -> (axum::http::Method, Option<String>) {
        (
            axum::http::Method::POST,
            Some(r#"{"type":"browser"}"#.to_owned()),
        )
    }
}

/// Console messages at error level since the last call.
async fn console_errors(client: &Client) -> Vec<String> {
    let entries = client.issue_cmd(BrowserLog).await.expect("browser log");
    entries
        .as_array()
        .map(|entries| {
            entries
                .iter()
                .filter(|e| e["level"] == "SEVERE")
                .map(|e| e["message"].as_str().unwrap_or_default().to_owned())
                .collect()
        })
        .unwrap_or_default()
}

fn shots_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("ui");
    std::fs::create_dir_all(&dir).expect("screenshot dir");
    dir
}

async fn screenshot(client: &Client, name: &str) -> PathBuf {
    let png = client.screenshot().await.expect("screenshot");
    let path = shots_dir().join(format!("{name}.png"));
    std::fs::write(&path, &png).expect("write screenshot");
    path
}

/// Polls the page until `script` returns a truthy value, or fails after `deadline`.
async fn until(client: &Client, deadline: Duration, what: &str, script: &str) -> Value {
    let until = Instant::now() + deadline;
    let mut last = Value::Null;
    while Instant::now() < until {
        last = client.execute(script, vec![]).await.expect("script");
        if !last.is_null() && last != Value::Bool(false) {
            return last;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("the page did not show {what} within {deadline:?}; last: {last}");
}

/// A script that is true once the overview shows service `id` as `status`.
fn status_is(id: &str, status: &str) -> String {
    format!(
        "const c = document.querySelector('tr[data-service=\"{id}\"] .status'); return !!c && c.textContent === '{status}';"
    )
}

async fn api_status(d: &TestDaemon, id: &str) -> Value {
    reqwest::get(d.url(&format!("/api/v1/services/{id}")))
        .await
        .expect("GET")
        .json()
        .await
        .expect("json")
}

fn containers_of(id: &str) -> Vec<String> {
    let out = Command::new("docker")
        .args(["ps", "-aq", "--filter", &format!("label=aima.service={id}")])
        .output()
        .expect("docker ps");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_follows_the_daemon_live_in_a_real_browser() {
    if !browser_installed() {
        return;
    }
    let d = tokio::task::spawn_blocking(|| {
        TestDaemon::with_engine_and(|s| s.simulate_gpus = Some(vec![("A100".into(), 40960)]))
    })
    .await
    .expect("daemon");
    let (alpha, broken) = tokio::task::block_in_place(|| {
        run_json(d.cli().args([
            "model",
            "create",
            "--name",
            "tiny",
            "--source",
            "huggingface",
            "--repo",
            "TinyLlama/TinyLlama-1.1B-Chat-v1.0",
            "--size",
            "2GiB",
        ]));
        let create = |name: &str, extra: &[&str]| {
            run_json(
                d.cli()
                    .args([
                        "service",
                        "create",
                        "--model-id",
                        "tiny",
                        "--engine-type",
                        "vllm",
                        "--name",
                        name,
                    ])
                    .args(extra),
            )["id"]
                .as_str()
                .expect("id")
                .to_owned()
        };
        (
            create("alpha", &["--gpu-memory-utilization", "0.3"]),
            create(
                "broken",
                &[
                    "--env",
                    "STUB_FAIL=oom",
                    "--restart",
                    "no",
                    "--gpu-memory-utilization",
                    "0.2",
                ],
            ),
        )
    });
    let driver = Driver::start();
    let client = browser(&driver).await;
    client.goto(&d.url("/")).await.expect("open the dashboard");
    until(
        &client,
        Duration::from_secs(10),
        "both services",
        &format!(
            "return document.querySelectorAll('#services tbody tr').length === 2 && (() => {{ {} }})();",
            status_is(&alpha, "creating")
        ),
    )
    .await;

    // A start from the CLI turns the row running without a reload, within a second of
    // the API saying so.
    tokio::task::block_in_place(|| {
        let (code, _, stderr) = run(d.cli().args(["service", "start", &alpha]));
        assert_eq!(code, 0, "{stderr}");
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    while api_status(&d, &alpha).await["status"] != "running" {
        assert!(Instant::now() < deadline, "alpha never ran");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    until(
        &client,
        Duration::from_secs(1),
        "alpha running",
        &status_is(&alpha, "running"),
    )
    .await;

    // The GPU bar: alpha's claim, other use and free memory add up to the GPU's total.
    let bar = until(&client, Duration::from_secs(5), "alpha's claim on the bar", &format!(
        "const g = document.querySelector('.gpu[data-gpu=\"0\"]');
         if (!g || !g.querySelector('.claim[data-service=\"{alpha}\"]')) return null;
         const parts = [...g.querySelectorAll('.bar > span')].map(s => Number(s.dataset.mib));
         return {{ total: Number(g.dataset.totalMib), parts,
                   alpha: Number(g.querySelector('.claim[data-service=\"{alpha}\"]').dataset.mib),
                   width: g.querySelector('.bar').getBoundingClientRect().width,
                   widths: [...g.querySelectorAll('.bar > span')].map(s => s.getBoundingClientRect().width) }};"
    ))
    .await;
    let total = bar["total"].as_f64().expect("total");
    let parts: f64 = bar["parts"]
        .as_array()
        .expect("parts")
        .iter()
        .filter_map(Value::as_f64)
        .sum();
    assert_eq!(total, 40960.0, "{bar}");
    assert_eq!(parts, total, "the segments add up to the GPU: {bar}");
    assert_eq!(bar["alpha"], json!(12288), "0.3 of 40960 MiB: {bar}");
    let drawn: f64 = bar["widths"]
        .as_array()
        .expect("widths")
        .iter()
        .filter_map(Value::as_f64)
        .sum();
    let width = bar["width"].as_f64().expect("width");
    assert!(
        (drawn - width).abs() <= 3.0,
        "segments fill the bar: {drawn} of {width}"
    );
    screenshot(&client, "overview").await;

    // A failed start shows its reason on the page.
    tokio::task::block_in_place(|| {
        run(d.cli().args(["service", "start", &broken]));
    });
    let reason = until(
        &client,
        Duration::from_secs(30),
        "broken's failure and reason",
        &format!(
            "const r = document.querySelector('tr[data-service=\"{broken}\"] .reason');
         const s = document.querySelector('tr[data-service=\"{broken}\"] .status');
         return s && s.textContent === 'failed' && r ? r.textContent : null;"
        ),
    )
    .await;
    assert!(
        reason
            .as_str()
            .is_some_and(|r| r.contains("out of GPU memory")),
        "{reason}"
    );
    screenshot(&client, "failed").await;
    if std::env::var_os("AIMA_UPDATE_SCREENSHOT").is_some() {
        let png = client.screenshot().await.expect("screenshot");
        let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/dashboard.png");
        std::fs::write(&docs, png).expect("write docs/dashboard.png");
    }

    // The gateway page: the chat box streams an answer from alpha, and the request shows
    // in the activity list with its status and tokens.
    client
        .goto(&d.url("/#/gateway"))
        .await
        .expect("gateway page");
    until(
        &client,
        Duration::from_secs(5),
        "the chat model choice",
        "return document.querySelector('#chat-model').value === 'tiny';",
    )
    .await;
    client
        .find(Locator::Id("chat-input"))
        .await
        .expect("input")
        .send_keys("hello")
        .await
        .expect("type");
    client
        .find(Locator::Css("#chat button"))
        .await
        .expect("send")
        .click()
        .await
        .expect("send");
    let answer = until(&client, Duration::from_secs(10), "the streamed answer", "const t = document.querySelector('#chat-answer').textContent; return t.includes('Hello from the aima stub engine') ? t : null;").await;
    assert!(
        answer.as_str().is_some_and(|a| a.contains("serving tiny.")),
        "{answer}"
    );
    let row = until(&client, Duration::from_secs(5), "the request in the activity list", "const r = document.querySelector('#requests tbody tr'); return r ? [...r.children].map(c => c.textContent) : null;").await;
    assert_eq!(row[1], "tiny", "{row}");
    assert_eq!(row[2], "alpha", "{row}");
    assert_eq!(row[3], "200", "{row}");
    assert!(
        row[6].as_str().is_some_and(|t| t.contains(" + ")),
        "tokens as the engine reported them: {row}"
    );
    screenshot(&client, "gateway").await;
    client
        .goto(&d.url("/"))
        .await
        .expect("back to the overview");

    // The service page: live logs and events; its Stop button stops the engine for real.
    client
        .wait()
        .at_most(Duration::from_secs(10))
        .for_element(Locator::Css(&format!("tr[data-service=\"{alpha}\"] a")))
        .await
        .expect("alpha's link")
        .click()
        .await
        .expect("open alpha");
    until(
        &client,
        Duration::from_secs(10),
        "alpha's logs",
        "return document.querySelector('#logs').textContent.includes('Uvicorn running');",
    )
    .await;
    until(
        &client,
        Duration::from_secs(5),
        "alpha's events",
        "return document.querySelectorAll('#events li').length > 3;",
    )
    .await;
    screenshot(&client, "service").await;
    client
        .find(Locator::Id("stop"))
        .await
        .expect("stop")
        .click()
        .await
        .expect("click stop");
    until(
        &client,
        Duration::from_secs(20),
        "alpha stopped",
        "return document.querySelector('#service-status').textContent === 'stopped';",
    )
    .await;
    assert_eq!(api_status(&d, &alpha).await["status"], "stopped");
    assert!(
        containers_of(&alpha).is_empty(),
        "alpha's container is gone"
    );

    // Start from the page: its phases light up in order as the CLI prints them.
    client
        .find(Locator::Id("start"))
        .await
        .expect("start")
        .click()
        .await
        .expect("click start");
    let phases = until(
        &client,
        Duration::from_secs(30),
        "every phase done and alpha running",
        "const done = [...document.querySelectorAll('#phases li.done')].map(l => l.dataset.phase);
         return document.querySelector('#service-status').textContent === 'running' && done.length === 8 ? done : null;",
    )
    .await;
    assert_eq!(
        phases,
        json!([
            "validate",
            "gpu",
            "cleanup",
            "port_check",
            "image",
            "create",
            "start",
            "health"
        ])
    );
    assert_eq!(containers_of(&alpha).len(), 1);

    // Delete asks first; once confirmed the service is gone from the daemon and the page,
    // its running engine with it.
    client
        .find(Locator::Id("delete"))
        .await
        .expect("delete")
        .click()
        .await
        .expect("click delete");
    let question = client.get_alert_text().await.expect("a confirmation");
    assert!(question.contains("Delete service alpha?"), "{question}");
    client.accept_alert().await.expect("confirm");
    until(&client, Duration::from_secs(10), "alpha gone from the overview", &format!(
        "return location.hash === '#/' && !document.querySelector('tr[data-service=\"{alpha}\"]') && !document.querySelector('#overview-page').hidden;"
    ))
    .await;
    let gone = reqwest::get(d.url(&format!("/api/v1/services/{alpha}")))
        .await
        .expect("GET");
    assert_eq!(gone.status(), 404);
    assert!(
        containers_of(&alpha).is_empty(),
        "alpha's container went with it"
    );

    // The models page shows each model's size and what it needs on the GPU (2 GiB of
    // weights + vLLM's 2 GiB overhead; no KV cache without a known shape).
    client.goto(&d.url("/#/models")).await.expect("models page");
    let cells = until(
        &client,
        Duration::from_secs(10),
        "the model's size and estimate",
        "const row = document.querySelector('#models tbody tr'); return row ? [row.cells[3].textContent, row.cells[4].textContent] : null;",
    )
    .await;
    assert_eq!(cells, json!(["2.00 GiB", "4.00 GiB on vllm"]));
    // The models page creates a service for a model and opens its page.
    client
        .wait()
        .at_most(Duration::from_secs(10))
        .for_element(Locator::Css("#models tbody tr button"))
        .await
        .expect("the model's create button")
        .click()
        .await
        .expect("create");
    let created = until(
        &client,
        Duration::from_secs(10),
        "the new service's page",
        "return location.hash.startsWith('#/services/svc-vllm-') && document.querySelector('#service-status').textContent === 'creating' ? decodeURIComponent(location.hash.slice(11)) : null;",
    )
    .await;
    let created = created.as_str().expect("id");
    assert_eq!(api_status(&d, created).await["engine"], "vllm");

    let errors = console_errors(&client).await;
    assert!(errors.is_empty(), "console errors: {errors:?}");
    client.close().await.expect("close the browser");
    crate::support::remove_containers_with_label(&d.instance_label());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_an_api_token_the_page_asks_for_it_and_then_shows_the_services() {
    const TOKEN: &str = "page-secret-0123456789";
    if !browser_installed() {
        return;
    }
    let d = tokio::task::spawn_blocking(|| {
        TestDaemon::with_engine_and(|s| {
            s.api_token = aima::config::ApiToken::parse(TOKEN);
        })
    })
    .await
    .expect("daemon");
    let client_http = reqwest::Client::new();
    let created = client_http
        .post(d.url("/api/v1/models"))
        .bearer_auth(TOKEN)
        .json(&json!({"name": "tiny", "source": "ollama", "repo": "tinyllama"}))
        .send()
        .await
        .expect("model");
    assert_eq!(created.status(), 201);
    client_http
        .post(d.url("/api/v1/services"))
        .bearer_auth(TOKEN)
        .json(&json!({"model_id": "tiny", "engine_type": "vllm", "name": "guarded"}))
        .send()
        .await
        .expect("service");
    // The API itself still wants the token.
    let refused = reqwest::get(d.url("/api/v1/services")).await.expect("GET");
    assert_eq!(refused.status(), 401);

    let driver = Driver::start();
    let client = browser(&driver).await;
    client
        .goto(&d.url("/ui/"))
        .await
        .expect("open the dashboard");
    until(
        &client,
        Duration::from_secs(10),
        "the token form",
        "return !document.querySelector('#token-form').hidden;",
    )
    .await;
    assert_eq!(
        client
            .execute(
                "return document.querySelectorAll('#services tbody tr').length;",
                vec![]
            )
            .await
            .expect("rows"),
        json!(0),
        "nothing shows without the token"
    );
    client
        .find(Locator::Id("token"))
        .await
        .expect("field")
        .send_keys(TOKEN)
        .await
        .expect("type");
    client
        .find(Locator::Css("#token-form button"))
        .await
        .expect("button")
        .click()
        .await
        .expect("submit");
    until(&client, Duration::from_secs(10), "the guarded service", "const r = document.querySelector('#services tbody tr a'); return !!r && r.textContent === 'guarded';").await;
    screenshot(&client, "token").await;
    // The 401s before the token was given are the only console errors.
    let errors: Vec<String> = console_errors(&client)
        .await
        .into_iter()
        .filter(|e| !e.contains("401"))
        .collect();
    assert!(errors.is_empty(), "console errors: {errors:?}");
    client.close().await.expect("close the browser");
}
