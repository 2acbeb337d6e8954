"""Mistral's sliding window, implemented in the llama family (its tensors are Llama's): parity with a tiny
random MistralForCausalLM at a sequence longer than the window in both directions, and a windowed config is
written as MistralForCausalLM so that transformers reloads it with the window."""

from __future__ import annotations

import json

import pytest
import torch

from warmstart.arch import CausalLM, ModelConfig, get_preset
from warmstart.checkpoint import load_checkpoint, save_hf_checkpoint
from warmstart.errors import UsageError
from warmstart.init.population import populate_model

transformers = pytest.importorskip("transformers")

WINDOW = 5
IDS = torch.randint(0, 128, (2, 23), generator=torch.Generator().manual_seed(1))  # 23 tokens > window 5


def _mistral(window: int | None = WINDOW):
    cfg = transformers.MistralConfig(vocab_size=128, hidden_size=64, intermediate_size=96, num_hidden_layers=3,
                                     num_attention_heads=4, num_key_value_heads=2, head_dim=16, sliding_window=window,
                                     max_position_embeddings=128, rms_norm_eps=1e-6, tie_word_embeddings=False)
    torch.manual_seed(0)
    hf = transformers.MistralForCausalLM(cfg).eval()
    with torch.no_grad():
        for name, p in hf.named_parameters():
            if "norm" in name:
                p.add_(0.3 * torch.randn_like(p))
    return hf


def _diff(hf, ours) -> float:
    with torch.no_grad():
        return (hf(IDS).logits - ours(IDS)).abs().max().item()


def test_transformers_mistral_to_warmstart(tmp_path):
    hf = _mistral()
    hf.save_pretrained(tmp_path / "m")
    ckpt = load_checkpoint(tmp_path / "m")
    cfg = ckpt.model_config()
    assert (cfg.family, cfg.sliding_window, cfg.layer_types) == ("llama", WINDOW, None)
    assert cfg.hf_architecture == "MistralForCausalLM" and cfg.model_type == "mistral"
    ours = populate_model(ckpt).eval()
    assert _diff(hf, ours) <= 1e-4
    full = CausalLM(cfg.replace(sliding_window=None)).eval()
    full.load_state_dict(ours.state_dict())
    assert _diff(hf, full) > 1e-3  # the window is what makes it equal


def test_warmstart_window_is_written_as_mistral(tmp_path):
    cfg = get_preset("llama-tiny").replace(vocab_size=128, tie_word_embeddings=False, sliding_window=WINDOW)
    model = CausalLM(cfg).eval()
    model.reset_parameters(seed=0)
    save_hf_checkpoint(tmp_path / "ws", cfg, model.canonical_state_dict())
    written = json.loads((tmp_path / "ws" / "config.json").read_text())
    assert written["architectures"] == ["MistralForCausalLM"] and written["sliding_window"] == WINDOW
    hf = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "ws", dtype=torch.float32).eval()
    assert type(hf).__name__ == "MistralForCausalLM" and hf.config.sliding_window == WINDOW
    assert _diff(hf, model) <= 1e-4
    assert ModelConfig.from_hf_config(written) == cfg


def test_mistral_config_variants():
    base = get_preset("llama-tiny").to_hf_config()
    mistral = {**base, "architectures": ["MistralForCausalLM"], "model_type": "mistral"}
    assert ModelConfig.from_hf_config({**mistral, "sliding_window": None}).sliding_window is None  # v0.2+
    no_key = {k: v for k, v in mistral.items() if k != "sliding_window"}
    assert ModelConfig.from_hf_config(no_key).sliding_window == 4096  # MistralConfig's default
    unwindowed = ModelConfig.from_hf_config({**mistral, "sliding_window": None})
    assert unwindowed.to_hf_config()["architectures"] == ["LlamaForCausalLM"]  # no window: plain Llama


def test_what_a_mistral_config_cannot_hold_is_refused(tmp_path):
    windowed = get_preset("llama-tiny").replace(sliding_window=WINDOW)
    for change in ({"attention_bias": True, "o_bias": True}, {"layer_types": ["full_attention", "sliding_attention"]}):
        with pytest.raises(UsageError, match="cannot express"):
            windowed.replace(**change).to_hf_config()
    from warmstart.checkpoint.gguf.write import write_gguf

    model = CausalLM(windowed)
    sd = model.canonical_state_dict()
    with pytest.raises(UsageError, match="llama GGUF cannot express Mistral's sliding window"):
        write_gguf(tmp_path / "m.gguf", windowed, list(sd), lambda n: sd[n])
