"""Checkpoint tools for tests: real checkpoints written by transformers, and in-place edits of real files."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import torch

FAMILY_PRESETS = {"llama": "llama-tiny", "qwen2": "qwen2-tiny", "qwen3": "qwen3-tiny"}


def hf_config_dict(family: str, vocab: int) -> dict:
    from warmstart.arch import get_preset

    cfg = get_preset(FAMILY_PRESETS[family]).replace(vocab_size=vocab, bos_token_id=0, eos_token_id=0)
    return cfg.to_hf_config()


def save_transformers_model(out: Path, family: str, tokenizer, *, seed: int = 0, dtype=torch.float32) -> Path:
    """A tiny random model built and saved by transformers, with our tokenizer.json beside it."""
    from transformers import AutoConfig, AutoModelForCausalLM

    d = hf_config_dict(family, tokenizer.get_vocab_size())
    model_type = d.pop("model_type")
    d.pop("architectures")
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(AutoConfig.for_model(model_type, **d))
    with torch.no_grad():  # non-trivial norms and biases
        for name, p in model.named_parameters():
            if "norm" in name:
                p.add_(0.1 * torch.randn_like(p))
            elif name.endswith(".bias"):
                p.copy_(0.05 * torch.randn_like(p))
    model.to(dtype).save_pretrained(out)
    tokenizer.save(str(out / "tokenizer.json"))
    return out


def rewrite_config(ckpt_dir: Path, **changes) -> None:
    p = ckpt_dir / "config.json"
    cfg = json.loads(p.read_text())
    cfg.update(changes)
    p.write_text(json.dumps(cfg, indent=2))


def rewrite_tensors(ckpt_dir: Path, fn) -> None:
    """Load model.safetensors, let ``fn`` edit the dict, save it back (real format)."""
    from safetensors.torch import load_file, save_file

    p = ckpt_dir / "model.safetensors"
    tensors = load_file(str(p))
    fn(tensors)
    save_file(tensors, str(p), metadata={"format": "pt"})


def ws(*args: str, cwd: Path, check: bool = True, timeout: float = 600,
       env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run `python -m warmstart ARGS` in ``cwd`` with a private token cache (``env``: more variables); never a
    traceback."""
    env = dict(os.environ, WARMSTART_CACHE=str(cwd / "cache"), PYTHONUNBUFFERED="1", **(env or {}))
    proc = subprocess.run([sys.executable, "-m", "warmstart", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)
    assert "Traceback" not in proc.stderr, proc.stderr
    if check:
        assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


def add_to_cache(cache: Path, repo_id: str, src: Path, commit: str, refs: tuple[str, ...] = ("main",)) -> Path:
    """Put the files of ``src`` into ``cache`` the way huggingface_hub stores a download: content-addressed
    blobs, a snapshot of relative symlinks per commit, and refs naming the commit."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    (repo / "blobs").mkdir(exist_ok=True)
    for f in sorted(p for p in src.iterdir() if p.is_file()):
        digest = hashlib.sha256(f.read_bytes()).hexdigest()
        shutil.copyfile(f, repo / "blobs" / digest)
        (snapshot / f.name).symlink_to(Path("..") / ".." / "blobs" / digest)
    (repo / "refs").mkdir(exist_ok=True)
    for ref in refs:
        (repo / "refs" / ref).write_text(commit)
    return snapshot
