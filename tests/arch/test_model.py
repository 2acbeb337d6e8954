"""The model against transformers (the oracle), configs, presets and the family registry."""

from __future__ import annotations

import pytest
import torch

from warmstart.arch import CausalLM, ModelConfig, get_preset, normalize_family
from warmstart.arch.config import PRESETS
from warmstart.arch.families import ENCODER, ENCODER_DECODER, NON_TRANSFORMER, UNSUPPORTED_DECODER, get_family
from warmstart.errors import FamilyError, UsageError


def _hf_model(cfg: ModelConfig, seed: int = 0):
    from transformers import AutoConfig, AutoModelForCausalLM

    d = cfg.to_hf_config()
    model_type = d.pop("model_type")
    d.pop("architectures")
    torch.manual_seed(seed)
    hf = AutoModelForCausalLM.from_config(AutoConfig.for_model(model_type, **d)).eval()
    with torch.no_grad():
        for name, p in hf.named_parameters():
            if "norm" in name:
                p.add_(0.2 * torch.randn_like(p))
            elif name.endswith(".bias"):
                p.copy_(0.1 * torch.randn_like(p))
    return hf


@pytest.mark.parametrize("preset", ["llama-tiny", "qwen2-tiny", "qwen3-tiny"])
def test_logits_equal_transformers(preset):
    cfg = get_preset(preset)
    hf = _hf_model(cfg)
    ours = CausalLM(ModelConfig.from_hf_config(cfg.to_hf_config())).eval()
    ours.load_state_dict(hf.state_dict(), strict=True)
    ids = torch.randint(0, cfg.vocab_size, (2, 37), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        diff = (hf(ids).logits - ours(ids)).abs().max().item()
    assert diff <= 1e-4, diff


def test_llama3_rope_scaling_matches_transformers():
    cfg = get_preset("llama-tiny").replace(rope_scaling={
        "rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
        "original_max_position_embeddings": 64})
    hf = _hf_model(cfg)
    ours = CausalLM(cfg).eval()
    ours.load_state_dict(hf.state_dict())
    ids = torch.randint(0, cfg.vocab_size, (1, 200))
    with torch.no_grad():
        assert (hf(ids).logits - ours(ids)).abs().max().item() <= 1e-4


def test_kv_cache_generation_equals_full_forward():
    torch.manual_seed(0)
    model = CausalLM(get_preset("qwen3-tiny")).eval()
    model.reset_parameters(seed=0)
    prompt = torch.randint(0, 512, (2, 6))
    out = model.generate(prompt, 12)
    assert out.shape == (2, 18)
    with torch.no_grad():
        full = model(out)[:, 5:-1].argmax(-1)
    assert torch.equal(full, out[:, 6:])
    g1 = model.generate(prompt, 8, temperature=0.8, top_p=0.9, generator=torch.Generator().manual_seed(3))
    g2 = model.generate(prompt, 8, temperature=0.8, top_p=0.9, generator=torch.Generator().manual_seed(3))
    assert torch.equal(g1, g2)


def test_gqa_7_to_1_forward_backward_on_scaled_down_qwen25_shape():
    full = get_preset("qwen2.5-0.5b")
    assert full.num_heads // full.num_kv_heads == 7
    cfg = full.replace(vocab_size=1024, hidden_size=14 * 16, num_layers=2, intermediate_size=384, head_dim=16)
    model = CausalLM(cfg)
    model.reset_parameters(seed=0)
    ids = torch.randint(0, cfg.vocab_size, (2, 65))
    loss = model.loss(ids[:, :-1], ids[:, 1:])
    loss.backward()
    assert torch.isfinite(loss)
    assert abs(loss.item() - torch.log(torch.tensor(1024.0)).item()) < 0.5  # random init ≈ ln V
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    k = model.model.layers[0].self_attn.k_proj.weight
    assert k.shape == (2 * 16, 14 * 16)  # 2 kv heads


def test_tied_embedding_shares_storage_and_is_dropped_from_canonical_state_dict():
    model = CausalLM(get_preset("llama-tiny"))
    assert model.lm_head.weight is model.model.embed_tokens.weight
    assert "lm_head.weight" not in model.canonical_state_dict()
    untied = CausalLM(get_preset("llama-370m").replace(num_layers=1, hidden_size=64, num_heads=4, num_kv_heads=4,
                                                       head_dim=16, intermediate_size=128, vocab_size=100))
    assert "lm_head.weight" in untied.canonical_state_dict()


@pytest.mark.parametrize("name", list(PRESETS))
def test_presets_round_trip_through_hf_config(name):
    cfg = get_preset(name)
    again = ModelConfig.from_hf_config(cfg.to_hf_config())
    assert again == cfg
    from transformers import AutoConfig

    d = cfg.to_hf_config()
    hf = AutoConfig.for_model(d.pop("model_type"), **{k: v for k, v in d.items() if k != "architectures"})
    assert hf.num_key_value_heads == cfg.num_kv_heads


def test_preset_parameter_counts():
    assert abs(get_preset("smollm2-135m").num_parameters() - 134.5e6) < 1e6
    assert abs(get_preset("qwen2.5-0.5b").num_parameters() - 494e6) < 2e6
    assert 350e6 < get_preset("llama-370m").num_parameters() < 390e6
    assert get_preset("llama3-8b").num_parameters() == 8_030_261_248  # Meta-Llama-3-8B
    cfg = get_preset("qwen3-tiny")
    with torch.device("meta"):
        assert CausalLM(cfg).num_parameters() == cfg.num_parameters()


def test_qwen25_preset_shape():
    c = get_preset("qwen2.5-0.5b")
    assert (c.hidden_size, c.num_layers, c.num_heads, c.num_kv_heads, c.intermediate_size, c.vocab_size) == (
        896, 24, 14, 2, 4864, 151936)
    assert c.rope_theta == 1e6 and c.rms_norm_eps == 1e-6 and c.tie_word_embeddings and c.attention_bias


@pytest.mark.parametrize("spelling", ["Qwen2ForCausalLM", "qwen2", "Qwen2", "Qwen2Model", "QWEN2"])
def test_family_normalisation(spelling):
    assert normalize_family(spelling) == "qwen2"


@pytest.mark.parametrize("name, kind", [
    ("BertModel", ENCODER), ("RobertaModel", ENCODER), ("DistilBertModel", ENCODER), ("ElectraModel", ENCODER),
    ("XLMRobertaModel", ENCODER), ("T5ForConditionalGeneration", ENCODER_DECODER), ("bart", ENCODER_DECODER),
    ("MambaForCausalLM", NON_TRANSFORMER), ("rwkv", NON_TRANSFORMER), ("GPT2LMHeadModel", UNSUPPORTED_DECODER),
    ("GPTNeoXForCausalLM", UNSUPPORTED_DECODER), ("OPTForCausalLM", UNSUPPORTED_DECODER),
    ("GemmaForCausalLM", UNSUPPORTED_DECODER), ("PhiForCausalLM", UNSUPPORTED_DECODER),
    ("MistralForCausalLM", "supported-decoder"), ("Qwen3ForCausalLM", "supported-decoder"),
])
def test_family_classification(name, kind):
    assert get_family(name).kind == kind


def test_unknown_family_is_none_and_bad_configs_refused():
    assert normalize_family("FooBarForCausalLM") is None
    with pytest.raises(FamilyError):
        ModelConfig.from_hf_config({"architectures": ["BertModel"], "model_type": "bert"})
    with pytest.raises(UsageError):
        get_preset("nope")
    with pytest.raises(UsageError):
        ModelConfig(num_heads=4, num_kv_heads=3)
