//! The dashboard in a real headless Chromium (Debian's `chromium` and `chromedriver`,
//! driven over WebDriver by fantoccini): it loads with no console error, follows the daemon
//! live (a start from the CLI shows without a reload), its buttons start, stop, restart
//! and delete for real (checked with the docker CLI), its settings form changes a
//! service and shows the API's refusals, its models page creates, pulls and deletes
//! models, a failed start shows its reason in one line with the rest behind "details",
//! every time is on the 24-hour clock, the engine's port is a link only where it works,
//! the charts draw the gateway's requests and the memory claimed, and the GPU bars add up
//! on simulated GPUs. Screenshots go to `target/tmp/ui/`; with `AIMA_UPDATE_SCREENSHOT=1`
//! the overview also replaces `docs/dashboard.png` (the README's picture) and a service's
//! page `docs/dashboard-service.png`.
//!
//! `.ci/run` installs the browser with apt and sets `AIMA_REQUIRE_TOOLS=1`, so in CI a
//! missing browser fails these tests; elsewhere they are skipped with the reason.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};

use crate::support::{TestDaemon, run, run_json};

/// A host name the browser resolves to 127.0.0.1 (`--host-resolver-rules`): a page opened
/// there runs on a host that is not loopback, as it would on another machine.
const ELSEWHERE: &str = "aima.test";

/// One browser test at a time: each runs a daemon, engines and a Chromium, and the live
/// checks have deadlines of a second or two.
async fn one_browser() -> tokio::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::OnceLock<tokio::sync::Mutex<()>> = std::sync::OnceLock::new();
    LOCK.get_or_init(|| tokio::sync::Mutex::new(()))
        .lock()
        .await
}

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
            // en-US: the locale whose default clock is 12-hour, so an AM or PM would show.
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--window-size=1400,1000", "--force-prefers-reduced-motion", "--lang=en-US",
                     format!("--host-resolver-rules=MAP {ELSEWHERE} 127.0.0.1"),
                     "--disable-features=HttpsUpgrades"],
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

/// Clicks the element `css` selects; again if the page redrew it in between (the rows
/// are redrawn every 2 s).
async fn click(client: &Client, css: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let clicked = match client.find(Locator::Css(css)).await {
            Ok(element) => element.click().await.map(|_| ()),
            Err(e) => Err(e),
        };
        match clicked {
            Ok(()) => return,
            Err(e) if Instant::now() < deadline && e.to_string().contains("stale") => {}
            Err(e) => panic!("click {css}: {e}"),
        }
    }
}

/// Types `text` into the field with id `id`, replacing what it held.
async fn fill(client: &Client, id: &str, text: &str) {
    let field = client
        .find(Locator::Id(id))
        .await
        .unwrap_or_else(|e| panic!("#{id}: {e}"));
    field.clear().await.expect("clear");
    field.send_keys(text).await.expect("type");
}

/// Accepts the page's `confirm`, after checking its question.
async fn confirm(client: &Client, question: &str) {
    let asked = client.get_alert_text().await.expect("a confirmation");
    assert!(asked.contains(question), "{asked}");
    client.accept_alert().await.expect("confirm");
}

/// Fails when the page shows a 12-hour time; `page` names it in the message.
async fn no_twelve_hour_times(client: &Client, page: &str) {
    let text = client
        .execute(
            "const t = document.body.innerText; return /\\b(AM|PM)\\b/.test(t) ? t : null;",
            vec![],
        )
        .await
        .expect("script");
    assert_eq!(text, Value::Null, "a 12-hour time on the {page} page");
}

/// The script's result is `HH:MM:SS` on the 24-hour clock.
fn assert_clock(time: &Value, what: &str) {
    let text = time.as_str().unwrap_or_default();
    let digits: Vec<&str> = text.split(':').collect();
    assert!(
        digits.len() == 3
            && digits
                .iter()
                .all(|d| d.len() == 2 && d.bytes().all(|b| b.is_ascii_digit()))
            && digits[0] < "24",
        "{what}: {time}"
    );
}

