"""CUDA paths: the same gates, the same numbers, bf16 training with and without torch.compile.

Marked ``gpu``: skipped where CUDA is absent (CI). Run on the GPU machine with
``python -m pytest -q -m gpu tests/gpu``; results are recorded in bench/results/gpu_tests.txt.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


@pytest.fixture(scope="module")
def qwen2_dir(tmp_path_factory, tiny_tokenizer):
    from _ckpt_tools import save_transformers_model

    return save_transformers_model(tmp_path_factory.mktemp("gpu") / "qwen2", "qwen2", tiny_tokenizer)


def test_gates_and_population_identical_on_cuda(qwen2_dir):
    from warmstart.init import prepare_warm_start

    cpu = prepare_warm_start(qwen2_dir, device="cpu")
    gpu = prepare_warm_start(qwen2_dir, device="cuda")
    assert [(r.name, r.status) for r in cpu.report] == [(r.name, r.status) for r in gpu.report]
    for (n, a), (_, b) in zip(cpu.model.named_parameters(), gpu.model.named_parameters(), strict=True):
        assert b.device.type == "cuda" and torch.equal(a, b.cpu()), n


def test_fp32_logits_on_cuda_match_cpu(qwen2_dir):
    from warmstart.init import prepare_warm_start

    torch.backends.cuda.matmul.allow_tf32 = False
    model = prepare_warm_start(qwen2_dir).model.eval()
    ids = torch.randint(0, model.cfg.vocab_size, (2, 48))
    with torch.no_grad():
        ref = model(ids)
        out = model.cuda()(ids.cuda()).cpu()
    assert (ref - out).abs().max().item() <= 1e-4


def test_bf16_autocast_generation_runs_with_kv_cache(qwen2_dir):
    from warmstart.init import prepare_warm_start

    model = prepare_warm_start(qwen2_dir, device="cuda").model.eval()
    ids = torch.randint(0, model.cfg.vocab_size, (1, 8), device="cuda")
    with torch.autocast("cuda", dtype=torch.bfloat16):
        out = model.generate(ids, 16)
    assert out.shape == (1, 24)


@pytest.mark.parametrize("compile_flag", ["--no-compile", "--compile"])
def test_pretrain_cuda_bf16_trains(tmp_path, compile_flag):
    import argparse
    import csv
    import inspect
    import shutil
    import textwrap

    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for mod in (argparse, csv, inspect, shutil, textwrap, subprocess, json.decoder, json.encoder):
        shutil.copy(inspect.getsourcefile(mod), corpus / (mod.__name__.replace(".", "_") + ".py"))
    env = dict(os.environ, WARMSTART_CACHE=str(tmp_path / "cache"))
    out = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, "-m", "warmstart", "pretrain", "--preset", "llama-tiny", "--data", str(corpus),
         "--vocab-size", "512", "--device", "cuda", compile_flag, "--max-steps", "60", "--seq-len", "128",
         "--batch-size", "16", "--lr", "3e-3", "--eval-every", "30", "--save-every", "0", "--val-fraction", "0.2",
         "--out", str(out), "--quiet"],
        env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    vals = [json.loads(line)["val_loss"] for line in (out / "metrics.jsonl").read_text().splitlines()
            if json.loads(line).get("val_loss") is not None]
    assert vals[-1] < vals[0] - 0.5, vals
