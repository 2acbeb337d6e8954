"""Hostile writes: a full disk and a failing one under every write path (a run's files and checkpoints, the
token cache, prepare, every export format, stamp, card, plot; two ranks saving), and the save fault-
injection test. Each refusal is WS230 (no space) or WS231 (EIO), exit 2, names the file, leaves nothing
half-written, keeps the previous checkpoint loadable and ``latest`` unmoved, and a later ``--resume``
continues from it.

A real full disk is a small tmpfs mounted for the case (``mount -t tmpfs``, as root: CI runs as root;
elsewhere these cases are skipped, saying why). EIO, and ENOSPC at one chosen write of a save, come from
the write-fault hook (``WARMSTART_TEST_WRITE_FAULT=ERRNO:GLOB``, checkpoint/write.py): the real write
happens, half its bytes stay, and the OS error is raised where the OS would raise it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from _corpus import make_corpus
from _hostile import Snapshot, cli, refused
from _ranks import ended_once, launch

from warmstart.checkpoint.write import FAULT_ENV

FILES = ["textwrap.py", "string.py", "heapq.py", "bisect.py"]
SMALL = ("--preset", "llama-tiny", "--vocab-size", 300, "--seq-len", 16, "--batch-size", 2, "--eval-tokens", 32,
         "--eval-every", 0)


# ------------------------------------------------------------------ a small real filesystem


def _mount(path: Path, size: str) -> str | None:
    """Mount a tmpfs of ``size`` at ``path``; None when it worked, else why not."""
    path.mkdir(parents=True, exist_ok=True)
    if shutil.which("mount") is None:
        return "no mount command"
    p = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True,
                       text=True)
    return None if p.returncode == 0 else (p.stderr.strip() or f"mount exited {p.returncode}")


@pytest.fixture
def small_fs(tmp_path):
    """``small_fs(size, name="fs")``: a tmpfs of that size under the case's directory (unmounted after)."""
    mounted = []

    def make(size: str, name: str = "fs") -> Path:
        d = tmp_path / name
        why = _mount(d, size)
        if why is not None:
            pytest.skip(f"a full disk is a tmpfs, and one cannot be mounted here ({why}; it needs root)")
        mounted.append(d)
        return d

    yield make
    for d in reversed(mounted):
        subprocess.run(["umount", "-l", str(d)], capture_output=True)


def fill(fs: Path, leave: int = 0) -> None:
    """Fill ``fs`` up to ``leave`` free bytes with one file (``.filler``)."""
    st = os.statvfs(fs)
    with open(fs / ".filler", "wb") as fh:
        n = st.f_bavail * st.f_frsize - leave
        chunk = b"\0" * (1 << 20)
        while n > 0:
            try:
                n -= fh.write(chunk[:n])
            except OSError:
                break


# ------------------------------------------------------------------ sources


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("full-disk")
    return make_corpus(root / "corpus", FILES), root / "cache"


def _train(corpus, out: Path, *extra, env=None):
    data, cache = corpus
    return cli("pretrain", *SMALL, "--data", data, "--cache-dir", cache, "--out", out, "--quiet", *extra, env=env)


@pytest.fixture(scope="module")
def finished(tmp_path_factory, corpus):
    """A run of 2 steps with a checkpoint at each (the source of exports, cards, plots)."""
    run = tmp_path_factory.mktemp("full-disk-run") / "run"
    o = _train(corpus, run, "--max-steps", 2, "--save-every", 1)
    assert o.exit == 0, o.text
    return run


def _no_dot_files(run: Path) -> None:
    ck = run / "checkpoints"
    assert not [p.name for p in ck.iterdir() if p.name.startswith(".")], sorted(os.listdir(ck))


# ------------------------------------------------------------------ every write path on a full tmpfs

