"""One check-result type for every gate and release check.

The warm-start gates (``init/gates.py``), ``validate``, ``qa`` and ``publish-check`` all report a
list of ``Check`` with one of four status words:

    PASS  the check ran and found nothing wrong
    FAIL  the check ran and said no
    WARN  the check passed with something worth a look (listed in ``items``)
    SKIP  the check did not run; ``detail`` says why

A refusal is raised as a typed ``WarmstartError`` (``errors.py``); a ``Check`` records what was
checked. ``line()`` is the trainer's one-line rendering of a gate, ``row()`` the release tools'.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from typing import Any

PASS, FAIL, WARN, SKIP = "PASS", "FAIL", "WARN", "SKIP"
STATUSES = (PASS, FAIL, WARN, SKIP)
_ITEMS_SHOWN = 12


@dataclass
class Check:
    name: str
    status: str  # PASS | FAIL | WARN | SKIP
    detail: str = ""
    fix: str = ""
    items: list[str] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"check status must be one of {', '.join(STATUSES)}, not {self.status!r}")

    @property
    def failed(self) -> bool:
        return self.status == FAIL

    def to_dict(self) -> dict:
        return asdict(self)

    def line(self) -> str:
        """``gate readable    PASS    hf-dir, 12 tensors``: how the trainer prints a gate."""
        return f"gate {self.name:<11} {self.status:<7} {self.detail}"

    def row(self, width: int = 22) -> str:
        """A release-report row: status, name, detail, then the listed items and (FAIL/WARN) the fix."""
        text = f"  {self.status:<4}  {self.name:<{width}} {self.detail}"
        for it in self.items[:_ITEMS_SHOWN]:
            text += f"\n          - {it}"
        if len(self.items) > _ITEMS_SHOWN:
            text += f"\n          - … ({len(self.items) - _ITEMS_SHOWN} more)"
        if self.fix and self.status in (FAIL, WARN):
            text += f"\n          fix: {self.fix}"
        return text


def to_plain(obj: Any) -> Any:
    """Checks, dataclasses, paths, numpy/torch scalars -> JSON types; non-finite floats -> strings."""
    if hasattr(obj, "to_dict"):
        obj = obj.to_dict()
    if isinstance(obj, dict):
        return {str(k): to_plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set)):
        return [to_plain(v) for v in obj]
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else str(obj)
    if obj is None or isinstance(obj, (str, int, bool)):
        return obj
    if hasattr(obj, "item"):
        return to_plain(obj.item())
    return str(obj)


def dumps(obj: Any) -> str:
    """``obj`` (reports holding ``Check`` objects included) as indented JSON."""
    return json.dumps(to_plain(obj), indent=2, allow_nan=False)


__all__ = ["Check", "FAIL", "PASS", "SKIP", "STATUSES", "WARN", "dumps", "to_plain"]
