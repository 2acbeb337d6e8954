"""Configs, the family specs (one module per family in ``families/``) and the model."""

from warmstart.arch.config import PRESETS, ModelConfig, declared_architecture, get_preset
from warmstart.arch.families import get_family, get_spec, is_supported, normalize_family, spec_for
from warmstart.arch.model import CausalLM, KVCache

__all__ = [
    "CausalLM", "KVCache", "ModelConfig", "PRESETS", "declared_architecture", "get_family",
    "get_preset", "get_spec", "is_supported", "normalize_family", "spec_for",
]
