"""Family inference from tensor names, on the real names transformers gives each family."""

from __future__ import annotations

import pytest
import torch

from warmstart.arch import CausalLM, get_preset
from warmstart.init import infer_family_from_names


def _names(config_cls_name: str, model_cls_name: str, **kw) -> list[str]:
    import transformers

    cfg = getattr(transformers, config_cls_name)(**kw)
    with torch.device("meta"):
        model = getattr(transformers, model_cls_name)(cfg)
    return list(model.state_dict())


SMALL = dict(vocab_size=64, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64)


@pytest.mark.parametrize("preset, family", [("llama-tiny", "llama"), ("qwen2-tiny", "qwen2"),
                                            ("qwen3-tiny", "qwen3"), ("gemma3-tiny", "gemma3")])
def test_supported_families_from_hf_names(preset, family):
    with torch.device("meta"):
        names = list(CausalLM(get_preset(preset)).state_dict())
    assert infer_family_from_names(names)[0] == family


def test_llama_with_attention_bias_is_llama():
    with torch.device("meta"):
        names = list(CausalLM(get_preset("llama-tiny").replace(attention_bias=True, o_bias=True)).state_dict())
    assert infer_family_from_names(names)[0] == "llama"


@pytest.mark.parametrize("family, cfg_cls, model_cls, kw", [
    ("gpt2", "GPT2Config", "GPT2LMHeadModel", dict(vocab_size=64, n_embd=32, n_layer=1, n_head=2)),
    ("gpt_neox", "GPTNeoXConfig", "GPTNeoXForCausalLM", SMALL),
    ("opt", "OPTConfig", "OPTForCausalLM", dict(vocab_size=64, hidden_size=32, num_hidden_layers=1,
                                                  num_attention_heads=2, ffn_dim=64, word_embed_proj_dim=32)),
    ("bert", "BertConfig", "BertModel", SMALL),
    ("roberta", "RobertaConfig", "RobertaForMaskedLM", SMALL),
    ("t5", "T5Config", "T5ForConditionalGeneration", dict(vocab_size=64, d_model=32, d_kv=16, d_ff=64,
                                                          num_layers=1, num_heads=2)),
    ("mamba", "MambaConfig", "MambaForCausalLM", dict(vocab_size=64, hidden_size=32, num_hidden_layers=1)),
    ("rwkv", "RwkvConfig", "RwkvForCausalLM", dict(vocab_size=64, hidden_size=32, num_hidden_layers=1,
                                                   attention_hidden_size=32, intermediate_size=64)),
])
def test_foreign_families_from_real_names(family, cfg_cls, model_cls, kw):
    assert infer_family_from_names(_names(cfg_cls, model_cls, **kw))[0] == family


def test_gguf_names():
    base = ["token_embd.weight", "output_norm.weight", "blk.0.attn_norm.weight", "blk.0.attn_q.weight",
            "blk.0.attn_k.weight", "blk.0.attn_v.weight", "blk.0.attn_output.weight", "blk.0.ffn_gate.weight",
            "blk.0.ffn_up.weight", "blk.0.ffn_down.weight", "blk.0.ffn_norm.weight"]
    assert infer_family_from_names(base)[0] == "llama"
    assert infer_family_from_names(base + ["blk.0.attn_q.bias", "blk.0.attn_k.bias"])[0] == "qwen2"
    assert infer_family_from_names(base + ["blk.0.attn_q_norm.weight", "blk.0.attn_k_norm.weight"])[0] == "qwen3"
    gemma3 = base + ["blk.0.attn_q_norm.weight", "blk.0.attn_k_norm.weight", "blk.0.post_attention_norm.weight",
                     "blk.0.post_ffw_norm.weight"]
    assert infer_family_from_names(gemma3)[0] == "gemma3"


def test_undecidable_names():
    assert infer_family_from_names([])[0] is None
    fam, reason = infer_family_from_names(["weight", "bias", "encoder_thing.w"])
    assert fam is None and reason


def test_signatures_come_from_the_specs_and_the_most_specific_wins(monkeypatch):
    """A new family that adds a feature to an existing one is told apart by its spec alone."""
    import re

    from warmstart.arch import families
    from warmstart.arch.families import QK_NORM, FamilySpec, NameFeature, Signature

    base = ["model.embed_tokens.weight", "model.layers.0.self_attn.q_proj.weight",
            "model.layers.0.mlp.gate_proj.weight", "model.layers.0.self_attn.q_norm.weight"]
    extra = ["model.layers.0.mlp.extra_norm.weight"]
    sandwich = NameFeature("an MLP norm", re.compile(r"mlp\.extra_norm\.weight$"))
    new = FamilySpec(name="newfam", display="New", hf_architecture="NewForCausalLM", model_type="newfam",
                     config_from_hf=lambda cfg, source: {}, gguf_arch="newfam",
                     evidence=(Signature("q/k norm and sandwich norms", present=(QK_NORM, sandwich)),))
    monkeypatch.setitem(families.SPECS, "newfam", new)
    assert infer_family_from_names(base)[0] == "qwen3"
    fam, why = infer_family_from_names(base + extra)
    assert fam == "newfam" and why.startswith("q/k norm and sandwich norms (e.g. 'model.layers.0.self_attn.q_norm")
    twin = FamilySpec(name="twin", display="Twin", hf_architecture="TwinForCausalLM", model_type="twin",
                      config_from_hf=lambda cfg, source: {}, gguf_arch="twin", evidence=new.evidence)
    monkeypatch.setitem(families.SPECS, "twin", twin)
    fam, why = infer_family_from_names(base + extra)
    assert fam is None and "newfam and twin" in why
