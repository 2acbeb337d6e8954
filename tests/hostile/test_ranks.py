"""Hostile runs of two ranks (gloo, CPU): a rank that cannot read its data, a rank killed, a resume from a
damaged shard of one rank, a resume on a number of ranks the global batch does not fit, a save that fails
at a write only several ranks make. Each ends every rank within 60 s with one coded paragraph (naming the
rank), the same exit status on every rank, no traceback, no WS999 and no process left
(``_ranks.ended_once``); the rank-fault protocol is src/warmstart/train/faults.py. Two ranks saving on a
real full disk: test_full_disk.py."""

from __future__ import annotations

import json
import shutil
import signal
import sys
from pathlib import Path

import pytest
from _corpus import make_corpus
from _hostile import Snapshot, cli, listing
from _ranks import ended_once, kill, launch, run_ranks, wait_for

from warmstart.checkpoint.write import FAULT_ENV

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc to find the ranks")

FILES = ["textwrap.py", "string.py", "heapq.py", "bisect.py"]
SMALL = ("--preset", "llama-tiny", "--vocab-size", 300, "--seq-len", 16, "--batch-size", 2, "--eval-tokens", 32,
         "--eval-every", 0)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("ranks")
    return make_corpus(root / "corpus", FILES), root / "cache"


@pytest.fixture(scope="module")
def base2(tmp_path_factory, corpus):
    """A two-rank run of 2 steps with a checkpoint at each (DCP shards, rank 1's RNG); cases copy it."""
    data, cache = corpus
    run = tmp_path_factory.mktemp("ranks-base") / "run"
    r = launch(["pretrain", *SMALL, "--data", data, "--cache-dir", cache, "--max-steps", 2, "--save-every", 1,
                "--log-every", 1, "--out", run])
    assert r.exit == 0, r.text
    return run


def _args(corpus, out: Path, **per_rank) -> list:
    data, cache = corpus
    return ["pretrain", *SMALL, "--max-steps", 2, "--save-every", 0, "--out", out,
            *(a for k, v in {"data": data, "cache_dir": cache, **per_rank}.items()
              for a in (f"--{k.replace('_', '-')}", v))]


# ------------------------------------------------------------------ one rank's own inputs (each rank its args)


def _other_corpus(tmp: Path) -> Path:
    return make_corpus(tmp / "other", ["heapq.py", "bisect.py"])


def _cache_is_file(tmp: Path) -> Path:
    (tmp / "cachefile").write_text("not a directory\n")
    return tmp / "cachefile"


# case -> (rank 0's and rank 1's extra settings from the case directory, code, exit, what the paragraph says)
PER_RANK_CASES = {
    "rank1-data-missing": (lambda t: ({}, {"data": t / "nope"}), "WS002", 2, ("[rank 1]", "nope")),
    "rank0-data-missing": (lambda t: ({"data": t / "nope"}, {}), "WS002", 2, ("nope",)),
    "rank1-other-corpus": (lambda t: ({}, {"data": _other_corpus(t)}), "WS002", 2, ("[rank 1]", "fingerprint")),
    "rank1-eval-data-missing": (lambda t: ({"eval_data": f"retain={t / 'eval.py'}"},
                                           {"eval_data": f"retain={t / 'gone.py'}"}), "WS002", 2, ("[rank 1]", "gone.py")),
    "rank1-cache-dir-a-file": (lambda t: ({}, {"cache_dir": _cache_is_file(t)}), "WS001", 2, ("[rank 1]", "cachefile")),
}


@pytest.mark.parametrize("case", list(PER_RANK_CASES))
def test_one_rank_cannot_read_its_inputs(case, corpus, tmp_path):
    settings, code, exit_code, says = PER_RANK_CASES[case]
    shutil.copy(Path(corpus[0]) / "textwrap.py", tmp_path / "eval.py")
    mine, theirs = settings(tmp_path)
    out = tmp_path / "run"
    r = run_ranks([_args(corpus, out, **mine), _args(corpus, out, **theirs)])
    ended_once(r, code, exit_code, says=says)
    if "[rank 1]" not in says:
        assert "[rank" not in r.err, r.err  # rank 0's decision: printed once, as one process would
    assert not out.exists()


# ------------------------------------------------------------------ a rank killed


@pytest.mark.parametrize("victim", [1, 0])
def test_a_killed_rank_is_named_and_every_rank_ends(victim, corpus, tmp_path):
    run = tmp_path / "run"

    def kill_after_steps(proc, pids):
        wait_for(lambda: (run / "metrics.jsonl").exists() and len((run / "metrics.jsonl").read_text().splitlines())
                 >= 3, proc)
        kill(pids[victim], signal.SIGKILL)

    args = _args(corpus, run, max_steps=100000, log_every=1)
    r = launch(args, during=kill_after_steps)
    ended_once(r, "WS232", 1, says=(f"[rank {1 - victim}]", f"rank {victim} (pid", "ended without reporting"))
    if victim == 1:
        assert not run.exists()  # rank 0 removes a run that has no checkpoint yet
    else:  # rank 0, which writes the run directory, was killed: the next run on it takes over its files
        assert not (run / "checkpoints").exists()


