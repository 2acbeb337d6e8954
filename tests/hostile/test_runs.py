"""Hostile runs: damaged trainer state and token caches, outputs that are not warmstart's to write,
killed writes, two runs on one directory. Each refusal has its code, exit 1 or 2, names the file and
leaves nothing behind; a damaged cache entry warmstart manages is rebuilt, a killed write's leftovers
go at the next write to the same place."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from _corpus import make_corpus
from _hostile import assert_clean, cli, refused, refused_cli

FILES = ["textwrap.py", "string.py", "heapq.py", "bisect.py"]
SMALL = ("--vocab-size", 300, "--seq-len", 16, "--batch-size", 2, "--eval-tokens", 32, "--eval-every", 0)


@pytest.fixture(scope="module")
def corpus_dir(tmp_path_factory):
    return make_corpus(tmp_path_factory.mktemp("hostile-corpus") / "corpus", FILES)


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, corpus_dir):
    """A scratch run of 2 steps with a checkpoint at each (made once, copied by each case)."""
    root = tmp_path_factory.mktemp("hostile-run")
    o = cli("pretrain", "--preset", "llama-tiny", "--data", corpus_dir, *SMALL, "--max-steps", 2, "--save-every", 1,
            "--keep-last", 2, "--out", root / "run", "--cache-dir", root / "cache", "--quiet")
    assert o.exit == 0, o.text
    return root / "run", root / "cache"


@pytest.fixture
def run(finished_run, tmp_path):
    shutil.copytree(finished_run[0], tmp_path / "run")
    return tmp_path / "run"


@pytest.fixture(scope="module")
def prepared(tmp_path_factory, corpus_dir):
    root = tmp_path_factory.mktemp("hostile-prepared")
    o = cli("prepare", "--data", corpus_dir, "--vocab-size", 300, "--seq-len", 16, "--cache-dir", root)
    assert o.exit == 0, o.text
    return Path(next(line.split("cache: ", 1)[1] for line in o.out.splitlines() if line.startswith("cache: ")))


# ------------------------------------------------------------------ resume: damaged trainer state


def _ts(run: Path, step: int = 2) -> Path:
    return run / "checkpoints" / f"step-{step:06d}" / "trainer_state"


def _state(run: Path, edit) -> None:
    p = _ts(run) / "state.json"
    state = json.loads(p.read_text())
    p.write_text(json.dumps(edit(state)))


def _truncate(path: Path, keep: int = 100) -> None:
    path.write_bytes(path.read_bytes()[:keep])


def _latest(run: Path, data: bytes) -> None:
    (run / "checkpoints" / "latest").write_bytes(data)


RESUME_CASES = {
    "state-list": (lambda r: (_ts(r) / "state.json").write_text("[1, 2]"), "WS206", "state.json"),
    "state-not-json": (lambda r: (_ts(r) / "state.json").write_bytes(b"{\xff"), "WS206", "state.json"),
    "state-nested-deep": (lambda r: (_ts(r) / "state.json").write_text("[" * 100_000 + "]" * 100_000), "WS206",
                          "state.json"),
    "state-missing-keys": (lambda r: _state(r, lambda s: {k: v for k, v in s.items() if k != "sampler"}), "WS206",
                           "sampler"),
    "state-step-string": (lambda r: _state(r, lambda s: {**s, "step": "three"}), "WS206", "'three'"),
    "state-sampler-garbage": (lambda r: _state(r, lambda s: {**s, "sampler": {"n_windows": "x"}}), "WS206",
                              "state.json"),
    "state-rng-garbage": (lambda r: _state(r, lambda s: {**s, "rng": {"python": 5, "numpy": []}}), "WS206",
                          "state.json"),
    "optimizer-truncated": (lambda r: _truncate(_ts(r) / "optimizer.safetensors"), "WS206", "optimizer.safetensors"),
    "optimizer-index-list": (lambda r: (_ts(r) / "optimizer.json").write_text("[]"), "WS206", "optimizer.json"),
    "optimizer-index-garbage": (lambda r: (_ts(r) / "optimizer.json").write_text('{"param_groups": 3}'), "WS206",
                                "optimizer"),
    "rng-truncated": (lambda r: _truncate(_ts(r) / "rng.safetensors", 20), "WS206", "rng.safetensors"),
    "rng-missing": (lambda r: (_ts(r) / "rng.safetensors").unlink(), "WS206", "rng.safetensors"),
    "latest-not-utf8": (lambda r: _latest(r, b"\xff\xfe\x00\x01"), "WS206", "latest"),
    "latest-missing-step": (lambda r: _latest(r, b"step-000099\n"), "WS206", "latest"),
    "latest-outside": (lambda r: _latest(r, b"../../elsewhere\n"), "WS206", "latest"),
    "no-checkpoint": (lambda r: shutil.rmtree(r / "checkpoints"), "WS203", "no complete checkpoint"),
    "config-yaml-damaged": (lambda r: (r / "config.yaml").write_text("lr: [\n"), "WS002", "config.yaml"),
}


@pytest.mark.parametrize("case", list(RESUME_CASES))
def test_damaged_trainer_state(case, run, tmp_path):
    damage, code, names = RESUME_CASES[case]
    damage(run)
    o = refused_cli(tmp_path, ("pretrain", "--resume", run, "--max-steps", 3, "--quiet"), code, 2, says=names)
    if code == "WS206":  # the way back: the newest other complete checkpoint
        assert ("step-000002" if case.startswith("latest") else "step-000001") in o.err, o.err


def test_resume_changing_what_is_trained_is_refused(run, tmp_path):
    refused_cli(tmp_path, ("pretrain", "--resume", run, "--seq-len", 32, "--max-steps", 3), "WS203", 2,
                says="seq_len")


# ------------------------------------------------------------------ token caches


def _manifest(cache: Path, **changes) -> None:
    p = cache / "manifest.json"
    m = json.loads(p.read_text())
    m.update(changes)
    p.write_text(json.dumps(m))


def _shard(cache: Path, ext: str = ".bin") -> Path:
    """The first shard file of a prepared cache (its name from the manifest)."""
    m = json.loads((cache / "manifest.json").read_text())
    return cache / "shards" / (m["units"][0]["shards"][0]["name"] + ext)


def _ids_past_vocab(cache: Path) -> None:
    arr = np.fromfile(_shard(cache), dtype=np.uint16)
    arr[5] = 65000
    arr.tofile(_shard(cache))


CACHE_CASES = {
    "bin-truncated": (lambda c: _truncate(_shard(c), 31), ".bin holds 31 bytes"),
    "bin-missing": (lambda c: _shard(c).unlink(), ".bin holds no bytes"),
    "idx-truncated": (lambda c: _truncate(_shard(c, ".idx"), 40), ".idx holds 40 bytes"),
    "ids-past-vocab": (_ids_past_vocab, "65000"),
    "unknown-dtype": (lambda c: _manifest(c, dtype="float64"), "float64"),
    "meta-missing-key": (lambda c: _manifest(c, units=None), "units"),
    "tokenizer-damaged": (lambda c: (c / "tokenizer.json").write_text("{"), "tokenizer.json"),
}


@pytest.mark.parametrize("case", list(CACHE_CASES))
def test_damaged_prepared_cache(case, prepared, tmp_path):
    cache = tmp_path / "prepared"
    shutil.copytree(prepared, cache)
    damage, names = CACHE_CASES[case]
    damage(cache)
    refused_cli(tmp_path, ("pretrain", "--preset", "llama-tiny", "--data", cache, *SMALL, "--max-steps", 1, "--out",
                           tmp_path / "r"), "WS207", 2, says=(names, "--rebuild"))


def test_a_damaged_cache_entry_warmstart_manages_is_rebuilt(corpus_dir, tmp_path):
    args = ("prepare", "--data", corpus_dir, "--vocab-size", 300, "--seq-len", 16, "--cache-dir", tmp_path / "c")
    first = cli(*args)
    assert first.exit == 0, first.text
    entry = Path(next(line.split("cache: ", 1)[1] for line in first.out.splitlines() if line.startswith("cache: ")))
    _ids_past_vocab(entry)
    again = cli(*args)
    assert_clean(again)
    assert again.exit == 0 and "is damaged" in again.out and "rebuilding" in again.out, again.text
    assert int(np.fromfile(_shard(entry), dtype=np.uint16).max()) < 300


# ------------------------------------------------------------------ outputs


def _user_dir(tmp: Path, name: str, text: str = "mine: true\n") -> Path:
    d = tmp / "mine"
    d.mkdir()
    (d / name).write_text(text)
    return d


OUTPUT_CASES = {
    "out-is-a-file": (lambda t, ck, c: ["pretrain", "--data", c, *SMALL, "--out", _file(t)], "WS002"),
    "out-holds-user-config": (lambda t, ck, c: ["pretrain", "--data", c, *SMALL, "--out", _user_dir(t, "config.yaml")],
                              "WS002"),
    "out-holds-user-tokenizer": (lambda t, ck, c: ["pretrain", "--data", c, *SMALL, "--out",
                                                   _user_dir(t, "tokenizer.json", "{}")], "WS002"),
    "out-holds-user-metrics": (lambda t, ck, c: ["pretrain", "--data", c, *SMALL, "--out",
                                                 _user_dir(t, "metrics.jsonl", "{}\n")], "WS002"),
    "export-into-input": (lambda t, ck, c: ["export", ck, "--to", "gguf", "-o", ck / "model.gguf"], "WS002"),
    "export-onto-input": (lambda t, ck, c: ["export", ck, "--to", "safetensors", "-o", ck / "model.safetensors",
                                            "--overwrite"], "WS002"),
    "export-existing": (lambda t, ck, c: ["export", ck, "--to", "safetensors", "-o", _file(t)], "WS002"),
    "stamp-into-input": (lambda t, ck, c: ["stamp", ck, "--license", "mit", "-o", ck / "fixed"], "WS002"),
    "card-existing": (lambda t, ck, c: ["card", ck, "-o", _file(t)], "WS002"),
}


def _file(tmp: Path) -> Path:
    p = tmp / "taken.txt"
    p.write_text("not warmstart's\n")
    return p


@pytest.mark.parametrize("case", list(OUTPUT_CASES))
def test_outputs_never_overwrite(case, tmp_path, hf, corpus_dir):
    build, code = OUTPUT_CASES[case]
    args = build(tmp_path, hf, corpus_dir)
    refused_cli(tmp_path, args, code, 2)


def test_out_holding_a_finished_run_is_refused(run, tmp_path, corpus_dir):
    refused_cli(tmp_path, ("pretrain", "--data", corpus_dir, *SMALL, "--out", run), "WS002", 2,
                says="already holds a run")


def test_a_warm_start_failing_after_the_gates_leaves_no_run_dir(tmp_path, hf):
    blobs = tmp_path / "blobs"
    blobs.mkdir()
    (blobs / "a.py").write_bytes(b"\x00\x01" * 50)
    refused_cli(tmp_path, ("pretrain", "--init", hf, "--data", blobs, "--max-steps", 1, "--out", tmp_path / "r"),
                "WS202", 2, says="gate population")


def test_a_new_run_failing_before_its_first_checkpoint_leaves_nothing(tmp_path, corpus_dir):
    """Diverged at step 2 (no checkpoint yet): the directory it made goes, so the same --out starts afresh."""
    refused_cli(tmp_path, ("pretrain", "--preset", "llama-tiny", "--data", corpus_dir, *SMALL, "--max-steps", 5,
                           "--lr", 1e30, "--warmup", 0, "--grad-clip", 0, "--log-every", 1, "--save-every", 0,
                           "--out", tmp_path / "r", "--cache-dir", tmp_path / "cache"), "WS201", 1)


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_temporaries_of_a_killed_export_go_at_the_next_export(tmp_path, hf):
    from warmstart.checkpoint.write import owner_tag

    host, pid = owner_tag().rsplit("-", 1)[0], _dead_pid()
    out = tmp_path / "out.safetensors"
    stale_file = tmp_path / f".out.safetensors.{host}-{pid}.k1ll3d_0.tmp"
    stale_file.write_bytes(b"\0" * 4096)  # what atomic_path leaves when its process is killed
    stale_dir = tmp_path / f".hf-out.partial-{host}-{pid}-0badc0de"
    (stale_dir / "x").mkdir(parents=True)  # atomic_dir's staging
    aside = tmp_path / f".hf-out.old-{host}-{pid}-0badc0de"
    aside.mkdir()
    (aside / "config.json").write_text("{}")  # the previous output a killed swap had set aside
    o = cli("export", hf, "--to", "safetensors", "-o", out)
    assert o.exit == 0 and not stale_file.exists(), o.text
    o = cli("export", hf, "--to", "hf", "-o", tmp_path / "hf-out", "--overwrite")
    assert o.exit == 0 and not stale_dir.exists() and not aside.exists(), o.text
    assert (tmp_path / "hf-out" / "model.safetensors").is_file()
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]


# ------------------------------------------------------------------ processes: kill, concurrency


def _start(*args, env: dict | None = None) -> subprocess.Popen:
    e = dict(os.environ, PYTHONUNBUFFERED="1", **(env or {}))
    return subprocess.Popen([sys.executable, "-m", "warmstart", *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=e)


def _wait_for(cond, proc: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.time() + timeout
    while not cond():
        if proc.poll() is not None:
            raise AssertionError(f"the run ended early:\n{proc.stdout.read()}")
        if time.time() > deadline:
            proc.kill()
            raise AssertionError("timed out waiting for the run")
        time.sleep(0.1)


def test_a_second_run_on_the_same_out_is_refused_naming_the_first(tmp_path, corpus_dir):
    out = tmp_path / "run"
    first = _start("pretrain", "--preset", "llama-tiny", "--data", corpus_dir, *SMALL, "--max-steps", 100000,
                   "--save-every", 0, "--log-every", 1000, "--out", out, "--cache-dir", tmp_path / "cache")
    try:
        _wait_for(lambda: (out / "metrics.jsonl").is_file(), first)
        second = cli("pretrain", "--data", corpus_dir, *SMALL, "--out", out, "--cache-dir", tmp_path / "cache")
        refused(second, "WS205", 2, says=f"process {first.pid}")
        resumed = cli("pretrain", "--resume", out, "--max-steps", 5)
        refused(resumed, "WS205", 2, says=f"process {first.pid}")
    finally:
        first.send_signal(signal.SIGTERM)  # it saves a checkpoint and stops
        first.wait(timeout=120)
    steps = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(set(steps))  # one writer: no step logged twice
    assert not (out / ".warmstart.lock").exists()  # released when the run ended


def test_a_run_killed_before_its_first_checkpoint_leaves_a_dir_a_new_run_takes(tmp_path, corpus_dir):
    out = tmp_path / "run"
    args = ("pretrain", "--preset", "llama-tiny", "--data", corpus_dir, *SMALL, "--max-steps", 1, "--out", out,
            "--cache-dir", tmp_path / "cache")
    proc = _start(*args, env={"WARMSTART_TEST_SLOW_SAVE": "60"})
    _wait_for(lambda: any(p.name.startswith(".step-") for p in (out / "checkpoints").glob(".*")), proc)
    proc.kill()
    proc.wait()
    assert (out / "config.yaml").is_file() and not (out / "checkpoints" / "latest").exists()
    refused(cli("pretrain", "--resume", out), "WS203", 2, says="no complete checkpoint")
    again = cli(*args, "--quiet")
    assert_clean(again)
    assert again.exit == 0 and (out / "checkpoints" / "latest").read_text().strip() == "step-000001", again.text
    assert not [p.name for p in (out / "checkpoints").iterdir() if p.name.startswith(".")]  # the killed staging went


def test_card_of_a_run_with_a_damaged_log_and_config_still_writes(run, tmp_path):
    with open(run / "metrics.jsonl", "ab") as fh:
        fh.write(b'{"loss": 1.0}\n\xff\xfe\n[1]\n{"step": "three", "val_loss": 2.0}\n')
    (run / "config.yaml").write_text("- a list\n")
    o = cli("card", run / "checkpoints" / "step-000002", "-o", tmp_path / "README.md")
    assert_clean(o)
    assert o.exit == 0 and "| step |" in (tmp_path / "README.md").read_text(), o.text
