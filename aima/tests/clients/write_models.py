"""Writes model files with the formats' own reference writers (PyPI `gguf`, llama.cpp's,
and `safetensors`, Hugging Face's) for the model-memory tests, and prints what it wrote
as JSON. Large layouts are sparse: the writers lay down the header and tensor infos, and
the file is extended to its full length without writing the weights.

Usage: write_models.py DIR
"""

import json
import os
import sys

import gguf
import numpy as np
from safetensors.numpy import save_file

ROOT = sys.argv[1]
BF16 = gguf.GGMLQuantizationType.BF16


def path(*parts):
    full = os.path.join(ROOT, *parts)
    os.makedirs(os.path.dirname(full), exist_ok=True)
    return full


def llama3_8b_layout():
    """Meta-Llama-3-8B's tensors (its config.json: hidden 4096, 32 layers, 32 heads,
    8 KV heads, intermediate 14336, vocabulary 128256), as (name, shape)."""
    hidden, ffn, vocab, kv = 4096, 14336, 128256, 8 * 128
    tensors = [("token_embd.weight", (vocab, hidden))]
    for i in range(32):
        tensors += [
            (f"blk.{i}.attn_norm.weight", (hidden,)),
            (f"blk.{i}.attn_q.weight", (hidden, hidden)),
            (f"blk.{i}.attn_k.weight", (kv, hidden)),
            (f"blk.{i}.attn_v.weight", (kv, hidden)),
            (f"blk.{i}.attn_output.weight", (hidden, hidden)),
            (f"blk.{i}.ffn_norm.weight", (hidden,)),
            (f"blk.{i}.ffn_gate.weight", (ffn, hidden)),
            (f"blk.{i}.ffn_up.weight", (ffn, hidden)),
            (f"blk.{i}.ffn_down.weight", (hidden, ffn)),
        ]
    tensors += [("output_norm.weight", (hidden,)), ("output.weight", (vocab, hidden))]
    return tensors


def llama_metadata(writer, context, layers, heads, kv_heads, hidden):
    writer.add_name("aima test model")
    writer.add_context_length(context)
    writer.add_block_count(layers)
    writer.add_head_count(heads)
    writer.add_head_count_kv(kv_heads)
    writer.add_embedding_length(hidden)


def sparse_gguf(file):
    """An 8B model in BF16: header and tensor infos written by GGUFWriter, the data
    region a hole of its full length."""
    writer = gguf.GGUFWriter(file, "llama")
    llama_metadata(writer, 8192, 32, 32, 8, 4096)
    total = 0
    for name, shape in llama3_8b_layout():
        nbytes = int(np.prod(shape)) * 2
        writer.add_tensor_info(name, shape, np.dtype(np.float16), nbytes, raw_dtype=BF16)
        total += nbytes  # every BF16 tensor here is a multiple of the 32-byte alignment
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    writer.close()
    with open(file, "r+b") as f:
        f.seek(0, os.SEEK_END)
        start = (f.tell() + 31) // 32 * 32
        f.truncate(start + total)
    return total


def small_quantized_gguf(file):
    """A tiny model whose matrices are really quantized to Q8_0 by gguf's quantizer."""
    writer = gguf.GGUFWriter(file, "llama")
    llama_metadata(writer, 2048, 2, 4, 2, 64)
    rng = np.random.default_rng(7)
    total = 0
    for name, shape in [
        ("token_embd.weight", (256, 64)),
        ("blk.0.attn_q.weight", (64, 64)),
        ("blk.1.attn_q.weight", (64, 64)),
        ("output.weight", (256, 64)),
    ]:
        data = rng.standard_normal(shape, dtype=np.float32)
        quantized = gguf.quants.quantize(data, gguf.GGMLQuantizationType.Q8_0)
        writer.add_tensor(name, quantized, raw_dtype=gguf.GGMLQuantizationType.Q8_0)
        total += quantized.nbytes
    norm = np.ones(64, dtype=np.float32)
    writer.add_tensor("output_norm.weight", norm)
    total += norm.nbytes
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return total


def split_gguf(directory):
    """One model in 3 parts, as llama.cpp's gguf-split names them (-00001-of-00003)."""
    writer = gguf.GGUFWriter(path(directory, "tiny.gguf"), "llama", split_max_tensors=2)
    llama_metadata(writer, 2048, 2, 4, 2, 64)
    total = 0
    for i in range(5):
        data = np.ones((64, 64), dtype=np.float16)
        writer.add_tensor(f"blk.{i}.attn_q.weight", data)
        total += data.nbytes
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return total


