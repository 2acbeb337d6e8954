"""Fixtures for the training tests: a small real-text corpus copied from the standard library."""

from __future__ import annotations

import shutil
import sysconfig
from pathlib import Path

import pytest

CORPUS_FILES = ["textwrap.py", "string.py", "heapq.py", "bisect.py", "queue.py", "shlex.py",
                "json/decoder.py", "json/encoder.py", "colorsys.py", "fnmatch.py", "keyword.py", "glob.py"]


def make_corpus(root: Path) -> Path:
    src = Path(sysconfig.get_paths()["stdlib"])
    root.mkdir(parents=True, exist_ok=True)
    for rel in CORPUS_FILES:
        target = root / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(src / rel, target)
    return root


@pytest.fixture
def corpus(tmp_path) -> Path:
    return make_corpus(tmp_path / "corpus")


@pytest.fixture
def cache(tmp_path) -> Path:
    return tmp_path / "cache"
