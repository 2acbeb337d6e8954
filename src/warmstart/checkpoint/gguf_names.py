"""llama.cpp tensor names <-> Hugging Face names, and llama.cpp's Q/K row permutation.

llama.cpp's converter permutes the rows of ``attn_q`` / ``attn_k`` for llama-family
models (its RoPE pairs adjacent dimensions, HF's pairs the two halves of each head).
Qwen2/Qwen3 GGUFs are written without that permutation. ``unpermute_rows`` undoes it;
``permute_rows`` re-applies it (used by exporters and by tests that write GGUFs).
"""

from __future__ import annotations

import re

import numpy as np

# Per-block names: llama.cpp suffix -> HF suffix (after ``model.layers.{i}.``).
_BLOCK = {
    "attn_norm": "input_layernorm",
    "ffn_norm": "post_attention_layernorm",
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "attn_q_norm": "self_attn.q_norm",
    "attn_k_norm": "self_attn.k_norm",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}
_GLOBAL = {
    "token_embd.weight": "model.embed_tokens.weight",
    "output_norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",
}
_BLOCK_RE = re.compile(r"^blk\.(\d+)\.([a-z_]+)\.(weight|bias)$")
_HF_BLOCK_RE = re.compile(r"^model\.layers\.(\d+)\.(.+)\.(weight|bias)$")
_HF_TO_GGUF_BLOCK = {v: k for k, v in _BLOCK.items()}
_HF_TO_GGUF_GLOBAL = {v: k for k, v in _GLOBAL.items()}

# GGUF ``general.architecture`` values whose attn_q/attn_k rows llama.cpp permutes.
PERMUTED_ARCHS = frozenset({"llama", "mistral"})


def gguf_to_hf(name: str) -> str:
    """HF name for a llama.cpp tensor name; unknown names are returned unchanged."""
    if name in _GLOBAL:
        return _GLOBAL[name]
    m = _BLOCK_RE.match(name)
    if m and m.group(2) in _BLOCK:
        return f"model.layers.{m.group(1)}.{_BLOCK[m.group(2)]}.{m.group(3)}"
    return name


def hf_to_gguf(name: str) -> str:
    """llama.cpp name for a HF tensor name; unknown names are returned unchanged."""
    if name in _HF_TO_GGUF_GLOBAL:
        return _HF_TO_GGUF_GLOBAL[name]
    m = _HF_BLOCK_RE.match(name)
    if m and m.group(2) in _HF_TO_GGUF_BLOCK:
        return f"blk.{m.group(1)}.{_HF_TO_GGUF_BLOCK[m.group(2)]}.{m.group(3)}"
    return name


def permutation_heads(gguf_name: str, arch: str, num_heads: int, num_kv_heads: int) -> int | None:
    """How many heads the rows of this tensor were permuted in, or None if not permuted."""
    if arch not in PERMUTED_ARCHS:
        return None
    m = _BLOCK_RE.match(gguf_name)
    if not m:
        return None
    if m.group(2) == "attn_q":
        return num_heads
    if m.group(2) == "attn_k":
        return num_kv_heads
    return None


def unpermute_rows(rows: np.ndarray, n_head: int) -> np.ndarray:
    """Undo llama.cpp's permutation along axis 0 (rows = output features).

    Works on any array whose first axis is the output dimension, including raw
    quantised rows (``[rows, bytes_per_row]``): quantisation blocks never span rows.
    """
    n = rows.shape[0]
    half = n // n_head // 2
    return rows.reshape(n_head, half, 2, *rows.shape[1:]).swapaxes(1, 2).reshape(rows.shape)


def permute_rows(rows: np.ndarray, n_head: int) -> np.ndarray:
    """Apply llama.cpp's permutation (what convert_hf_to_gguf.py does to q/k of llama)."""
    n = rows.shape[0]
    half = n // n_head // 2
    return rows.reshape(n_head, 2, half, *rows.shape[1:]).swapaxes(1, 2).reshape(rows.shape)


__all__ = ["PERMUTED_ARCHS", "gguf_to_hf", "hf_to_gguf", "permutation_heads", "permute_rows", "unpermute_rows"]
