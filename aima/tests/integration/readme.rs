//! The README's tour, run as written: every `sh` line of its "A short tour" section, in
//! order, by bash, against a real daemon with the stub engine standing in for vLLM.
//!
//! Three setup lines are done by the test itself instead: `cargo install` (the binary
//! under test is first on PATH), `cargo run -p harness -- image build` (the test builds
//! the same image) and `… aima start &` (the test starts the daemon with that setting, on
//! a free port instead of 9090, which it passes as AIMA_ADDR and puts in place of
//! `127.0.0.1:9090` in the lines that name it). A line whose comment says "refused" must
//! fail; every other line must exit 0 and print no `{"error"` body.

use std::process::Command;

use crate::support::{
    DaemonProcess, bin_dir, containers_with_label, ensure_stub_image, port_range,
};

/// The lines the test does itself, exactly as the README writes them.
const SETUP: [&str; 3] = [
    "cargo install --path aima --locked",
    "cargo run -p harness -- image build        # builds aima-stub-engine:latest locally",
    "AIMA_ENGINE_IMAGE_VLLM=aima-stub-engine:latest aima start &   # the daemon, on 127.0.0.1:9090",
];

/// The `sh` lines of the tour section, with `\` continuations joined.
fn tour_lines() -> Vec<String> {
    section_lines("## A short tour")
}

/// The `sh` lines of the README section under `heading` (to the next `## `), with `\`
/// continuations joined.
fn section_lines(heading: &str) -> Vec<String> {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md"))
        .expect("README.md");
    let section = readme
        .split(&format!("\n{heading}\n"))
        .nth(1)
        .and_then(|rest| rest.split("\n## ").next())
        .unwrap_or_else(|| panic!("a '{heading}' section"));
    let mut lines = Vec::new();
    let mut in_sh = false;
    let mut pending = String::new();
    for line in section.lines() {
        if line.starts_with("```") {
            in_sh = line == "```sh";
            continue;
        }
        if !in_sh || line.trim().is_empty() || line.trim_start().starts_with('#') {
            continue;
        }
        match line.strip_suffix('\\') {
            Some(start) => pending.push_str(start),
            None => {
                pending.push_str(line);
                lines.push(std::mem::take(&mut pending));
            }
        }
    }
    lines
}

#[test]
fn the_readme_tour_runs_as_written() {
    let lines = tour_lines();
    for setup in SETUP {
        assert!(
            lines.iter().any(|l| l == setup),
            "the tour no longer has the setup line {setup:?}; update this test with it"
        );
    }
    let image = ensure_stub_image();
    assert_eq!(image, "aima-stub-engine:latest");
    let home = tempfile::tempdir().expect("home");
    let aima_home = home.path().join(".aima");
    let range = port_range();
    let range = format!("{}-{}", range.0, range.1);
    let mut start = DaemonProcess::command(
        &aima_home,
        "127.0.0.1:0",
        &[
            ("AIMA_ENGINE_IMAGE_VLLM", image),
            // Off the default range, where a real service on this host may listen.
            ("AIMA_PORT_RANGE", range.as_str()),
        ],
    );
    // The tour's `~/.aima/models/mine` is the daemon's default model root.
    start.env("HOME", home.path());
    let daemon = DaemonProcess::launch(start, &aima_home);
    let addr = daemon.addr.to_string();
    let path = format!(
        "{}:{}",
        bin_dir().display(),
        std::env::var("PATH").unwrap_or_default()
    );

    let mut ran = 0;
    for line in lines.iter().filter(|l| !SETUP.contains(&l.as_str())) {
        let line = line.replace("127.0.0.1:9090", &addr);
        let out = Command::new("bash")
            .args(["-c", &line])
            .env_clear()
            .env("PATH", &path)
            .env("HOME", home.path())
            .env("AIMA_ADDR", &addr)
            .output()
            .expect("bash");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        let refused = line
            .split_once('#')
            .is_some_and(|(_, comment)| comment.contains("refused"));
        if refused {
            assert!(
                !out.status.success(),
                "{line}\nshould be refused:\n{stdout}"
            );
            assert!(stderr.starts_with("error: "), "{line}\n{stderr}");
        } else {
            assert!(
                out.status.success() && !stdout.contains("{\"error\""),
                "{line}\nexited {}:\n{stdout}\n{stderr}",
                out.status
            );
        }
        ran += 1;
    }
    assert!(ran >= 30, "only {ran} tour lines ran");

    // The tour's CLI environment, for the checks after it.
    let aima = |args: &[&str]| {
        Command::new(crate::support::aima_bin())
            .args(args)
            .env("HOME", home.path())
            .env("AIMA_ADDR", &addr)
            .output()
            .expect("run aima")
    };
    // The tour leaves the gateway's cold-started qwen-vllm running; clean up after it.
    let out = aima(&["service", "delete", "--force", "qwen-vllm"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        aima_home.join("data/aima.db").exists(),
        "the tour's daemon used ~/.aima"
    );
    let status = aima(&["status", "-o", "json"]);
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).expect("status JSON");
    let label = format!(
        "aima.instance={}",
        status["instance"].as_str().expect("instance")
    );
    assert!(
        containers_with_label(&label).is_empty(),
        "the tour left containers"
    );
}