# ------------------------------------------------------------------ resume on two ranks


def _truncate(path: Path, keep: int = 300) -> None:
    path.write_bytes(path.read_bytes()[:keep])


SHARD1 = "optimizer/shard-00002-model-00001-of-00001.safetensors"  # rank 1's shard
RESUME2_CASES = {
    "shard-truncated": (lambda ts: _truncate(ts / SHARD1), "shard-00002"),
    "rng-rank1-garbage": (lambda ts: (ts / "rng-rank-00001.json").write_text("garbage{"), "rng-rank-00001.json"),
    "rng-rank1-truncated": (lambda ts: _truncate(ts / "rng-rank-00001.safetensors", 50), "rng-rank-00001.safetensors"),
}


@pytest.mark.parametrize("case", list(RESUME2_CASES))
def test_resume_on_two_ranks_from_a_damaged_file_of_one(case, base2, tmp_path):
    damage, names = RESUME2_CASES[case]
    run = tmp_path / "run"
    shutil.copytree(base2, run)
    damage(run / "checkpoints/step-000002/trainer_state")
    before = Snapshot.of(run)
    r = launch(["pretrain", "--resume", run, "--max-steps", 4])
    ended_once(r, "WS206", 2, says=(names, "echo step-000001"))
    before.assert_unchanged()


def test_a_one_rank_run_resumed_on_two_ranks_names_the_batch_that_fits(corpus, tmp_path):
    data, cache = corpus
    run = tmp_path / "mix"
    o = cli("pretrain", *SMALL, "--data", f"{data}:0.7", "--data", f"{Path(data) / 'heapq.py'}:0.3",
            "--cache-dir", cache, "--batch-size", 3, "--max-steps", 1, "--save-every", 1, "--out", run, "--quiet")
    assert o.exit == 0, o.text
    before = Snapshot.of(run)
    r = launch(["pretrain", "--resume", run, "--max-steps", 2])
    ended_once(r, "WS203", 2, says=("3 windows per step on 1 rank(s)", "resume on 1 rank(s)"))
    before.assert_unchanged()
    # a batch that fits is named and taken: 2 ranks x 1 x grad-accum ... of a global batch of 2
    two = tmp_path / "two"
    o = cli("pretrain", *SMALL, "--data", data, "--cache-dir", cache, "--batch-size", 2, "--max-steps", 1,
            "--save-every", 1, "--out", two, "--quiet")
    assert o.exit == 0, o.text
    r = launch(["pretrain", "--resume", two, "--max-steps", 2, "--batch-size", 2])
    ended_once(r, "WS203", 2, says=("--batch-size 1 --grad-accum 1",))


# ------------------------------------------------------------------ a save of two ranks that fails


def _losses(run: Path) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())
            if "loss" in r}


SHARD_FAULTS = [  # the writes only several ranks make: each rank's DCP shard, rank 1's RNG; and latest
    ("*/.step-000002.partial-*/trainer_state/optimizer/shard-00002-*", "ENOSPC", "rank 1: no space"),
    ("*/.step-000002.partial-*/trainer_state/optimizer/shard-00001-*", "EIO", "rank 0: the operating system"),
    ("*/.step-000002.partial-*/trainer_state/rng-rank-00001.safetensors", "ENOSPC", "[rank 1]"),
    ("*/checkpoints/latest", "EIO", "latest"),
]


def test_each_write_of_a_two_rank_save_failing_stops_both_and_resume_continues(base2, tmp_path):
    """The save fault-injection test of the writes only several ranks make (test_full_disk.py has the others):
    every rank stops with one paragraph, the checkpoints stay exactly as they were, and the resume without a
    fault ends where the uninterrupted run did."""
    ref, run = base2, tmp_path / "run"
    shutil.copytree(ref, run, ignore=shutil.ignore_patterns("step-000002", "best", "summary.json"))
    (run / "checkpoints/latest").write_text("step-000001\n")
    for pattern, name, says in SHARD_FAULTS:
        before = listing(run / "checkpoints")
        r = launch(["pretrain", "--resume", run, "--max-steps", 2], env={FAULT_ENV: f"{name}:{pattern}"})
        ended_once(r, "WS230" if name == "ENOSPC" else "WS231", 2, says=(says, "continues from step-000001"))
        assert listing(run / "checkpoints") == before, (pattern, r.err)
    r = launch(["pretrain", "--resume", run, "--max-steps", 2])
    assert r.exit == 0 and "resumed at step 1" in r.out, r.text
    assert _losses(run)[2] == _losses(ref)[2]


RANK_CASES = [*PER_RANK_CASES, "kill-rank-1", "kill-rank-0", *RESUME2_CASES, "resume-batch-3-on-2",
              "resume-batch-2-on-2-by-2",
              *(f"two-rank-save-{i}" for i in range(len(SHARD_FAULTS)))]
