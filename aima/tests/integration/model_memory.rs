//! Model memory: AIMA reads real model files written by the formats' own reference
//! writers (PyPI `gguf` and `safetensors`, installed by `.ci/run`), an 8B-parameter GGUF
//! among them made cheap as a sparse file, and reports size, shape and the GPU memory
//! estimate with its parts. The expected numbers come from the writers and from public
//! model cards, not from the code under test: Llama 3 8B has 8,030,261,248 parameters
//! (16.06 GB in BF16), and its KV cache with 32 layers, 8 KV heads and head size 128 in
//! 16 bits is 2 × 32 × 8 × 128 × 2 = 131,072 bytes (128 KiB) per token. Bad files get one
//! line naming the file and the problem, and register nothing; a file inside a model that
//! links out of the model roots is refused before it is opened.

use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use crate::support::{DaemonProcess, TestDaemon, cli_for, run, run_json};

/// Overheads the catalog states, in bytes (the estimate's third part).
const LLAMA_CPP_OVERHEAD: u64 = 768 << 20;
const VLLM_OVERHEAD: u64 = 2 << 30;

#[test]
fn local_model_files_are_read_for_size_shape_and_a_gpu_memory_estimate() {
    let Some(python) =
        crate::contract::python_with("gguf, safetensors, numpy", "gguf safetensors numpy")
    else {
        return;
    };
    let d = TestDaemon::start();
    let root = d.home.path().join("models");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clients/write_models.py");
    let out = Command::new(python)
        .args([script, root.to_str().expect("utf-8")])
        .output()
        .expect("run the writers");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let written: Value = serde_json::from_slice(&out.stdout).expect("the writers' report");
    let create = |name: &str, path: &str| {
        run_json(d.cli().args([
            "model",
            "create",
            "--name",
            name,
            "--source",
            "local",
            "--path",
            root.join(path).to_str().expect("utf-8"),
        ]))
    };

    // Llama 3 8B in BF16, 16 GB of weights in a sparse file.
    let llama = create("llama8b", "llama8b/llama-3-8b-bf16.gguf");
    let params: u64 = 8_030_261_248;
    assert_eq!(
        written["llama8b_bytes"],
        params * 2,
        "the writer's own count"
    );
    assert_eq!(llama["params"], params, "{llama}");
    assert_eq!(llama["size_bytes"], params * 2);
    assert_eq!(llama["quantization"], "BF16");
    assert_eq!(llama["context_length"], 8192);
    assert_eq!(llama["facts"]["layers"]["value"], 32);
    assert_eq!(llama["facts"]["kv_heads"]["value"], 8);
    assert_eq!(
        llama["facts"]["layers"]["from"],
        "llama-3-8b-bf16.gguf: llama.block_count"
    );
    let estimate = &llama["estimate"];
    assert_eq!(estimate["engine"], "llamacpp", "GGUF runs on llama.cpp");
    let kv_per_token: u64 = 2 * 32 * 8 * 128 * 2;
    assert_eq!(kv_per_token, 128 * 1024);
    assert_eq!(
        estimate["kv_cache"],
        kv_per_token * 8192,
        "one full context"
    );
    assert_eq!(estimate["weights"], params * 2);
    assert_eq!(estimate["overhead"], LLAMA_CPP_OVERHEAD);
    assert_eq!(
        estimate["total"],
        params * 2 + kv_per_token * 8192 + LLAMA_CPP_OVERHEAD
    );
    let (code, shown, _) = run(d.cli().args(["model", "inspect", "llama8b"]));
    assert_eq!(code, 0);
    // Another engine and context: vLLM's overhead, a KV cache for 2048 tokens.
    let vllm = run_json(d.cli().args([
        "model",
        "inspect",
        "llama8b",
        "--engine",
        "vllm",
        "--context",
        "2048",
    ]));
    assert_eq!(vllm["estimate"]["engine"], "vllm");
    assert_eq!(vllm["estimate"]["kv_cache"], kv_per_token * 2048);
    assert_eq!(
        vllm["estimate"]["total"],
        params * 2 + kv_per_token * 2048 + VLLM_OVERHEAD
    );
    let (code, _, err) = run(d
        .cli()
        .args(["model", "inspect", "llama8b", "--engine", "tgi"]));
    assert_eq!(code, 2, "{err}");
    for needed in [
        "llama-3-8b-bf16.gguf: llama.attention.head_count_kv",
        "8.03B",
        "GPU memory on llamacpp",
        "KV cache of 128 KiB per token",
    ] {
        assert!(shown.contains(needed), "{needed:?} in:\n{shown}");
    }

    // `service create` shows what the model needs on the service's engine: on stderr in
    // a table, so stdout stays the name for scripts, and in the JSON.
    let (code, name, note) = run(d.cli().args([
        "service",
        "create",
        "--model-id",
        "llama8b",
        "--engine-type",
        "vllm",
    ]));
    assert_eq!(code, 0, "{note}");
    assert_eq!(name.trim(), "llama8b-vllm");
    assert!(
        note.contains("will need 17.96 GiB of GPU memory (weights 14.96 GiB + KV cache 1.00 GiB for 8192 tokens + overhead 2.00 GiB)"),
        "{note}"
    );
    let service = run_json(d.cli().args(["service", "get", name.trim()]));
    assert_eq!(service["estimate"]["engine"], "vllm");
    assert_eq!(
        service["estimate"]["total"],
        params * 2 + kv_per_token * 8192 + VLLM_OVERHEAD
    );
    run(d.cli().args(["service", "delete", name.trim()]));

    // Really quantized tensors: the writer's byte count, Q8_0 named.
    let q8 = create("tiny-q8", "tiny-q8");
    assert_eq!(q8["size_bytes"], written["q8_bytes"], "{q8}");
    assert_eq!(q8["quantization"], "Q8_0");
    assert_eq!(q8["params"], 256 * 64 * 2 + 64 * 64 * 2 + 64);

    // A model split in three parts (llama.cpp's naming): all of them, or none.
    let split = create("split", "split");
    assert_eq!(split["size_bytes"], written["split_bytes"], "{split}");
    assert_eq!(split["params"], 5 * 64 * 64);

    // Hugging Face's layout: safetensors headers plus config.json, single and sharded.
    let hf = create("tiny-hf", "tiny-hf");
    assert_eq!(hf["size_bytes"], written["hf_bytes"], "{hf}");
    assert_eq!(hf["params"], written["hf_params"]);
    assert_eq!(hf["quantization"], "F16");
    assert_eq!(hf["context_length"], 2048);
    assert_eq!(
        hf["facts"]["kv_heads"]["from"],
        "config.json: num_key_value_heads"
    );
    // 2 × 2 layers × 2 KV heads × (64 / 4) head size × 2 bytes = 256 bytes per token.
    assert_eq!(hf["estimate"]["engine"], "vllm");
    assert_eq!(hf["estimate"]["kv_cache"], 256 * 2048);
    assert_eq!(hf["estimate"]["overhead"], VLLM_OVERHEAD);
    let sharded = create("tiny-sharded", "tiny-sharded");
    assert_eq!(sharded["size_bytes"], written["sharded_bytes"], "{sharded}");
    assert_eq!(sharded["context_length"], 4096);

    // What AIMA cannot read, the operator states.
    let remote = run_json(d.cli().args([
        "model",
        "create",
        "--name",
        "remote",
        "--source",
        "huggingface",
        "--repo",
        "meta-llama/Meta-Llama-3-8B",
        "--size",
        "16GB",
        "--context",
        "8192",
    ]));
    assert_eq!(remote["size_bytes"], 16_000_000_000_u64, "{remote}");
    assert_eq!(
        remote["facts"]["size_bytes"]["from"],
        "stated by the operator (size_bytes)"
    );
    assert_eq!(remote["estimate"]["kv_cache"], 0);
    assert!(
        remote["estimate"]["assumptions"]
            .as_array()
            .is_some_and(|a| a.iter().any(|a| a
                .as_str()
                .unwrap_or_default()
                .contains("no KV cache counted"))),
        "{remote}"
    );
    let unknown = run_json(d.cli().args([
        "model",
        "create",
        "--name",
        "unknown",
        "--source",
        "ollama",
        "--repo",
        "tinyllama",
    ]));
    assert_eq!(unknown["estimate"], Value::Null, "no size, no estimate");
    let (code, _, err) = run(d.cli().args([
        "model", "create", "--name", "x", "--source", "ollama", "--repo", "x", "--size", "lots",
    ]));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("'lots' is not a size"), "{err}");

    // Bad files: one line naming the file and the problem, and nothing registered.
    let before = run_json(d.cli().args(["model", "list"]))["items"]
        .as_array()
        .map(Vec::len);
    for (path, says) in [
        ("bad/truncated.gguf", "truncated.gguf: is truncated"),
        (
            "bad/header-cut.gguf",
            "header-cut.gguf: has a GGUF header AIMA cannot read",
        ),
        ("bad-st", "model.safetensors: is truncated"),
        (
            "garbage",
            "model.safetensors: has a safetensors header AIMA cannot read",
        ),
        ("notes", "notes: holds no model files"),
        (
            "notes/README.txt",
            "README.txt: is not a model file AIMA can read",
        ),
        (
            "two",
            "two: holds 2 GGUF files that are not parts of one model",
        ),
        (
            "split-partial",
            "tiny-00001-of-00003.gguf: is one of the 3 parts of a split model, and 2 of them are here",
        ),
        (
            "split/tiny-00002-of-00003.gguf",
            "is one of the 3 parts of a split model, and 1 of them are here",
        ),
    ] {
        let (code, out, err) = run(d.cli().args([
            "model",
            "create",
            "--name",
            "bad",
            "--source",
            "local",
            "--path",
            root.join(path).to_str().expect("utf-8"),
        ]));
        assert_eq!(code, 1, "{path}: {out}{err}");
        assert_eq!(err.lines().count(), 1, "{path}: one line: {err}");
        assert!(err.contains(says), "{path}: {says:?} in {err}");
    }
    let after = run_json(d.cli().args(["model", "list"]))["items"]
        .as_array()
        .map(Vec::len);
    assert_eq!(before, after, "a bad file registers nothing");
}

