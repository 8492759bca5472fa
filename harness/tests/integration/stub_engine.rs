//! The stub engine, as a process and as the image `aima-stub-engine:latest` in Docker.

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bollard::query_parameters::{KillContainerOptionsBuilder, StopContainerOptionsBuilder};
use harness::stub_image::{self, STUB_IMAGE};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::{Value, json};

use crate::support::{
    DEADLINE, ImageGuard, STUB_BINARY, StubContainer, docker, http, poll_until, stub_image, unique,
};

// ---- the image ---------------------------------------------------------------------

#[tokio::test]
async fn image_builds_and_a_second_ensure_is_a_no_op() {
    let docker = docker().await;
    let first = stub_image(&docker).await;
    let second = stub_image::ensure_stub_image(&docker, Path::new(STUB_BINARY))
        .await
        .expect("second ensure");

    assert_eq!(first.tag, STUB_IMAGE);
    assert!(!second.rebuilt, "the image was current, nothing to rebuild");
    assert_eq!(second.id, first.id);
    assert_eq!(
        second.binary_sha256,
        stub_image::file_sha256(Path::new(STUB_BINARY)).expect("hash the stub")
    );
    assert!(
        second.size_bytes > 0 && second.size_bytes < 64_000_000,
        "binary plus libc only, got {} bytes",
        second.size_bytes
    );
}

#[tokio::test]
async fn a_changed_binary_rebuilds_and_replaces_the_old_image() {
    let docker = docker().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let binary = dir.path().join("aima-stub-engine");
    // Trailing bytes change the hash but not what the ELF does. The copy must differ
    // from the shared stub too, or the build cache gives both tags one image.
    let with_suffix = |suffix: &[u8]| {
        let mut bytes = std::fs::read(STUB_BINARY).expect("read the stub");
        bytes.extend_from_slice(suffix);
        std::fs::write(&binary, bytes).expect("write the copy");
    };
    with_suffix(b"v1");
    // A tag of its own, so the shared aima-stub-engine:latest is never disturbed.
    let tag = format!("{}:test", unique("aima-stub-engine-rebuild"));
    let _cleanup = ImageGuard { name: tag.clone() };

    let built = stub_image::ensure_image(&docker, &binary, &tag, false)
        .await
        .expect("first build");
    assert!(built.rebuilt);
    let again = stub_image::ensure_image(&docker, &binary, &tag, false)
        .await
        .expect("second ensure");
    assert!(!again.rebuilt);
    assert_eq!(again.id, built.id);

    with_suffix(b"v2");
    let rebuilt = stub_image::ensure_image(&docker, &binary, &tag, false)
        .await
        .expect("rebuild");
    assert!(rebuilt.rebuilt);
    assert_ne!(rebuilt.id, built.id);
    assert_ne!(rebuilt.binary_sha256, built.binary_sha256);
    assert!(
        docker.inspect_image(&built.id).await.is_err(),
        "the superseded image {} is removed",
        built.id
    );

    let forced = stub_image::ensure_image(&docker, &binary, &tag, true)
        .await
        .expect("forced build");
    assert!(forced.rebuilt, "--force builds even when current");
    assert_ne!(forced.id, rebuilt.id, "--force bypasses the build cache");
    assert!(docker.inspect_image(&rebuilt.id).await.is_err());

    let shared = stub_image(&docker).await;
    assert!(
        docker.inspect_image(&shared.id).await.is_ok(),
        "rebuilding one tag leaves {STUB_IMAGE} alone"
    );
}

#[test]
fn locate_stub_binary_finds_the_stub_from_a_test_executable() {
    let found = stub_image::locate_stub_binary().expect("found from target/debug/deps");
    assert_eq!(
        found.canonicalize().expect("found path exists"),
        Path::new(STUB_BINARY)
            .canonicalize()
            .expect("cargo's path exists")
    );
}

