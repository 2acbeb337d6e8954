"""`warmstart pretrain --init` end to end, through the CLI in a subprocess, on real files.

The motivating case (README): a qwen2 checkpoint whose metadata says LlamaForCausalLM is
refused before any step, both families named and the stamp recipe printed; after the recipe
the same command trains and its step-0 val_loss equals the val_loss recorded at save.
"""

from __future__ import annotations

import inspect
import json
import re
import shlex
import shutil
from pathlib import Path

import pytest
from _ckpt_tools import rewrite_config, rewrite_tensors, ws

TRAIN_FLAGS = ["--seq-len", "64", "--batch-size", "8", "--eval-tokens", "2048", "--val-fraction", "0.25",
               "--log-every", "5", "--quiet"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    import argparse
    import csv
    import json as json_mod
    import textwrap

    d = tmp_path_factory.mktemp("corpus")
    for mod in (textwrap, argparse, csv, json_mod.decoder, json_mod.encoder, shlex, inspect):
        shutil.copy(inspect.getsourcefile(mod), d / (mod.__name__.replace(".", "_") + ".py"))
    return d


@pytest.fixture(scope="module")
def trained_qwen2(tmp_path_factory, corpus) -> tuple[Path, Path]:
    """A tiny qwen2 trained by warmstart itself: (workdir, checkpoint dir)."""
    work = tmp_path_factory.mktemp("work")
    ws("pretrain", "--preset", "qwen2-tiny", "--data", str(corpus), "--include", "*.py", "--vocab-size", "512",
       "--max-steps", "40", "--lr", "3e-3", "--warmup", "5", "--save-every", "0", "--eval-every", "0",
       "--out", "run-qwen2", *TRAIN_FLAGS, cwd=work)
    latest = (work / "run-qwen2" / "checkpoints" / "latest").read_text().strip()
    ckpt = work / "run-qwen2" / "checkpoints" / latest
    assert (ckpt / "warmstart.json").exists()
    return work, ckpt


def _step0(run_dir: Path) -> float:
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        rec = json.loads(line)
        if rec.get("step") == 0 and rec.get("val_loss") is not None:
            return float(rec["val_loss"])
    raise AssertionError("no step-0 val_loss in metrics.jsonl")


def _assert_refused_cleanly(proc, out: Path, code: str) -> None:
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert f"[{code}]" in proc.stderr
    # Nothing written besides the log of the refusal: no checkpoints, no metrics, no config.
    if out.exists():
        leftovers = sorted(p.name for p in out.rglob("*") if p.is_file())
        assert leftovers in ([], ["refusal.log"]), leftovers
        assert not (out / "checkpoints").exists()


def test_mislabelled_qwen2_refused_then_repaired_by_printed_stamp(trained_qwen2, corpus):
    work, ckpt = trained_qwen2
    bad = work / "mislabelled"
    shutil.copytree(ckpt, bad)
    rewrite_config(bad, architectures=["LlamaForCausalLM"], model_type="llama")
    meta = json.loads((bad / "warmstart.json").read_text())
    meta.update(architecture="llama", hf_architecture="LlamaForCausalLM", model_type="llama")
    (bad / "warmstart.json").write_text(json.dumps(meta))

    args = ["pretrain", "--init", str(bad), "--data", str(corpus), "--include", "*.py", "--max-steps", "3",
            "--lr", "1e-4", "--save-every", "0", "--eval-every", "0", *TRAIN_FLAGS]
    proc = ws(*args, "--out", "run-refused", cwd=work, check=False)
    _assert_refused_cleanly(proc, work / "run-refused", "WS103")
    assert "LlamaForCausalLM" in proc.stderr and "qwen2" in proc.stderr
    m = re.search(r"`(warmstart stamp [^`]+)`", proc.stderr)
    assert m, proc.stderr
    recipe = shlex.split(m.group(1))
    assert recipe[:3] == ["warmstart", "stamp", str(bad)]

    # Apply the printed recipe literally.
    ws(*recipe[1:], cwd=work)
    fixed = Path(recipe[recipe.index("-o") + 1])
    assert fixed == Path(f"{bad}-fixed")
    assert json.loads((fixed / "config.json").read_text())["architectures"] == ["Qwen2ForCausalLM"]

    ws(*args[:2], str(fixed), *args[3:], "--out", "run-fixed", cwd=work)
    step0 = _step0(work / "run-fixed")
    recorded = json.loads((ckpt / "warmstart.json").read_text())["val_loss"]
    assert abs(step0 - recorded) <= 0.01 * recorded, (step0, recorded)
    parent = json.loads((work / "run-fixed" / "checkpoints" / (work / "run-fixed" / "checkpoints" / "latest")
                         .read_text().strip() / "warmstart.json").read_text())["parent"]
    assert parent["family"] == "qwen2" and len(parent["sha256"]) == 64 and parent["path"] == str(fixed.resolve())


@pytest.mark.parametrize("case, code", [("missing", "WS106"), ("shape", "WS107"), ("nan", "WS105"),
                                        ("encoder", "WS102"), ("big-tokenizer", "WS104")])
def test_broken_checkpoints_refused_before_any_step(trained_qwen2, corpus, case, code):
    import torch

    work, ckpt = trained_qwen2
    bad = work / f"bad-{case}"
    extra: list[str] = []
    if case == "encoder":
        from transformers import BertConfig, BertModel

        BertModel(BertConfig(vocab_size=512, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                             intermediate_size=64, max_position_embeddings=128)).save_pretrained(bad)
        shutil.copy(ckpt / "tokenizer.json", bad / "tokenizer.json")
    else:
        shutil.copytree(ckpt, bad)
    if case == "missing":
        rewrite_tensors(bad, lambda t: t.pop("model.layers.1.self_attn.v_proj.weight"))
    elif case == "shape":
        rewrite_tensors(bad, lambda t: t.update({"model.layers.0.mlp.up_proj.weight": torch.zeros(100, 64)}))
    elif case == "nan":
        rewrite_tensors(bad, lambda t: t["model.norm.weight"].__setitem__(0, float("nan")))
    elif case == "big-tokenizer":
        from tokenizers import Tokenizer, models, pre_tokenizers, trainers

        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.train_from_iterator([p.read_text() for p in corpus.glob("*.py")], trainer=trainers.BpeTrainer(
            vocab_size=1000, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False))
        tok.save(str(work / "big-tokenizer.json"))
        extra = ["--tokenizer", str(work / "big-tokenizer.json")]
    out = work / f"run-{case}"
    proc = ws("pretrain", "--init", str(bad), "--data", str(corpus), "--include", "*.py", "--max-steps", "2",
              *extra, *TRAIN_FLAGS, "--out", str(out), cwd=work, check=False)
    _assert_refused_cleanly(proc, out, code)
    assert str(bad) in proc.stderr
