"""Gate 3 helpers: infer the family from tensor names alone.

Rules (SPEC §4.3), for Hugging Face names and llama.cpp GGUF names:
- qwen3  ⇐ per-head q/k norm tensors (``self_attn.q_norm`` / ``attn_q_norm``)
- qwen2  ⇐ q/k/v projection biases, no q/k norm, no o_proj bias
- llama  ⇐ a llama-layout attention + gated MLP with neither (o_proj bias alone is
  Llama's ``attention_bias=true``)
- gpt2, gpt_neox, opt, bert/roberta, t5, mamba, rwkv ⇐ their own name patterns
Returns ``(None, reason)`` when the names cannot decide.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

# Patterns of foreign families, checked before the llama-layout rules.
_FOREIGN: tuple[tuple[str, re.Pattern], ...] = (
    ("gpt2", re.compile(r"(^|\.)h\.\d+\.attn\.c_attn\.|(^|\.)wpe\.weight$")),
    ("gpt_neox", re.compile(r"gpt_neox\.|(^|\.)attention\.query_key_value\.|(^|\.)embed_in\.weight$")),
    ("opt", re.compile(r"(^|\.)decoder\.layers\.\d+\.(fc1|self_attn_layer_norm)\.|decoder\.embed_positions")),
    ("roberta", re.compile(r"^roberta\.")),
    ("bert", re.compile(r"(^|\.)encoder\.layer\.\d+\.attention\.self\.(query|key|value)\.|"
                        r"(^|\.)embeddings\.word_embeddings\.weight$")),
    ("t5", re.compile(r"(^|\.)(encoder|decoder)\.block\.\d+\.layer\.\d+\.|"
                      r"(^|\.)(SelfAttention|EncDecAttention)\.")),
    ("mamba", re.compile(r"(^|\.)mixer\.(A_log|conv1d|in_proj|x_proj|dt_proj)|ssm_(a|conv1d|d|dt)\b")),
    ("rwkv", re.compile(r"(^|\.)(time_decay|time_first|time_mix_[kvr]|time_maa_)|"
                        r"rwkv\.blocks\.|blocks\.\d+\.att\.")),
)

_Q_NORM = re.compile(r"(self_attn\.(q_norm|k_norm)\.weight|attn_(q|k)_norm\.weight)$")
_QKV_BIAS = re.compile(r"(self_attn\.[qkv]_proj\.bias|attn_[qkv]\.bias)$")
_O_BIAS = re.compile(r"(self_attn\.o_proj\.bias|attn_output\.bias)$")
_LLAMA_ATTN = re.compile(r"(layers\.\d+\.self_attn\.q_proj\.weight|blk\.\d+\.attn_q\.weight)$")
_LLAMA_MLP = re.compile(r"(layers\.\d+\.mlp\.gate_proj\.weight|blk\.\d+\.ffn_gate\.weight)$")


def infer_family_from_names(names: Iterable[str]) -> tuple[str | None, str]:
    """The family the tensor names alone point to, and the evidence for it."""
    names = list(names)
    if not names:
        return None, "the checkpoint holds no tensors"
    for family, pattern in _FOREIGN:
        hits = [n for n in names if pattern.search(n)]
        if hits:
            return family, f"{family} tensor names (e.g. '{hits[0]}')"
    has_attn = any(_LLAMA_ATTN.search(n) for n in names)
    has_mlp = any(_LLAMA_MLP.search(n) for n in names)
    if not (has_attn and has_mlp):
        return None, "no llama-layout attention and gated-MLP tensors, nor any known family's pattern"
    qnorm = [n for n in names if _Q_NORM.search(n)]
    if qnorm:
        return "qwen3", f"per-head q/k norm tensors (e.g. '{qnorm[0]}')"
    qkv_bias = [n for n in names if _QKV_BIAS.search(n)]
    o_bias = any(_O_BIAS.search(n) for n in names)
    if qkv_bias and not o_bias:
        return "qwen2", f"q/k/v projection biases without q/k norm (e.g. '{qkv_bias[0]}')"
    if o_bias:
        return "llama", "attention biases on q/k/v and o_proj (Llama attention_bias=true), no q/k norm"
    return "llama", "attention and gated-MLP tensors with neither q/k/v biases nor q/k norm"
