"""Qwen3: the Llama graph with a per-head RMSNorm on q and k, full attention."""

from __future__ import annotations

from typing import Any

from warmstart.arch.families._spec import (
    QK_NORM,
    FamilySpec,
    Signature,
    biases_on_all_projections,
    no_sliding_window,
    refuse_sliding_window,
    shape,
)


def _from_hf(cfg: dict, source: str | None) -> dict:
    refuse_sliding_window(cfg, source)
    return {**biases_on_all_projections(cfg), "qk_norm": True}


def _to_hf(c: Any) -> dict:
    return {"attention_bias": c.attention_bias or c.o_bias, **no_sliding_window(c)}


SPEC = FamilySpec(
    name="qwen3",
    display="Qwen3",
    hf_architecture="Qwen3ForCausalLM",
    model_type="qwen3",
    config_from_hf=_from_hf,
    config_to_hf=_to_hf,
    evidence=(Signature("per-head q/k norm tensors", present=(QK_NORM,)),),
    gguf_arch="qwen3",
    presets={
        "qwen3-tiny": shape(512, 64, 2, 4, 2, 32, 160, 1e6, 1e-6, 512, True, qk_norm=True),  # tests
        "qwen3-0.6b": shape(151936, 1024, 28, 16, 8, 128, 3072, 1e6, 1e-6, 40960, True, qk_norm=True),
    },
)
