"""The run directory's one owner (checkpoint/run.py): one detector, one decoder of ``latest`` / ``best``, and
a symlinked ``latest`` that means the same to ``inspect``, ``pretrain --init`` and ``pretrain --resume``."""

from __future__ import annotations

import json
import shutil

import pytest
from _corpus import make_corpus
from _hostile import cli

from warmstart.checkpoint.run import RunDir, find_run
from warmstart.errors import DamagedStateError, OutsidePathError, SymlinkLoopError, UnreadableError

SMALL = ("--preset", "llama-tiny", "--vocab-size", 300, "--seq-len", 16, "--batch-size", 2, "--eval-tokens", 32,
         "--eval-every", 0, "--quiet")


def _run(tmp_path, *steps: int) -> RunDir:
    run = RunDir(tmp_path / "run")
    for s in steps:
        run.step_dir(s).mkdir(parents=True)
    (run.path / "config.yaml").write_text("# a run\n")
    return run


def test_latest_as_a_file_or_a_symlink_names_the_same_step(tmp_path):
    run = _run(tmp_path, 1, 2)
    assert run.pointer() is None and run.step_dirs() == [run.step_dir(1), run.step_dir(2)]
    run.point("latest", run.step_dir(1))
    assert run.pointer() == run.step_dir(1)
    (run.checkpoints / "latest").unlink()
    (run.checkpoints / "latest").symlink_to("step-000001")
    assert run.pointer() == run.step_dir(1).resolve()
    (run.checkpoints / "best").symlink_to(run.step_dir(2).resolve())  # absolute links too
    assert run.pointer("best") == run.step_dir(2).resolve()


@pytest.mark.parametrize("kind, content, outside", [
    ("file", b"step-000009\n", False), ("file", b"\xff\xfe", False), ("file", b"latest\n", True),
    ("file", b"../../elsewhere\n", True), ("file", b"step-000001/..\n", True), ("link", "step-000009", False),
    ("link", "../../", True), ("link", "step-000001/trainer_state", True), ("dir", None, False),
])
def test_anything_else_is_refused_by_the_caller_s_error(tmp_path, kind, content, outside):
    run = _run(tmp_path, 1)
    (run.step_dir(1) / "trainer_state").mkdir()
    f = run.checkpoints / "latest"
    if kind == "file":
        f.write_bytes(content)
    elif kind == "link":
        f.symlink_to(content)
    else:
        f.mkdir()
    with pytest.raises(OutsidePathError if outside else UnreadableError) as err:
        run.pointer()
    assert isinstance(err.value, OutsidePathError) == outside and str(run.path) in str(err.value)
    with pytest.raises(DamagedStateError, match="latest"):
        run.pointer("latest", lambda found, _out: DamagedStateError(found, path=f))


def test_a_pointer_loop_is_a_loop(tmp_path):
    run = _run(tmp_path, 1)
    (run.checkpoints / "latest").symlink_to("latest")
    with pytest.raises(SymlinkLoopError):
        run.pointer()


def test_find_run_is_the_one_detector(tmp_path):
    run = _run(tmp_path, 1)
    for p in (run.path, run.checkpoints / "latest", run.step_dir(1)):
        assert find_run(p) == run
    assert find_run(tmp_path) is None and find_run(run.step_dir(1) / "trainer_state") is None
    (run.path / "config.yaml").unlink()
    assert find_run(run.path) is None  # checkpoints/ alone is no run ...
    (run.checkpoints / "latest").symlink_to("nowhere")
    assert find_run(run.path) == run  # ... but with a latest pointer (even a dangling one) it is


@pytest.fixture(scope="module")
def two_checkpoints(tmp_path_factory):
    root = tmp_path_factory.mktemp("run-latest")
    corpus = make_corpus(root / "corpus", ["textwrap.py", "string.py", "heapq.py", "bisect.py"])
    o = cli("pretrain", "--data", corpus, *SMALL, "--max-steps", 2, "--save-every", 1, "--keep-last", 2,
            "--out", root / "run", "--cache-dir", root / "cache")
    assert o.exit == 0, o.text
    return root


def test_a_symlinked_latest_means_the_same_to_inspect_init_and_resume(two_checkpoints, tmp_path):
    """latest -> step-000001 (the older one): every reader takes step 1, none the newest directory."""
    run = tmp_path / "run"
    shutil.copytree(two_checkpoints / "run", run, symlinks=True)
    latest = run / "checkpoints" / "latest"
    latest.unlink()
    latest.symlink_to("step-000001")

    o = cli("inspect", run, "--json")
    assert o.exit == 0, o.text
    assert json.loads(o.out)["resolved"] == str((run / "checkpoints" / "step-000001").resolve())

    child = tmp_path / "child"
    o = cli("pretrain", "--init", run, "--data", two_checkpoints / "corpus", *SMALL, "--max-steps", 1,
            "--allow-untrained-init", "--init-loss-tolerance", 100, "--out", child, "--cache-dir", tmp_path / "c")
    assert o.exit == 0, o.text
    ckpt = child / "checkpoints" / (child / "checkpoints" / "latest").read_text().strip()
    assert json.loads((ckpt / "warmstart.json").read_text())["parent"]["step"] == 1

    o = cli("pretrain", "--resume", run, "--max-steps", 3, "--save-every", 0)
    assert o.exit == 0, o.text
    assert "from step-000001" in o.out and "resumed at step 1," in o.out, o.out
    assert not latest.is_symlink() and latest.read_text() == "step-000003\n"  # moved on, as a file in the run
