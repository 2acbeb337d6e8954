"""The family specs: found by listing arch/families/, the only source of family knowledge for the
config mapping, presets, names and GGUF facts; a new spec needs no edit elsewhere in the registry."""

from __future__ import annotations

import pytest

from warmstart.arch import ModelConfig, get_preset
from warmstart.arch import families
from warmstart.arch.config import PRESETS
from warmstart.arch.families import SPECS, SUPPORTED, FamilySpec, get_family, identity, spec_for
from warmstart.errors import FamilyError


def test_supported_families_are_the_spec_modules():
    assert SUPPORTED == ("gemma3", "llama", "qwen2", "qwen3")
    for name, spec in SPECS.items():
        assert spec.name == name and spec.kind == families.SUPPORTED_DECODER
        assert get_family(spec.hf_architecture) is spec and get_family(spec.model_type) is spec
        assert identity(name) == {"architecture": name, "hf_architecture": spec.hf_architecture,
                                  "model_type": spec.model_type}


def test_presets_come_from_the_specs():
    assert set(PRESETS) == {p for s in SPECS.values() for p in s.presets}
    for spec in SPECS.values():
        for name in spec.presets:
            cfg = get_preset(name)
            assert cfg.family == spec.name and cfg.hf_architecture == spec.hf_architecture


def test_a_family_name_wins_over_another_familys_alias(monkeypatch):
    """phi3 is an alias of the unsupported phi entry; a phi3 spec would take the name over."""
    assert get_family("phi3").name == "phi" and get_family("Phi3ForCausalLM").name == "phi"
    assert get_family("mistral").name == "llama"  # Mistral is the llama family (its window is a config field)
    new = FamilySpec(name="phi3", display="Phi-3", hf_architecture="Phi3ForCausalLM", model_type="phi3",
                     config_from_hf=lambda cfg, source: {}, evidence=(), gguf_arch="phi3")
    monkeypatch.setitem(families.FAMILIES, "phi3", new)
    table = families._lookup()
    assert table["phi3"] == "phi3" and table["phi3forcausallm"] == "phi3" and table["phi4"] == "phi"


def test_family_specific_refusals_live_in_the_specs():
    base = get_preset("qwen2-tiny").to_hf_config()
    with pytest.raises(FamilyError, match="sliding-window"):
        ModelConfig.from_hf_config({**base, "use_sliding_window": True, "sliding_window": 64})
    llama = get_preset("llama-tiny").to_hf_config()
    with pytest.raises(FamilyError, match="rope scaling type 'longrope'"):
        ModelConfig.from_hf_config({**llama, "rope_scaling": {"rope_type": "longrope", "factor": 4.0}})
    mistral_full = ModelConfig.from_hf_config({**llama, "architectures": ["MistralForCausalLM"],
                                               "model_type": "mistral", "sliding_window": None})
    assert mistral_full.family == "llama" and mistral_full.sliding_window is None
    with pytest.raises(FamilyError, match="not a supported decoder family"):
        spec_for("gpt2")


@pytest.mark.parametrize("family, flag, fields", [
    ("llama", True, {"attention_bias": True, "o_bias": True}),
    ("llama", False, {"attention_bias": False, "o_bias": False}),
    ("qwen2", False, {"attention_bias": True, "o_bias": False}),
    ("qwen3", True, {"attention_bias": True, "o_bias": True, "qk_norm": True}),
    ("qwen3", False, {"attention_bias": False, "o_bias": False, "qk_norm": True}),
])
def test_config_json_variations_per_family(family, flag, fields):
    hf = {**get_preset(f"{family}-tiny").to_hf_config(), "attention_bias": flag}
    cfg = ModelConfig.from_hf_config(hf)
    assert {k: getattr(cfg, k) for k in fields} == fields
    assert ModelConfig.from_hf_config(cfg.to_hf_config()) == cfg
