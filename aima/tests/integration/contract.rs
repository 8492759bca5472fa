//! The API checked by tools the project did not write: `openapi-spec-validator` reads the
//! OpenAPI document, and schemathesis fuzzes every operation it describes against a live
//! daemon (with Docker and the stub engine), looking for any server error.
//!
//! `.ci/run` installs both with pip and sets `AIMA_REQUIRE_TOOLS=1`, so in CI a missing
//! tool fails the test; elsewhere it is skipped with the reason.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};

use crate::support::{TestDaemon, ensure_stub_image, http, poll, post_ok};

/// The tool's path, or `None` (after saying why) when it may be skipped.
pub fn tool(name: &str) -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(name))
            .find(|candidate| candidate.is_file())
    });
    if found.is_none() {
        let why = format!("{name} is not installed; install it with 'pip install {name}'");
        assert!(
            std::env::var_os("AIMA_REQUIRE_TOOLS").is_none(),
            "AIMA_REQUIRE_TOOLS is set and {why}"
        );
        eprintln!("SKIPPED: {why}");
    }
    found
}

/// python3, when it can import `module` (installed as `package` from PyPI), or `None`
/// (after saying why) when the test may be skipped.
pub fn python_with(module: &str, package: &str) -> Option<PathBuf> {
    let python = tool("python3")?;
    let imports = Command::new(&python)
        .args(["-c", &format!("import {module}")])
        .status()
        .is_ok_and(|s| s.success());
    if imports {
        return Some(python);
    }
    let why = format!("the {package} Python package is not installed; pip install {package}");
    assert!(
        std::env::var_os("AIMA_REQUIRE_TOOLS").is_none(),
        "AIMA_REQUIRE_TOOLS is set and {why}"
    );
    eprintln!("SKIPPED: {why}");
    None
}

