"""One config dataclass for every supported family, named presets, HF config.json conversion.

The shape keys every family shares are mapped here; what is particular to a family (its config.json
extras, which variations it has) comes from its spec in ``arch/families/``. Model variations are
fields, so the model never asks which family it is.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from warmstart.arch.families import SPECS, FamilySpec, get_family, spec_for, supported_list
from warmstart.arch.families._spec import FULL, SLIDING, hf_activation
from warmstart.errors import FamilyError, UsageError

ACTIVATIONS = ("silu", "gelu_pytorch_tanh")
NORM_STYLES = ("pre", "sandwich")
EMBEDDING_SCALES = (None, "sqrt_hidden")
ROPE_SCALINGS = ("llama3", "linear", "yarn")  # rope_scaling types implemented (arch/model.py rope_inv_freq)
# The fields that make one family's graph differ from another's; a config.json must keep them all.
VARIATIONS = (
    "attention_bias", "o_bias", "qk_norm", "tie_word_embeddings", "norm_style", "norm_weight_offset", "hidden_act",
    "embedding_scale", "sliding_window", "layer_types", "rope_local_theta", "query_pre_attn_scalar",
)


@dataclass
class ModelConfig:
    family: str = "llama"  # a supported family: a module of arch/families/
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
    tie_word_embeddings: bool = True  # the LM head is the embedding matrix
    attention_bias: bool = False  # bias on q/k/v projections (Qwen2: True)
    o_bias: bool = False  # bias on o_proj (Llama/Qwen3 with attention_bias=True)
    qk_norm: bool = False  # per-head RMSNorm on q and k (Qwen3)
    initializer_range: float = 0.02
    bos_token_id: int | None = None
    eos_token_id: int | None = None
    pad_token_id: int | None = None
    norm_style: str = "pre"  # "pre": a norm before each sublayer | "sandwich": and after each (Gemma 2/3)
    norm_weight_offset: float = 0.0  # RMSNorm scales by (offset + w); 1.0 is Gemma's (1 + w)
    hidden_act: str = "silu"  # gated-MLP activation: silu | gelu_pytorch_tanh
    embedding_scale: str | None = None  # None | "sqrt_hidden": embeddings times sqrt(hidden_size) (Gemma)
    sliding_window: int | None = None  # keys a sliding-window layer sees, its own included
    layer_types: tuple[str, ...] | None = None  # per layer FULL | SLIDING; None: all SLIDING if a window, else FULL
    rope_local_theta: float | None = None  # RoPE base of the sliding layers (Gemma 3); None: rope_theta
    query_pre_attn_scalar: float | None = None  # attention scale 1/sqrt(this), not 1/sqrt(head_dim)

    def __post_init__(self) -> None:
        if self.head_dim is None:
            self.head_dim = self.hidden_size // self.num_heads
        spec_for(self.family)  # FamilyError for an unsupported family
        if self.num_heads % self.num_kv_heads:
            raise UsageError(
                f"num_heads={self.num_heads} is not a multiple of num_kv_heads={self.num_kv_heads}",
                why="grouped-query attention shares each kv head between an equal number of query heads",
            )
        for name, allowed in (("hidden_act", ACTIVATIONS), ("norm_style", NORM_STYLES),
                              ("embedding_scale", EMBEDDING_SCALES)):
            if getattr(self, name) not in allowed:
                raise UsageError(f"{name}={getattr(self, name)!r} is not implemented",
                                 fix=f"use one of: {', '.join(map(str, allowed))}")
        if self.layer_types is not None:
            self.layer_types = tuple(self.layer_types)
            if len(self.layer_types) != self.num_layers or not set(self.layer_types) <= {FULL, SLIDING}:
                raise UsageError(f"layer_types must name {FULL} or {SLIDING} for each of the "
                                 f"{self.num_layers} layers, not {list(self.layer_types)}")
            if set(self.layer_types) == {FULL if self.sliding_window is None else SLIDING}:
                self.layer_types = None  # the uniform case has one spelling
        if self.sliding_window is None and SLIDING in (self.layer_types or ()):
            raise UsageError("layer_types has sliding-window layers but sliding_window is not set")

    # ------------------------------------------------------------------ helpers
    @property
    def spec(self) -> FamilySpec:
        return spec_for(self.family)

    def _hf_name(self, key: str, default: str) -> str:
        value = self.spec.config_to_hf(self).get(key, default)
        return value[0] if isinstance(value, list) else value

    hf_architecture = property(lambda self: self._hf_name("architectures", self.spec.hf_architecture),
                               doc="The HF class a config.json of this config names (the family's, or the one "
                               "its spec picks for a variation, e.g. MistralForCausalLM for a windowed Llama).")
    model_type = property(lambda self: self._hf_name("model_type", self.spec.model_type),
                          doc="The HF config model_type that goes with ``hf_architecture``.")

    def layer_type(self, i: int) -> str:
        """FULL or SLIDING: the attention of layer ``i``."""
        if self.layer_types is not None:
            return self.layer_types[i]
        return FULL if self.sliding_window is None else SLIDING

    def num_parameters(self) -> int:
        h, d, L = self.hidden_size, self.head_dim, self.num_layers
        q = h * self.num_heads * d + (self.num_heads * d if self.attention_bias else 0)
        kv = 2 * (h * self.num_kv_heads * d + (self.num_kv_heads * d if self.attention_bias else 0))
        o = self.num_heads * d * h + (h if self.o_bias else 0)
        mlp = 3 * h * self.intermediate_size
        norms = (4 if self.norm_style == "sandwich" else 2) * h + (2 * d if self.qk_norm else 0)
        per_layer = q + kv + o + mlp + norms
        emb = self.vocab_size * h
        head = 0 if self.tie_word_embeddings else self.vocab_size * h
        return emb + L * per_layer + h + head

    def replace(self, **changes: Any) -> ModelConfig:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    # ------------------------------------------------------------ HF conversion
    def to_hf_config(self, torch_dtype: str = "float32") -> dict:
        """A config.json that transformers' AutoConfig loads for this family.

        UsageError if the family's config.json cannot express one of this config's variations
        (a checkpoint saved with it would load as a different model).
        """
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
            "hidden_act": self.hidden_act,
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
        cfg.update(self.spec.config_to_hf(self))
        again = ModelConfig.from_hf_config(cfg)
        lost = [f"{f}={getattr(self, f)!r}" for f in VARIATIONS if getattr(again, f) != getattr(self, f)]
        if lost:
            raise UsageError(f"a {self.family} config.json cannot express {', '.join(lost)}",
                             why="a checkpoint saved with it would load as a different model",
                             fix="use the family whose architecture has these features")
        return cfg

    @classmethod
    def from_hf_config(cls, cfg: dict, *, source: str | None = None) -> ModelConfig:
        """Build from a HF config.json dict. The family comes from the config's own claim."""
        claim = declared_architecture(cfg)
        fam = get_family(claim)
        if fam is None or fam.name not in SPECS:
            raise FamilyError(
                f"config declares architecture '{claim}', which is not a supported decoder family",
                why="warmstart implements one decoder-only transformer",
                fix=f"use a checkpoint of one of: {supported_list()}",
                path=source,
            )
        spec = SPECS[fam.name]
        if cfg.get("mlp_bias"):
            raise FamilyError("mlp_bias=true is not implemented", path=source)
        heads = int(cfg["num_attention_heads"])
        hidden = int(cfg["hidden_size"])
        fields = dict(
            family=spec.name,
            vocab_size=int(cfg["vocab_size"]),
            hidden_size=hidden,
            num_layers=int(cfg["num_hidden_layers"]),
            num_heads=heads,
            num_kv_heads=int(cfg.get("num_key_value_heads") or heads),
            head_dim=int(cfg.get("head_dim") or hidden // heads),
            intermediate_size=int(cfg["intermediate_size"]),
            **_hf_rope(cfg, source),
            rms_norm_eps=float(cfg.get("rms_norm_eps", 1e-6)),
            max_position_embeddings=int(cfg.get("max_position_embeddings", 2048)),
            tie_word_embeddings=bool(cfg.get("tie_word_embeddings", spec.tied_by_default)),
            hidden_act=hf_activation(cfg.get("hidden_act", "silu"), source),
            initializer_range=float(cfg.get("initializer_range", 0.02)),
            bos_token_id=_first(cfg.get("bos_token_id")),
            eos_token_id=_first(cfg.get("eos_token_id")),
            pad_token_id=_first(cfg.get("pad_token_id")),
        )
        fields.update(spec.config_from_hf(cfg, source))
        return cls(**fields)


def _first(x: Any) -> Any:
    return x[0] if isinstance(x, list) and x else x


def _hf_rope(cfg: dict, source: str | None) -> dict:
    """rope_theta and rope_scaling from config.json (old ``rope_theta``/``rope_scaling`` keys or
    transformers 5's ``rope_parameters``); FamilyError for a scaling type not implemented.
    (A family whose ``rope_parameters`` are per layer type, Gemma 3, maps them in its spec.)"""
    rope = cfg.get("rope_parameters") or {}
    rope_theta = cfg.get("rope_theta", rope.get("rope_theta", 10000.0))
    rope_scaling = cfg.get("rope_scaling")
    if rope_scaling is None and rope.get("rope_type", "default") not in ("default", None):
        rope_scaling = dict(rope)
    if rope_scaling:
        rtype = rope_scaling.get("rope_type", rope_scaling.get("type", "default"))
        if rtype == "default":
            rope_scaling = None
        elif rtype not in ROPE_SCALINGS:
            raise FamilyError(
                f"rope scaling type '{rtype}' is not implemented",
                fix=f"use a checkpoint with default, {' or '.join(ROPE_SCALINGS)} rope scaling",
                path=source,
            )
    return {"rope_theta": float(rope_theta), "rope_scaling": rope_scaling}


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
# Each family's named shapes live in its spec (arch/families/<family>.py).
PRESETS: dict[str, ModelConfig] = {
    name: ModelConfig(family=spec.name, **fields) for spec in SPECS.values() for name, fields in spec.presets.items()
}


def get_preset(name: str) -> ModelConfig:
    if name not in PRESETS:
        raise UsageError(
            f"unknown preset '{name}'",
            fix=f"use one of: {', '.join(PRESETS)}",
        )
    return dataclasses.replace(PRESETS[name])


__all__ = ["FULL", "ModelConfig", "PRESETS", "SLIDING", "VARIATIONS", "declared_architecture", "get_preset"]
