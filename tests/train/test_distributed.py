"""Several ranks on CPU (gloo, 2 processes): DDP and FSDP2 equal one rank, gates refuse once and promptly,
resume across world sizes, a rank killed during a save. Real subprocesses through `--nproc-per-node` and
through plain torchrun; the 1-rank references run in-process."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from _corpus import make_corpus
from _hostile import cli
from warmstart.train import pretrain, resolve_config

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc to find a rank's pid")

STEPS = 10
COMMON = {"preset": "llama-tiny", "vocab_size": 400, "seq_len": 32, "eval_tokens": 128, "log_every": 1,
          "lr": 3e-3, "warmup_steps": 2, "lr_decay_steps": STEPS, "eval_every": 0}


def flags(d: dict) -> list[str]:
    out = []
    for k, v in d.items():
        out += [f"--{k.replace('_', '-')}", str(v)]
    return out


def ws(*args, env=None, timeout=240, check=True) -> subprocess.CompletedProcess:
    e = {k: v for k, v in os.environ.items() if k != "WARMSTART_DEBUG"}
    e.update(env or {})
    p = subprocess.run([sys.executable, *map(str, args)], capture_output=True, text=True, env=e, timeout=timeout)
    if check and p.returncode != 0:
        raise AssertionError(f"exit {p.returncode}\nstdout:\n{p.stdout}\nstderr:\n{p.stderr}")
    return p


def launch(out: Path, corpus, cache, *extra, nproc=2, env=None, check=True, **settings):
    args = flags({**COMMON, **settings, "data": corpus, "cache_dir": cache, "out": out})
    return ws("-m", "warmstart", "pretrain", *args, "--nproc-per-node", nproc, *extra, env=env, check=check)


def one_rank(out: Path, corpus, cache, **settings):
    cfg = resolve_config({**COMMON, **settings, "data": [str(corpus)], "cache_dir": str(cache), "out": str(out)})
    return pretrain(cfg, quiet=True, print_summary=False)


def losses(run: Path) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())
            if "loss" in r}


def close(a: dict, b: dict, steps, tol: float) -> None:
    for s in steps:
        assert abs(a[s] - b[s]) <= tol, (s, a[s], b[s])


def hf_logits(ckpt: Path) -> torch.Tensor:
    """Logits of transformers' own model loaded from the checkpoint directory as it is."""
    from transformers import AutoModelForCausalLM

    hf = AutoModelForCausalLM.from_pretrained(str(ckpt), dtype=torch.float32).eval()
    x = torch.randint(0, hf.config.vocab_size, (2, 24), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        return hf(x).logits


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("dist")
    return make_corpus(root / "corpus"), root / "cache", root


@pytest.fixture(scope="module")
def ref(data):
    """One rank, 2 micro-batches of 4 windows per step (global batch 8), 10 steps, checkpoints at 5 and 10."""
    corpus, cache, root = data
    one_rank(root / "ref", corpus, cache, batch_size=4, grad_accum=2, max_steps=STEPS, save_every=5)
    return root / "ref"


@pytest.fixture(scope="module")
def fsdp5(data):
    """Two ranks (FSDP2, 4 windows each: global batch 8), stopped after 5 of the 10 steps' schedule."""
    corpus, cache, root = data
    launch(root / "fsdp", corpus, cache, "--parallel", "fsdp", batch_size=4, max_steps=5, save_every=5)
    return root / "fsdp"


def test_ddp_and_fsdp_on_two_ranks_equal_one_rank(data, ref, fsdp5):
    corpus, cache, root = data
    launch(root / "ddp", corpus, cache, "--parallel", "ddp", batch_size=4, max_steps=STEPS, save_every=5)
    r, d, f = losses(ref), losses(root / "ddp"), losses(fsdp5)
    assert sorted(d) == list(range(1, STEPS + 1)) and sorted(f) == list(range(1, 6))
    close(r, d, range(1, STEPS + 1), 1e-5)
    close(r, f, range(1, 6), 1e-5)
    for run, step in ((root / "ddp", 10), (root / "fsdp", 5)):
        ck = run / "checkpoints" / f"step-{step:06d}"
        mine, theirs = load_file(str(ck / "model.safetensors")), load_file(str(ref / f"checkpoints/step-{step:06d}/model.safetensors"))
        assert mine.keys() == theirs.keys()
        assert (hf_logits(ck) - hf_logits(ref / f"checkpoints/step-{step:06d}")).abs().max() <= 1e-4
        shards = sorted(p.name for p in (ck / "trainer_state/optimizer").iterdir())
        assert shards == [f"shard-0000{i}-model-00001-of-00001.safetensors" for i in (1, 2)]
        assert (ck / "trainer_state/rng-rank-00001.safetensors").is_file()
        assert not list(ck.rglob("*.pt")) and not list(ck.rglob(".metadata")) and not list(ck.rglob("*.pkl"))
    # Only rank 0 wrote the run directory and its log.
    assert json.loads((root / "fsdp/summary.json").read_text())["steps"] == 5
    # DDP -> one rank (auto picks DDP on GPUs for models that fit): from the 2-rank step-5 checkpoint.
    again = root / "ddp-resumed"
    shutil.copytree(root / "ddp", again)
    shutil.rmtree(again / "checkpoints/step-000010")
    (again / "checkpoints/latest").write_text("step-000005\n")
    (again / "checkpoints/best").unlink(missing_ok=True)
    pretrain(resolve_config({"resume": str(again), "max_steps": STEPS}), print_summary=False)
    close(r, losses(again), range(1, STEPS + 1), 1e-4)


def test_resume_two_to_one_and_one_to_two_ranks(data, ref, fsdp5, capsys):
    corpus, cache, root = data
    # 2 -> 1: the 2-rank run stopped at step 5 (batch 4 per rank) continues on one rank: grad-accum becomes 2.
    half = root / "half2"
    shutil.copytree(fsdp5, half)
    pretrain(resolve_config({"resume": str(half), "max_steps": STEPS}), print_summary=False)
    assert "global batch kept at 8 windows per step: 1 rank(s) x batch 4 x grad-accum 2" in capsys.readouterr().out
    close(losses(ref), losses(half), range(1, 6), 1e-5)
    close(losses(ref), losses(half), range(6, STEPS + 1), 1e-4)
    # 1 -> 2: a single-process checkpoint (optimizer.safetensors by name) continues on two ranks.
    one = root / "half1"
    one_rank(one, corpus, cache, batch_size=4, grad_accum=2, max_steps=5, save_every=5)
    assert (one / "checkpoints/step-000005/trainer_state/optimizer.safetensors").is_file()
    p = ws("-m", "warmstart", "pretrain", "--resume", one, "--max-steps", STEPS, "--nproc-per-node", 2)
    assert "2 rank(s) x batch 4 x grad-accum 1" in p.stdout and p.stdout.count("resumed at step 5") == 1
    close(losses(ref), losses(one), range(1, STEPS + 1), 1e-4)
    assert (one / "checkpoints/step-000010/trainer_state/optimizer").is_dir()
    # FSDP2 -> DDP on the same two ranks (a run saved under FSDP2 resumed where auto now picks DDP).
    swap = root / "fsdp-to-ddp"
    shutil.copytree(fsdp5, swap)
    p = ws("-m", "warmstart", "pretrain", "--resume", swap, "--max-steps", STEPS, "--parallel", "ddp",
           "--nproc-per-node", 2)
    assert "DDP" in p.stdout and p.stdout.count("resumed at step 5") == 1
    close(losses(ref), losses(swap), range(1, STEPS + 1), 1e-4)


def test_warm_start_under_two_ranks_loads_shards_and_equals_one_rank(data, tiny_hf_dir):
    corpus, cache, root = data
    warm = {"init": tiny_hf_dir, "allow_untrained_init": True, "batch_size": 4, "max_steps": 2, "save_every": 0}
    one_rank(root / "warm1", corpus, cache, **{**warm, "init": str(tiny_hf_dir), "grad_accum": 2})
    extra = ["--init", tiny_hf_dir, "--allow-untrained-init"]
    p = launch(root / "warm2", corpus, cache, *extra, batch_size=4, max_steps=2, save_every=0)
    assert p.stdout.count("step 0 val_loss") == 1 and p.stdout.count("populated from the checkpoint") == 1
    assert p.stderr.count("[WS") == 0
    m1 = [json.loads(x) for x in (root / "warm1/metrics.jsonl").read_text().splitlines()]
    m2 = [json.loads(x) for x in (root / "warm2/metrics.jsonl").read_text().splitlines()]
    assert abs(m1[0]["val_loss"] - m2[0]["val_loss"]) <= 1e-6  # the same weights, loaded as shards
    close(losses(root / "warm1"), losses(root / "warm2"), (1, 2), 1e-5)


def test_gate_refusal_under_two_ranks_is_one_paragraph_and_prompt(data, tiny_hf_dir, tmp_path):
    corpus, cache, _ = data
    from _ckpt_tools import rewrite_tensors

    nan = tmp_path / "nan"
    shutil.copytree(tiny_hf_dir, nan)
    rewrite_tensors(nan, lambda t: t["model.layers.1.mlp.up_proj.weight"].__setitem__((0, 0), float("nan")))
    out = tmp_path / "run"
    t0 = time.time()
    p = launch(out, corpus, cache, "--init", nan, check=False, batch_size=4, max_steps=2)
    assert time.time() - t0 < 30, p.stderr
    assert p.returncode == 1 and p.stderr.count("[WS105]") == 1 and p.stderr.count("error:") == 1, p.stderr
    assert "Traceback" not in p.stderr and "ChildFailedError" not in p.stderr
    assert not out.exists() or not any(out.iterdir())
    # Plain torchrun: gate 7 (step-0 loss at random-init level) after sharded loading; every rank exits.
    t0 = time.time()
    p = ws("-m", "torch.distributed.run", "--standalone", "--nproc-per-node", 2, "-m", "warmstart", "pretrain",
           *flags({**COMMON, "data": corpus, "cache_dir": cache, "out": out, "batch_size": 4, "max_steps": 2}),
           "--init", tiny_hf_dir, check=False, timeout=120)
    assert time.time() - t0 < 60 and p.returncode != 0
    assert p.stderr.count("[WS109]") == 1 and "[rank 1]" not in p.stderr, p.stderr
    assert not out.exists() or not any(out.iterdir())


def _rank_pid(launcher: int, rank: int) -> int | None:
    """The pid of the worker of ``rank`` among the launcher's children (torchrun's environment)."""
    kids = Path(f"/proc/{launcher}/task/{launcher}/children").read_text().split()
    for pid in kids:
        try:
            env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if f"RANK={rank}".encode() in env:
            return int(pid)
    return None


def test_a_rank_killed_during_a_save_leaves_the_previous_checkpoint(data, fsdp5):
    corpus, cache, root = data
    run = root / "killed"
    args = flags({**COMMON, "data": corpus, "cache_dir": cache, "out": run, "batch_size": 4, "max_steps": 4,
                  "save_every": 2})
    env = {**os.environ, "WARMSTART_TEST_SLOW_SAVE": "60@4"}
    env.pop("WARMSTART_DEBUG", None)
    proc = subprocess.Popen([sys.executable, "-m", "warmstart", "pretrain", *args, "--nproc-per-node", "2"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    ck = run / "checkpoints"
    try:
        deadline, partial = time.time() + 120, []
        while time.time() < deadline and not partial:
            partial = [p for p in ck.glob(".step-000004.partial-*") if (p / "trainer_state/state.json").exists()]
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.1)
        assert partial, "the save of step 4 never reached its last file"
        victim = _rank_pid(proc.pid, 1)
        assert victim is not None
        os.kill(victim, signal.SIGKILL)  # rank 1 dies mid-save: every file of step 4 exists, nothing renamed
        _, err = proc.communicate(timeout=60)  # rank 0 names the lost rank and ends: no hang
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 1 and err.count("error:") == 1 and f"[WS232] rank 1 (pid {victim})" in err, err
    assert (ck / "latest").read_text().strip() == "step-000002" and not (ck / "step-000004").exists()
    hf_logits(ck / "step-000002")  # the previous checkpoint loads in transformers as it is
    p = ws("-m", "warmstart", "pretrain", "--resume", run, "--nproc-per-node", 2)
    assert "step-000002" in p.stdout and (ck / "latest").read_text().strip() == "step-000004"
    assert not list(ck.glob(".*"))
    # Same world size: the killed-and-resumed run's losses equal those of an uninterrupted 2-rank run.
    a, b = losses(run), losses(fsdp5)
    assert [a[s] for s in range(1, 5)] == [b[s] for s in range(1, 5)]


def test_sigterm_to_one_rank_stops_every_rank_at_the_same_step_with_a_checkpoint(data):
    corpus, cache, root = data
    run = root / "term"
    args = flags({**COMMON, "data": corpus, "cache_dir": cache, "out": run, "batch_size": 4, "max_steps": 100000,
                  "lr_decay_steps": 1000, "save_every": 0})
    env = {k: v for k, v in os.environ.items() if k != "WARMSTART_DEBUG"}
    proc = subprocess.Popen([sys.executable, "-m", "warmstart", "pretrain", *args, "--nproc-per-node", "2"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        deadline = time.time() + 120
        while time.time() < deadline and len(losses(run) if (run / "metrics.jsonl").exists() else {}) < 3:
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.1)
        # rank 0 holds the run directory's lock: a second run on it is refused, naming that process
        assert (run / ".warmstart.lock").read_text().strip() == str(_rank_pid(proc.pid, 0))
        second = cli("pretrain", *args)
        assert second.exit == 2 and "[WS205]" in second.err and f"process {_rank_pid(proc.pid, 0)}" in second.err
        os.kill(_rank_pid(proc.pid, 1), signal.SIGTERM)  # rank 1 alone is asked to stop
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    summary = json.loads((run / "summary.json").read_text())
    step = summary["steps"]
    assert summary["stopped_by"] == "sigterm" and "stopped by sigterm" in out
    ck = run / "checkpoints" / f"step-{step:06d}"
    assert (run / "checkpoints/latest").read_text().strip() == ck.name
    assert (ck / "trainer_state/rng-rank-00001.safetensors").is_file()  # rank 1 saved at the same step
    assert json.loads((ck / "trainer_state/state.json").read_text())["step"] == step == max(losses(run))
    assert not (run / ".warmstart.lock").exists()  # released when the run ended


def test_divergence_stops_every_rank_at_the_same_step_and_is_reported_once(data):
    corpus, cache, root = data
    run = root / "diverge"
    p = launch(run, corpus, cache, check=False, batch_size=4, max_steps=60, lr=100.0, warmup_steps=0, grad_clip=0.0,
               lr_decay_steps=60, save_every=2, eval_every=2, keep_last=100)
    assert p.returncode == 1 and p.stderr.count("[WS201]") == 1 and p.stderr.count("error:") == 1, p.stderr
    assert "Traceback" not in p.stderr
    latest = (run / "checkpoints/latest").read_text().strip()
    steps = sorted(int(d.name.split("-")[1]) for d in (run / "checkpoints").glob("step-*"))
    assert steps[-1] == int(latest.split("-")[1])  # nothing written after the last good checkpoint
    assert not [d for d in (run / "checkpoints").iterdir() if d.name.startswith(".")]
    assert all(torch.isfinite(t).all() for t in load_file(str(run / "checkpoints" / latest / "model.safetensors")).values())


# ------------------------------------------------------------------ the parts, in one process


def test_global_order_does_not_depend_on_the_world_size():
    import numpy as np

    from warmstart.data import BatchSampler
    from warmstart.train.step import TrainBatches

    class Windows:  # the dataset's window lookup: window i holds the token ids i
        @staticmethod
        def train_windows(idx):
            return np.repeat(np.asarray(idx, dtype=np.int64)[:, None], 3, axis=1)

    def drawn(batch, accum, rank, world, steps=3):
        b = TrainBatches(Windows, BatchSampler(50, seed=1), batch, torch.device("cpu"), grad_accum=accum, rank=rank,
                         world_size=world)
        return [[int(v) for v in b()[0][:, 0]] for _ in range(steps * accum)]

    one = drawn(4, 2, 0, 1)  # 1 rank x 2 micro-batches of 4
    r0, r1 = drawn(4, 1, 0, 2), drawn(4, 1, 1, 2)  # 2 ranks x 1 micro-batch of 4
    assert [sorted(one[2 * s] + one[2 * s + 1]) for s in range(3)] == [sorted(r0[s] + r1[s]) for s in range(3)]
    assert one[0] == r0[0] and one[1] == r1[0]


def test_eval_slices_cover_the_windows_once_with_as_many_batches_on_every_rank():
    import numpy as np

    from warmstart.train.distributed import Dist
    from warmstart.train.evaluate import rank_batches

    idx = np.arange(9)
    parts = [rank_batches(idx, 2, Dist(rank=r, world_size=2)) for r in (0, 1)]
    assert len(parts[0]) == len(parts[1]) == 3 and parts[1][-1] is None
    assert sorted(int(i) for p in parts for b in p if b is not None for i in b) == list(range(9))
    assert [list(b) for b in rank_batches(idx, 4)] == [[0, 1, 2, 3], [4, 5, 6, 7], [8]]  # one process: as before


def test_stop_flags_are_agreed_once_per_step():
    from warmstart.train.budget import Budget, StopSignal
    from warmstart.train.config import TrainConfig
    from warmstart.train.optim import Schedule
    from warmstart.train.state import TrainState
    from warmstart.data import BatchSampler

    calls = []

    def agree(*flags):  # another rank was asked to stop
        calls.append(flags)
        return flags[0], True

    state = TrainState(sampler=BatchSampler(4), data_fingerprint="x", schedule=Schedule(1e-3, 0, 10, 0.1))
    budget = Budget(TrainConfig(max_steps=5, max_time=3600), 10, signal_=StopSignal(), agree=agree)
    assert budget.stop_reason(state) == "sigterm" and calls == [(False, False)]
    state.step = 5
    assert budget.stop_reason(state) == "max-steps" and len(calls) == 1  # the same step on every rank


def test_refusals_cross_ranks_typed_and_the_launcher_reports_a_worker_status():
    from torch.distributed.elastic.multiprocessing.errors import ProcessFailure

    from warmstart.errors import PeerFailedError, TokenizerError
    from warmstart.train.distributed import error_record, rebuild_error
    from warmstart.train.launch import exit_status, without_nproc

    err = TokenizerError("too many tokens", why="ids", fix="use its tokenizer", path="/ckpt")
    again = rebuild_error(error_record(err))
    assert type(again) is TokenizerError and again.paragraph() == err.paragraph() and again.exit_code == 1
    assert PeerFailedError.code == "WS204"
    assert without_nproc(["pretrain", "--nproc-per-node", "2", "--lr", "1", "--nproc-per-node=4"]) == \
        ["pretrain", "--lr", "1"]

    def fail(rank, code):
        return ProcessFailure(local_rank=rank, pid=1000 + rank, exitcode=code, error_file="")

    assert exit_status({0: fail(0, -15), 1: fail(1, 1)}) == 1  # rank 0 stopped by the launcher after rank 1's refusal
    assert exit_status({0: fail(0, 2), 1: fail(1, 1)}) == 2
    assert exit_status({1: fail(1, -9)}) == 137
    from warmstart.train.launch import unreported

    assert unreported({0: fail(0, -15), 1: fail(1, 1)}) is None  # rank 1 said why itself
    lost = unreported({0: fail(0, -9), 1: fail(1, -9)})
    assert lost.code == "WS232" and "rank 0 (pid 1000, SIGKILL), rank 1 (pid 1001, SIGKILL)" in lost.paragraph()