def hf_config(directory, context):
    config = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": context,
        "torch_dtype": "float16",
    }
    with open(path(directory, "config.json"), "w") as f:
        json.dump(config, f)


def tiny_tensors(layer_range):
    rng = np.random.default_rng(11)
    tensors = {}
    for i in layer_range:
        tensors[f"model.layers.{i}.self_attn.q_proj.weight"] = rng.standard_normal((64, 64)).astype(np.float16)
        tensors[f"model.layers.{i}.self_attn.k_proj.weight"] = rng.standard_normal((32, 64)).astype(np.float16)
        tensors[f"model.layers.{i}.input_layernorm.weight"] = np.ones(64, dtype=np.float32)
    return tensors


def safetensors_single(directory):
    hf_config(directory, 2048)
    tensors = tiny_tensors(range(2))
    save_file(tensors, path(directory, "model.safetensors"))
    return tensors


def safetensors_sharded(directory):
    hf_config(directory, 4096)
    first, second = tiny_tensors(range(1)), tiny_tensors(range(1, 2))
    names = {"model-00001-of-00002.safetensors": first, "model-00002-of-00002.safetensors": second}
    weight_map = {}
    for file, tensors in names.items():
        save_file(tensors, path(directory, file))
        weight_map.update({name: file for name in tensors})
    with open(path(directory, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {}, "weight_map": weight_map}, f)
    return {**first, **second}


def unknown_type_gguf(file, kind):
    """A tiny model written by GGUFWriter, then its first tensor's GGML type patched to
    `kind`, an id ggml's table does not hold (40 is GGML_TYPE_COUNT, 41 is past it)."""
    writer = gguf.GGUFWriter(file, "llama")
    llama_metadata(writer, 2048, 2, 4, 2, 64)
    for name in ("blk.0.attn_q.weight", "output_norm.weight"):
        writer.add_tensor(name, np.ones(64, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    with open(file, "r+b") as f:
        data = bytearray(f.read())
        name = b"blk.0.attn_q.weight"
        # Tensor info: name (u64 length, bytes), u32 dimensions, u64 each, u32 type.
        at = data.index(len(name).to_bytes(8, "little") + name) + 8 + len(name)
        dims = int.from_bytes(data[at : at + 4], "little")
        at += 4 + 8 * dims
        assert int.from_bytes(data[at : at + 4], "little") == int(gguf.GGMLQuantizationType.F32)
        data[at : at + 4] = kind.to_bytes(4, "little")
        f.seek(0)
        f.write(data)


def truncate(source, target, keep):
    with open(source, "rb") as f:
        data = f.read()
    with open(path(target), "wb") as f:
        f.write(data[:keep])


def main():
    written = {}
    written["llama8b_bytes"] = sparse_gguf(path("llama8b", "llama-3-8b-bf16.gguf"))
    written["q8_bytes"] = small_quantized_gguf(path("tiny-q8", "tiny-q8_0.gguf"))
    single = safetensors_single("tiny-hf")
    written["hf_bytes"] = sum(t.nbytes for t in single.values())
    written["hf_params"] = sum(t.size for t in single.values())
    written["split_bytes"] = split_gguf("split")
    for part in ("tiny-00001-of-00003.gguf", "tiny-00002-of-00003.gguf"):
        with open(path("split", part), "rb") as src, open(path("split-partial", part), "wb") as dst:
            dst.write(src.read())
    sharded = safetensors_sharded("tiny-sharded")
    written["sharded_bytes"] = sum(t.nbytes for t in sharded.values())

    # Bad files: cut short, garbage, text, unknown tensor types, not a model, two
    # unrelated GGUFs.
    q8 = path("tiny-q8", "tiny-q8_0.gguf")
    truncate(q8, "bad/truncated.gguf", os.path.getsize(q8) - 100)
    truncate(q8, "bad/header-cut.gguf", 40)
    st = path("tiny-hf", "model.safetensors")
    truncate(st, "bad-st/model.safetensors", os.path.getsize(st) - 10)
    with open(path("garbage", "model.safetensors"), "wb") as f:
        f.write((64).to_bytes(8, "little") + b"{not json at all" + b" " * 48)
    with open(path("text", "model.safetensors"), "w") as f:
        f.write("hello world, this is text")
    unknown_type_gguf(path("bad", "type-40.gguf"), 40)
    unknown_type_gguf(path("bad", "type-41.gguf"), 41)
    with open(path("notes", "README.txt"), "w") as f:
        f.write("not a model\n")
    for name in ("a.gguf", "b.gguf"):
        with open(q8, "rb") as src, open(path("two", name), "wb") as dst:
            dst.write(src.read())
    print(json.dumps(written))


main()
