"""Fixtures of the hostile-input suite: tiny real checkpoints, a text file, a finished run; every one
generated here (no binary blobs). Every case runs in its own directory with its own token cache."""

from __future__ import annotations

import shutil

import pytest

# ------------------------------------------------------------------ fixtures


@pytest.fixture(autouse=True)
def _cwd(tmp_path, monkeypatch):
    """Every case runs in its own directory with its own token cache (default run dirs land there)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WARMSTART_CACHE", str(tmp_path / "cache"))


@pytest.fixture(scope="session")
def hf_base(tiny_hf_dir):
    """A llama-tiny HF checkpoint directory (random weights, the tiny tokenizer, warmstart.json): the shared
    ``tiny_hf_dir``; cases copy it before damaging it, and each asserts that no input changed."""
    return tiny_hf_dir


@pytest.fixture(scope="session")
def gguf_base(tmp_path_factory, hf_base):
    from warmstart.release.export import export_checkpoint

    out = tmp_path_factory.mktemp("hostile-gguf") / "tiny.gguf"
    export_checkpoint(hf_base, "gguf", out, dtype="f32")
    return out


@pytest.fixture
def hf(hf_base, tmp_path):
    """A private copy of the HF checkpoint to damage."""
    d = tmp_path / "ck"
    shutil.copytree(hf_base, d)
    return d


@pytest.fixture
def gguf(gguf_base, tmp_path):
    p = tmp_path / "m.gguf"
    shutil.copy(gguf_base, p)
    return p


@pytest.fixture
def text(tmp_path):
    """A small UTF-8 text file to evaluate on."""
    import inspect
    import textwrap

    p = tmp_path / "eval.py"
    p.write_text(inspect.getsource(textwrap))
    return p




@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """A scratch run of 2 steps with a checkpoint at each, and its corpus and token cache (made once; cases
    copy the run before damaging it)."""
    from _corpus import make_corpus
    from _hostile import TINY_RUN, cli

    root = tmp_path_factory.mktemp("hostile-tiny-run")
    corpus = make_corpus(root / "corpus", ["textwrap.py", "string.py", "heapq.py", "bisect.py"])
    o = cli("pretrain", "--preset", "llama-tiny", "--data", corpus, *TINY_RUN, "--max-steps", 2, "--save-every", 1,
            "--keep-last", 2, "--out", root / "run", "--cache-dir", root / "cache", "--quiet")
    assert o.exit == 0, o.text
    return root


@pytest.fixture
def resumable(tiny_run, tmp_path):
    """A private copy of ``tiny_run``'s run directory."""
    shutil.copytree(tiny_run / "run", tmp_path / "run", symlinks=True)
    return tmp_path / "run"


@pytest.fixture(scope="session")
def tiny_mixture_run(tiny_run, tmp_path_factory):
    """Like ``tiny_run``, of a weighted mixture of two sources (the corpus split in two)."""
    from _hostile import TINY_RUN, cli

    root = tmp_path_factory.mktemp("hostile-tiny-mixture")
    halves = [root / "a", root / "b"]
    for i, half in enumerate(halves):
        half.mkdir()
        for f in sorted((tiny_run / "corpus").iterdir())[i::2]:
            shutil.copy(f, half / f.name)
    o = cli("pretrain", "--preset", "llama-tiny", "--data", f"{halves[0]}:0.5", "--data", f"{halves[1]}:0.5",
            *TINY_RUN, "--max-steps", 2, "--save-every", 1, "--keep-last", 2, "--out", root / "run",
            "--cache-dir", root / "cache", "--quiet")
    assert o.exit == 0, o.text
    return root
