"""llama.cpp tensor names <-> Hugging Face names, and llama.cpp's Q/K row permutation.

The block map here is the one every llama-layout family shares; a family spec's
``gguf_block_names`` adds or overrides entries (pass the merged map from ``block_map``).
llama.cpp's converter permutes the rows of ``attn_q`` / ``attn_k`` for the families whose spec says
``gguf_permute_qk`` (its RoPE pairs adjacent dimensions, HF's pairs the two halves of each head).
``unpermute_rows`` undoes it; ``permute_rows`` re-applies it (the exporter, and tests that write GGUFs).
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import numpy as np

# Per-block names: llama.cpp suffix -> HF suffix (after ``model.layers.{i}.``).
BLOCK = {
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
GLOBAL = {
    "token_embd.weight": "model.embed_tokens.weight",
    "output_norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",
}
_GGUF_BLOCK = re.compile(r"^blk\.(\d+)\.([a-z_]+)\.(weight|bias)$")
_HF_BLOCK = re.compile(r"^model\.layers\.(\d+)\.(.+)\.(weight|bias)$")


def block_map(spec=None) -> dict[str, str]:
    """The block map for a family: the shared one with its spec's ``gguf_block_names`` over it."""
    return {**BLOCK, **(spec.gguf_block_names if spec is not None else {})}


def _rename(name: str, whole: Mapping[str, str], block: Mapping[str, str], pattern: re.Pattern, fmt: str) -> str:
    if name in whole:
        return whole[name]
    m = pattern.match(name)
    if m and m.group(2) in block:
        return fmt.format(m.group(1), block[m.group(2)], m.group(3))
    return name


def gguf_to_hf(name: str, block: Mapping[str, str] = BLOCK) -> str:
    """HF name for a llama.cpp tensor name; unknown names are returned unchanged."""
    return _rename(name, GLOBAL, block, _GGUF_BLOCK, "model.layers.{}.{}.{}")


def hf_to_gguf(name: str, block: Mapping[str, str] = BLOCK) -> str:
    """llama.cpp name for a HF tensor name; unknown names are returned unchanged."""
    inverse = {v: k for k, v in block.items()}
    return _rename(name, {v: k for k, v in GLOBAL.items()}, inverse, _HF_BLOCK, "blk.{}.{}.{}")


def qk_heads(gguf_name: str, num_heads: int, num_kv_heads: int) -> int | None:
    """For llama.cpp's ``attn_q`` / ``attn_k`` tensors, the heads their rows are grouped in; else None."""
    m = _GGUF_BLOCK.match(gguf_name)
    if m and m.group(2) == "attn_q":
        return num_heads
    if m and m.group(2) == "attn_k":
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


__all__ = ["BLOCK", "GLOBAL", "block_map", "gguf_to_hf", "hf_to_gguf", "permute_rows", "qk_heads", "unpermute_rows"]