# case -> (tmpfs size, fill it (leave that many bytes free; None: not filled), the command from (fs, corpus,
#          finished run, hf checkpoint, gguf file), what the paragraph names)
FULL_DISK_CASES = {
    "pretrain-out-no-room": ("8k", 0, lambda fs, c, f, h, g: _run_args(c, fs / "run"), "run/.warmstart.lock"),
    "pretrain-first-save": ("512k", None, lambda fs, c, f, h, g: _run_args(c, fs / "run"), "step-000001"),

    "export-gguf": ("64k", None, lambda fs, c, f, h, g: ["export", h, "--to", "gguf", "-o", fs / "m.gguf"], "m.gguf"),
    "export-safetensors": ("64k", None, lambda fs, c, f, h, g: ["export", h, "--to", "safetensors", "-o",
                                                                fs / "m.safetensors"], "m.safetensors"),
    "export-hf": ("64k", None, lambda fs, c, f, h, g: ["export", h, "--to", "hf", "-o", fs / "hf"], "hf"),
    "export-run-checkpoint": ("64k", None, lambda fs, c, f, h, g: ["export", f / "checkpoints/step-000002", "--to",
                                                                   "gguf", "-o", fs / "r.gguf"], "r.gguf"),
    "stamp-hf-dir": ("64k", None, lambda fs, c, f, h, g: ["stamp", h, "--license", "mit", "-o", fs / "s"], "s"),
    "stamp-gguf": ("64k", None, lambda fs, c, f, h, g: ["stamp", g, "--license", "mit", "-o", fs / "s.gguf"], "s.gguf"),
    "card": ("64k", 0, lambda fs, c, f, h, g: ["card", f / "checkpoints/step-000002", "-o", fs / "README.md"],
             "README.md"),
    "plot": ("64k", 0, lambda fs, c, f, h, g: ["plot", f, "-o", fs / "curves.png"], "curves.png"),
}


def _run_args(corpus, out: Path) -> list:
    data, cache = corpus
    return ["pretrain", *SMALL, "--data", data, "--cache-dir", cache, "--out", out, "--max-steps", 2,
            "--save-every", 1, "--quiet"]


# the token cache (data/: its own code, WS216, exit 1; the shards completed before stay, for the next run to use)
CACHE_CASES = {
    "pretrain-cache-dir": ("64k", None, lambda fs, c, f: [*_run_args((c[0], fs), fs.parent / "run"), "--tokenizer",
                                                        f / "tokenizer.json"]),
    "prepare-cache-dir": ("64k", 0, lambda fs, c, f: ["prepare", "--data", c[0], "--vocab-size", 300, "--seq-len", 16,
                                                      "--cache-dir", fs]),
}


@pytest.mark.parametrize("case", list(CACHE_CASES))
def test_a_full_cache_disk_is_one_paragraph_and_leaves_no_partial_file(case, small_fs, corpus, finished):
    size, leave, command = CACHE_CASES[case]
    fs = small_fs(size)
    if leave is not None:
        fill(fs, leave)
    o = refused(cli(*command(fs, corpus, finished)), "WS216", 1, says=(str(fs), "no space"))
    assert o.err.count("error:") == 1, o.err
    leftovers = [p for p in fs.rglob("*") if p.name != ".filler" and not p.name.endswith(".lock")  # (entry locks stay)
                 and (p.name.startswith(".") or "partial" in p.name or p.suffix == ".tmp")]
    assert not leftovers, leftovers
    assert not (fs.parent / "run").exists()


@pytest.mark.parametrize("case", list(FULL_DISK_CASES))
def test_a_full_disk_is_one_paragraph_and_leaves_nothing(case, small_fs, corpus, finished, hf_base, gguf_base):
    size, leave, command, names = FULL_DISK_CASES[case]
    fs = small_fs(size)
    if leave is not None:
        fill(fs, leave)
    before = Snapshot.of(fs)
    o = refused(cli(*command(fs, corpus, finished, hf_base, gguf_base)), "WS230", 2, before=before,
                says=(names, "no space left", "free of"))
    assert o.err.count("error:") == 1 and ".partial-" not in o.err and ".tmp" not in o.err, o.err
    assert not (fs.parent / "run").exists()  # a run without a checkpoint leaves nothing, wherever it was


