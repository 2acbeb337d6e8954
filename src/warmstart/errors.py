"""Typed errors with stable codes.

Every refusal warmstart makes is one of these. It renders itself (``print_error``: one
paragraph on stderr: code, what was found, why it matters, the fix) and the CLI exits with
``err.exit_code``: 1 when a gate or check said no, 2 for bad usage or unreadable
input. Codes are documented in ``docs/errors.md``; they never change meaning.
"""

from __future__ import annotations

import sys
from pathlib import Path


class WarmstartError(Exception):
    """Base class. ``code`` is stable; ``found``/``why``/``fix`` make the paragraph."""

    code: str = "WS000"
    exit_code: int = 1
    # Under several ranks every rank raises the same refusal and rank 0 prints it: ``printed`` once it
    # has (before every rank raised it), ``rank_local`` when this rank alone saw it (it prints it itself).
    printed: bool = False
    rank_local: bool = False

    def __init_subclass__(cls, code: str | None = None, exit_code: int | None = None, **kwargs) -> None:
        """``class XError(Base, code="WS1nn", exit_code=2)``: the code and exit status of a subclass."""
        super().__init_subclass__(**kwargs)
        if code is not None:
            cls.code = code
        if exit_code is not None:
            cls.exit_code = exit_code

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

    def speaks(self, rank: int) -> bool:
        """Whether the process of ``rank`` prints this error (see ``printed`` / ``rank_local``)."""
        return not self.printed and (rank == 0 or self.rank_local)

    def to_dict(self) -> dict:
        return {
            "code": self.code,
            "path": self.path,
            "found": self.found,
            "why": self.why,
            "fix": self.fix,
            "exit_code": self.exit_code,
        }



def print_error(err: WarmstartError, *, rank: int = 0) -> None:
    """``err``'s paragraph on stderr, prefixed with the rank when another rank than 0 alone saw it."""
    prefix = f"[rank {rank}] " if rank and err.rank_local else ""
    sys.stderr.write(f"{prefix}error: {err.paragraph()}\n")
    sys.stderr.flush()


def unexpected_text(err: BaseException) -> tuple[str, int]:
    """The line and exit status of an exception no typed check turned into an error: a path that is not there
    or not permitted (WS001, exit 2), else a bug (WS999, exit 3)."""
    if isinstance(err, (FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError)):
        return (f"error: [WS001] {err.filename or ''}: {err.strerror or err}. "
                "Fix: check the path and its permissions.", 2)
    return (f"error: [WS999] internal error: {type(err).__name__}: {err}. "
            "This is a bug in warmstart; rerun with WARMSTART_DEBUG=1 for the traceback and report it.", 3)


class UsageError(WarmstartError, code="WS002", exit_code=2):
    """Bad command-line usage or configuration (exit 2)."""


class ContextExtensionError(UsageError, code="WS125"):
    """A context length or RoPE override the family's config.json cannot express (exit 2)."""


class RopeExportError(UsageError, code="WS126"):
    """An export format that cannot express the model's RoPE scaling (exit 2)."""


class UnreadableError(WarmstartError, code="WS101", exit_code=2):
    """Input that is not a readable checkpoint / file (exit 2). Gate 1 of the warm start (docs/errors.md)."""


class PickleRefusedError(UnreadableError, code="WS100"):
    """A pickle checkpoint without --trust-pickle."""


class NotRegularFileError(UnreadableError, code="WS003"):
    """A FIFO, device or socket where a checkpoint, corpus or tokenizer file belongs: refused by name, never opened."""


class SymlinkLoopError(UnreadableError, code="WS004"):
    """A path whose symbolic links lead in a circle."""


class DeclaredValueError(UnreadableError, code="WS111"):
    """A value a checkpoint declares (config.json, warmstart.json, safetensors metadata, a GGUF key) has the
    wrong type or range, or contradicts another (heads not divisible by kv heads, ...)."""


class DeclaredSizeError(UnreadableError, code="WS112"):
    """The declared shape needs more tensor bytes than the checkpoint's files hold."""


class OutsidePathError(UnreadableError, code="WS113"):
    """A path taken from inside a checkpoint (a shard in the index, a run's ``latest``) leads outside it."""


class HubCacheError(UnreadableError, code="WS130"):
    """The local Hugging Face cache is damaged where an ``ORG/NAME[@REVISION]`` id leads: the cache, the model's
    directory or its snapshots not directories, a ref that does not hold a commit hash, a ref naming a commit
    that has no snapshot."""


class PreTokenizerError(UnreadableError, code="WS120"):
    """A byte-level BPE tokenizer's pre-tokenizer and llama.cpp's names for them do not meet: a GGUF naming
    one warmstart cannot build (``tokenizer.ggml.pre``), or an export whose tokenizer splits text in a way
    no llama.cpp type reproduces."""


class GateError(WarmstartError, code="WS1xx", exit_code=1):
    """A warm-start gate refused the checkpoint (exit 1)."""