#[tokio::test]
async fn harness_image_build_reports_the_image_and_rejects_a_missing_binary() {
    // Built in-process first: a second process building concurrently would race the tag.
    let image = stub_image(&docker().await).await;
    let harness = env!("CARGO_BIN_EXE_harness");
    let ok = Command::new(harness)
        .args(["image", "build", "--binary", STUB_BINARY])
        .output()
        .expect("run harness");
    let stdout = String::from_utf8_lossy(&ok.stdout);
    assert!(
        ok.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(
        stdout.starts_with(&format!("{STUB_IMAGE} {} already current (", image.id)),
        "{stdout}"
    );

    let missing = Command::new(harness)
        .args([
            "image",
            "build",
            "--binary",
            "/nonexistent/aima-stub-engine",
        ])
        .output()
        .expect("run harness");
    let stderr = String::from_utf8_lossy(&missing.stderr);
    assert!(!missing.status.success());
    assert!(
        stderr.starts_with("error: --binary /nonexistent/aima-stub-engine: no such file"),
        "{stderr}"
    );
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
}

// ---- the stub as a plain process -------------------------------------------------------

/// Kills the stub process if a test fails before it exits on its own.
struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free local port")
        .port()
}

#[tokio::test]
async fn process_takes_vllm_flags_in_both_forms_and_exits_0_on_sigterm() {
    let port = free_port();
    let child = Command::new(STUB_BINARY)
        .args([
            "--host",
            "127.0.0.1",
            &format!("--port={port}"),
            "--model=org/base-model",
            "--served-model-name",
            "served-name",
            "--enforce-eager",
            "--dtype",
            "auto",
            "--gpu_memory_utilization",
            "0.3",
            "--trust-remote-code",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn the stub");
    let mut child = ChildGuard(child);
    let client = &http();
    let url = &format!("http://127.0.0.1:{port}/v1/models");
    let models: Value = poll_until("the stub process to serve", DEADLINE, || async move {
        client.get(url).send().await.ok()?.json().await.ok()
    })
    .await;
    assert_eq!(models["data"][0]["id"], "served-name");

    kill(
        Pid::from_raw(i32::try_from(child.0.id()).expect("pid fits")),
        Signal::SIGTERM,
    )
    .expect("signal the stub");
    let status = poll_until("the stub process to exit", DEADLINE, || {
        let exited = child.0.try_wait().expect("poll the child");
        async move { exited }
    })
    .await;
    assert_eq!(status.code(), Some(0));
}

/// Runs the stub with `flags`, asks for /health twice and /v1/models once, stops it, and
/// returns what it printed.
async fn access_log_with(flags: &[&str]) -> String {
    let port = free_port();
    let child = Command::new(STUB_BINARY)
        .args(["--host", "127.0.0.1", "--port", &port.to_string()])
        .args(flags)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn the stub");
    let mut child = ChildGuard(child);
    let client = &http();
    let health = &format!("http://127.0.0.1:{port}/health");
    poll_until("the stub process to serve", DEADLINE, || async move {
        client.get(health).send().await.ok()
    })
    .await;
    client.get(health).send().await.expect("second /health");
    client
        .get(format!("http://127.0.0.1:{port}/v1/models"))
        .send()
        .await
        .expect("/v1/models");
    kill(
        Pid::from_raw(i32::try_from(child.0.id()).expect("pid fits")),
        Signal::SIGTERM,
    )
    .expect("signal the stub");
    let mut out = String::new();
    std::io::Read::read_to_string(&mut child.0.stdout.take().expect("stdout"), &mut out)
        .expect("read stdout");
    out
}

#[tokio::test]
async fn process_leaves_paths_out_of_its_access_log_as_the_engines_switches_ask() {
    let every = access_log_with(&[]).await;
    assert_eq!(
        every.matches("\"GET /health HTTP/1.1\" 200").count(),
        2,
        "{every}"
    );
    assert!(every.contains("\"GET /v1/models HTTP/1.1\" 200"), "{every}");

    let vllm = access_log_with(&["--disable-access-log-for-endpoints", "/health,/metrics"]).await;
    assert!(!vllm.contains("GET /health"), "{vllm}");
    assert!(vllm.contains("\"GET /v1/models HTTP/1.1\" 200"), "{vllm}");

    for off in [
        &["--disable-uvicorn-access-log"][..],
        &["--log-level-http", "warning"][..],
    ] {
        let quiet = access_log_with(off).await;
        assert!(!quiet.contains("GET /"), "{off:?}: {quiet}");
    }
}

#[test]
fn process_rejects_a_bad_port_like_argparse() {
    let output = Command::new(STUB_BINARY)
        .args(["--port", "eighty"])
        .output()
        .expect("run the stub");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr.contains("api_server.py: error: argument --port: invalid int value: 'eighty'"),
        "{stderr}"
    );
}

// ---- the stub in Docker ------------------------------------------------------------

#[tokio::test]
async fn container_serves_health_models_completions_and_chat() {
    let stub = StubContainer::start(
        "serves",
        &[
            "--model",
            "stub/model-a",
            "--port",
            "8000",
            "--max-model-len=2048",
            "--gpu-memory-utilization",
            "0.5",
            "--disable-log-requests",
        ],
        &[],
    )
    .await;
    stub.wait_healthy().await;
    let client = http();

    let health = client
        .get(stub.url("/health"))
        .send()
        .await
        .expect("health");
    assert_eq!(health.status(), 200);
    assert_eq!(health.text().await.expect("health body"), "");

    let models: Value = client
        .get(stub.url("/v1/models"))
        .send()
        .await
        .expect("models")
        .json()
        .await
        .expect("models json");
    assert_eq!(models["object"], "list");
    assert_eq!(models["data"][0]["id"], "stub/model-a");
    assert_eq!(models["data"][0]["owned_by"], "aima-stub");
    assert_eq!(models["data"][0]["max_model_len"], 4096);

    let chat: Value = client
        .post(stub.url("/v1/chat/completions"))
        .json(&json!({
            "model": "stub/model-a",
            "messages": [{"role": "user", "content": "say hello"}],
        }))
        .send()
        .await
        .expect("chat")
        .json()
        .await
        .expect("chat json");
    assert_eq!(chat["object"], "chat.completion");
    assert_eq!(chat["model"], "stub/model-a");
    assert_eq!(chat["choices"][0]["message"]["role"], "assistant");
    let content = chat["choices"][0]["message"]["content"]
        .as_str()
        .expect("content is a string");
    assert!(!content.is_empty());
    assert_eq!(chat["usage"]["prompt_tokens"], 2);

    let completion: Value = client
        .post(stub.url("/v1/completions"))
        .json(&json!({"model": "stub/model-a", "prompt": "once upon", "max_tokens": 3}))
        .send()
        .await
        .expect("completion")
        .json()
        .await
        .expect("completion json");
    assert_eq!(completion["object"], "text_completion");
    assert_eq!(completion["choices"][0]["finish_reason"], "length");
    assert_eq!(completion["usage"]["completion_tokens"], 3);

    let stream = client
        .post(stub.url("/v1/chat/completions"))
        .json(&json!({"messages": [{"role": "user", "content": "hi"}], "stream": true}))
        .send()
        .await
        .expect("stream");
    assert_eq!(
        stream.headers()["content-type"],
        "text/event-stream",
        "streaming is server-sent events"
    );
    let events = stream.text().await.expect("stream body");
    assert!(events.contains("chat.completion.chunk"), "{events}");
    assert!(events.trim_end().ends_with("data: [DONE]"), "{events}");

    let missing = client
        .get(stub.url("/v2/nothing"))
        .send()
        .await
        .expect("unknown route");
    assert_eq!(missing.status(), 404);
    let body: Value = missing.json().await.expect("404 is json");
    assert_eq!(body["detail"], "Not Found");

    let logs = stub.logs().await;
    for line in [
        "vLLM API server version",
        "args: model='stub/model-a'",
        "port=8000, gpu_memory_utilization=0.5",
        "Loading model weights took 0.00 GB",
        "INFO:     Started server process [1]",
        "INFO:     Uvicorn running on http://0.0.0.0:8000 (Press CTRL+C to quit)",
        "\"GET /health HTTP/1.1\" 200 OK",
        "\"POST /v1/chat/completions HTTP/1.1\" 200 OK",
    ] {
        assert!(logs.stdout.contains(line), "missing {line:?} in\n{logs}");
    }
}

#[tokio::test]
async fn container_with_stub_fail_oom_exits_1_with_a_cuda_oom_traceback() {
    let stub = StubContainer::start(
        "oom",
        &["--model", "big/model"],
        &["STUB_FAIL=oom", "STUB_START_DELAY_MS=100"],
    )
    .await;
    assert_eq!(stub.wait_exit().await, 1);
    let logs = stub.logs().await;
    assert!(
        logs.stderr.contains("Traceback (most recent call last):"),
        "{logs}"
    );
    assert!(logs.stderr.contains("CUDA out of memory"), "{logs}");
    assert_eq!(
        logs.stderr.trim_end().lines().last(),
        Some(
            "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total capacity of 79.10 GiB of which 1.05 GiB is free."
        ),
        "{logs}"
    );
    assert!(
        !logs.stdout.contains("Uvicorn running"),
        "it never served: {logs}"
    );
}

#[tokio::test]
async fn container_with_another_stub_fail_exits_1_with_a_runtime_error() {
    let stub = StubContainer::start("fail", &[], &["STUB_FAIL=weights are corrupt"]).await;
    assert_eq!(stub.wait_exit().await, 1);
    let logs = stub.logs().await;
    assert!(
        logs.stderr.contains("RuntimeError: weights are corrupt"),
        "{logs}"
    );
}

#[tokio::test]
async fn container_with_crash_after_exits_3_once_it_has_served() {
    let stub = StubContainer::start("crash", &[], &["STUB_CRASH_AFTER_SECS=0.5"]).await;
    assert_eq!(stub.wait_exit().await, 3);
    let logs = stub.logs().await;
    assert!(
        logs.stdout.contains("Uvicorn running"),
        "it served first: {logs}"
    );
    assert!(
        logs.stderr.contains("Engine core died unexpectedly"),
        "{logs}"
    );
}

#[tokio::test]
async fn container_start_delay_holds_back_readiness() {
    stub_image(&docker().await).await; // so the clock below does not include a build
    let started = Instant::now();
    let stub = StubContainer::start("delay", &[], &["STUB_START_DELAY_MS=1200"]).await;
    stub.wait_healthy().await;
    assert!(
        started.elapsed() >= Duration::from_millis(1200),
        "healthy after {:?}, before the load delay ended",
        started.elapsed()
    );
}

#[tokio::test]
async fn docker_stop_returns_promptly_and_the_stub_exits_0() {
    let stub = StubContainer::start("stop", &[], &[]).await;
    stub.wait_healthy().await;

    let asked = Instant::now();
    let options = StopContainerOptionsBuilder::default().t(10).build();
    stub.docker
        .stop_container(stub.id(), Some(options))
        .await
        .expect("stop the stub");
    let took = asked.elapsed();
    assert!(
        took < Duration::from_secs(3),
        "docker stop took {took:?}: SIGTERM was not handled"
    );
    assert_eq!(stub.wait_exit().await, 0);
    assert!(stub.logs().await.stdout.contains("Shutting down"));
}

#[tokio::test]
async fn sigint_makes_the_container_exit_0() {
    let stub = StubContainer::start("sigint", &[], &[]).await;
    stub.wait_healthy().await;
    let options = KillContainerOptionsBuilder::default()
        .signal("SIGINT")
        .build();
    stub.docker
        .kill_container(stub.id(), Some(options))
        .await
        .expect("send SIGINT");
    assert_eq!(stub.wait_exit().await, 0, "{}", stub.logs().await);
}