/// Writes the reference models under `root` (`$AIMA_HOME/models`) with the formats' own
/// writers; None (test skipped) without them.
fn write_models(root: &Path) -> Option<Value> {
    let python =
        crate::contract::python_with("gguf, safetensors, numpy", "gguf safetensors numpy")?;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clients/write_models.py");
    let out = Command::new(python)
        .args([script, root.to_str().expect("utf-8")])
        .output()
        .expect("run the writers");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(serde_json::from_slice(&out.stdout).expect("the writers' report"))
}

/// `aima model create --source local --path path` against `d`: (exit code, stdout, stderr).
fn create_local(d: &DaemonProcess, home: &Path, name: &str, path: &Path) -> (i32, String, String) {
    run(cli_for(d.addr, home)
        // A FIFO opened for reading blocks its reader: fail well before the CLI's 30 s.
        .timeout(Duration::from_secs(15))
        .args([
            "-o",
            "json",
            "model",
            "create",
            "--name",
            name,
            "--source",
            "local",
            "--path",
            path.to_str().expect("utf-8"),
        ]))
}

/// `file` moved to `outside` (or replaced there by a FIFO) and left behind as a link.
fn link_out(file: &Path, outside: &Path, fifo: bool) -> PathBuf {
    let target = outside.join(file.file_name().expect("a file name"));
    if fifo {
        std::fs::remove_file(file).expect("remove");
        nix::unistd::mkfifo(&target, nix::sys::stat::Mode::S_IRWXU).expect("mkfifo");
    } else {
        std::fs::rename(file, &target).expect("move out of the root");
    }
    symlink(&target, file).expect("link");
    target
}

