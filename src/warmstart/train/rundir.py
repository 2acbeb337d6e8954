"""The run directory: chosen before any work, created only after every gate and the data pass, held by
one run at a time, never written over a file warmstart did not write.

``choose_run_dir`` picks it (``--resume``'s, else ``--out`` or ``runs/<time>``) and refuses, before
anything runs: an ``--out`` that is a file; a directory that already holds a run's checkpoints; a
directory holding a ``config.yaml``, ``tokenizer.json``, ``metrics.jsonl`` or ``summary.json`` that
warmstart did not write (warmstart's ``config.yaml`` starts with ``MARKER``); a directory another
``warmstart pretrain`` holds. A directory left by a run that stopped before its first checkpoint (its
``config.yaml`` is warmstart's, it has no checkpoint) is taken over by a new run.

``RunLock`` is an advisory ``fcntl.flock`` on ``RUN_DIR/.warmstart.lock``, holding the owner's pid:
taken by rank 0 when a new run creates the directory, or at the start of ``--resume``; released (and
the file removed) when the run ends, and dropped by the kernel when the process dies however it dies
(a killed run's file stays, unlocked: the next run takes it).
"""

from __future__ import annotations

import fcntl
import os
import shutil
import time
from pathlib import Path

from warmstart.errors import ResumeError, RunLockedError, UsageError
from warmstart.files import refuse_special

MARKER = "# warmstart run config: written by `warmstart pretrain` (--resume reads it)\n"
LOCK_NAME = ".warmstart.lock"
RUN_FILES = ("config.yaml", "tokenizer.json", "metrics.jsonl", "summary.json")  # a new run writes these
_STEP_PREFIX = "step-"


def written_by_warmstart(run_dir: Path) -> bool:
    """``config.yaml`` there is one warmstart wrote (its first line is ``MARKER``)."""
    try:
        with open(Path(run_dir) / "config.yaml", encoding="utf-8", errors="replace") as fh:
            return fh.readline() == MARKER
    except OSError:
        return False


def _has_checkpoint(run_dir: Path) -> bool:
    ckdir = run_dir / "checkpoints"
    return ckdir.is_dir() and any(p.name == "latest" or p.name.startswith(_STEP_PREFIX) for p in ckdir.iterdir())


def choose_run_dir(out: str | None, resume: str | None, *, probe: bool = True) -> Path:
    """The run directory (see the module docstring for what is refused); nothing is created. ``probe``:
    refuse when another process holds its lock (False when this process holds it)."""
    run_dir = Path(resume or out or Path("runs") / time.strftime("%Y%m%d-%H%M%S"))
    st = refuse_special(run_dir, "run directory")
    if st is not None and not run_dir.is_dir():
        raise UsageError(f"--out {run_dir} is an existing file, not a directory", path=run_dir,
                         fix="pass a new or empty directory with --out")
    if resume:
        if not (run_dir / "config.yaml").is_file():
            raise ResumeError(f"'{run_dir}' is not a warmstart run directory (no config.yaml)", path=run_dir)
    elif st is not None:
        _refuse_taken(run_dir)
    if probe:
        probe_lock(run_dir)
    return run_dir


def _refuse_taken(run_dir: Path) -> None:
    """A new run's directory holds no run and no file of someone else."""
    ours = written_by_warmstart(run_dir)
    if _has_checkpoint(run_dir) or ((run_dir / "metrics.jsonl").exists() and not ours):
        raise UsageError(f"run directory {run_dir} already holds a run",
                         why="a new run never overwrites an old one",
                         fix=f"continue it with --resume {run_dir}, or pass another --out")
    foreign = [n for n in RUN_FILES if (run_dir / n).exists() and not ours]
    if foreign:
        raise UsageError(f"--out {run_dir} holds {', '.join(foreign)}, which warmstart did not write",
                         why="a run writes these files there and never overwrites a file of yours",
                         fix="pass another --out (a new or empty directory)", path=run_dir / foreign[0])


def discard_leftovers(run_dir: Path) -> list[str]:
    """A new run taking over a directory whose run stopped before its first checkpoint: its files go."""
    if not written_by_warmstart(run_dir) or _has_checkpoint(run_dir):
        return []
    gone = [n for n in (*RUN_FILES, "tb") if (run_dir / n).exists()]
    for name in gone:
        p = run_dir / name
        shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
    return gone


def remove_unfinished(run_dir: Path, *, created: bool) -> None:
    """A new run that stopped before its first checkpoint leaves nothing to resume: what it wrote goes
    (and the directory, when this run created it), so the same ``--out`` starts afresh."""
    if _has_checkpoint(run_dir):
        return
    discard_leftovers(run_dir)
    ckdir = run_dir / "checkpoints"
    if ckdir.is_dir() and all(p.name.startswith(".") for p in ckdir.iterdir()):  # empty, or staging only
        shutil.rmtree(ckdir, ignore_errors=True)
    (run_dir / LOCK_NAME).unlink(missing_ok=True)
    if created:
        try:
            run_dir.rmdir()
        except OSError:  # something else is there now: leave it
            pass


def _holder(path: Path) -> str:
    try:
        pid = path.read_text(encoding="utf-8", errors="replace").strip()
    except OSError:
        return "another process"
    return f"process {pid}" if pid.isdigit() else "another process"


def _locked_error(run_dir: Path) -> RunLockedError:
    return RunLockedError(f"{_holder(run_dir / LOCK_NAME)} is running `warmstart pretrain` on {run_dir}",
                          why="two runs writing one directory would interleave their metrics and checkpoints",
                          fix="wait for it to finish (or stop it), or pass another --out", path=run_dir)


def probe_lock(run_dir: Path) -> None:
    """Refuse now when another process holds the run's lock (nothing is created)."""
    lock = run_dir / LOCK_NAME
    if not lock.is_file():
        return
    try:
        fd = os.open(lock, os.O_RDONLY)
    except OSError:
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        raise _locked_error(run_dir) from None
    finally:
        os.close(fd)


class RunLock:
    """The advisory lock of one run directory, held by rank 0 for the life of the run."""

    def __init__(self) -> None:
        self.fd: int | None = None
        self.path: Path | None = None

    def acquire(self, run_dir: Path) -> None:
        """Take the lock (RunLockedError naming the holder when another process has it) and write our pid."""
        while self.fd is None:
            path = run_dir / LOCK_NAME
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise _locked_error(run_dir) from None
            try:
                same = os.fstat(fd).st_ino == os.stat(path).st_ino
            except FileNotFoundError:
                same = False
            if not same:  # the holder removed the file as we opened it: lock the one there now
                os.close(fd)
                continue
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
            self.fd, self.path = fd, path

    def release(self) -> None:
        """Remove the lock file (still holding it, so no other process can have it open and locked) and drop
        the lock."""
        if self.fd is not None:
            if self.path is not None:
                self.path.unlink(missing_ok=True)
            os.close(self.fd)  # closing the descriptor drops the flock
            self.fd = None


__all__ = ["LOCK_NAME", "MARKER", "RUN_FILES", "RunLock", "choose_run_dir", "discard_leftovers", "probe_lock",
           "remove_unfinished", "written_by_warmstart"]
