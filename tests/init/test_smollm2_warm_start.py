"""The warm-start gates' reference behaviour on the real SmolLM2-135M-Instruct GGUF, on CPU.

`pretrain --init` starts at a trained loss on Python source (≤ 6.0) while a scratch run of the
same shape and tokenizer starts at random-init magnitude (≥ 9.5, ln 49152 = 10.8), and a few
steps of continued pretraining do not make it worse. Kept short for CI (few steps, few eval
tokens); the 50-step CPU and 500-step GPU curves are recorded in bench/results.
"""

from __future__ import annotations

import inspect
import json
import shutil

import pytest
from _ckpt_tools import ws

pytestmark = pytest.mark.smollm2

FLAGS = ["--seq-len", "128", "--batch-size", "4", "--eval-tokens", "2048", "--val-fraction", "0.3",
         "--save-every", "0", "--log-every", "1", "--quiet"]


def _vals(run) -> list[float]:
    recs = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [r["val_loss"] for r in recs if r.get("val_loss") is not None]


@pytest.fixture(scope="module")
def code_corpus(tmp_path_factory):
    import argparse
    import csv
    import json as json_mod
    import textwrap

    d = tmp_path_factory.mktemp("code")
    for mod in (textwrap, csv, json_mod.decoder, json_mod.encoder, argparse, shutil):
        shutil.copy(inspect.getsourcefile(mod), d / (mod.__name__.replace(".", "_") + ".py"))
    return d


def test_init_from_gguf_starts_trained_and_scratch_starts_random(tmp_path, code_corpus):
    from warmstart.checkpoint import load_checkpoint, resolve_checkpoint_path

    ws("pretrain", "--init", "smollm2-135m-instruct", "--data", str(code_corpus), "--max-steps", "4",
       "--eval-every", "4", *FLAGS, "--out", "warm", cwd=tmp_path)
    warm = _vals(tmp_path / "warm")
    assert warm[0] <= 6.0, warm
    assert warm[-1] <= warm[0] + 0.02, warm  # continued pretraining does not make it worse

    # Scratch, same shape and tokenizer: random-init magnitude.
    tok = tmp_path / "smollm2-tokenizer.json"
    load_checkpoint(resolve_checkpoint_path("smollm2-135m-instruct")).tokenizer.save(str(tok))
    ws("pretrain", "--preset", "smollm2-135m", "--tokenizer", str(tok), "--data", str(code_corpus),
       "--max-steps", "1", "--eval-every", "0", *FLAGS, "--out", "scratch", cwd=tmp_path)
    scratch = _vals(tmp_path / "scratch")
    assert scratch[0] >= 9.5, scratch
    parent = json.loads(next((tmp_path / "warm" / "checkpoints").glob("step-*/warmstart.json")).read_text())["parent"]
    assert parent["format"] == "gguf" and parent["family"] == "llama"