/// A sharded safetensors model whose index names a shard that links out of the roots, a
/// split GGUF with a part that does, and a `config.json` that does, are each refused with
/// one line naming the file, where it points and the fix; nothing is registered. The
/// targets outside are real model files (which AIMA read and registered before), and
/// one is a FIFO (which blocked the reader): refused means refused before opening. A
/// link that stays inside the roots, as Hugging Face's cache links snapshots to blobs,
/// still registers.
#[test]
fn model_files_linked_out_of_the_model_roots_are_refused_before_they_are_read() {
    let home = tempfile::tempdir().expect("home");
    // Resolved, as the daemon shows paths.
    let root = std::fs::canonicalize(home.path())
        .expect("resolve")
        .join("models");
    let Some(written) = write_models(&root) else {
        return;
    };
    let outside = root.with_file_name("outside");
    std::fs::create_dir_all(&outside).expect("outside");
    let d = DaemonProcess::start(home.path(), &[]);

    // Hugging Face's cache: the snapshot's files link to blobs in the same root.
    let blobs = root.join("hub").join("blobs");
    let snapshot = root.join("hub").join("snapshots").join("abc123");
    std::fs::create_dir_all(&blobs).expect("blobs");
    std::fs::create_dir_all(&snapshot).expect("snapshot");
    for (i, entry) in std::fs::read_dir(root.join("tiny-sharded"))
        .expect("list")
        .enumerate()
    {
        let file = entry.expect("entry").path();
        let blob = blobs.join(format!("blob{i}"));
        std::fs::copy(&file, &blob).expect("copy");
        symlink(
            Path::new("../../blobs").join(format!("blob{i}")),
            snapshot.join(file.file_name().expect("name")),
        )
        .expect("link");
    }
    let (code, out, err) = create_local(&d, home.path(), "cached", &snapshot);
    assert_eq!(code, 0, "a link inside the roots registers: {err}");
    let cached: Value = serde_json::from_str(&out).expect("json");
    assert_eq!(cached["size_bytes"], written["sharded_bytes"], "{cached}");
    run(cli_for(d.addr, home.path()).args(["model", "delete", "cached"]));

    // Each case: the model, the file inside it that links out, and whether the target is
    // a FIFO.
    let shard = root.join("tiny-sharded/model-00002-of-00002.safetensors");
    let part = root.join("split/tiny-00002-of-00003.gguf");
    let config = root.join("tiny-hf/config.json");
    let single = root.join("tiny-q8/tiny-q8_0.gguf");
    let cases = [
        ("tiny-sharded", &shard, false),
        ("split", &part, false),
        ("tiny-hf", &config, true),
        ("tiny-q8", &single, false),
    ];
    for (model, file, fifo) in cases {
        let target = link_out(file, &outside, fifo);
        let (code, out, err) = create_local(&d, home.path(), model, &root.join(model));
        assert_eq!(code, 1, "{model}: {out}{err}");
        assert_eq!(err.lines().count(), 1, "{model}: one line: {err}");
        let expected = format!(
            "{}: resolves to {}, outside the model roots ({}); copy the file under a root or add its directory to AIMA_MODEL_ROOTS",
            file.display(),
            target.display(),
            root.display()
        );
        assert!(err.contains(&expected), "{model}: {expected:?} in {err}");
    }
    // The GGUF file passed directly, not its directory: the same.
    let (code, _, err) = create_local(&d, home.path(), "direct", &single);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("outside the model roots"), "{err}");
    let models = run_json(cli_for(d.addr, home.path()).args(["model", "list"]));
    assert_eq!(models["items"], serde_json::json!([]), "nothing registered");
}