def test_export_overwrite_on_a_full_disk_keeps_the_previous_output(small_fs, hf_base):
    fs = small_fs("1m")
    out = fs / "m.safetensors"
    assert cli("export", hf_base, "--to", "safetensors", "-o", out).exit == 0
    fill(fs, 4096)
    before = Snapshot.of(fs)
    refused(cli("export", hf_base, "--to", "safetensors", "--dtype", "f16", "-o", out, "--overwrite"), "WS230", 2,
            before=before, says="m.safetensors")


def test_the_second_save_on_a_full_disk_keeps_the_first_and_resume_continues(small_fs, corpus, tmp_path):
    fs = small_fs("2m")  # room for one checkpoint of llama-tiny, not two
    run = fs / "run"
    o = refused(_train(corpus, run, "--max-steps", 3, "--save-every", 1), "WS230", 2,
                says=("step-000002", f"--resume {run}` continues from step-000001"))
    assert (run / "checkpoints/latest").read_text() == "step-000001\n"
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["best", "latest", "step-000001"]
    # the first checkpoint loads (moved to a disk with room, the run continues from it)
    moved = tmp_path / "moved"
    shutil.copytree(run, moved)
    o = cli("pretrain", "--resume", moved, "--max-steps", 3)
    assert o.exit == 0 and "resumed at step 1" in o.out, o.text
    assert (moved / "checkpoints/latest").read_text() == "step-000003\n"


def test_a_resume_on_a_full_disk_leaves_the_checkpoints_as_they_were(small_fs, corpus, finished):
    fs = small_fs("2m")
    run = fs / "run"
    shutil.copytree(finished, run, ignore=shutil.ignore_patterns("step-000001"))
    fill(fs, 64 << 10)  # room for the run's own files, not for a checkpoint
    before = Snapshot.of(run / "checkpoints")
    refused(cli("pretrain", "--resume", run, "--max-steps", 3, "--quiet"), "WS230", 2, before=before,
            says=("step-000003", "continues from step-000002"))
    assert json.loads((run / "summary.json").read_text())["steps"] == 2


def test_two_ranks_saving_on_a_full_disk_stop_together(small_fs, corpus):
    fs = small_fs("2m")
    data, cache = corpus
    run = fs / "run"
    r = launch(["pretrain", *SMALL, "--data", data, "--cache-dir", cache, "--out", run, "--max-steps", 3,
                "--save-every", 1])
    ended_once(r, "WS230", 2, says=("step-000002", "no space left"))
    assert (run / "checkpoints/latest").read_text() == "step-000001\n"
    _no_dot_files(run)


# ------------------------------------------------------------------ a failing disk (EIO) and the run's own files

# case -> (the write that fails (a glob of its path), errno, code, what the paragraph names)
RUN_FILE_CASES = {
    "config-yaml-eio": ("*/run/config.yaml", "EIO", "WS231", "config.yaml"),
    "tokenizer-json-enospc": ("*/run/tokenizer.json", "ENOSPC", "WS230", "tokenizer.json"),
    "metrics-enospc": ("*/run/metrics.jsonl", "ENOSPC", "WS230", "metrics.jsonl"),
    "first-save-eio": ("*/.step-000001.partial-*/model.safetensors", "EIO", "WS231", "step-000001/model.safetensors"),
}


@pytest.mark.parametrize("case", list(RUN_FILE_CASES))
def test_a_failed_write_of_a_new_run_leaves_nothing(case, corpus, tmp_path):
    pattern, name, code, says = RUN_FILE_CASES[case]
    before = Snapshot.of(tmp_path)
    refused(_train(corpus, tmp_path / "run", "--max-steps", 1, env={FAULT_ENV: f"{name}:{pattern}"}), code, 2,
            before=before, says=says)


