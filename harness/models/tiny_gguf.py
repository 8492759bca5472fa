"""Writes a tiny but real GGUF model that llama.cpp loads and runs: llama architecture,
2 layers, 64 wide (4 heads of 16, 2 KV heads), a SentencePiece-style vocabulary of the
256 byte tokens plus a few pieces, bos/eos/unk, a chat template, random weights from a
fixed seed. About 0.5 MB; byte-identical on every run. It writes nonsense, so tests check
structure (status, finish_reason, token counts), never wording.

usage: tiny_gguf.py OUT_FILE
"""

import sys

import numpy as np
from gguf import GGUFWriter, TokenType

VOCAB_PIECES = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)] + [
    "\u2581the", "\u2581a", "\u2581hello", "\u2581world", "\u2581AIMA", "\u2581model",
    "\u2581is", "\u2581here", ".", ",", "!", "?",
]
CHAT_TEMPLATE = (
    "{% for message in messages %}<|{{ message['role'] }}|>\n{{ message['content'] }}</s>\n"
    "{% endfor %}{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)


def main() -> None:
    out = sys.argv[1]
    rng = np.random.default_rng(20261203)
    n_vocab, n_embd, n_ff, n_layer, n_head, n_head_kv = len(VOCAB_PIECES), 64, 128, 2, 4, 2
    head = n_embd // n_head
    w = GGUFWriter(out, "llama")
    w.add_name("aima-tiny-llama")
    w.add_context_length(2048)
    w.add_embedding_length(n_embd)
    w.add_block_count(n_layer)
    w.add_feed_forward_length(n_ff)
    w.add_head_count(n_head)
    w.add_head_count_kv(n_head_kv)
    w.add_rope_dimension_count(head)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_file_type(0)  # all F32
    w.add_tokenizer_model("llama")
    w.add_token_list(VOCAB_PIECES)
    w.add_token_scores([0.0] * 3 + [0.0] * 256 + [-float(i) for i in range(len(VOCAB_PIECES) - 259)])
    types = [TokenType.UNKNOWN, TokenType.CONTROL, TokenType.CONTROL] + [TokenType.BYTE] * 256
    types += [TokenType.NORMAL] * (len(VOCAB_PIECES) - len(types))
    w.add_token_types(types)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_unk_token_id(0)
    w.add_add_bos_token(True)
    w.add_chat_template(CHAT_TEMPLATE)

    def tensor(name, *shape):
        w.add_tensor(name, (rng.standard_normal(shape) * 0.02).astype(np.float32))

    tensor("token_embd.weight", n_vocab, n_embd)
    w.add_tensor("output_norm.weight", np.ones(n_embd, dtype=np.float32))
    tensor("output.weight", n_vocab, n_embd)
    for i in range(n_layer):
        w.add_tensor(f"blk.{i}.attn_norm.weight", np.ones(n_embd, dtype=np.float32))
        tensor(f"blk.{i}.attn_q.weight", n_embd, n_embd)
        tensor(f"blk.{i}.attn_k.weight", n_head_kv * head, n_embd)
        tensor(f"blk.{i}.attn_v.weight", n_head_kv * head, n_embd)
        tensor(f"blk.{i}.attn_output.weight", n_embd, n_embd)
        w.add_tensor(f"blk.{i}.ffn_norm.weight", np.ones(n_embd, dtype=np.float32))
        tensor(f"blk.{i}.ffn_gate.weight", n_ff, n_embd)
        tensor(f"blk.{i}.ffn_up.weight", n_ff, n_embd)
        tensor(f"blk.{i}.ffn_down.weight", n_embd, n_ff)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


main()
