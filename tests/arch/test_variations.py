"""Model variations are ModelConfig fields, each real: against transformers models that have them
(Gemma, Gemma 3, Mistral; oracles of the fields alone, on the llama family; the gemma3 spec and Mistral's
config mapping are tested in test_gemma3.py and test_mistral.py), the sliding-window
mask against a naive reference, and each field dropped changes the logits."""

from __future__ import annotations

import math

import pytest
import torch

from warmstart.arch import CausalLM, ModelConfig, get_preset
from warmstart.arch.config import FULL, SLIDING
from warmstart.arch.model import attend
from warmstart.errors import FamilyError, UsageError

transformers = pytest.importorskip("transformers")

SHAPE = dict(vocab_size=128, hidden_size=64, num_layers=4, num_heads=4, num_kv_heads=2, head_dim=16,
             intermediate_size=96, rms_norm_eps=1e-6, max_position_embeddings=128, tie_word_embeddings=True)
GEMMA_LIKE = dict(norm_weight_offset=1.0, embedding_scale="sqrt_hidden", hidden_act="gelu_pytorch_tanh")
TYPES = [SLIDING, SLIDING, FULL, SLIDING]
GEMMA3_LIKE = dict(GEMMA_LIKE, qk_norm=True, norm_style="sandwich", sliding_window=6, layer_types=TYPES,
                   rope_theta=1e6, rope_local_theta=1e4, query_pre_attn_scalar=48)
IDS = torch.randint(0, 128, (2, 23), generator=torch.Generator().manual_seed(1))  # longer than the windows


def _randomise_norms(hf) -> None:
    torch.manual_seed(1)
    with torch.no_grad():
        for name, p in hf.named_parameters():
            if "norm" in name:
                p.add_(0.3 * torch.randn_like(p))


def _ours(hf, **fields) -> CausalLM:
    model = CausalLM(ModelConfig("llama", **{**SHAPE, **fields})).eval()
    model.load_state_dict(hf.state_dict(), strict=True)
    return model


def _diff(hf, ours) -> float:
    with torch.no_grad():
        return (hf(IDS).logits - ours(IDS)).abs().max().item()


@pytest.fixture(scope="module")
def gemma3():
    cfg = transformers.Gemma3TextConfig(
        vocab_size=128, hidden_size=64, intermediate_size=96, num_hidden_layers=4, num_attention_heads=4,
        num_key_value_heads=2, head_dim=16, query_pre_attn_scalar=48, sliding_window=6, layer_types=TYPES,
        rope_parameters={"full_attention": {"rope_type": "default", "rope_theta": 1e6},
                         "sliding_attention": {"rope_type": "default", "rope_theta": 1e4}},
        max_position_embeddings=128, rms_norm_eps=1e-6, attn_implementation="sdpa")
    torch.manual_seed(0)
    hf = transformers.Gemma3ForCausalLM(cfg).eval()
    _randomise_norms(hf)
    return hf


def test_gemma3_graph_equals_transformers(gemma3):
    """Sandwich norms, (1 + w) norms, q/k norm, GELU-tanh, sqrt(hidden) embedding scale, interleaved
    sliding/full layers with their own RoPE bases, query_pre_attn_scalar: all at once."""
    assert _diff(gemma3, _ours(gemma3, **GEMMA3_LIKE)) <= 1e-5


@pytest.mark.parametrize("field, off", [
    ("norm_weight_offset", 0.0), ("embedding_scale", None), ("hidden_act", "silu"), ("norm_style", "pre"),
    ("rope_local_theta", None), ("query_pre_attn_scalar", None), ("sliding_window", None),
])
def test_each_gemma3_variation_matters(gemma3, field, off):
    changed = {field: off, **({"layer_types": None} if field == "sliding_window" else {})}
    model = CausalLM(ModelConfig("llama", **{**SHAPE, **GEMMA3_LIKE, **changed})).eval()
    model.load_state_dict(gemma3.state_dict(), strict=field != "norm_style")
    assert _diff(gemma3, model) > 1e-3


def test_gemma_pre_norm_graph_equals_transformers():
    """(1 + w) norms, sqrt(hidden) embedding scale and GELU-tanh in the plain pre-norm graph."""
    cfg = transformers.GemmaConfig(vocab_size=128, hidden_size=64, intermediate_size=96, num_hidden_layers=4,
                                   num_attention_heads=4, num_key_value_heads=2, head_dim=16,
                                   hidden_activation="gelu_pytorch_tanh", max_position_embeddings=128,
                                   rms_norm_eps=1e-6, rope_parameters={"rope_type": "default", "rope_theta": 1e4})
    torch.manual_seed(0)
    hf = transformers.GemmaForCausalLM(cfg).eval()
    _randomise_norms(hf)
    assert _diff(hf, _ours(hf, rope_theta=1e4, **GEMMA_LIKE)) <= 1e-5


def test_mistral_sliding_window_equals_transformers():
    cfg = transformers.MistralConfig(vocab_size=128, hidden_size=64, intermediate_size=96, num_hidden_layers=4,
                                     num_attention_heads=4, num_key_value_heads=2, head_dim=16, sliding_window=5,
                                     max_position_embeddings=128, rms_norm_eps=1e-6, tie_word_embeddings=True,
                                     attn_implementation="sdpa")
    torch.manual_seed(0)
    hf = transformers.MistralForCausalLM(cfg).eval()
    _randomise_norms(hf)
    theta = hf.config.rope_parameters["rope_theta"]
    assert _diff(hf, _ours(hf, rope_theta=theta, sliding_window=5)) <= 1e-5
    assert _diff(hf, _ours(hf, rope_theta=theta)) > 1e-3  # the window is what makes it equal


