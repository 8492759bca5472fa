"""Writes a tiny but real Hugging Face-format Llama that vLLM loads and runs on the CPU, with
no torch, no transformers and no download: config.json (LlamaForCausalLM), model.safetensors
(float32 random weights from a fixed seed, written by PyPI's safetensors from numpy arrays),
tokenizer.json (a byte-level BPE built, not trained, with PyPI's tokenizers: the 256 byte
symbols, a few merges, <unk> <s> </s>), tokenizer_config.json (with a chat template),
special_tokens_map.json and generation_config.json. About 1.5 MB; byte-identical on every
run. It writes nonsense, so tests check structure (status, finish_reason, token counts),
never wording.

Shape: 2 layers, hidden 128, 2 attention heads of 64 and 1 KV head (grouped-query, as real
Llamas), MLP 256. vLLM's CPU attention wants a head size of 32, 64, 80, ... (a 16-wide head
passes /health and crashes on the first request), hence 64. float32 because numpy has no
bfloat16; vLLM (dtype auto) downcasts it to bfloat16 as it loads, warning once per tensor.

usage: tiny_hf.py OUT_DIR
"""

import json
import os
import sys

import numpy as np
from safetensors.numpy import save_file
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors

SPECIALS = ["<unk>", "<s>", "</s>"]
# Words that get merges, so that common text takes fewer tokens than bytes.
WORDS = [" the", " a", " hello", " world", " AIMA", " model", " is", " here", "Hello", " you"]
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}<|{{ message['role'] }}|>\n"
    "{{ message['content'] }}{{ eos_token }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)
HIDDEN, INTERMEDIATE, LAYERS, HEADS, KV_HEADS, HEAD_DIM = 128, 256, 2, 2, 1, 64
CONTEXT = 2048


def byte_symbols() -> list[str]:
    """GPT-2's byte-to-unicode table (what tokenizers' ByteLevel uses), in byte order."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("\u00a1"), ord("\u00ac") + 1))
    printable += list(range(ord("\u00ae"), ord("\u00ff") + 1))
    table, extra = {}, 0
    for b in range(256):
        if b in printable:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + extra)
            extra += 1
    return [table[b] for b in range(256)]


def build_tokenizer() -> Tokenizer:
    symbols = byte_symbols()
    vocab = {token: i for i, token in enumerate(SPECIALS)}
    for symbol in symbols:
        vocab[symbol] = len(vocab)
    merges = []
    for word in WORDS:
        pieces = [symbols[b] for b in word.encode("utf-8")]
        while len(pieces) > 1:  # merge left to right: (a b) c, then (ab c), ...
            merged = pieces[0] + pieces[1]
            if merged not in vocab:
                merges.append((pieces[0], pieces[1]))
                vocab[merged] = len(vocab)
            pieces = [merged] + pieces[2:]
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tokenizer.decoder = decoders.ByteLevel()
    # Like Llama's tokenizers: <s> in front of every encoded text.
    tokenizer.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", 1)]
    )
    tokenizer.add_special_tokens(SPECIALS)
    return tokenizer


def write_json(path: str, value: dict) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(value, f, indent=2, sort_keys=True, ensure_ascii=False)
        f.write("\n")


def main() -> None:
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    tokenizer = build_tokenizer()
    n_vocab = tokenizer.get_vocab_size()
    with open(os.path.join(out, "tokenizer.json"), "w", encoding="utf-8") as f:
        f.write(tokenizer.to_str(pretty=True))
        f.write("\n")

    rng = np.random.default_rng(20261203)

    def weight(*shape):
        return (rng.standard_normal(shape) * 0.02).astype(np.float32)

    tensors = {"model.embed_tokens.weight": weight(n_vocab, HIDDEN)}
    for i in range(LAYERS):
        p = f"model.layers.{i}."
        tensors[p + "input_layernorm.weight"] = np.ones(HIDDEN, dtype=np.float32)
        tensors[p + "self_attn.q_proj.weight"] = weight(HEADS * HEAD_DIM, HIDDEN)
        tensors[p + "self_attn.k_proj.weight"] = weight(KV_HEADS * HEAD_DIM, HIDDEN)
        tensors[p + "self_attn.v_proj.weight"] = weight(KV_HEADS * HEAD_DIM, HIDDEN)
        tensors[p + "self_attn.o_proj.weight"] = weight(HIDDEN, HEADS * HEAD_DIM)
        tensors[p + "post_attention_layernorm.weight"] = np.ones(HIDDEN, dtype=np.float32)
        tensors[p + "mlp.gate_proj.weight"] = weight(INTERMEDIATE, HIDDEN)
        tensors[p + "mlp.up_proj.weight"] = weight(INTERMEDIATE, HIDDEN)
        tensors[p + "mlp.down_proj.weight"] = weight(HIDDEN, INTERMEDIATE)
    tensors["model.norm.weight"] = np.ones(HIDDEN, dtype=np.float32)
    tensors["lm_head.weight"] = weight(n_vocab, HIDDEN)
    weights = os.path.join(out, "model.safetensors")
    save_file(tensors, weights, metadata={"format": "pt"})
    os.chmod(weights, 0o644)  # safetensors writes 0600; a container's user may differ

    write_json(os.path.join(out, "config.json"), {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": HIDDEN,
        "intermediate_size": INTERMEDIATE,
        "num_hidden_layers": LAYERS,
        "num_attention_heads": HEADS,
        "num_key_value_heads": KV_HEADS,
        "head_dim": HEAD_DIM,
        "hidden_act": "silu",
        "max_position_embeddings": CONTEXT,
        "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0,
        "attention_bias": False,
        "mlp_bias": False,
        "tie_word_embeddings": False,
        "vocab_size": n_vocab,
        "bos_token_id": 1,
        "eos_token_id": 2,
        "initializer_range": 0.02,
        "torch_dtype": "float32",
        "use_cache": True,
    })
    write_json(os.path.join(out, "generation_config.json"), {
        "bos_token_id": 1,
        "eos_token_id": 2,
    })
    specials = {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}
    write_json(os.path.join(out, "special_tokens_map.json"), specials)
    write_json(os.path.join(out, "tokenizer_config.json"), {
        **specials,
        "pad_token": "</s>",
        "tokenizer_class": "PreTrainedTokenizerFast",
        "model_max_length": CONTEXT,
        "clean_up_tokenization_spaces": False,
        "chat_template": CHAT_TEMPLATE,
    })


main()
