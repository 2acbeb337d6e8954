"""One config dataclass for every supported family, named presets, HF config.json conversion."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from warmstart.arch.families import FAMILIES, SUPPORTED, get_family, supported_list
from warmstart.errors import FamilyError, UsageError


@dataclass
class ModelConfig:
    family: str = "llama"  # llama | qwen2 | qwen3
    vocab_size: int = 8192
    hidden_size: int = 256
    num_layers: int = 4
    num_heads: int = 4
    num_kv_heads: int = 4
    head_dim: int | None = None  # defaults to hidden_size // num_heads
    intermediate_size: int = 688
    rope_theta: float = 10000.0
    rope_scaling: dict | None = None  # None or {"rope_type": "llama3", ...}
    rms_norm_eps: float = 1e-5
    max_position_embeddings: int = 2048
    tie_word_embeddings: bool = True
    attention_bias: bool = False  # bias on q/k/v projections (Qwen2: True)
    o_bias: bool = False  # bias on o_proj (Llama/Qwen3 with attention_bias=True)
    qk_norm: bool = False  # per-head RMSNorm on q and k (Qwen3)
    initializer_range: float = 0.02
    bos_token_id: int | None = None
    eos_token_id: int | None = None
    pad_token_id: int | None = None

    def __post_init__(self) -> None:
        if self.head_dim is None:
            self.head_dim = self.hidden_size // self.num_heads
        if self.family not in SUPPORTED:
            raise FamilyError(
                f"family '{self.family}' is not a supported decoder family",
                fix=f"use one of: {supported_list()}",
            )
        if self.num_heads % self.num_kv_heads:
            raise UsageError(
                f"num_heads={self.num_heads} is not a multiple of num_kv_heads={self.num_kv_heads}",
                why="grouped-query attention shares each kv head between an equal number of query heads",
            )

    # ------------------------------------------------------------------ helpers
    @property
    def hf_architecture(self) -> str:
        return FAMILIES[self.family].hf_architecture  # type: ignore[return-value]

    @property
    def model_type(self) -> str:
        return FAMILIES[self.family].model_type  # type: ignore[return-value]

    def num_parameters(self) -> int:
        h, d, L = self.hidden_size, self.head_dim, self.num_layers
        q = h * self.num_heads * d + (self.num_heads * d if self.attention_bias else 0)
        kv = 2 * (h * self.num_kv_heads * d + (self.num_kv_heads * d if self.attention_bias else 0))
        o = self.num_heads * d * h + (h if self.o_bias else 0)
        mlp = 3 * h * self.intermediate_size
        norms = 2 * h + (2 * d if self.qk_norm else 0)
        per_layer = q + kv + o + mlp + norms
        emb = self.vocab_size * h
        head = 0 if self.tie_word_embeddings else self.vocab_size * h
        return emb + L * per_layer + h + head

    def replace(self, **changes: Any) -> "ModelConfig":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    # ------------------------------------------------------------ HF conversion
    def to_hf_config(self, torch_dtype: str = "float32") -> dict:
        """A config.json that transformers' AutoConfig loads for this family."""
        cfg: dict[str, Any] = {
            "architectures": [self.hf_architecture],
            "model_type": self.model_type,
            "vocab_size": self.vocab_size,
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "num_hidden_layers": self.num_layers,
            "num_attention_heads": self.num_heads,
            "num_key_value_heads": self.num_kv_heads,
            "head_dim": self.head_dim,
            "hidden_act": "silu",
            "max_position_embeddings": self.max_position_embeddings,
            "rms_norm_eps": self.rms_norm_eps,
            "rope_theta": self.rope_theta,
            "rope_scaling": self.rope_scaling,
            "tie_word_embeddings": self.tie_word_embeddings,
            "initializer_range": self.initializer_range,
            "attention_dropout": 0.0,
            "use_cache": True,
            "torch_dtype": torch_dtype,
            "bos_token_id": self.bos_token_id,
            "eos_token_id": self.eos_token_id,
            "pad_token_id": self.pad_token_id,
        }
        if self.family == "llama":
            cfg["attention_bias"] = self.attention_bias or self.o_bias
            cfg["mlp_bias"] = False
            cfg["pretraining_tp"] = 1
        elif self.family == "qwen2":
            cfg["use_sliding_window"] = False
            cfg["sliding_window"] = None
            cfg["max_window_layers"] = self.num_layers
        elif self.family == "qwen3":
            cfg["attention_bias"] = self.attention_bias or self.o_bias
            cfg["use_sliding_window"] = False
            cfg["sliding_window"] = None
            cfg["max_window_layers"] = self.num_layers
        return cfg

    @classmethod
    def from_hf_config(cls, cfg: dict, *, source: str | None = None) -> "ModelConfig":
        """Build from a HF config.json dict. The family comes from the config's own claim."""
        claim = declared_architecture(cfg)
        fam = get_family(claim)
        if fam is None or fam.name not in SUPPORTED:
            raise FamilyError(
                f"config declares architecture '{claim}', which is not a supported decoder family",
                why="warmstart implements one decoder-only transformer",
                fix=f"use a checkpoint of one of: {supported_list()}",
                path=source,
            )
        rope = cfg.get("rope_parameters") or {}
        rope_theta = cfg.get("rope_theta", rope.get("rope_theta", 10000.0))
        rope_scaling = cfg.get("rope_scaling")
        if rope_scaling is None and rope.get("rope_type", "default") not in ("default", None):
            rope_scaling = dict(rope)
        if rope_scaling:
            rtype = rope_scaling.get("rope_type", rope_scaling.get("type", "default"))
            if rtype == "default":
                rope_scaling = None
            elif rtype != "llama3":
                raise FamilyError(
                    f"rope scaling type '{rtype}' is not implemented",
                    fix="use a checkpoint with default or llama3 rope scaling",
                    path=source,
                )
        if cfg.get("hidden_act", "silu") not in ("silu", "swish"):
            raise FamilyError(f"activation '{cfg.get('hidden_act')}' is not implemented (SwiGLU/silu only)",
                              path=source)
        if cfg.get("mlp_bias"):
            raise FamilyError("mlp_bias=true is not implemented", path=source)
        if fam.name in ("qwen2", "qwen3") and cfg.get("use_sliding_window"):
            raise FamilyError("sliding-window attention is not implemented",
                              fix="use a checkpoint with use_sliding_window=false", path=source)
        if fam.name == "llama" and cfg.get("sliding_window") and cfg.get("model_type") == "mistral":
            raise FamilyError("Mistral sliding-window attention is not implemented", path=source)
        heads = int(cfg["num_attention_heads"])
        hidden = int(cfg["hidden_size"])
        attn_bias_flag = bool(cfg.get("attention_bias", False))
        if fam.name == "qwen2":
            qkv_bias, o_bias = True, False
        else:
            qkv_bias, o_bias = attn_bias_flag, attn_bias_flag

        def _first(x):
            return x[0] if isinstance(x, list) and x else x

        return cls(
            family=fam.name,
            vocab_size=int(cfg["vocab_size"]),
            hidden_size=hidden,
            num_layers=int(cfg["num_hidden_layers"]),
            num_heads=heads,
            num_kv_heads=int(cfg.get("num_key_value_heads") or heads),
            head_dim=int(cfg.get("head_dim") or hidden // heads),
            intermediate_size=int(cfg["intermediate_size"]),
            rope_theta=float(rope_theta),
            rope_scaling=rope_scaling,
            rms_norm_eps=float(cfg.get("rms_norm_eps", 1e-6)),
            max_position_embeddings=int(cfg.get("max_position_embeddings", 2048)),
            tie_word_embeddings=bool(cfg.get("tie_word_embeddings", fam.name != "llama")),
            attention_bias=qkv_bias,
            o_bias=o_bias,
            qk_norm=fam.name == "qwen3",
            initializer_range=float(cfg.get("initializer_range", 0.02)),
            bos_token_id=_first(cfg.get("bos_token_id")),
            eos_token_id=_first(cfg.get("eos_token_id")),
            pad_token_id=_first(cfg.get("pad_token_id")),
        )


def declared_architecture(cfg: dict) -> str | None:
    """The architecture a config claims: ``architectures[0]``, else ``model_type``."""
    archs = cfg.get("architectures")
    if isinstance(archs, list) and archs and isinstance(archs[0], str):
        return archs[0]
    if isinstance(archs, str):
        return archs
    mt = cfg.get("model_type")
    return mt if isinstance(mt, str) else None


# --------------------------------------------------------------------- presets
PRESETS: dict[str, ModelConfig] = {
    # Tiny shapes for tests (vocab is replaced by the tokenizer's in scratch runs).
    "llama-tiny": ModelConfig("llama", 512, 64, 2, 4, 2, None, 160, 10000.0, None, 1e-5, 512, True),
    "qwen2-tiny": ModelConfig("qwen2", 512, 64, 2, 4, 2, None, 160, 1e6, None, 1e-6, 512, True,
                              attention_bias=True),
    "qwen3-tiny": ModelConfig("qwen3", 512, 64, 2, 4, 2, 32, 160, 1e6, None, 1e-6, 512, True,
                              qk_norm=True),
    # CPU default for `warmstart pretrain` with no arguments: a few minutes on 2 cores.
    "llama-small": ModelConfig("llama", 8192, 256, 4, 4, 2, None, 704, 10000.0, None, 1e-5, 1024, True),
    # Real shapes.
    "smollm2-135m": ModelConfig("llama", 49152, 576, 30, 9, 3, 64, 1536, 100000.0, None, 1e-5, 8192, True),
    "qwen2.5-0.5b": ModelConfig("qwen2", 151936, 896, 24, 14, 2, 64, 4864, 1e6, None, 1e-6, 32768, True,
                                attention_bias=True),
    "qwen3-0.6b": ModelConfig("qwen3", 151936, 1024, 28, 16, 8, 128, 3072, 1e6, None, 1e-6, 40960, True,
                              qk_norm=True),
    "llama-370m": ModelConfig("llama", 32000, 1024, 24, 16, 16, 64, 2816, 10000.0, None, 1e-5, 4096, False),
}


def get_preset(name: str) -> ModelConfig:
    if name not in PRESETS:
        raise UsageError(
            f"unknown preset '{name}'",
            fix=f"use one of: {', '.join(PRESETS)}",
        )
    return dataclasses.replace(PRESETS[name])


__all__ = ["ModelConfig", "PRESETS", "get_preset", "declared_architecture", "field"]
