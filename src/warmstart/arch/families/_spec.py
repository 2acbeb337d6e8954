"""What a family spec holds (``FamilySpec``), and the pieces specs share.

A spec module (``llama.py``, ``qwen2.py``, ...) defines ``SPEC = FamilySpec(...)``. The spec is the
only place that knows the family: its names, how its HF ``config.json`` maps onto ``ModelConfig``
(whose fields carry every model variation), how its tensor names show it, and how llama.cpp's GGUF
writes it. Everything else in warmstart asks the spec.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from warmstart.errors import FamilyError

SUPPORTED_DECODER = "supported-decoder"
UNSUPPORTED_DECODER = "unsupported-decoder"
ENCODER = "encoder"
ENCODER_DECODER = "encoder-decoder"
NON_TRANSFORMER = "non-transformer"
FULL, SLIDING = "full_attention", "sliding_attention"  # layer types (HF's words)


# ------------------------------------------------------------ tensor evidence

@dataclass(frozen=True)
class NameFeature:
    """A kind of tensor, recognised by its Hugging Face or llama.cpp name."""

    label: str
    pattern: re.Pattern[str]

    def hits(self, names: Iterable[str]) -> list[str]:
        return [n for n in names if self.pattern.search(n)]


QK_NORM = NameFeature("per-head q/k norm tensors",
                      re.compile(r"(self_attn\.(q_norm|k_norm)\.weight|attn_(q|k)_norm\.weight)$"))
QKV_BIAS = NameFeature("q/k/v projection biases", re.compile(r"(self_attn\.[qkv]_proj\.bias|attn_[qkv]\.bias)$"))
O_BIAS = NameFeature("an o_proj bias", re.compile(r"(self_attn\.o_proj\.bias|attn_output\.bias)$"))


@dataclass(frozen=True)
class Signature:
    """Tensor names that show a family: every ``present`` feature is found and no ``absent`` one.

    Among the signatures of all families that fit, the one with the most ``present`` features wins,
    so a new family that adds a feature to an existing one needs no change to the existing spec.
    """

    why: str  # the evidence in words, e.g. "per-head q/k norm tensors"
    present: tuple[NameFeature, ...] = ()
    absent: tuple[NameFeature, ...] = ()


# ---------------------------------------------------------------- the spec

def _no_keys(*_args: Any) -> dict:
    return {}


@dataclass(frozen=True, kw_only=True)
class FamilySpec:
    """Everything warmstart knows about one supported decoder family."""

    name: str  # canonical slug, e.g. "qwen2"
    display: str  # human name, e.g. "Qwen2"
    hf_architecture: str  # the HF CausalLM class, config.json architectures[0]
    model_type: str  # config.json model_type
    aliases: tuple[str, ...] = ()  # other spellings that mean this family
    kind: str = SUPPORTED_DECODER
    # HF config.json <-> ModelConfig. ``config.py`` maps the shape keys every family shares; these
    # give the family's own: (config.json dict, source path) -> ModelConfig fields (raising
    # FamilyError for a feature it does not implement), and ModelConfig -> extra config.json keys.
    config_from_hf: Callable[[dict, str | None], dict]
    config_to_hf: Callable[[Any], dict] = _no_keys
    tied_by_default: bool = True  # tie_word_embeddings when config.json does not say
    # How init/evidence.py recognises the family from tensor names alone.
    evidence: tuple[Signature, ...]
    # llama.cpp GGUF: general.architecture; ({arch}.* key getter, tensor names) -> extra HF config keys;
    # ModelConfig -> extra {arch}.* keys to write; block-tensor names over the shared map
    # (checkpoint/gguf/names.py); whether llama.cpp permutes the rows of attn_q / attn_k; what it
    # adds to every RMSNorm weight (Gemma's converter stores 1 + w).
    gguf_arch: str
    gguf_config: Callable[[Callable[[str], Any], Collection[str]], dict] = _no_keys
    gguf_keys: Callable[[Any], dict] = _no_keys
    gguf_block_names: Mapping[str, str] = field(default_factory=dict)
    gguf_permute_qk: bool = False
    gguf_norm_shift: float = 0.0
    # Named shapes (ModelConfig fields; the family is implied).
    presets: Mapping[str, dict] = field(default_factory=dict)


# -------------------------------------------------- helpers the specs share

def hf_activation(name: Any, source: str | None) -> str:
    """ModelConfig.hidden_act for a config.json activation name; FamilyError for one not implemented."""
    if name in ("silu", "swish"):
        return "silu"
    if name in ("gelu_pytorch_tanh", "gelu_tanh"):
        return "gelu_pytorch_tanh"
    raise FamilyError(f"activation '{name}' is not implemented (gated MLP with silu or gelu_pytorch_tanh only)",
                      path=source)


def refuse_sliding_window(cfg: dict, source: str | None) -> None:
    """Qwen configs carry ``use_sliding_window``; warmstart implements their full attention only."""
    if cfg.get("use_sliding_window"):
        raise FamilyError("sliding-window attention is not implemented for this family",
                          fix="use a checkpoint with use_sliding_window=false", path=source)


def no_sliding_window(c: Any) -> dict:
    """The config.json keys that say a Qwen model has full attention in every layer."""
    return {"use_sliding_window": False, "sliding_window": None, "max_window_layers": c.num_layers}


def biases_on_all_projections(cfg: dict) -> dict:
    """Llama/Qwen3 ``attention_bias``: one flag puts biases on q, k, v and o."""
    bias = bool(cfg.get("attention_bias", False))
    return {"attention_bias": bias, "o_bias": bias}


def shape(vocab: int, hidden: int, layers: int, heads: int, kv_heads: int, head_dim: int | None,
          intermediate: int, rope_theta: float, rms_norm_eps: float, max_positions: int, tied: bool,
          **variations: Any) -> dict:
    """A preset's ModelConfig fields, positionally (the order of a model card's table)."""
    return dict(vocab_size=vocab, hidden_size=hidden, num_layers=layers, num_heads=heads, num_kv_heads=kv_heads,
                head_dim=head_dim, intermediate_size=intermediate, rope_theta=rope_theta, rms_norm_eps=rms_norm_eps,
                max_position_embeddings=max_positions, tie_word_embeddings=tied, **variations)
