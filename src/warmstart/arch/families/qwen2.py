"""Qwen2 / Qwen2.5: the Llama graph with biases on q, k and v (not o), full attention."""

from __future__ import annotations

from warmstart.arch.families._spec import (
    O_BIAS,
    QK_NORM,
    QKV_BIAS,
    FamilySpec,
    Signature,
    no_sliding_window,
    refuse_sliding_window,
    shape,
)


def _from_hf(cfg: dict, source: str | None) -> dict:
    refuse_sliding_window(cfg, source)
    return {"attention_bias": True, "o_bias": False}


SPEC = FamilySpec(
    name="qwen2",
    display="Qwen2",
    hf_architecture="Qwen2ForCausalLM",
    model_type="qwen2",
    aliases=("qwen2.5", "qwen25"),
    config_from_hf=_from_hf,
    config_to_hf=no_sliding_window,
    evidence=(Signature("q/k/v projection biases without q/k norm", present=(QKV_BIAS,), absent=(QK_NORM, O_BIAS)),),
    gguf_arch="qwen2",
    presets={
        "qwen2-tiny": shape(512, 64, 2, 4, 2, None, 160, 1e6, 1e-6, 512, True, attention_bias=True),  # tests
        "qwen2.5-0.5b": shape(151936, 896, 24, 14, 2, 64, 4864, 1e6, 1e-6, 32768, True, attention_bias=True),
        "qwen2.5-1.5b": shape(151936, 1536, 28, 12, 2, 128, 8960, 1e6, 1e-6, 32768, True, attention_bias=True),
        "qwen2.5-3b": shape(151936, 2048, 36, 16, 2, 128, 11008, 1e6, 1e-6, 32768, True, attention_bias=True),
    },
)
