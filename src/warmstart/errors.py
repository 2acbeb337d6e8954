"""Typed errors with stable codes.

Every refusal warmstart makes is one of these. The CLI prints ``str(err)`` as one
paragraph (code, what was found, why it matters, the fix) and exits with
``err.exit_code``: 1 when a gate or check said no, 2 for bad usage or unreadable
input. Codes are documented in ``docs/errors.md``; they never change meaning.
"""

from __future__ import annotations

from pathlib import Path


class WarmstartError(Exception):
    """Base class. ``code`` is stable; ``found``/``why``/``fix`` make the paragraph."""

    code: str = "WS000"
    exit_code: int = 1

    def __init__(
        self,
        found: str,
        *,
        why: str = "",
        fix: str = "",
        path: str | Path | None = None,
        code: str | None = None,
    ) -> None:
        self.found = found
        self.why = why
        self.fix = fix
        self.path = str(path) if path is not None else None
        if code is not None:
            self.code = code
        super().__init__(self.paragraph())

    def paragraph(self) -> str:
        parts = [f"[{self.code}]"]
        if self.path:
            parts.append(f"{self.path}:")
        parts.append(self.found.rstrip("."))
        text = " ".join(parts) + "."
        if self.why:
            text += " " + self.why.rstrip(".") + "."
        if self.fix:
            text += " Fix: " + self.fix.rstrip(".") + "."
        return text

    def to_dict(self) -> dict:
        return {
            "code": self.code,
            "path": self.path,
            "found": self.found,
            "why": self.why,
            "fix": self.fix,
            "exit_code": self.exit_code,
        }


class UsageError(WarmstartError):
    """Bad command-line usage or configuration (exit 2)."""

    code = "WS002"
    exit_code = 2


class UnreadableError(WarmstartError):
    """Input that is not a readable checkpoint / file (exit 2). Gate 1 of SPEC §4."""

    code = "WS101"
    exit_code = 2


class PickleRefusedError(UnreadableError):
    """A pickle checkpoint without --trust-pickle."""

    code = "WS100"


class GateError(WarmstartError):
    """A warm-start gate refused the checkpoint (exit 1)."""

    code = "WS1xx"
    exit_code = 1


class FamilyError(GateError):
    code = "WS102"


class EvidenceError(GateError):
    code = "WS103"


class TokenizerError(GateError):
    code = "WS104"


class ValuesError(GateError):
    code = "WS105"


class MissingTensorsError(GateError):
    code = "WS106"


class ShapeMismatchError(GateError):
    code = "WS107"


class UnusedTensorsError(GateError):
    code = "WS108"


class UntrainedInitError(GateError):
    code = "WS109"


class InitLossRegressionError(GateError):
    code = "WS110"


class TrainingError(WarmstartError):
    """The training loop stopped (divergence, empty corpus, …)."""

    code = "WS200"
    exit_code = 1


class DivergenceError(TrainingError):
    code = "WS201"


class EmptyCorpusError(TrainingError):
    code = "WS202"
    exit_code = 2


class ResumeError(TrainingError):
    code = "WS203"
    exit_code = 2


class CheckFailedError(WarmstartError):
    """A release check (validate/qa/publish-check/stamp/export) said no."""

    code = "WS300"
    exit_code = 1
