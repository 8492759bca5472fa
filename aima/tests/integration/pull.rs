//! `aima pull` against a local server that speaks the Hugging Face hub's HTTP API (the
//! model info, the recursive file tree with LFS SHA-256s, `resolve` with `Range`): byte
//! progress, a transfer cut off and resumed, a checksum mismatch refused, a disk too
//! small refused before a byte, an unknown repository refused at create, the token sent.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::support::{TestDaemon, run};

/// A file the hub serves; `listed_sha256` is what the tree says (wrong for a corrupt one).
struct HubFile {
    bytes: Bytes,
    listed_size: u64,
    listed_sha256: Option<String>,
}

#[derive(Default)]
pub struct Hub {
    repos: HashMap<String, Vec<(String, HubFile)>>,
    /// The first download of this path (repo/path) stops after this many bytes.
    cut: Mutex<Option<(String, usize)>>,
    /// Every `resolve` request.
    seen: Mutex<Vec<Seen>>,
}

/// One `resolve` request: repo/path, its Range header, its Authorization header.
type Seen = (String, Option<String>, Option<String>);

fn sha256(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

async fn info(State(hub): State<Arc<Hub>>, Path((org, name)): Path<(String, String)>) -> Response {
    let repo = format!("{org}/{name}");
    if hub.repos.contains_key(&repo) {
        return axum::Json(json!({"id": repo, "sha": "0123abc"})).into_response();
    }
    // The hub's own shape for a missing repository.
    (
        StatusCode::NOT_FOUND,
        [("x-error-code", "RepoNotFound")],
        axum::Json(json!({"error": "Repository not found"})),
    )
        .into_response()
}

async fn tree(
    State(hub): State<Arc<Hub>>,
    Path((org, name, _rev)): Path<(String, String, String)>,
) -> Response {
    let Some(files) = hub.repos.get(&format!("{org}/{name}")) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let entries: Vec<Value> = files
        .iter()
        .map(|(path, file)| {
            let mut entry =
                json!({"type": "file", "oid": "git-sha1", "size": file.listed_size, "path": path});
            if let Some(sha) = &file.listed_sha256 {
                entry["lfs"] = json!({"oid": sha, "size": file.listed_size, "pointerSize": 134});
            }
            entry
        })
        .chain(std::iter::once(
            json!({"type": "directory", "oid": "x", "size": 0, "path": "sub"}),
        ))
        .collect();
    axum::Json(entries).into_response()
}

async fn resolve(
    State(hub): State<Arc<Hub>>,
    Path((org, name, _rev, path)): Path<(String, String, String, String)>,
    headers: HeaderMap,
) -> Response {
    let repo = format!("{org}/{name}");
    let text = |h: header::HeaderName| {
        headers
            .get(h)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    hub.seen.lock().expect("seen").push((
        format!("{repo}/{path}"),
        text(header::RANGE),
        text(header::AUTHORIZATION),
    ));
    let Some(file) = hub
        .repos
        .get(&repo)
        .and_then(|files| files.iter().find(|(p, _)| *p == path))
        .map(|(_, f)| f)
    else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let from = text(header::RANGE)
        .and_then(|r| {
            r.strip_prefix("bytes=")?
                .strip_suffix('-')?
                .parse::<usize>()
                .ok()
        })
        .unwrap_or(0);
    let rest = file.bytes.slice(from.min(file.bytes.len())..);
    let status = if from > 0 {
        StatusCode::PARTIAL_CONTENT
    } else {
        StatusCode::OK
    };
    let cut = {
        let mut cut = hub.cut.lock().expect("cut");
        match cut.take() {
            Some((target, at)) if target == format!("{repo}/{path}") => Some(at),
            other => {
                *cut = other;
                None
            }
        }
    };
    let length = rest.len();
    let body = match cut {
        // The connection drops after `at` bytes of a body announced whole.
        Some(at) => {
            let first = rest.slice(..at.min(length));
            Body::from_stream(futures::stream::iter([
                Ok::<_, std::io::Error>(first),
                Err(std::io::Error::other("cut")),
            ]))
        }
        None => Body::from(rest),
    };
    let mut response = Response::new(body);
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_LENGTH, length.into());
    response
}

/// A hub that has one repository, `repo`, holding a small Llama.
pub fn hub_with(repo: &str) -> Arc<Hub> {
    Arc::new(Hub {
        repos: HashMap::from([(repo.to_owned(), tiny_files())]),
        ..Hub::default()
    })
}

/// Serves `hub` on a free loopback port; returns its address.
pub fn serve(hub: Arc<Hub>) -> String {
    let app = axum::Router::new()
        .route("/api/models/{org}/{name}", axum::routing::get(info))
        .route(
            "/api/models/{org}/{name}/tree/{rev}",
            axum::routing::get(tree),
        )
        .route(
            "/{org}/{name}/resolve/{rev}/{*path}",
            axum::routing::get(resolve),
        )
        .with_state(hub);
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

/// A small Llama in safetensors: a config and 4 MiB of weights.
fn tiny_files() -> Vec<(String, HubFile)> {
    let data = vec![7u8; 4 << 20];
    let view =
        safetensors::tensor::TensorView::new(safetensors::Dtype::F16, vec![1024, 2048], &data)
            .expect("view");
    let weights =
        Bytes::from(safetensors::tensor::serialize([("w", view)], None).expect("serialize"));
    let config = Bytes::from_static(
        br#"{"model_type": "llama", "num_hidden_layers": 1, "num_attention_heads": 1, "hidden_size": 2048, "max_position_embeddings": 128}"#,
    );
    vec![
        (
            "config.json".to_owned(),
            HubFile {
                listed_size: config.len() as u64,
                bytes: config,
                listed_sha256: None,
            },
        ),
        (
            "model.safetensors".to_owned(),
            HubFile {
                listed_size: weights.len() as u64,
                listed_sha256: Some(sha256(&weights)),
                bytes: weights,
            },
        ),
    ]
}

#[test]
fn a_pull_shows_progress_resumes_verifies_and_checks_room_and_names_first() {
    let mut bad = tiny_files();
    bad[1].1.listed_sha256 = Some("0".repeat(64));
    let mut huge = tiny_files();
    huge[1].1.listed_size = 1 << 50; // a pebibyte
    let hub = Arc::new(Hub {
        repos: HashMap::from([
            ("org/tiny".to_owned(), tiny_files()),
            ("org/bad".to_owned(), bad),
            ("org/huge".to_owned(), huge),
            ("org/runme".to_owned(), tiny_files()),
        ]),
        cut: Mutex::new(Some(("org/tiny/model.safetensors".to_owned(), 1 << 20))),
        seen: Mutex::default(),
    });
    let url = serve(Arc::clone(&hub));
    let d = TestDaemon::with_engine_and(move |s| {
        s.hf_endpoint = url;
        s.hf_token = Some("hf_secret_for_tests".to_owned());
    });

    // A repository the hub does not have is refused at create, in the hub's words.
    let (code, _, stderr) = run(d.cli().args([
        "model",
        "create",
        "--name",
        "nope",
        "--source",
        "huggingface",
        "--repo",
        "org/nope",
    ]));
    assert_eq!(code, 1);
    assert!(
        stderr.contains("has no model repository 'org/nope' (404 Repository not found)"),
        "{stderr}"
    );

    // `aima pull org/name` registers it and pulls; the transfer is cut after 1 MiB.
    let (code, _, stderr) = run(d.cli().args(["pull", "org/tiny"]));
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("registered model tiny from huggingface org/tiny"),
        "{stderr}"
    );
    assert!(
        stderr.contains("the download of model.safetensors broke off after")
            && stderr.contains("pull again to resume"),
        "{stderr}"
    );
    let dir = d.home.path().join("models/org/tiny");
    let part = std::fs::metadata(dir.join("model.safetensors.part")).expect("a part file");
    assert!(part.len() >= 1 << 20, "{} bytes kept", part.len());

    // Again: it resumes where it stopped, reports bytes, and verifies.
    let out = d
        .cli()
        .args(["-o", "json", "pull", "tiny"])
        .output()
        .expect("pull");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    let first = lines
        .iter()
        .find(|l| l["file"] == "model.safetensors")
        .expect("progress of the weights");
    assert!(
        first["completed"].as_u64().expect("completed") >= part.len(),
        "resumed, not restarted: {first}"
    );
    let last = lines.last().expect("a last line");
    assert_eq!(last["status"], "success", "{last}");
    assert_eq!(last["path"], dir.display().to_string());
    let ranges: Vec<Option<String>> = hub
        .seen
        .lock()
        .expect("seen")
        .iter()
        .filter(|(file, _, _)| file == "org/tiny/model.safetensors")
        .map(|(_, range, _)| range.clone())
        .collect();
    assert_eq!(ranges.len(), 2, "{ranges:?}");
    assert_eq!(
        ranges[1],
        Some(format!("bytes={}-", part.len())),
        "{ranges:?}"
    );
    assert!(
        hub.seen
            .lock()
            .expect("seen")
            .iter()
            .all(|(_, _, auth)| auth.as_deref() == Some("Bearer hf_secret_for_tests")),
        "HF_TOKEN goes with every request"
    );
    assert!(!dir.join("model.safetensors.part").exists());
    let weights = std::fs::read(dir.join("model.safetensors")).expect("weights");
    assert_eq!(
        sha256(&weights),
        hub.repos["org/tiny"][1]
            .1
            .listed_sha256
            .clone()
            .expect("sha")
    );
    // The model now points at its files, read like a local model's.
    let model = crate::support::run_json(d.cli().args(["model", "get", "tiny"]));
    assert_eq!(model["path"], dir.display().to_string(), "{model}");
    assert!(
        model["size_bytes"].as_u64().unwrap_or(0) >= 4 << 20,
        "{model}"
    );

    // Its engine mounts the pulled files rather than downloading them.
    let (code, _, stderr) = run(d.cli().args(["run", "tiny", "hello"]));
    assert_eq!(code, 0, "{stderr}");
    let service = crate::support::run_json(d.cli().args(["service", "get", "tiny"]));
    let container = service["container_id"].as_str().expect("container");
    let mounts = std::process::Command::new("docker")
        .args([
            "inspect",
            "-f",
            "{{json .Mounts}} {{json .Config.Cmd}}",
            container,
        ])
        .output()
        .expect("inspect");
    let mounts = String::from_utf8_lossy(&mounts.stdout);
    assert!(
        mounts.contains(&format!("\"Source\":\"{}\"", dir.display()))
            && mounts.contains("/aima/model"),
        "{mounts}"
    );
    crate::support::remove_containers_with_label(&d.instance_label());

    // `aima run org/name`, as `ollama run`: registered, pulled, served, answered.
    let (code, stdout, stderr) = run(d.cli().args(["run", "org/runme", "hi"]));
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(
        stdout.trim(),
        "Hello from the aima stub engine serving runme.",
        "{stderr}"
    );
    assert!(stderr.contains("registered model runme"), "{stderr}");
    crate::support::remove_containers_with_label(&d.instance_label());

    // A download whose SHA-256 is not the hub's is refused and removed.
    let (code, _, stderr) = run(d.cli().args(["pull", "org/bad"]));
    assert_eq!(code, 1);
    assert!(
        stderr.contains("checksum mismatch for model.safetensors: the hub says sha256 0000"),
        "{stderr}"
    );
    let bad_dir = d.home.path().join("models/org/bad");
    assert!(!bad_dir.join("model.safetensors").exists());
    assert!(!bad_dir.join("model.safetensors.part").exists());

    // Files larger than the disk are refused before a byte is fetched.
    let (code, _, stderr) = run(d.cli().args(["pull", "org/huge"]));
    assert_eq!(code, 1);
    assert!(stderr.contains("not enough disk space in"), "{stderr}");
    assert!(
        !hub.seen
            .lock()
            .expect("seen")
            .iter()
            .any(|(file, _, _)| file.starts_with("org/huge/")),
        "nothing was downloaded"
    );

    // Ollama's and local models are not pulled from the hub.
    let (_, _, _) = run(d.cli().args([
        "model", "create", "--name", "olla", "--source", "ollama", "--repo", "llama3.2",
    ]));
    let (code, _, stderr) = run(d.cli().args(["model", "pull", "olla"]));
    assert_eq!(code, 1);
    assert!(stderr.contains("its Ollama service pulls it"), "{stderr}");
}
