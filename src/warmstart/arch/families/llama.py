"""Llama, and the checkpoints of Llama layout that call themselves so (SmolLM, TinyLlama, Code Llama,
Mistral without a sliding window): pre-norm, SwiGLU, no biases unless ``attention_bias``."""

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
from warmstart.errors import FamilyError


def _from_hf(cfg: dict, source: str | None) -> dict:
    if cfg.get("model_type") == "mistral" and cfg.get("sliding_window"):
        raise FamilyError("Mistral sliding-window attention is not implemented (no mistral family yet)",
                          path=source)
    return biases_on_all_projections(cfg)


def _to_hf(c: Any) -> dict:
    return {"attention_bias": c.attention_bias or c.o_bias, "mlp_bias": False, "pretraining_tp": 1}


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
    gguf_permute_qk=True,  # llama.cpp's RoPE pairs adjacent rows; its converter reorders q/k for it
    presets={
        "llama-tiny": shape(512, 64, 2, 4, 2, None, 160, 10000.0, 1e-5, 512, True),  # tests
        "llama-small": shape(8192, 256, 4, 4, 2, None, 704, 10000.0, 1e-5, 1024, True),  # CPU default
        "smollm2-135m": shape(49152, 576, 30, 9, 3, 64, 1536, 100000.0, 1e-5, 8192, True),
        "llama-370m": shape(32000, 1024, 24, 16, 16, 64, 2816, 10000.0, 1e-5, 4096, False),
    },
)