/// A text file named `model.safetensors` is named for what it is, without the number its
/// first 8 bytes make or its text; a GGUF with a tensor type ggml's table does not hold
/// (40 is the table's end, on which the GGUF reader panicked; 41 is past it) is refused
/// with the tensor and the type, and the daemon's log holds no panic.
#[test]
fn a_text_file_or_an_unknown_tensor_type_gets_one_line_without_its_bytes_or_a_panic() {
    let home = tempfile::tempdir().expect("home");
    let root = std::fs::canonicalize(home.path())
        .expect("resolve")
        .join("models");
    if write_models(&root).is_none() {
        return;
    }
    let d = DaemonProcess::start(home.path(), &[]);

    let text = root.join("text/model.safetensors");
    let (code, out, err) = create_local(&d, home.path(), "text", &root.join("text"));
    assert_eq!(code, 1, "{out}{err}");
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    assert!(
        err.contains(&format!(
            "{}: is not a safetensors file (its header length is implausible)",
            text.display()
        )),
        "{err}"
    );
    let content = std::fs::read(&text).expect("read");
    let as_number = u64::from_le_bytes(content[..8].try_into().expect("8 bytes"));
    assert!(!err.contains(&as_number.to_string()), "{err}");
    assert!(
        !err.contains(&format!("holds {} bytes", content.len())),
        "{err}"
    );
    assert!(
        !err.contains("hello") && !err.contains("this is text"),
        "{err}"
    );

    for kind in [40, 41] {
        let file = root.join(format!("bad/type-{kind}.gguf"));
        for attempt in 0..2 {
            let (code, out, err) = create_local(&d, home.path(), "typed", &file);
            assert_eq!(code, 1, "type {kind}, attempt {attempt}: {out}{err}");
            assert_eq!(err.lines().count(), 1, "one line: {err}");
            let expected = format!(
                "{}: tensor 'blk.0.attn_q.weight' has GGML type {kind}, which this AIMA does not know",
                file.display()
            );
            assert!(err.contains(&expected), "{expected:?} in {err}");
        }
    }
    let models = run_json(cli_for(d.addr, home.path()).args(["model", "list"]));
    assert_eq!(models["items"], serde_json::json!([]), "nothing registered");
    // The requests were answered, so their log lines are written; a panic's line comes
    // before its request's answer.
    let log = d.stderr();
    assert!(
        !log.iter().any(|l| l.contains("panicked")),
        "{}",
        log.join("\n")
    );
}
