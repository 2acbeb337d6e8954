"""``--fp8`` and the low-memory optimizers on CUDA: a compiled fp8 run follows the compiled bf16 run over 20 steps,
rowwise composes with activation checkpointing and tensorwise with FSDP2 at world size 1 (its DCP checkpoint
resumes on the plain path without ``--fp8``), an fp8 run resumes without it and a bf16 run with it, and
``adamw-8bit`` / ``adamw-bf16`` resume where they stopped. The runs are in-process (``pretrain``): one set of
imports and compile caches for all; the two references compiled, the others eager.

Marked ``gpu``: skipped where CUDA is absent (CI), or below compute capability 8.9. On the GPU machine:
``python -m pytest -q -m gpu tests/gpu/test_fp8.py tests/train/test_lowbit.py`` (the latter: the optimizer state's
bit-exact round trip on CUDA). The CPU side (refusals, plumbing, emulated fp8 on two FSDP2 ranks with the float8
all-gather): tests/train/test_fp8.py, tests/train/test_lowbit.py.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available() or torch.cuda.get_device_capability() < (8, 9),
                       reason="needs a CUDA device of compute capability 8.9 or later"),
]
pytest.importorskip("torchao")


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    from _corpus import make_corpus

    root = tmp_path_factory.mktemp("fp8")
    make_corpus(root / "corpus")
    return root


def train(root: Path, name: str, steps: int = 20, **settings) -> dict[int, float]:
    """``pretrain`` in this process (llama-small: every block dimension a multiple of 16); the step losses. Eager
    unless ``compile=True`` (the bf16 and tensorwise references): compiling each run would take most of the time."""
    from warmstart.train import pretrain, resolve_config

    flags = {"preset": "llama-small", "data": [str(root / "corpus")], "vocab_size": 512, "device": "cuda",
             "compile": False, "max_steps": steps, "seq_len": 128, "batch_size": 16, "lr": 3e-3, "warmup_steps": 5,
             "eval_every": 10, "save_every": 10, "eval_tokens": 4096, "log_every": 1, "val_fraction": 0.2,
             "lr_decay_steps": 40, "cache_dir": str(root / "cache"), "out": str(root / name), **settings}
    if "resume" in settings:
        flags = {"max_steps": steps, "device": "cuda", **settings}
    pretrain(resolve_config(flags), quiet=True, print_summary=False)
    recs = [json.loads(line) for line in (root / name / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["loss"] for r in recs if "loss" in r}


def rewind(run: Path, step: int) -> None:
    """Point the run back at its step-``step`` checkpoint (as if it had stopped there)."""
    for d in (run / "checkpoints").glob("step-*"):
        if int(d.name.split("-")[1]) > step:
            shutil.rmtree(d)
    (run / "checkpoints" / "latest").write_text(f"step-{step:06d}\n")


def close(a: float, b: float, tol: float) -> bool:
    return abs(a - b) <= tol * abs(b)


@pytest.fixture(scope="module")
def bf16(root):
    return train(root, "bf16", compile=True)


@pytest.fixture(scope="module")
def tensorwise(root):
    return train(root, "fp8", fp8="tensorwise", compile=True)


def test_fp8_follows_bf16_and_each_resumes_as_the_other(root, bf16, tensorwise):
    rowwise = train(root, "fp8-rowwise", fp8="rowwise", activation_checkpointing=True)
    assert sorted(bf16) == sorted(tensorwise) == sorted(rowwise) == list(range(1, 21))
    for run in (tensorwise, rowwise):
        assert run[1] != bf16[1] and close(run[20], bf16[20], 0.03), (bf16, run)  # the float8 casts ran, close
    assert tensorwise[20] < tensorwise[1] - 0.5
    for name, flag in (("fp8", "none"), ("bf16", "tensorwise")):
        shutil.copytree(root / name, root / f"{name}-resumed")
        rewind(root / f"{name}-resumed", 10)
        resumed = train(root, f"{name}-resumed", resume=str(root / f"{name}-resumed"), fp8=flag)
        assert sorted(resumed) == list(range(1, 21)) and close(resumed[20], bf16[20], 0.03), (bf16, resumed)


def test_fp8_with_fsdp2_at_world_size_one_resumes_on_the_plain_path(root, bf16):
    fsdp = train(root, "fsdp", steps=10, fp8="tensorwise", parallel="fsdp")
    assert close(fsdp[10], bf16[10], 0.05), (bf16, fsdp)
    assert (root / "fsdp" / "checkpoints" / "step-000010" / "trainer_state" / "optimizer").is_dir()
    resumed = train(root, "fsdp", resume=str(root / "fsdp"), steps=15, fp8="none", parallel="none")
    assert sorted(resumed) == list(range(1, 16))


@pytest.mark.parametrize("kind", ["adamw-8bit", "adamw-bf16"])
def test_the_low_memory_optimizers_resume_where_they_stopped(root, tensorwise, kind):
    whole = train(root, kind, fp8="tensorwise", optimizer=kind)
    shutil.copytree(root / kind, root / f"{kind}-again")
    rewind(root / f"{kind}-again", 10)
    again = train(root, f"{kind}-again", resume=str(root / f"{kind}-again"))
    # Step 11 runs on the restored weights; the state's round trip itself is bit-exact (tests/train/test_lowbit.py,
    # on CUDA too). Later steps may differ in the last bits where a CUDA backward accumulates in another order.
    assert sorted(again) == sorted(whole) and again[11] == whole[11]
    assert max(abs(again[s] - whole[s]) / whole[s] for s in range(11, 21)) <= 1e-3, (whole, again)
    assert close(whole[20], tensorwise[20], 0.03), (tensorwise, whole)  # near fp32 moments (adamw)
