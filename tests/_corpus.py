"""A small real-text corpus: Python standard-library source files copied into a directory."""

from __future__ import annotations

import shutil
import sysconfig
from pathlib import Path

CORPUS_FILES = ["textwrap.py", "string.py", "heapq.py", "bisect.py", "queue.py", "shlex.py",
                "json/decoder.py", "json/encoder.py", "colorsys.py", "fnmatch.py", "keyword.py", "glob.py"]


def make_corpus(root: Path, files: list[str] = CORPUS_FILES) -> Path:
    src = Path(sysconfig.get_paths()["stdlib"])
    root.mkdir(parents=True, exist_ok=True)
    for rel in files:
        target = root / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(src / rel, target)
    return root