/// The quick start's lines the test does itself: the install (the binaries under test are
/// first on PATH) and the daemon (started with that setting on a free port).
const QUICK_SETUP: [&str; 2] = [
    "cargo install --path aima --locked && cargo install --path harness --locked",
    "AIMA_ENGINE_IMAGE_LLAMACPP=aima-llamacpp-cpu:latest aima start &",
];

/// The README's quick start as written, on the real llama.cpp engine: the image line (a
/// no-op when the image is current), the tiny model, `model create` and `aima run`, which
/// must print an answer. It prints how long each line took.
#[test]
fn the_readme_quick_start_runs_as_written() {
    let lines = section_lines("## Quick start (Docker, no GPU needed)");
    for setup in QUICK_SETUP {
        assert!(
            lines.iter().any(|l| l == setup),
            "the quick start no longer has the line {setup:?}; update this test with it"
        );
    }
    let required = std::env::var_os("AIMA_REQUIRE_TOOLS").is_some();
    let harness = bin_dir().join("harness");
    if !harness.is_file() {
        assert!(!required, "no harness binary at {}", harness.display());
        eprintln!(
            "SKIPPED: no harness binary at {} (cargo test --workspace builds it)",
            harness.display()
        );
        return;
    }
    let image = Command::new("docker")
        .args(["image", "inspect", "aima-llamacpp-cpu:latest"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !image {
        assert!(!required, "the image aima-llamacpp-cpu:latest is not built");
        eprintln!(
            "SKIPPED: aima-llamacpp-cpu:latest is not built; run 'cargo run -p harness -- image build --engine llama.cpp'"
        );
        return;
    }
    // Python's user packages (the model writers' gguf) live under the real home.
    let user_base = Command::new("python3")
        .args(["-m", "site", "--user-base"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    let home = tempfile::tempdir().expect("home");
    let aima_home = home.path().join(".aima");
    let range = port_range();
    let range = format!("{}-{}", range.0, range.1);
    let mut start = DaemonProcess::command(
        &aima_home,
        "127.0.0.1:0",
        &[
            ("AIMA_ENGINE_IMAGE_LLAMACPP", "aima-llamacpp-cpu:latest"),
            ("AIMA_PORT_RANGE", range.as_str()),
        ],
    );
    start.env("HOME", home.path());
    let daemon = DaemonProcess::launch(start, &aima_home);
    let addr = daemon.addr.to_string();
    let path = format!(
        "{}:{}",
        bin_dir().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let began = std::time::Instant::now();
    let mut answer = String::new();
    for line in lines.iter().filter(|l| !QUICK_SETUP.contains(&l.as_str())) {
        let took = std::time::Instant::now();
        let out = Command::new("bash")
            .args(["-c", line])
            .env("PATH", &path)
            .env("HOME", home.path())
            .env("PYTHONUSERBASE", &user_base)
            .env("AIMA_ADDR", &addr)
            .env_remove("AIMA_HOME")
            .output()
            .expect("bash");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{line}\nexited {}:\n{stdout}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        eprintln!(
            "quick start: {:.1}s for {line}",
            took.elapsed().as_secs_f64()
        );
        answer = stdout.into_owned();
    }
    eprintln!(
        "quick start: first answer {:.1}s after the daemon started",
        began.elapsed().as_secs_f64()
    );
    assert!(!answer.trim().is_empty(), "aima run printed no answer");
    let out = Command::new(crate::support::aima_bin())
        .args(["service", "delete", "--force", "tiny"])
        .env("HOME", home.path())
        .env("AIMA_ADDR", &addr)
        .output()
        .expect("delete");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let label = format!("aima.instance={}", daemon_instance(&aima_home));
    crate::support::poll(
        std::time::Duration::from_secs(60),
        "the quick start's engine to be removed",
        || containers_with_label(&label).is_empty().then_some(()),
    );
}

/// The instance id of the daemon whose home is `aima_home`.
fn daemon_instance(aima_home: &std::path::Path) -> String {
    let store = aima::store::Store::open(&aima_home.join("data/aima.db")).expect("store");
    store.instance_id().expect("instance")
}
