"""save_hf_checkpoint: transformers loads what warmstart writes, with identical logits."""

from __future__ import annotations

import json
import os

import pytest
import torch
from safetensors import safe_open

from warmstart.checkpoint.write import atomic_write_bytes, atomic_write_json, save_hf_checkpoint
from warmstart.errors import UsageError


@pytest.mark.parametrize("preset", ["llama-tiny", "qwen2-tiny", "qwen3-tiny"])
def test_transformers_loads_with_same_logits(tmp_path, preset, tiny_model_factory, tiny_tokenizer):
    transformers = pytest.importorskip("transformers")
    model = tiny_model_factory(preset)
    out = save_hf_checkpoint(tmp_path / preset, model.cfg, model.canonical_state_dict(),
                             tokenizer=tiny_tokenizer, provenance={"architecture": model.cfg.family})
    assert sorted(p.name for p in out.iterdir()) == sorted([
        "config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
        "generation_config.json", "warmstart.json"])
    with safe_open(out / "model.safetensors", "pt") as f:
        assert f.metadata() == {"format": "pt"}
        assert "lm_head.weight" not in f.keys()  # tied
    hf = transformers.AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    ids = torch.randint(0, model.cfg.vocab_size, (2, 17), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ours = model(ids)
        theirs = hf(ids).logits
    assert (ours - theirs).abs().max().item() <= 1e-4

    tok = transformers.AutoTokenizer.from_pretrained(out)
    assert tok.eos_token == "<|endoftext|>"
    assert tok.get_vocab() == tiny_tokenizer.get_vocab()
    if model.cfg.family == "llama":
        # For qwen2/qwen3 model types transformers forces Qwen2Tokenizer, which swaps in
        # Qwen's own pre-tokenizer regex; for llama it uses tokenizer.json as written.
        text = "def f(x):\n    return x + 1  # é 中文"
        assert tok(text)["input_ids"] == tiny_tokenizer.encode(text).ids


def test_untied_head_is_saved(tmp_path, tiny_model_factory):
    import dataclasses

    from warmstart.arch import CausalLM

    cfg = dataclasses.replace(tiny_model_factory("llama-tiny").cfg, tie_word_embeddings=False)
    model = CausalLM(cfg)
    out = save_hf_checkpoint(tmp_path / "u", cfg, model.canonical_state_dict())
    with safe_open(out / "model.safetensors", "pt") as f:
        assert "lm_head.weight" in f.keys()
    assert not (out / "tokenizer.json").exists()
    assert not (out / "warmstart.json").exists()


def test_refuses_existing_dir_and_overwrites_safely(tmp_path, tiny_model_factory):
    model = tiny_model_factory("llama-tiny")
    out = tmp_path / "ck"
    save_hf_checkpoint(out, model.cfg, model.canonical_state_dict(), provenance={"step": 1})
    with pytest.raises(UsageError):
        save_hf_checkpoint(out, model.cfg, model.canonical_state_dict(), provenance={"step": 2})
    assert json.loads((out / "warmstart.json").read_text())["step"] == 1
    save_hf_checkpoint(out, model.cfg, model.canonical_state_dict(), provenance={"step": 2}, overwrite=True)
    assert json.loads((out / "warmstart.json").read_text())["step"] == 2
    assert sorted(os.listdir(tmp_path)) == ["ck"]  # no staging or aside leftovers


def test_failure_leaves_no_partial_dir(tmp_path, tiny_model_factory):
    model = tiny_model_factory("llama-tiny")
    sd = model.canonical_state_dict()
    sd["bad"] = sd["model.embed_tokens.weight"]  # shared storage: safetensors refuses
    with pytest.raises(RuntimeError, match="share memory"):
        save_hf_checkpoint(tmp_path / "ck", model.cfg, sd)
    assert os.listdir(tmp_path) == []


def test_atomic_file_helpers(tmp_path):
    p = atomic_write_bytes(tmp_path / "a" / "b.bin", b"xyz")
    assert p.read_bytes() == b"xyz"
    atomic_write_json(tmp_path / "c.json", {"k": [1, 2]})
    assert json.loads((tmp_path / "c.json").read_text()) == {"k": [1, 2]}
    assert sorted(os.listdir(tmp_path)) == ["a", "c.json"]