async fn fetch_document(d: &TestDaemon, dir: &Path) -> PathBuf {
    let document: Value = http()
        .get(d.url("/api/v1/openapi.json"))
        .send()
        .await
        .expect("get openapi.json")
        .json()
        .await
        .expect("json");
    let path = dir.join("openapi.json");
    std::fs::write(&path, serde_json::to_vec_pretty(&document).expect("encode")).expect("write");
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_document_passes_the_reference_validator() {
    let Some(validator) = tool("openapi-spec-validator") else {
        return;
    };
    let d = TestDaemon::start();
    let dir = tempfile::tempdir().expect("dir");
    let document = fetch_document(&d, dir.path()).await;
    let out = Command::new(validator)
        .arg(&document)
        .output()
        .expect("run openapi-spec-validator");
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{report}");
    assert!(report.contains("OK"), "{report}");
}

/// One dictionary file of JSON strings, one per line, as schemathesis reads them.
fn dictionary(dir: &Path, name: &str, values: &[String]) {
    let lines: Vec<String> = values.iter().map(|v| json!(v).to_string()).collect();
    std::fs::write(dir.join(name), lines.join("\n") + "\n").expect("write dictionary");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_no_server_error_and_no_schema_violation_in_any_operation() {
    let Some(schemathesis) = tool("schemathesis") else {
        return;
    };
    let image = ensure_stub_image();
    // Every engine runs the stub, so starts get as far as a real engine would here.
    // A hub with one repository (the seeded model's): other registrations get its 404,
    // as from the real one, rather than a hub that cannot be reached.
    let hub = crate::pull::serve(crate::pull::hub_with("org/model"));
    let d = TestDaemon::with_engine_and(|settings| {
        for engine in ["sglang", "llamacpp", "ollama"] {
            settings.engine_images.insert(engine.into(), image.into());
        }
        settings.hf_endpoint = hub;
    });
    let dir = tempfile::tempdir().expect("dir");
    fetch_document(&d, dir.path()).await;

    // Seed real objects, so generated ids often name something that exists.
    let weights = d.model_dir("weights");
    let used = post_ok(
        &d,
        "/api/v1/models",
        json!({"name": "fuzz-used", "source": "huggingface", "repo": "org/model"}),
    )
    .await;
    let spare = post_ok(
        &d,
        "/api/v1/models",
        json!({"name": "fuzz-spare", "source": "local", "path": weights}),
    )
    .await;
    let doomed = post_ok(
        &d,
        "/api/v1/models",
        json!({"name": "fuzz-doomed", "source": "ollama", "repo": "tiny"}),
    )
    .await;
    let (mut kept, mut deletable) = (Vec::new(), Vec::new());
    for engine in ["vllm", "sglang", "llamacpp", "ollama"] {
        let body = |model: &Value| json!({"model_id": model["id"], "engine_type": engine});
        kept.push(post_ok(&d, "/api/v1/services", body(&used)).await["id"].to_string());
        deletable.push(post_ok(&d, "/api/v1/services", body(&spare)).await["id"].to_string());
    }
    let unquote = |v: &String| v.trim_matches('"').to_owned();
    let kept: Vec<String> = kept.iter().map(unquote).collect();
    let mut deletable: Vec<String> = deletable.iter().map(unquote).collect();
    post_ok(
        &d,
        &format!("/api/v1/services/{}/start", kept[0]),
        json!({}),
    )
    .await;
    let models: Vec<String> = [&used, &spare]
        .iter()
        .map(|m| m["id"].as_str().expect("id").to_owned())
        .collect();
    deletable.push(doomed["id"].as_str().expect("id").to_owned());
    let ids: Vec<String> = models.iter().chain(&kept).cloned().collect();
    dictionary(dir.path(), "models.dict", &models);
    dictionary(dir.path(), "services.dict", &kept);
    dictionary(dir.path(), "ids.dict", &ids);
    dictionary(dir.path(), "deletable.dict", &deletable);
    std::fs::write(
        dir.path().join("schemathesis.toml"),
        format!(
            r#"request-timeout = 5.0
max-stream-events = 5

[dictionaries]
models = {{ from-file = "models.dict" }}
services = {{ from-file = "services.dict" }}
ids = {{ from-file = "ids.dict" }}
deletable = {{ from-file = "deletable.dict" }}
sources = {{ values = ["ollama", "huggingface", "modelscope", "local"] }}
engines = {{ values = ["vllm", "sglang", "llamacpp", "ollama"] }}
paths = {{ values = ["{weights}", "/", "/tmp"] }}
after = {{ values = ["0", "1", "3", "latest"] }}
ports = {{ values = [{first}, {last}, 80] }}

[parameters]
"path.id" = {{ dictionary = "ids", probability = 0.7 }}
"query.service_id" = {{ dictionary = "services", probability = 0.7 }}
"query.model_id" = {{ dictionary = "models", probability = 0.7 }}
"query.after" = {{ dictionary = "after", probability = 0.5 }}
"body.model_id" = {{ dictionary = "models", probability = 0.8 }}
"body.source" = {{ dictionary = "sources", probability = 0.8 }}
"body.engine_type" = {{ dictionary = "engines", probability = 0.8 }}
"body.path" = {{ dictionary = "paths", probability = 0.5 }}
"body.port" = {{ dictionary = "ports", probability = 0.3 }}

# Deletes get ids of their own, so the seeded services live on for the other operations.
[[operations]]
include-method = "DELETE"
parameters = {{ "path.id" = {{ dictionary = "deletable", probability = 0.7 }} }}

# A followed log never ends while the engine writes.
[[operations]]
include-path-regex = "/logs$"
parameters = {{ "query.follow" = "false" }}

# A body can fit the schema and still break a rule that depends on the host or on what
# exists (a local path must exist under a model root, a port must be free and inside
# AIMA_PORT_RANGE, a name must not look like an id): the daemon answers 422 naming the
# rule, which is a right answer to schema-valid data here, and only here.
[[operations]]
include-method = "POST"
include-path-regex = "^/api/v1/(models|services)$"
checks.positive_data_acceptance.expected-statuses = ["2XX", "404", "409", "422"]

[[operations]]
include-method = "PATCH"
include-path-regex = "^/api/v1/services/"
checks.positive_data_acceptance.expected-statuses = ["2XX", "404", "409", "422"]

# Only a Hugging Face model the hub has can be pulled; this hub has one.
[[operations]]
include-path-regex = "/pull$"
checks.positive_data_acceptance.expected-statuses = ["2XX", "404", "409", "422"]

# Event streams are cut after max-stream-events or a second.
[[operations]]
include-path-regex = "/events$"
request-timeout = 1.0
"#,
            weights = weights.display(),
            first = d.port_range.0,
            last = d.port_range.1,
        ),
    )
    .expect("write config");

    let base = d.url("");
    let run = move |dir: tempfile::TempDir, base: String| {
        let schemathesis = schemathesis.clone();
        tokio::task::spawn_blocking(move || {
            Command::new(schemathesis)
                .current_dir(dir.path())
                .arg("--config-file")
                .arg(dir.path().join("schemathesis.toml"))
                .args(["run", "openapi.json", "--url", &base])
                .args(["--checks", "all"])
                .args(["--max-examples", "60", "--workers", "2", "--seed", "42"])
                .args(["--continue-on-failure", "--no-color"])
                .output()
                .map(|out| (out, dir))
        })
    };
    let (mut out, mut dir) = run(dir, base.clone())
        .await
        .expect("join")
        .expect("run schemathesis");
    // CPython 3.11 sometimes trips over its own recursion count while hypothesis parses a
    // lambda's source to describe it: the fuzzer dies, the API was not at fault. Once
    // more, the same seed; a finding about the API fails either way.
    if !out.status.success()
        && String::from_utf8_lossy(&out.stdout).contains("AST constructor recursion depth mismatch")
    {
        eprintln!("schemathesis hit CPython's AST recursion bug; running it once more");
        (out, dir) = run(dir, base)
            .await
            .expect("join")
            .expect("run schemathesis");
    }
    let _dir = dir;
    let report = String::from_utf8_lossy(&out.stdout).into_owned();
    // The whole report, for a person to read when the tail is not enough.
    let saved = Path::new(env!("CARGO_TARGET_TMPDIR")).join("schemathesis-report.txt");
    let _ = std::fs::write(&saved, &report);
    let tail: String = report
        .lines()
        .rev()
        .take(80)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect::<Vec<_>>()
        .join("\n");
    eprintln!("{tail}");

    // Leave no container behind, whatever the fuzzer started.
    let services: Value = http()
        .get(d.url("/api/v1/services"))
        .send()
        .await
        .expect("list")
        .json()
        .await
        .expect("json");
    for service in services["items"].as_array().expect("items") {
        let id = service["id"].as_str().expect("id");
        let _ = http()
            .delete(d.url(&format!("/api/v1/services/{id}?force=true")))
            .send()
            .await;
    }
    let label = d.instance_label();
    poll(
        Duration::from_secs(30),
        "the fuzzed containers to go",
        || {
            crate::support::containers_with_label(&label)
                .is_empty()
                .then_some(())
        },
    );
    assert!(
        out.status.success(),
        "schemathesis found problems (whole report: {}):\n{tail}\n{}",
        saved.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        report.contains("No issues found") || report.contains("passed"),
        "{tail}"
    );
}
