//! Model memory: AIMA reads real model files written by the formats' own reference
//! writers (PyPI `gguf` and `safetensors`, installed by `.ci/run`), an 8B-parameter GGUF
//! among them made cheap as a sparse file, and reports size, shape and the GPU memory
//! estimate with its parts. The expected numbers come from the writers and from public
//! model cards, not from the code under test: Llama 3 8B has 8,030,261,248 parameters
//! (16.06 GB in BF16), and its KV cache with 32 layers, 8 KV heads and head size 128 in
//! 16 bits is 2 × 32 × 8 × 128 × 2 = 131,072 bytes (128 KiB) per token. Bad files get one
//! line naming the file and the problem, and register nothing.

use std::process::Command;

use serde_json::Value;

use crate::support::{TestDaemon, run, run_json};

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
    // a table, so stdout stays the id for scripts, and in the JSON.
    let (code, id, note) = run(d.cli().args([
        "service",
        "create",
        "--model-id",
        "llama8b",
        "--engine-type",
        "vllm",
    ]));
    assert_eq!(code, 0, "{note}");
    assert!(id.trim().starts_with("svc-vllm-"), "{id}");
    assert!(
        note.contains("will need 17.96 GiB of GPU memory (weights 14.96 GiB + KV cache 1.00 GiB for 8192 tokens + overhead 2.00 GiB)"),
        "{note}"
    );
    let service = run_json(d.cli().args(["service", "get", id.trim()]));
    assert_eq!(service["estimate"]["engine"], "vllm");
    assert_eq!(
        service["estimate"]["total"],
        params * 2 + kv_per_token * 8192 + VLLM_OVERHEAD
    );
    run(d.cli().args(["service", "delete", id.trim()]));

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