class FamilyError(GateError, code="WS102"):
    """Gate 2: the declared family is not a supported decoder-only family (or contradicts itself)."""


class EvidenceError(GateError, code="WS103"):
    """Gate 3: the family the tensor names show differs from the declared one."""


class TokenizerError(GateError, code="WS104"):
    """Gate 4: the tokenizer does not fit the embedding (or there is none)."""


class ValuesError(GateError, code="WS105"):
    """Gate 5: a tensor holds NaN or Inf."""


class MissingTensorsError(GateError, code="WS106"):
    """Gate 6: parameters the model needs are missing."""


class ShapeMismatchError(GateError, code="WS107"):
    """Gate 6: a tensor's shape disagrees with the config."""


class UnusedTensorsError(GateError, code="WS108"):
    """Gate 6: tensors the model does not use (or a "tied" head that differs)."""


class ZeroTensorError(GateError, code="WS114"):
    """Gate 5: a weight tensor is all zero (``--allow-zero-tensors`` accepts it)."""


class UntrainedInitError(GateError, code="WS109"):
    """Gate 7: the step-0 loss is at random-init magnitude."""


class InitLossRegressionError(GateError, code="WS110"):
    """Gate 7: the step-0 loss is worse than the checkpoint's recorded one."""


class TrainingError(WarmstartError, code="WS200", exit_code=1):
    """The training loop stopped (divergence, empty corpus, …)."""


class DivergenceError(TrainingError, code="WS201"):
    """A non-finite loss or gradient norm."""


class EmptyCorpusError(TrainingError, code="WS202", exit_code=2):
    """The corpus holds no usable text."""


class ResumeError(TrainingError, code="WS203", exit_code=2):
    """``--resume`` cannot continue from the run directory."""


class PeerFailedError(TrainingError, code="WS204"):
    """Under several ranks: another rank failed, so this one stops too (that rank's message says why)."""


class PeerLostError(PeerFailedError, code="WS232"):
    """Under several ranks: a rank ended without reporting an error (killed, out of memory, crashed, its node
    or connection lost), so every other rank stops (``train/faults.py``)."""


class RunLockedError(TrainingError, code="WS205", exit_code=2):
    """Another ``warmstart pretrain`` holds the run directory's lock."""


class DamagedStateError(ResumeError, code="WS206"):
    """A file of a run (trainer state, ``checkpoints/latest``) is damaged; the message names it."""


class RunFileError(TrainingError, code="WS208", exit_code=2):
    """A file or directory warmstart writes in a run directory is a symlink, a special file or of the wrong kind
    (a file where ``checkpoints/`` belongs, a lock another user owns): refused before anything is written."""


class DamagedCacheError(TrainingError, code="WS207", exit_code=2):
    """A prepared token cache given as ``--data`` is damaged (a cache entry warmstart manages is rebuilt)."""


class Fp8DeviceError(UsageError, code="WS220"):
    """``--fp8`` on a device without float8 matmuls (a CPU, a GPU below compute capability 8.9)."""


class Fp8ShapeError(UsageError, code="WS221"):
    """``--fp8``: a decoder-block matmul dimension (or the tokens of a micro-batch) not a multiple of 16."""


class OptimizerPlacementError(UsageError, code="WS222"):
    """``--optimizer adamw-8bit`` where its block-quantised state cannot live: under a process group
    (DDP, FSDP2) or with ``--cpu-offload``."""


class CacheBusyError(TrainingError, code="WS210", exit_code=2):
    """Another ``warmstart prepare`` holds the token cache entry's lock."""


class BadInputError(TrainingError, code="WS211", exit_code=2):
    """A corpus record is not usable: a JSON Lines line that is not JSON, a text field that is not a string,
    text that is not UTF-8 in the middle of a named file."""


class DamagedStreamError(BadInputError, code="WS212"):
    """A compressed corpus file (gzip, zstd, bzip2, xz) is truncated or corrupt."""


class DamagedTableError(BadInputError, code="WS213"):
    """A Parquet or Arrow corpus file cannot be read."""


class RecordTooLargeError(BadInputError, code="WS214"):
    """One record (a JSON Lines line, a JSON array item) is larger than warmstart reads at once."""


class SourceChangedError(BadInputError, code="WS215"):
    """A corpus file changed while it was read."""


class CacheWriteError(TrainingError, code="WS216", exit_code=1):
    """The token cache could not be written (no space left, quota, an I/O error); what was complete is kept."""


class WriteFailedError(WarmstartError, code="WS231", exit_code=2):
    """A write failed at the operating system (EIO, a read-only filesystem, ...): nothing half-written is kept."""


class DiskFullError(WriteFailedError, code="WS230"):
    """A write ran out of space (ENOSPC, a quota, a file-size limit): nothing half-written is kept."""


class CheckFailedError(WarmstartError, code="WS300", exit_code=1):
    """A release check (validate/qa/publish-check/stamp/export) said no."""
