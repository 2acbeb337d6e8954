"""FSDP2 and DDP on CUDA (NCCL): world size 1 with bf16 mixed precision and torch.compile follows the
plain path; a distributed checkpoint resumes; CPU offload runs; 2 GPUs (when present) train together.

Marked ``gpu``: skipped where CUDA is absent (CI). On the GPU machine:
``python -m pytest -q -m gpu tests/gpu/test_fsdp.py``.
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
def corpus(tmp_path_factory):
    import argparse
    import csv
    import inspect
    import shutil
    import textwrap

    root = tmp_path_factory.mktemp("fsdp-corpus")
    for mod in (argparse, csv, inspect, shutil, textwrap, subprocess, json.decoder, json.encoder):
        shutil.copy(inspect.getsourcefile(mod), root / (mod.__name__.replace(".", "_") + ".py"))
    return root


def pretrain(tmp_path, corpus, out: str, *extra: str, steps: int = 40, nproc: int = 1):
    env = dict(os.environ, WARMSTART_CACHE=str(tmp_path / "cache"))
    env.pop("WARMSTART_DEBUG", None)
    args = ["--preset", "llama-tiny", "--data", str(corpus), "--vocab-size", "512", "--device", "cuda",
            "--max-steps", str(steps), "--seq-len", "128", "--batch-size", "16", "--lr", "3e-3", "--eval-every", "20",
            "--save-every", "20", "--val-fraction", "0.2", "--log-every", "1", "--lr-decay-steps", "60",
            "--out", str(tmp_path / out), "--quiet", *extra]
    if nproc > 1:
        args += ["--nproc-per-node", str(nproc)]
    proc = subprocess.run([sys.executable, "-m", "warmstart", "pretrain", *args], env=env, capture_output=True,
                          text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    recs = [json.loads(line) for line in (tmp_path / out / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["loss"] for r in recs if "loss" in r}, [r["val_loss"] for r in recs if r.get("val_loss")]


def test_fsdp_world_size_one_bf16_compile_follows_the_plain_path_and_resumes(tmp_path, corpus):
    plain, plain_val = pretrain(tmp_path, corpus, "plain", "--compile")
    fsdp, fsdp_val = pretrain(tmp_path, corpus, "fsdp", "--compile", "--parallel", "fsdp")
    assert sorted(plain) == sorted(fsdp) == list(range(1, 41))
    # bf16 parameters for compute (FSDP) vs fp32 parameters under autocast (plain): close, not equal.
    for step in (1, 2, 3):
        assert abs(plain[step] - fsdp[step]) <= 0.02 * plain[step], (step, plain[step], fsdp[step])
    assert abs(plain[40] - fsdp[40]) <= 0.05 * plain[40], (plain[40], fsdp[40])
    assert fsdp_val[-1] < fsdp_val[0] - 0.5 and abs(plain_val[-1] - fsdp_val[-1]) <= 0.1, (plain_val, fsdp_val)
    ck = tmp_path / "fsdp" / "checkpoints" / "step-000040"
    assert (ck / "trainer_state" / "optimizer").is_dir() and (ck / "model.safetensors").is_file()
    # The sharded (DCP) checkpoint resumes on the GPU, and on the plain path too.
    env = dict(os.environ, WARMSTART_CACHE=str(tmp_path / "cache"))
    for extra in (["--parallel", "fsdp"], ["--parallel", "none"]):
        run = tmp_path / f"resume-{extra[1]}"
        subprocess.run(["cp", "-r", str(tmp_path / "fsdp"), str(run)], check=True)
        p = subprocess.run([sys.executable, "-m", "warmstart", "pretrain", "--resume", str(run), "--max-steps", "50",
                            *extra, "--quiet"], env=env, capture_output=True, text=True, timeout=900)
        assert p.returncode == 0, p.stdout + p.stderr
        assert (run / "checkpoints" / "latest").read_text().strip() == "step-000050"


def test_fsdp_activation_checkpointing_and_cpu_offload_run(tmp_path, corpus):
    losses, val = pretrain(tmp_path, corpus, "ac", "--parallel", "fsdp", "--activation-checkpointing", steps=20)
    assert val[-1] < val[0]
    losses, val = pretrain(tmp_path, corpus, "offload", "--parallel", "fsdp", "--cpu-offload", steps=20)
    assert val[-1] < val[0]


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs 2 GPUs")
@pytest.mark.parametrize("mode", ["fsdp", "ddp"])
def test_two_gpus_follow_one(tmp_path, corpus, mode):
    one, _ = pretrain(tmp_path, corpus, "one", "--parallel", mode, "--grad-accum", "2", "--batch-size", "8",
                      steps=20)
    two, _ = pretrain(tmp_path, corpus, "two", "--parallel", mode, "--batch-size", "8", steps=20, nproc=2)
    for step in range(1, 21):
        assert abs(one[step] - two[step]) <= 0.02 * one[step], (step, one[step], two[step])