/// Console errors, less those of responses the test provoked (`status of 409`).
async fn unexpected_console_errors(client: &Client, expected: &[u16]) -> Vec<String> {
    console_errors(client)
        .await
        .into_iter()
        .filter(|e| {
            !expected
                .iter()
                .any(|code| e.contains(&format!("status of {code}")))
        })
        .collect()
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
    let _one = one_browser().await;
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

    // The port of a running engine links to what the engine answers, since this page is
    // on the host the port is published on (127.0.0.1); broken's engine does not run, so
    // its port is plain text.
    let port = api_status(&d, &alpha).await["port"].as_u64().expect("port");
    let link = until(
        &client,
        Duration::from_secs(5),
        "alpha's engine link",
        &format!(
            "const a = document.querySelector('tr[data-service=\"{alpha}\"] a.engine-link');
             const b = document.querySelector('tr[data-service=\"{broken}\"] .port-cell');
             return a && b ? {{ href: a.href, broken: b.querySelector('a') === null, text: b.textContent }} : null;"
        ),
    )
    .await;
    let href = format!("http://127.0.0.1:{port}/v1/models");
    assert_eq!(link["href"], json!(href), "{link}");
    assert_eq!(link["broken"], json!(true), "{link}");
    let answer = reqwest::get(&href).await.expect("the engine link");
    assert_eq!(answer.status(), 200, "the link works");

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

    // A request through the gateway draws a bar on the requests chart, without a reload
    // and well before the charts' own 15 s refresh.
    let chat = reqwest::Client::new()
        .post(d.url("/v1/chat/completions"))
        .json(&json!({"model": "tiny", "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .expect("chat");
    assert_eq!(chat.status(), 200);
    let bars = until(
        &client,
        Duration::from_secs(8),
        "a bar on the requests chart",
        "const bars = [...document.querySelectorAll('#chart-requests svg g.minute')]
             .filter(g => Number(g.dataset.requests) > 0 && g.querySelector('rect.bar-ok')?.getBBox().height > 0);
         return bars.length ? { requests: bars.map(g => Number(g.dataset.requests)),
             caption: document.querySelector('#chart-requests figcaption').textContent,
             label: document.querySelector('#chart-requests svg').getAttribute('aria-label') } : null;",
    )
    .await;
    assert_eq!(bars["requests"], json!([1]), "{bars}");
    assert!(
        bars["caption"]
            .as_str()
            .is_some_and(|c| c.contains("1 in the hour")),
        "{bars}"
    );
    assert!(
        bars["label"]
            .as_str()
            .is_some_and(|l| l.starts_with("Gateway requests per minute") && l.contains("1 in all")),
        "the chart's accessible name says what it shows: {bars}"
    );
    screenshot(&client, "overview").await;

    // A failed start (from the row's Start button) shows its reason in one line, the whole
    // text behind "details".
    click(
        &client,
        &format!("tr[data-service=\"{broken}\"] button[data-action=\"start\"]"),
    )
    .await;
    let reason = until(
        &client,
        Duration::from_secs(30),
        "broken's failure and reason",
        &format!(
            "const row = document.querySelector('tr[data-service=\"{broken}\"]');
             const r = row.querySelector('.reason'), s = row.querySelector('.status');
             const d = row.querySelector('details.reason-details'), f = row.querySelector('.reason-full');
             return s.textContent === 'failed' && r && d && f ? {{ line: r.textContent, full: f.textContent,
                 open: d.open, shown: f.checkVisibility(),
                 height: r.getBoundingClientRect().height, lineHeight: parseFloat(getComputedStyle(r).lineHeight) }} : null;"
        ),
    )
    .await;
    let line = reason["line"].as_str().expect("line");
    let full = api_status(&d, &broken).await["status_reason"]
        .as_str()
        .expect("a reason")
        .to_owned();
    assert!(
        line.contains("out of GPU memory") && line.ends_with('…'),
        "{reason}"
    );
    assert!(line.chars().count() < full.chars().count(), "{reason}");
    assert_eq!(reason["full"], json!(full), "the whole reason: {reason}");
    assert_eq!(reason["open"], json!(false), "{reason}");
    assert_eq!(
        reason["shown"],
        json!(false),
        "hidden until asked: {reason}"
    );
    let (height, line_height) = (
        reason["height"].as_f64().expect("height"),
        reason["lineHeight"].as_f64().expect("line height"),
    );
    assert!(height < 1.5 * line_height, "one line: {reason}");
    screenshot(&client, "failed").await;
    click(
        &client,
        &format!("tr[data-service=\"{broken}\"] details.reason-details summary"),
    )
    .await;
    // It stays open when the row is drawn again (every 2 s).
    client
        .execute(
            &format!(
                "document.querySelector('tr[data-service=\"{broken}\"]').dataset.old = 'yes';"
            ),
            vec![],
        )
        .await
        .expect("mark the row");
    until(
        &client,
        Duration::from_secs(10),
        "the full reason, open after a redraw",
        &format!(
            "const row = document.querySelector('tr[data-service=\"{broken}\"]');
             return !row.dataset.old && row.querySelector('details.reason-details').open
                 && row.querySelector('.reason-full').checkVisibility();"
        ),
    )
    .await;

    // Times are on the 24-hour clock, with the date when not today.
    no_twelve_hour_times(&client, "overview").await;
    let last = client
        .execute(
            &format!(
                "return document.querySelector('tr[data-service=\"{alpha}\"] .last-request').textContent;"
            ),
            vec![],
        )
        .await
        .expect("last request");
    assert_clock(&last, "alpha's last request");
    let clocks = client
        .execute(
            "const afternoon = new Date(); afternoon.setHours(15, 4, 5);
             return [clock(afternoon.toISOString()), clock('2020-01-02T12:04:05Z')];",
            vec![],
        )
        .await
        .expect("clock");
    assert_eq!(clocks[0], "15:04:05", "{clocks}");
    let old = clocks[1].as_str().expect("old");
    assert!(
        old.starts_with("2020-01-0") && old.ends_with(":04:05") && !old.contains('M'),
        "an older time has its date: {clocks}"
    );

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
    let row = until(&client, Duration::from_secs(5), "the streamed request in the activity list", "const r = document.querySelector('#requests tbody tr'); return r && document.querySelectorAll('#requests tbody tr').length === 2 ? [...r.children].map(c => c.textContent) : null;").await;
    assert_clock(&row[0], "the request's time");
    assert_eq!(row[1], "tiny", "{row}");
    assert_eq!(row[2], "alpha", "{row}");
    assert_eq!(row[3], "200", "{row}");
    assert!(
        row[6].as_str().is_some_and(|t| t.contains(" + ")),
        "tokens as the engine reported them: {row}"
    );
    no_twelve_hour_times(&client, "gateway").await;
    screenshot(&client, "gateway").await;
    client
        .goto(&d.url("/"))
        .await
        .expect("back to the overview");
    // Both requests on the chart, and how fast their tokens came.
    let tokens = until(
        &client,
        Duration::from_secs(10),
        "two requests and tokens per second on the charts",
        "const n = [...document.querySelectorAll('#chart-requests g.minute')].reduce((n, g) => n + Number(g.dataset.requests), 0);
         const dots = [...document.querySelectorAll('#chart-tokens .series circle')].map(c => Number(c.dataset.value));
         return n === 2 && dots.length ? { dots, caption: document.querySelector('#chart-tokens figcaption').textContent } : null;",
    )
    .await;
    assert!(
        tokens["dots"]
            .as_array()
            .is_some_and(|d| d.iter().all(|v| v.as_f64().is_some_and(|v| v > 0.0))),
        "{tokens}"
    );
    assert!(
        tokens["caption"]
            .as_str()
            .is_some_and(|c| c.contains("tokens/s")),
        "{tokens}"
    );

    // The memory chart: alpha's claim on GPU 0 (memory is sampled every 10 s).
    let memory = until(
        &client,
        Duration::from_secs(40),
        "GPU 0's claim on the memory chart",
        "const dots = [...document.querySelectorAll('#chart-memory .series.gpu0 circle')].map(c => Number(c.dataset.value));
         return dots.some(v => v >= 12288) ? { dots, key: document.querySelector('#chart-memory .key')?.textContent } : null;",
    )
    .await;
    assert!(
        memory["key"]
            .as_str()
            .is_some_and(|k| k.starts_with("GPU 0 ")),
        "{memory}"
    );
    screenshot(&client, "charts").await;
    if std::env::var_os("AIMA_UPDATE_SCREENSHOT").is_some() {
        let png = client.screenshot().await.expect("screenshot");
        let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/dashboard.png");
        std::fs::write(&docs, png).expect("write docs/dashboard.png");
    }

    // The service page: live logs and events.
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
    let first = until(
        &client,
        Duration::from_secs(5),
        "alpha's events",
        "const times = document.querySelectorAll('#events li time'); return times.length > 3 ? times[0].textContent.trim() : null;",
    )
    .await;
    assert_clock(&first, "an event's time");
    no_twelve_hour_times(&client, "service").await;

    // The settings form: a change is saved (the API has it), and what waits for the next
    // start says so.
    assert_eq!(
        client
            .execute(
                "return document.querySelector('#set-port').disabled;",
                vec![]
            )
            .await
            .expect("port"),
        json!(true),
        "the port of a running engine cannot change"
    );
    fill(&client, "set-idle", "7m").await;
    fill(&client, "set-gpu-share", "0.25").await;
    click(&client, "#settings-form button[type=submit]").await;
    let saved = until(
        &client,
        Duration::from_secs(10),
        "the settings saved",
        "const m = document.querySelector('#settings-message');
         return m.classList.contains('good') ? { text: m.textContent, later: m.dataset.later } : null;",
    )
    .await;
    assert_eq!(saved["later"], "gpu_memory_utilization", "{saved}");
    assert!(
        saved["text"]
            .as_str()
            .is_some_and(|t| t.contains("idle_timeout") && t.contains("At the next start")),
        "{saved}"
    );
    let settings = api_status(&d, &alpha).await;
    assert_eq!(settings["idle_timeout"], "7m", "{settings}");
    assert_eq!(
        settings["gpu_memory_utilization"],
        json!(0.25),
        "{settings}"
    );
    until(
        &client,
        Duration::from_secs(5),
        "the new idle timeout among the settings",
        "const dt = [...document.querySelectorAll('#settings dt')].find(d => d.textContent === 'Idle timeout');
         return dt && dt.nextElementSibling.textContent === '7m' && document.querySelector('#set-idle').value === '7m';",
    )
    .await;
    if std::env::var_os("AIMA_UPDATE_SCREENSHOT").is_some() {
        // The whole page, actions to settings form, in one picture.
        client.set_window_size(1400, 1500).await.expect("resize");
        client
            .execute("window.scrollTo(0, 0);", vec![])
            .await
            .expect("scroll");
        let png = client.screenshot().await.expect("screenshot");
        let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/dashboard-service.png");
        std::fs::write(&docs, png).expect("write docs/dashboard-service.png");
        client.set_window_size(1400, 1000).await.expect("resize");
    }
    // A refusal shows beside the form in the API's words, and changes nothing.
    fill(&client, "set-concurrency", "0").await;
    click(&client, "#settings-form button[type=submit]").await;
    let refused = until(
        &client,
        Duration::from_secs(10),
        "the refusal",
        "const m = document.querySelector('#settings-message'); return m.classList.contains('bad') ? m.textContent : null;",
    )
    .await;
    assert!(
        refused
            .as_str()
            .is_some_and(|r| r.contains("max-concurrency 0 would never pass a request")),
        "{refused}"
    );
    assert_eq!(api_status(&d, &alpha).await["max_concurrency"], Value::Null);
    screenshot(&client, "service").await;

    // Restart: the engine stops and starts again in a fresh container, which takes the
    // new GPU share.
    let before = api_status(&d, &alpha).await["container_id"].clone();
    let runs = client
        .execute(
            "return document.querySelectorAll('#events li[data-status=\"running\"]').length;",
            vec![],
        )
        .await
        .expect("runs")
        .as_u64()
        .expect("count");
    click(&client, "#restart").await;
    let statuses = until(
        &client,
        Duration::from_secs(30),
        "alpha restarted",
        &format!(
            "const s = [...document.querySelectorAll('#events li[data-type=\"status\"]')].map(l => l.dataset.status);
             return document.querySelector('#service-status').textContent === 'running'
                 && s.filter(x => x === 'running').length === {} ? s : null;",
            runs + 1
        ),
    )
    .await;
    let statuses: Vec<&str> = statuses
        .as_array()
        .expect("statuses")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    let restart = &statuses[statuses
        .iter()
        .rposition(|s| *s == "stopped")
        .expect("a stop")..];
    assert_eq!(
        restart.first().zip(restart.last()),
        Some((&"stopped", &"running")),
        "{statuses:?}"
    );
    assert!(restart.contains(&"starting"), "{statuses:?}");
    let after = api_status(&d, &alpha).await;
    assert_eq!(after["status"], "running");
    assert_ne!(after["container_id"], before, "a fresh container");
    assert_eq!(containers_of(&alpha).len(), 1);
    let ps: Value = reqwest::get(d.url("/api/v1/ps"))
        .await
        .expect("ps")
        .json()
        .await
        .expect("json");
    let claim = ps["items"]
        .as_array()
        .and_then(|items| items.iter().find(|i| i["id"] == json!(alpha)))
        .map(|i| i["gpu_memory_mib"].clone());
    assert_eq!(claim, Some(json!(10240)), "0.25 of 40960 MiB: {ps}");

    // Its Stop button stops the engine for real.
    click(&client, "#stop").await;
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
    click(&client, "#start").await;
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
    click(&client, "#delete").await;
    confirm(&client, "Delete service alpha?").await;
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
        .for_element(Locator::Css("#models tbody tr button.create-service"))
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
    assert_eq!(
        client
            .execute(
                "return document.querySelector('#set-port').disabled;",
                vec![]
            )
            .await
            .expect("port"),
        json!(false),
        "a service that does not run can move to another port"
    );

    // The only console errors are the refusal the test asked for.
    let errors = unexpected_console_errors(&client, &[422]).await;
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
    let _one = one_browser().await;
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
    let guarded: Value = client_http
        .post(d.url("/api/v1/services"))
        .bearer_auth(TOKEN)
        .json(&json!({"model_id": "tiny", "engine_type": "vllm", "name": "guarded"}))
        .send()
        .await
        .expect("service")
        .json()
        .await
        .expect("json");
    let guarded = guarded["id"].as_str().expect("id").to_owned();
    // The API itself still wants the token.
    let refused = reqwest::get(d.url("/api/v1/services")).await.expect("GET");
    assert_eq!(refused.status(), 401);

    // With a token the daemon serves other host names, so the page is opened as from
    // another machine: a host name that is not loopback.
    let driver = Driver::start();
    let client = browser(&driver).await;
    client
        .goto(&format!("http://{ELSEWHERE}:{}/ui/", d.addr.port()))
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

    // Its engine runs, but on 127.0.0.1 (the default publish address), which a browser
    // elsewhere cannot reach: the port shows as plain text, not as a link.
    let started = client_http
        .post(d.url(&format!("/api/v1/services/{guarded}/start")))
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("start");
    assert_eq!(started.status(), 202);
    until(
        &client,
        Duration::from_secs(30),
        "guarded running",
        &status_is(&guarded, "running"),
    )
    .await;
    let port = client
        .execute(
            &format!(
                "const c = document.querySelector('tr[data-service=\"{guarded}\"] .port-cell');
                 return {{ host: location.hostname, links: c.querySelectorAll('a').length, text: c.textContent, why: c.title }};"
            ),
            vec![],
        )
        .await
        .expect("port cell");
    assert_eq!(port["host"], ELSEWHERE, "{port}");
    assert_eq!(
        port["links"],
        json!(0),
        "no link that would not work: {port}"
    );
    assert!(
        port["why"]
            .as_str()
            .is_some_and(|w| w.contains("published on 127.0.0.1")),
        "{port}"
    );
    // The decision on its own: where the port is published, and where the page is.
    let links = client
        .execute(
            "const s = { engine: 'vllm', port: 4321, status: 'running' };
             return [
               engineHref(s),
               engineHref(s, '127.0.0.1', '127.0.0.1'),
               engineHref(s, '127.0.0.1', 'localhost'),
               engineHref(s, '127.0.0.1', 'gpu-box'),
               engineHref(s, '0.0.0.0', 'gpu-box'),
               engineHref(s, '10.0.0.5', '10.0.0.5'),
               engineHref(s, '10.0.0.5', 'gpu-box'),
               engineHref(s, '::1', '[::1]'),
               engineHref({ ...s, engine: 'ollama' }, '0.0.0.0', 'gpu-box'),
               engineHref({ ...s, status: 'stopped' }, '0.0.0.0', 'gpu-box'),
             ];",
            vec![],
        )
        .await
        .expect("engineHref");
    assert_eq!(
        links,
        json!([
            null,
            "http://127.0.0.1:4321/v1/models",
            "http://127.0.0.1:4321/v1/models",
            null,
            "http://gpu-box:4321/v1/models",
            "http://10.0.0.5:4321/v1/models",
            null,
            "http://[::1]:4321/v1/models",
            "http://gpu-box:4321/api/tags",
            null
        ])
    );
    screenshot(&client, "token").await;
    // The 401s before the token was given are the only console errors.
    let errors: Vec<String> = console_errors(&client)
        .await
        .into_iter()
        .filter(|e| !e.contains("401"))
        .collect();
    assert!(errors.is_empty(), "console errors: {errors:?}");
    client.close().await.expect("close the browser");
    crate::support::remove_containers_with_label(&d.instance_label());
}

/// The files of `org/tiny` on a stand-in for the Hugging Face hub (its model info, file
/// tree with LFS SHA-256s, and `resolve`); any other repository is missing there.
fn tiny_hub() -> String {
    use axum::extract::Path as UrlPath;
    use axum::response::IntoResponse;
    use sha2::Digest;

    let data = vec![7u8; 4 << 20];
    let view =
        safetensors::tensor::TensorView::new(safetensors::Dtype::F16, vec![1024, 2048], &data)
            .expect("view");
    let weights = safetensors::tensor::serialize([("w", view)], None).expect("serialize");
    let config = br#"{"model_type": "llama", "num_hidden_layers": 1, "num_attention_heads": 1, "hidden_size": 2048, "max_position_embeddings": 128}"#.to_vec();
    let files: Arc<HashMap<String, Vec<u8>>> = Arc::new(HashMap::from([
        ("config.json".to_owned(), config),
        ("model.safetensors".to_owned(), weights),
    ]));
    let tree = {
        let files = Arc::clone(&files);
        move |UrlPath((org, name, _rev)): UrlPath<(String, String, String)>| async move {
            if (org.as_str(), name.as_str()) != ("org", "tiny") {
                return axum::http::StatusCode::NOT_FOUND.into_response();
            }
            let entries: Vec<Value> = files
                .iter()
                .map(|(path, bytes)| {
                    let sha: String = sha2::Sha256::digest(bytes)
                        .iter()
                        .map(|b| format!("{b:02x}"))
                        .collect();
                    json!({"type": "file", "oid": "x", "size": bytes.len(), "path": path,
                           "lfs": {"oid": sha, "size": bytes.len(), "pointerSize": 134}})
                })
                .collect();
            axum::Json(entries).into_response()
        }
    };
    let resolve =
        move |UrlPath((org, name, _rev, path)): UrlPath<(String, String, String, String)>| {
            let files = Arc::clone(&files);
            async move {
                match files.get(&path) {
                    Some(bytes) if (org.as_str(), name.as_str()) == ("org", "tiny") => {
                        bytes.clone().into_response()
                    }
                    _ => axum::http::StatusCode::NOT_FOUND.into_response(),
                }
            }
        };
    let info = |UrlPath((org, name)): UrlPath<(String, String)>| async move {
        if (org.as_str(), name.as_str()) == ("org", "tiny") {
            return axum::Json(json!({"id": "org/tiny", "sha": "0123abc"})).into_response();
        }
        (
            axum::http::StatusCode::NOT_FOUND,
            [("x-error-code", "RepoNotFound")],
            axum::Json(json!({"error": "Repository not found"})),
        )
            .into_response()
    };
    let app = axum::Router::new()
        .route("/api/models/{org}/{name}", axum::routing::get(info))
        .route(
            "/api/models/{org}/{name}/tree/{rev}",
            axum::routing::get(tree),
        )
        .route(
            "/{org}/{name}/resolve/{rev}/{*path}",
            axum::routing::get(resolve),
        );
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.set_nonblocking(true).expect("nonblocking");
    let addr = listener.local_addr().expect("addr");
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
            axum::serve(listener, app).await.expect("serve");
        });
    });
    format!("http://{addr}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_models_page_creates_pulls_and_deletes_models_in_a_real_browser() {
    if !browser_installed() {
        return;
    }
    let _one = one_browser().await;
    let hub = tiny_hub();
    let d = tokio::task::spawn_blocking(move || {
        TestDaemon::with_engine_and(move |s| s.hf_endpoint = hub)
    })
    .await
    .expect("daemon");
    let driver = Driver::start();
    let client = browser(&driver).await;
    client
        .goto(&d.url("/#/models"))
        .await
        .expect("open the models page");
    until(
        &client,
        Duration::from_secs(10),
        "the new model form",
        "return !document.querySelector('#models-page').hidden && document.querySelector('#live').textContent === 'live';",
    )
    .await;

    // A repository the hub does not have: the API's refusal shows beside the form.
    fill(&client, "model-name", "nope").await;
    fill(&client, "model-repo", "org/nope").await;
    click(&client, "#model-form button[type=submit]").await;
    let refused = until(
        &client,
        Duration::from_secs(10),
        "the refusal",
        "const m = document.querySelector('#model-form-message'); return m.classList.contains('bad') ? m.textContent : null;",
    )
    .await;
    assert!(
        refused
            .as_str()
            .is_some_and(|r| r.contains("has no model repository 'org/nope'")),
        "{refused}"
    );
    // A size that is not one is refused before asking.
    fill(&client, "model-size", "lots").await;
    click(&client, "#model-form button[type=submit]").await;
    until(
        &client,
        Duration::from_secs(5),
        "the size refused",
        "return document.querySelector('#model-form-message').textContent.startsWith(\"'lots' is not a size\");",
    )
    .await;

    // A local model takes a path instead of a repository.
    let source = client
        .find(Locator::Id("model-source"))
        .await
        .expect("source");
    source.select_by_value("local").await.expect("local");
    let fields = client
        .execute(
            "return [document.querySelector('#model-repo-field').hidden, document.querySelector('#model-path-field').hidden];",
            vec![],
        )
        .await
        .expect("fields");
    assert_eq!(fields, json!([true, false]));
    source
        .select_by_value("huggingface")
        .await
        .expect("huggingface");

    // Created, with its size converted to bytes and its context.
    fill(&client, "model-name", "tiny").await;
    fill(&client, "model-repo", "org/tiny").await;
    fill(&client, "model-size", "2GiB").await;
    fill(&client, "model-context", "4096").await;
    click(&client, "#model-form button[type=submit]").await;
    let row = until(
        &client,
        Duration::from_secs(10),
        "tiny's row",
        "const r = [...document.querySelectorAll('#models tbody tr')].find(r => r.cells[0].textContent === 'tiny');
         const m = document.querySelector('#model-form-message');
         return r && m.classList.contains('good') ? { id: r.dataset.model,
             cells: [...r.cells].slice(0, 4).map(c => c.textContent), message: m.textContent } : null;",
    )
    .await;
    assert_eq!(
        row["cells"],
        json!(["tiny", "huggingface", "org/tiny", "2.00 GiB"]),
        "{row}"
    );
    let id = row["id"].as_str().expect("id").to_owned();
    assert!(
        row["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("Created model tiny")),
        "{row}"
    );
    let model: Value = reqwest::get(d.url(&format!("/api/v1/models/{id}")))
        .await
        .expect("GET")
        .json()
        .await
        .expect("json");
    assert_eq!(model["size_bytes"], json!(2u64 << 30), "{model}");
    assert_eq!(model["context_length"], json!(4096), "{model}");

    // Pull: the files come down with a progress bar, and the result shows.
    click(
        &client,
        &format!("tr[data-model=\"{id}\"] button.pull-model"),
    )
    .await;
    let pulled = until(
        &client,
        Duration::from_secs(30),
        "the pull's result",
        &format!(
            "const p = document.querySelector('tr[data-model=\"{id}\"] .pull');
             return p && p.textContent.includes('pulled') ? {{ text: p.textContent,
                 value: p.querySelector('progress').value, max: p.querySelector('progress').max }} : null;"
        ),
    )
    .await;
    assert_eq!(pulled["value"], pulled["max"], "a full bar: {pulled}");
    screenshot(&client, "pulled").await;
    let text = pulled["text"].as_str().expect("text");
    let path = text.split(" to ").nth(1).expect("a path");
    assert!(
        Path::new(path).join("model.safetensors").is_file(),
        "the files are where it says: {pulled}"
    );

    // A model a service uses is not deleted: the API's 409 shows on the page.
    let service = crate::support::post_ok(
        &d,
        "/api/v1/services",
        json!({"model_id": id, "engine_type": "vllm", "name": "user"}),
    )
    .await;
    let service = service["id"].as_str().expect("service id").to_owned();
    until(
        &client,
        Duration::from_secs(10),
        "the service in tiny's row",
        &format!(
            "return document.querySelector('tr[data-model=\"{id}\"]').cells[5].textContent === 'user';"
        ),
    )
    .await;
    click(
        &client,
        &format!("tr[data-model=\"{id}\"] button.delete-model"),
    )
    .await;
    confirm(&client, "Delete model tiny?").await;
    let in_use = until(
        &client,
        Duration::from_secs(10),
        "the refusal",
        "const m = document.querySelector('#model-message'); return m.classList.contains('bad') ? m.textContent : null;",
    )
    .await;
    assert!(
        in_use
            .as_str()
            .is_some_and(|m| m.contains("is used by") && m.contains("delete that service first")),
        "{in_use}"
    );
    let kept = reqwest::get(d.url(&format!("/api/v1/models/{id}")))
        .await
        .expect("GET");
    assert_eq!(kept.status(), 200);

    // Once the service is gone, Delete removes the model from the daemon and the page.
    let deleted = reqwest::Client::new()
        .delete(d.url(&format!("/api/v1/services/{service}")))
        .send()
        .await
        .expect("delete the service");
    assert_eq!(deleted.status(), 200);
    click(
        &client,
        &format!("tr[data-model=\"{id}\"] button.delete-model"),
    )
    .await;
    confirm(&client, "Delete model tiny?").await;
    until(
        &client,
        Duration::from_secs(10),
        "tiny gone",
        &format!(
            "const m = document.querySelector('#model-message');
             return !document.querySelector('tr[data-model=\"{id}\"]') && m.classList.contains('good') && m.textContent === 'Deleted model tiny.';"
        ),
    )
    .await;
    let gone = reqwest::get(d.url(&format!("/api/v1/models/{id}")))
        .await
        .expect("GET");
    assert_eq!(gone.status(), 404);
    screenshot(&client, "models").await;

    // The only console errors are the refusals the test asked for.
    let errors = unexpected_console_errors(&client, &[409, 422]).await;
    assert!(errors.is_empty(), "console errors: {errors:?}");
    client.close().await.expect("close the browser");
}
