"""Gemma 3 (text decoder, ``Gemma3ForCausalLM``): embeddings scaled by sqrt(hidden), (1 + w) RMSNorm,
four norms per layer (before and after attention and MLP), per-head q/k norm, GELU-tanh gated MLP,
sliding-window layers interleaved with global ones (each kind its own RoPE base), attention scaled
by ``query_pre_attn_scalar``, tied head.

llama.cpp (arch ``gemma3``) stores every norm weight as 1 + w and keeps neither the layer pattern nor
the local RoPE base: its reader fixes them (every 6th layer global, base 10 000), as does
transformers' GGUF loader, so a GGUF can only hold a Gemma 3 with those.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection
from typing import Any

from warmstart.arch.families._spec import (
    FULL,
    QK_NORM,
    SLIDING,
    FamilySpec,
    NameFeature,
    Signature,
    biases_on_all_projections,
    hf_activation,
    shape,
)
from warmstart.errors import FamilyError, UsageError

ROPE_SCALINGS = ("linear", "llama3", "yarn")  # of the global layers (arch/model.py rope_inv_freq)

PATTERN = 6  # every 6th layer is global: HF's default sliding_window_pattern, llama.cpp's fixed one
LOCAL_THETA = 10_000.0  # RoPE base of the sliding layers (HF's default rope_local_base_freq, llama.cpp's fixed one)

SANDWICH_NORMS = NameFeature("norms after attention and after the MLP (pre/post feed-forward norms)",
                             re.compile(r"((pre|post)_feedforward_layernorm|post_ffw_norm|post_attention_norm)\.weight$"))


def pattern_types(layers: int, pattern: int = PATTERN) -> list[str]:
    """Layer types of a sliding-window pattern: layer i is global when (i + 1) is a multiple of ``pattern``."""
    return [SLIDING if (i + 1) % pattern else FULL for i in range(layers)]


def _rope(cfg: dict, source: str | None) -> dict:
    """Global and local RoPE: transformers 5's ``rope_parameters`` per layer type, or the older
    ``rope_theta`` / ``rope_local_base_freq`` / ``rope_scaling`` keys."""
    per_type = cfg.get("rope_parameters") if FULL in (cfg.get("rope_parameters") or {}) else {}
    full = dict(per_type.get(FULL) or {})
    local = dict(per_type.get(SLIDING) or {})
    if local.get("rope_type", "default") != "default":
        raise FamilyError(f"rope scaling of the sliding-window layers ({local['rope_type']}) is not implemented",
                          path=source)
    scaling = {k: v for k, v in full.items() if k != "rope_theta"} or cfg.get("rope_scaling")
    if scaling and scaling.get("rope_type", scaling.get("type", "default")) == "default":
        scaling = None
    if scaling and scaling.get("rope_type", scaling.get("type")) not in ROPE_SCALINGS:
        raise FamilyError(f"rope scaling type '{scaling.get('rope_type', scaling.get('type'))}' is not implemented "
                          f"for Gemma 3 (default, {', '.join(ROPE_SCALINGS)})", path=source)
    return {"rope_theta": float(full.get("rope_theta", cfg.get("rope_theta", 1_000_000.0))),
            "rope_scaling": dict(scaling) if scaling else None,
            "rope_local_theta": float(local.get("rope_theta", cfg.get("rope_local_base_freq", LOCAL_THETA)))}


def _from_hf(cfg: dict, source: str | None) -> dict:
    if "text_config" in cfg:
        raise FamilyError("this is the multimodal Gemma 3 (Gemma3ForConditionalGeneration); warmstart trains the "
                          "text decoder (Gemma3ForCausalLM) only", fix="use a text-only Gemma 3 checkpoint",
                          path=source)
    for feature in ("final_logit_softcapping", "attn_logit_softcapping", "use_bidirectional_attention"):
        if cfg.get(feature):
            raise FamilyError(f"{feature}={cfg[feature]!r} is not implemented", path=source)
    layers = int(cfg["num_hidden_layers"])
    return {
        **biases_on_all_projections(cfg),
        **_rope(cfg, source),
        "qk_norm": True, "norm_style": "sandwich", "norm_weight_offset": 1.0, "embedding_scale": "sqrt_hidden",
        "hidden_act": hf_activation(cfg.get("hidden_activation") or cfg.get("hidden_act") or "gelu_pytorch_tanh",
                                    source),
        "sliding_window": int(cfg.get("sliding_window") or 4096),
        "layer_types": cfg.get("layer_types") or pattern_types(layers, int(cfg.get("sliding_window_pattern", PATTERN))),
        "query_pre_attn_scalar": float(cfg.get("query_pre_attn_scalar", 256)),
    }


def _local_theta(c: Any) -> float:
    return c.rope_theta if c.rope_local_theta is None else c.rope_local_theta


def _to_hf(c: Any) -> dict:
    full = {"rope_type": "default", "rope_theta": c.rope_theta, **(c.rope_scaling or {})}
    return {
        "hidden_activation": c.hidden_act,
        "attention_bias": c.attention_bias or c.o_bias,
        "query_pre_attn_scalar": int(q) if (q := c.query_pre_attn_scalar) is not None and q == int(q) else q,
        "sliding_window": c.sliding_window,
        "layer_types": [c.layer_type(i) for i in range(c.num_layers)],
        "rope_parameters": {FULL: full, SLIDING: {"rope_type": "default", "rope_theta": _local_theta(c)}},
        "rope_local_base_freq": _local_theta(c),  # transformers 4 reads these two
        "rope_theta": c.rope_theta,
        "final_logit_softcapping": None,
        "attn_logit_softcapping": None,
        "use_bidirectional_attention": False,
    }


def _gguf_attention_scale(layers: int, hidden: int, heads: int, head_dim: int) -> float:
    """llama.cpp's query_pre_attn_scalar for gemma3: hidden / heads for the 27B model (62 layers), else head_dim."""
    return float(hidden // heads if layers == 62 else head_dim)


def _from_gguf(key: Callable[[str], Any], tensors: Collection[str]) -> dict:
    layers, hidden, heads = key("block_count"), key("embedding_length"), key("attention.head_count")
    head_dim = key("attention.key_length") or hidden // heads
    pattern = key("attention.sliding_window_pattern", PATTERN)
    types = [SLIDING if s else FULL for s in pattern] if isinstance(pattern, list) else pattern_types(layers, pattern)
    return {"hidden_activation": "gelu_pytorch_tanh", "sliding_window": key("attention.sliding_window"),
            "layer_types": types, "rope_local_base_freq": key("rope.freq_base_swa", LOCAL_THETA),
            "query_pre_attn_scalar": _gguf_attention_scale(layers, hidden, heads, head_dim),
            "attention_bias": "blk.0.attn_q.bias" in tensors}


def _gguf_keys(c: Any) -> dict:
    """The sliding window; refused when the layer pattern, local RoPE base or attention scale differ from
    what llama.cpp's (and transformers') gemma3 reader assumes."""
    expected = {"layer_types": pattern_types(c.num_layers), "rope_local_theta": LOCAL_THETA,
                "query_pre_attn_scalar": _gguf_attention_scale(c.num_layers, c.hidden_size, c.num_heads, c.head_dim)}
    actual = {"layer_types": [c.layer_type(i) for i in range(c.num_layers)], "rope_local_theta": _local_theta(c),
              "query_pre_attn_scalar": c.query_pre_attn_scalar}
    lost = [f"{k}={actual[k]!r}" for k in expected if actual[k] != expected[k]]
    if lost or c.attention_bias or c.o_bias:
        raise UsageError(f"a gemma3 GGUF cannot express {', '.join(lost) or 'attention biases'}",
                         why="llama.cpp's and transformers' gemma3 GGUF readers fix these, so the file would load "
                         "as a different model", fix="export to --to hf or --to safetensors instead")
    return {"attention.sliding_window": c.sliding_window}


_GEMMA3 = dict(qk_norm=True, norm_style="sandwich", norm_weight_offset=1.0, embedding_scale="sqrt_hidden",
               hidden_act="gelu_pytorch_tanh", rope_local_theta=LOCAL_THETA)

SPEC = FamilySpec(
    name="gemma3",
    display="Gemma 3",
    hf_architecture="Gemma3ForCausalLM",
    model_type="gemma3_text",
    aliases=("gemma-3", "gemma3text"),
    config_from_hf=_from_hf,
    config_to_hf=_to_hf,
    evidence=(Signature("per-head q/k norm tensors and norms after attention and after the MLP",
                        present=(QK_NORM, SANDWICH_NORMS)),),
    gguf_arch="gemma3",
    gguf_config=_from_gguf,
    gguf_keys=_gguf_keys,
    gguf_block_names={"ffn_norm": "pre_feedforward_layernorm", "post_attention_norm": "post_attention_layernorm",
                      "post_ffw_norm": "post_feedforward_layernorm"},
    gguf_norm_shift=1.0,  # llama.cpp's converter stores Gemma's norm weights as 1 + w
    presets={
        "gemma3-tiny": shape(512, 64, 6, 4, 2, 16, 160, 1e6, 1e-6, 512, True, sliding_window=8,
                             layer_types=pattern_types(6), query_pre_attn_scalar=16.0, **_GEMMA3),  # tests
        "gemma3-270m": shape(262144, 640, 18, 4, 1, 256, 2048, 1e6, 1e-6, 32768, True, sliding_window=512,
                             layer_types=pattern_types(18), query_pre_attn_scalar=256.0, **_GEMMA3),
    },
)
