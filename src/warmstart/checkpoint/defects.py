"""``Defect``: one thing wrong with a checkpoint, found before any tensor is read.

Every structural checker in ``checkpoint/`` (safetensors headers, GGUF tensor tables, shard
indexes, the JSON files beside the weights) reports its findings as a list of ``Defect``; the
loader raises the first one that is not a warning, ``validate`` lists them all. A defect carries
the error class it is raised as, so a check of declared values can add defects with their own codes.

Levels:
    FATAL    the file's header cannot be read at all; nothing after it in that file was checked
    PROBLEM  the loader refuses the checkpoint; validate fails
    WARNING  reported by validate, accepted by the loader
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

from warmstart.errors import UnreadableError, WarmstartError

FATAL, PROBLEM, WARNING = "fatal", "problem", "warning"
REEXPORT = "re-download or re-export the checkpoint"


@dataclass(frozen=True)
class Defect:
    message: str
    why: str = ""
    fix: str = REEXPORT
    level: str = PROBLEM
    path: Path | None = None  # the file the defect is in (named in the raised error)
    error: type[WarmstartError] = UnreadableError

    @property
    def refused(self) -> bool:
        """The loader refuses a checkpoint with this defect."""
        return self.level != WARNING

    def exception(self) -> WarmstartError:
        return self.error(self.message, why=self.why, fix=self.fix, path=self.path)

    def raise_(self) -> NoReturn:
        raise self.exception()


def raise_first(defects: list[Defect]) -> None:
    """Raise the first defect the loader refuses (in the order found); return when there is none."""
    for d in defects:
        if d.refused:
            d.raise_()


__all__ = ["Defect", "FATAL", "PROBLEM", "REEXPORT", "WARNING", "raise_first"]