def test_a_failed_summary_keeps_the_final_checkpoint(corpus, tmp_path):
    run = tmp_path / "run"
    refused(_train(corpus, run, "--max-steps", 1, env={FAULT_ENV: "ENOSPC:*/summary.json"}), "WS230", 2,
            says="summary.json")
    assert (run / "checkpoints/latest").read_text() == "step-000001\n" and not (run / "summary.json").exists()
    _no_dot_files(run)


OUTPUT_EIO_CASES = {
    "export-gguf-eio": lambda f, h, out: ["export", h, "--to", "gguf", "-o", out / "m.gguf"],
    "export-hf-eio": lambda f, h, out: ["export", h, "--to", "hf", "-o", out / "hf"],
    "card-eio": lambda f, h, out: ["card", h, "-o", out / "README.md"],
    "plot-eio": lambda f, h, out: ["plot", f, "-o", out / "c.png"],
}


@pytest.mark.parametrize("case", list(OUTPUT_EIO_CASES))
def test_an_output_the_disk_fails_to_write_is_not_left_half_written(case, finished, hf_base, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    before = Snapshot.of(tmp_path)
    o = cli(*OUTPUT_EIO_CASES[case](finished, hf_base, out), env={FAULT_ENV: f"EIO:{out}/*"})
    refused(o, "WS231", 2, before=before, says=("EIO", str(out)))


# ------------------------------------------------------------------ the save fault-injection test

SAVE_WRITES = {  # the writes of one save, as the hook's globs see them (the step directory is staged)
    "weights": "*/.step-000002.partial-*/model.safetensors",
    "config": "*/.step-000002.partial-*/config.json",
    "optimizer": "*/.step-000002.partial-*/trainer_state/optimizer.safetensors",
    "optimizer-index": "*/.step-000002.partial-*/trainer_state/optimizer.json",
    "rng": "*/.step-000002.partial-*/trainer_state/rng.safetensors",
    "state": "*/.step-000002.partial-*/trainer_state/state.json",
    "latest": "*/checkpoints/latest",
}
SAVE_FAULTS = [(w, e) for w in SAVE_WRITES for e in ("ENOSPC", "EIO")]


def _losses(run: Path) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())
            if "loss" in r}


def test_each_write_of_a_save_failing_keeps_the_previous_checkpoint_and_resume_continues(corpus, tmp_path):
    """ENOSPC and EIO at each write of the step-2 save of a resumed run: refused, the checkpoints exactly as
    before (step 1, ``latest`` naming it, nothing staged); the next resume starts from step 1 again, and the
    one without a fault ends where an uninterrupted run does."""
    ref, run = tmp_path / "ref", tmp_path / "run"
    assert _train(corpus, ref, "--max-steps", 2, "--save-every", 1, "--log-every", 1).exit == 0
    assert _train(corpus, run, "--max-steps", 1, "--save-every", 1, "--lr-decay-steps", 2, "--log-every", 1).exit == 0
    for write, name in SAVE_FAULTS:
        before = Snapshot.of(run / "checkpoints")
        o = cli("pretrain", "--resume", run, "--max-steps", 2, env={FAULT_ENV: f"{name}:{SAVE_WRITES[write]}"})
        refused(o, "WS230" if name == "ENOSPC" else "WS231", 2, before=before, says="resumed at step 1")
        assert o.err.count("error:") == 1 and "continues from step-000001" in o.err, (write, name, o.err)
    o = cli("pretrain", "--resume", run, "--max-steps", 2)
    assert o.exit == 0 and "resumed at step 1" in o.out, o.text
    assert (run / "checkpoints/latest").read_text() == "step-000002\n"
    assert abs(_losses(run)[2] - _losses(ref)[2]) <= 1e-6


FULL_DISK_CASE_NAMES = [*FULL_DISK_CASES, *CACHE_CASES, "export-overwrite", "second-save", "resume", "two-rank-save",
                        *RUN_FILE_CASES, "summary", *OUTPUT_EIO_CASES,
                        *(f"save-{w}-{e}" for w, e in SAVE_FAULTS)]
