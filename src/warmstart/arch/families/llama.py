"""Llama, and the checkpoints of Llama layout (SmolLM, TinyLlama, Code Llama, Mistral): pre-norm, SwiGLU,
no biases unless ``attention_bias``.

Mistral is Llama's graph and tensors with a sliding window in every layer (``sliding_window``; null
in Mistral v0.2 and later). Its tensors cannot be told from Llama's, and llama.cpp writes it as
``llama``, so it is this family with the window as a ModelConfig field; a config with a window is
saved as ``MistralForCausalLM`` (the class whose config.json carries it), one without as Llama.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from typing import Any

from warmstart.arch.families._spec import (
    O_BIAS,
    QK_NORM,
    QKV_BIAS,
    FamilySpec,
    Signature,
    biases_on_all_projections,
    shape,
)
from warmstart.errors import UsageError


MISTRAL = {"architectures": ["MistralForCausalLM"], "model_type": "mistral"}


def _from_hf(cfg: dict, source: str | None) -> dict:
    if cfg.get("model_type") == "mistral":  # MistralConfig: no biases; a window of 4096 unless it says
        return {"attention_bias": False, "o_bias": False, "sliding_window": cfg.get("sliding_window", 4096)}
    return biases_on_all_projections(cfg)


def _to_hf(c: Any) -> dict:
    if c.sliding_window is not None:
        return {**MISTRAL, "sliding_window": c.sliding_window}
    return {"attention_bias": c.attention_bias or c.o_bias, "mlp_bias": False, "pretraining_tp": 1}


def _gguf_keys(c: Any) -> dict:
    if c.sliding_window is not None:
        raise UsageError("a llama GGUF cannot express Mistral's sliding window",
                         why="llama.cpp and transformers read a llama GGUF with full attention in every layer",
                         fix="export to --to hf or --to safetensors instead")
    return {}


def _from_gguf(key: Callable[[str], Any], tensors: Collection[str]) -> dict:
    return {"attention_bias": "blk.0.attn_q.bias" in tensors, "mlp_bias": "blk.0.ffn_up.bias" in tensors}


SPEC = FamilySpec(
    name="llama",
    display="Llama",
    hf_architecture="LlamaForCausalLM",
    model_type="llama",
    aliases=("llama2", "llama3", "mistral", "smollm", "smollm2", "tinyllama", "codellama"),
    config_from_hf=_from_hf,
    config_to_hf=_to_hf,
    tied_by_default=False,
    evidence=(
        Signature("attention biases on q/k/v and o_proj (Llama attention_bias=true), no q/k norm",
                  present=(O_BIAS,), absent=(QK_NORM,)),
        Signature("attention and gated-MLP tensors with neither q/k/v biases nor q/k norm",
                  absent=(QK_NORM, QKV_BIAS)),
    ),
    gguf_arch="llama",
    gguf_config=_from_gguf,
    gguf_keys=_gguf_keys,
    gguf_permute_qk=True,  # llama.cpp's RoPE pairs adjacent rows; its converter reorders q/k for it
    presets={
        "llama-tiny": shape(512, 64, 2, 4, 2, None, 160, 10000.0, 1e-5, 512, True),  # tests
        "llama-small": shape(8192, 256, 4, 4, 2, None, 704, 10000.0, 1e-5, 1024, True),  # CPU default
        "smollm2-135m": shape(49152, 576, 30, 9, 3, 64, 1536, 100000.0, 1e-5, 8192, True),
        "llama-370m": shape(32000, 1024, 24, 16, 16, 64, 2816, 10000.0, 1e-5, 4096, False),
        "llama3-8b": shape(128256, 4096, 32, 32, 8, 128, 14336, 500000.0, 1e-5, 8192, False),  # Llama-3-8B shape
    },
)
