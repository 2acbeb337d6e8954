"""Configs, the family registry and the model."""

from warmstart.arch.config import PRESETS, ModelConfig, declared_architecture, get_preset
from warmstart.arch.families import get_family, is_supported, normalize_family
from warmstart.arch.model import CausalLM, KVCache

__all__ = [
    "CausalLM", "KVCache", "ModelConfig", "PRESETS", "declared_architecture", "get_family",
    "get_preset", "is_supported", "normalize_family",
]