def _naive_attention(q, k, v, window, scale):
    """One query at a time: softmax over the keys at positions (p - window, p], p its position."""
    B, H, T, D = q.shape
    S, group = k.shape[2], H // k.shape[1]
    out = torch.zeros_like(q)
    for b in range(B):
        for h in range(H):
            for i in range(T):
                p = S - T + i
                lo = 0 if window is None else max(0, p - window + 1)
                keys, vals = k[b, h // group, lo:p + 1], v[b, h // group, lo:p + 1]
                w = torch.softmax(keys @ q[b, h, i] * scale, dim=0)
                out[b, h, i] = w @ vals
    return out


@pytest.mark.parametrize("T, S, window", [(11, 11, 4), (11, 11, None), (3, 11, 4), (1, 11, 4), (1, 3, 4),
                                          (11, 11, 1), (11, 11, 50)])
def test_sliding_window_attention_equals_naive_reference(T, S, window):
    g = torch.Generator().manual_seed(0)
    q = torch.randn(2, 4, T, 8, generator=g, dtype=torch.float64)
    k = torch.randn(2, 2, S, 8, generator=g, dtype=torch.float64)
    v = torch.randn(2, 2, S, 8, generator=g, dtype=torch.float64)
    for scale in (None, 0.2):
        ref = _naive_attention(q, k, v, window, scale or 1 / math.sqrt(8))
        assert torch.allclose(attend(q, k, v, window, scale), ref, atol=1e-12)


def test_sliding_window_kv_cache_equals_full_forward():
    cfg = get_preset("llama-tiny").replace(num_layers=3, sliding_window=4, layer_types=[SLIDING, FULL, SLIDING],
                                           rope_local_theta=100.0)
    model = CausalLM(cfg).eval()
    model.reset_parameters(seed=0)
    prompt = torch.randint(0, 512, (2, 7), generator=torch.Generator().manual_seed(2))
    out = model.generate(prompt, 9)
    with torch.no_grad():
        full = model(out)
        assert torch.equal(full[:, 6:-1].argmax(-1), out[:, 7:])
        from warmstart.arch import KVCache

        cache = KVCache(cfg, 2, out.shape[1], "cpu", torch.float32)
        steps = [model(out[:, :7], cache)] + [model(out[:, t:t + 1], cache) for t in range(7, out.shape[1])]
        assert torch.allclose(torch.cat(steps, dim=1), full, atol=1e-5)


def test_scratch_init_starts_offset_norms_at_the_identity():
    model = CausalLM(get_preset("llama-tiny").replace(norm_weight_offset=1.0, norm_style="sandwich", qk_norm=True))
    model.reset_parameters(seed=0)
    norms = [p for n, p in model.named_parameters() if n.endswith("norm.weight")]
    assert len(norms) == 2 * 6 + 1 and all(bool((p == 0).all()) for p in norms)
    x = torch.randn(3, 64)
    assert torch.allclose(model.model.norm(x), x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-5))


def test_parameter_count_counts_sandwich_norms():
    cfg = ModelConfig("llama", **{**SHAPE, **GEMMA3_LIKE})
    with torch.device("meta"):
        assert CausalLM(cfg).num_parameters() == cfg.num_parameters()


def test_variations_a_family_cannot_express_are_refused_on_save():
    base = get_preset("qwen2-tiny")
    for change in ({"norm_style": "sandwich"}, {"embedding_scale": "sqrt_hidden"}, {"sliding_window": 8},
                   {"norm_weight_offset": 1.0}, {"query_pre_attn_scalar": 32.0}, {"attention_bias": False}):
        with pytest.raises(UsageError, match="cannot express"):
            base.replace(**change).to_hf_config()
    llama = get_preset("llama-tiny").replace(hidden_act="gelu_pytorch_tanh")  # Llama's config has hidden_act
    assert ModelConfig.from_hf_config(llama.to_hf_config()) == llama
    with pytest.raises(FamilyError, match="activation 'relu'"):
        ModelConfig.from_hf_config({**llama.to_hf_config(), "hidden_act": "relu"})


@pytest.mark.parametrize("bad", [{"hidden_act": "relu"}, {"norm_style": "post"}, {"embedding_scale": "x"},
                                 {"layer_types": [FULL]}, {"layer_types": [SLIDING, SLIDING]},
                                 {"layer_types": ["local", FULL], "sliding_window": 4}])
def test_invalid_variations_refused(bad):
    with pytest.raises(UsageError):
        get_preset("llama-tiny").replace(**bad)


def test_uniform_layer_types_have_one_spelling():
    cfg = get_preset("llama-tiny")
    assert cfg.replace(layer_types=[FULL, FULL]) == cfg
    assert cfg.replace(sliding_window=8, layer_types=[SLIDING, SLIDING]) == cfg.replace(sliding_window=8)
    assert [cfg.replace(sliding_window=8).layer_type(i) for i in range(2)] == [SLIDING, SLIDING]
