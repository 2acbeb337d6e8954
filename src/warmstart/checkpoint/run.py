"""The run directory, one owner: its layout, its pointers, its files, and the claim a run makes on it.

```
RUN/
  config.yaml          the run's settings (first line MARKER); --resume and card read it
  tokenizer.json  metrics.jsonl  summary.json  tb/  .warmstart.lock
  checkpoints/
    step-NNNNNN/       an HF directory + warmstart.json + trainer_state/ (train/checkpoints.py)
    latest  best       pointers: a file holding a step name, or a symlink to a step directory
```

``RunDir(path)`` names the paths. ``find_run(path)`` is the one detector: the run a path is, or whose
``checkpoints/latest`` or step directory it is. ``RunDir.pointer`` is the one decoder of ``latest`` and
``best``: a step name (``step-000100``) inside ``checkpoints/``, as a file or a symlink, the same for
every reader (``inspect``, ``--init``, ``--resume``); what else is there is refused with the error the
caller's context names (WS101/WS113 for a checkpoint path, WS206 for a resumed run's state).

Claiming (``choose_run_dir``, before any work) refuses an ``--out`` that is a file, a directory that
already holds a run's checkpoints, a directory holding a ``config.yaml``, ``tokenizer.json``,
``metrics.jsonl`` or ``summary.json`` warmstart did not write (warmstart's ``config.yaml`` starts with
``MARKER``), or one another ``warmstart pretrain`` holds. A directory left by a run that stopped before
its first checkpoint (its ``config.yaml`` is warmstart's, it has no checkpoint) is taken over.

Nothing warmstart writes in a run is written through a link: ``check_layout`` refuses (WS208) a symlink, a
FIFO, a device or an entry of the wrong kind among the names a run writes (``ENTRIES``) when the directory
is claimed, and the files a run opens in place (the lock, ``metrics.jsonl``) are opened with ``O_NOFOLLOW``
and checked to be regular files of this user (``open_run_file``); every other file is written under a
temporary name and renamed over the old one (``checkpoint/write.py``), which replaces a link, never its target.

``RunLock`` is an advisory ``fcntl.flock`` on ``RUN/.warmstart.lock``, holding the owner's pid: taken by
rank 0 when a new run creates the directory, or at the start of ``--resume``; released (and the file
removed) when the run ends, and dropped by the kernel when the process dies however it dies (a killed
run's file stays, unlocked: the next run takes it).
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import stat
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import yaml

from warmstart.checkpoint.write import atomic_write_text, write_failure
from warmstart.errors import (
    OutsidePathError, ResumeError, RunFileError, RunLockedError, UnreadableError, UsageError, WarmstartError,
)
from warmstart.files import is_regular, refuse_special, special_kind

MARKER = "# warmstart run config: written by `warmstart pretrain` (--resume reads it)\n"
LOCK_NAME = ".warmstart.lock"
RUN_FILES = ("config.yaml", "tokenizer.json", "metrics.jsonl", "summary.json")  # a new run writes these
STEP_RE = re.compile(r"^step-(\d{6,})$")
# What a run writes directly in its directory, and the kind each must be when it is there: never a link (a write
# through it would land outside the run), never a FIFO or a device (an open would block or read without end).
ENTRIES = {**dict.fromkeys((*RUN_FILES, LOCK_NAME), "a regular file"), "checkpoints": "a directory", "tb": "a directory"}
_KIND_TESTS = {"a regular file": stat.S_ISREG, "a directory": stat.S_ISDIR}
_POINTER_FIX = "point at one of the step-* directories under checkpoints/"

# (what was found, whether it leads out of checkpoints/) -> the error a caller raises for a bad pointer
Damaged = Callable[[str, bool], WarmstartError]


def step_name(step: int) -> str:
    return f"step-{step:06d}"


@dataclass(frozen=True)
class RunDir:
    """The paths of one run directory and the readers of its files."""

    path: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path))

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    @property
    def config_path(self) -> Path:
        return self.path / "config.yaml"

    @property
    def metrics_path(self) -> Path:
        return self.path / "metrics.jsonl"

    def step_dir(self, step: int) -> Path:
        return self.checkpoints / step_name(step)

    def step_dirs(self) -> list[Path]:
        """The step directories, oldest first."""
        if not self.checkpoints.is_dir():
            return []
        out = [p for p in self.checkpoints.iterdir() if p.is_dir() and STEP_RE.match(p.name)]
        return sorted(out, key=lambda p: int(STEP_RE.match(p.name).group(1)))  # type: ignore[union-attr]

    def has_checkpoint(self) -> bool:
        return self.checkpoints.is_dir() and any(p.name == "latest" or p.name.startswith("step-")
                                                 for p in self.checkpoints.iterdir())

    # ------------------------------------------------------------ latest / best
    def pointer(self, name: str = "latest", damaged: Damaged | None = None) -> Path | None:
        """The step directory ``checkpoints/NAME`` names; None when there is no such pointer. Anything but a
        file holding a step name or a symlink to a step directory, either inside ``checkpoints/``, is
        ``damaged(found, outside)`` (default: WS113 when it leads outside, else WS101); a symlink loop is
        WS004, a FIFO or a device WS003."""
        damaged = damaged or self._unreadable
        f = self.checkpoints / name
        st = refuse_special(f, f"checkpoints/{name}")
        if f.is_symlink():
            if st is None:
                raise damaged(f"{f} points to {os.readlink(f)}, which does not exist", False)
            target = f.resolve()
            if target.parent != self.checkpoints.resolve() or not STEP_RE.match(target.name):
                raise damaged(f"{f} points to '{os.readlink(f)[:200]}', which is not a step directory inside "
                              f"{self.checkpoints}", True)
            return target
        if st is None:
            return None
        if f.is_dir():
            raise damaged(f"{f} is a directory, not a pointer naming a step directory", False)
        try:
            text = f.read_bytes()[:4096].decode("utf-8").strip()
        except UnicodeDecodeError:
            raise damaged(f"{f} is not UTF-8 text naming a step directory, e.g. step-000100", False) from None
        if not STEP_RE.match(text):
            raise damaged(f"{f} names '{text[:200]}', which is not a step directory inside {self.checkpoints}", True)
        if not (self.checkpoints / text).is_dir():
            raise damaged(f"{f} names '{text}', which is not a checkpoint directory", False)
        return self.checkpoints / text

    def _unreadable(self, found: str, outside: bool) -> WarmstartError:
        if outside:
            return OutsidePathError(found, why="a run reads only its own checkpoints; a pointer that leaves them "
                                    "could name any directory", fix=_POINTER_FIX, path=self.path)
        return UnreadableError(found, why="the checkpoint it named was deleted or never finished",
                               fix=_POINTER_FIX, path=self.path)

    def point(self, name: str, step_dir: Path) -> None:
        """Make ``checkpoints/NAME`` name ``step_dir`` (atomically: a one-line file)."""
        atomic_write_text(self.checkpoints / name, Path(step_dir).name + "\n")

    # ------------------------------------------------------------ files
    def written_by_warmstart(self) -> bool:
        """``config.yaml`` there is one warmstart wrote (its first line is ``MARKER``)."""
        try:
            if not is_regular(self.config_path, "config.yaml"):
                return False
            with open(self.config_path, encoding="utf-8", errors="replace") as fh:
                return fh.readline() == MARKER
        except OSError:
            return False

    def require_config(self) -> None:
        """A run directory to resume holds its ``config.yaml`` (ResumeError, WS203, otherwise) and nothing a
        write would follow out of it (``check_layout``)."""
        self.check_layout()
        if not is_regular(self.config_path, "config.yaml"):
            raise ResumeError(f"'{self.path}' is not a warmstart run directory (no config.yaml)",
                              fix="pass the --out directory of an earlier `warmstart pretrain` run", path=self.path)

    def config(self) -> dict[str, Any]:
        """The run's settings as ``config.yaml`` holds them (keys unnormalised)."""
        self.require_config()
        return read_yaml(self.config_path)

    def check_layout(self) -> None:
        """Every entry the run writes here (``ENTRIES``) is, when present, of its kind and not a symlink
        (RunFileError, WS208, naming it): checked when the directory is claimed, before any work."""
        for name, kind in ENTRIES.items():
            p = self.path / name
            try:
                st = os.lstat(p)
            except (FileNotFoundError, NotADirectoryError):
                continue
            if stat.S_ISLNK(st.st_mode) or not _KIND_TESTS[kind](st.st_mode):
                raise RunFileError(f"{name} in the run directory is {_kind_of(p, st)}, where warmstart keeps {kind}",
                                   why="a run writes only its own files inside its directory, never through a link "
                                   "or into a pipe or device", fix="remove it (or pass another --out)", path=p)

    def metrics(self, skipped: list[int] | None = None) -> list[dict]:
        """The records of ``metrics.jsonl`` (``read_metrics``); [] when the run has none."""
        return read_metrics(self.metrics_path, skipped) if is_regular(self.metrics_path, "metrics.jsonl") else []


def _kind_of(path: Path, st: os.stat_result) -> str:
    if stat.S_ISLNK(st.st_mode):
        return f"a symbolic link (to {os.readlink(path)[:200]})"
    return special_kind(st) or ("a directory" if stat.S_ISDIR(st.st_mode) else "a regular file")


def open_run_file(path: Path, flags: int) -> int:
    """A file descriptor on ``path``, a run's own file, opened without following a link and never blocking on a
    FIFO (``O_NOFOLLOW | O_NONBLOCK``), then checked to be a regular file this user owns (RunFileError, WS208)."""
    try:
        fd = os.open(path, flags | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0), 0o644)
    except OSError as err:
        try:
            st = os.lstat(path)
        except OSError:
            raise err from None
        raise _not_ours(path, _kind_of(path, st)) from None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode) or st.st_uid != os.geteuid():
        os.close(fd)
        raise _not_ours(path, _kind_of(path, st) if not stat.S_ISREG(st.st_mode) else "a file another user owns")
    os.set_blocking(fd, True)
    return fd


def _not_ours(path: Path, found: str) -> RunFileError:
    return RunFileError(f"{path.name} in the run directory is {found}, not a regular file of this run",
                        why="a run writes only its own files inside its directory, never through a link",
                        fix="remove it (or pass another --out)", path=path)


def find_run(path: str | os.PathLike) -> RunDir | None:
    """The run ``path`` is, or whose ``checkpoints/latest`` or step directory it is; None for any other path.
    A run directory holds ``checkpoints/`` and in it a ``latest`` pointer (of any kind, even a damaged one) or
    beside it a ``config.yaml``."""
    p = Path(path)
    if p.parent.name == "checkpoints" and (p.name == "latest" or STEP_RE.match(p.name)):
        p = p.parent.parent
    ck = p / "checkpoints"
    if not ck.is_dir() or not (os.path.lexists(ck / "latest") or (p / "config.yaml").is_file()):
        return None
    return RunDir(p)


def read_yaml(path: str | os.PathLike) -> dict[str, Any]:
    """A YAML file holding a mapping of setting: value (``--config``, a run's ``config.yaml``); WS002 otherwise."""
    p = Path(path).expanduser()
    if not is_regular(p, "config file"):
        raise UsageError(f"config file '{path}' does not exist", path=path)
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
        json.dumps(data, default=str)  # every reader walks it: an alias that contains itself never ends
    except UnicodeDecodeError:
        raise UsageError(f"'{path}' is not UTF-8 text", path=path) from None
    except yaml.YAMLError as err:
        raise UsageError(f"'{path}' is not valid YAML: {err}".replace("\n", " "), path=path) from None
    except (RecursionError, ValueError):
        raise UsageError(f"'{path}' nests too deep or holds an alias that contains itself", path=path,
                         fix="write the settings as a flat mapping of setting: value") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UsageError(f"'{path}' must hold a mapping of setting: value", path=path)
    return data


MAX_STEP = 2**53  # the largest step a float (every plot axis, every JSON reader) holds exactly


def read_metrics(path: Path, skipped: list[int] | None = None) -> list[dict]:
    """The records of ``metrics.jsonl``: JSON objects with an integer ``step`` (0 to ``MAX_STEP``). Lines that
    are not (a torn last line, bytes that are not UTF-8, a record without ``step`` or with a negative or huge
    one) are left out, their numbers (from 1) added to ``skipped``."""
    out = []
    with os.fdopen(open_run_file(Path(path), os.O_RDONLY), "rb") as fh:
        for n, raw in enumerate(fh, 1):
            try:
                rec = json.loads(raw.decode("utf-8"))
            except (UnicodeDecodeError, ValueError, RecursionError):
                rec = None
            step = rec.get("step") if isinstance(rec, dict) else None
            if isinstance(step, int) and not isinstance(step, bool) and 0 <= step <= MAX_STEP:
                out.append(rec)
            elif raw.strip() and skipped is not None:
                skipped.append(n)
    return out


# ---------------------------------------------------------------- claiming the directory


def choose_run_dir(out: str | None, resume: str | None, *, probe: bool = True) -> Path:
    """The run directory (see the module docstring for what is refused); nothing is created. ``probe``:
    refuse when another process holds its lock (False when this process holds it)."""
    run_dir = Path(resume or out or Path("runs") / time.strftime("%Y%m%d-%H%M%S"))
    st = refuse_special(run_dir, "run directory")
    if st is not None and not run_dir.is_dir():
        raise UsageError(f"--out {run_dir} is an existing file, not a directory", path=run_dir,
                         fix="pass a new or empty directory with --out")
    if st is not None and not resume:
        RunDir(run_dir).check_layout()
    if resume:
        RunDir(run_dir).require_config()
    elif st is not None:
        _refuse_taken(RunDir(run_dir))
    if probe:
        probe_lock(run_dir)
    return run_dir


def _refuse_taken(run: RunDir) -> None:
    """A new run's directory holds no run and no file of someone else."""
    ours = run.written_by_warmstart()
    if run.has_checkpoint() or (run.metrics_path.exists() and not ours):
        raise UsageError(f"run directory {run.path} already holds a run",
                         why="a new run never overwrites an old one",
                         fix=f"continue it with --resume {run.path}, or pass another --out")
    foreign = [n for n in RUN_FILES if (run.path / n).exists() and not ours]
    if foreign:
        raise UsageError(f"--out {run.path} holds {', '.join(foreign)}, which warmstart did not write",
                         why="a run writes these files there and never overwrites a file of yours",
                         fix="pass another --out (a new or empty directory)", path=run.path / foreign[0])


def discard_leftovers(run_dir: Path) -> list[str]:
    """A new run taking over a directory whose run stopped before its first checkpoint: its files go."""
    run = RunDir(run_dir)
    if not run.written_by_warmstart() or run.has_checkpoint():
        return []
    gone = [n for n in (*RUN_FILES, "tb") if (run.path / n).exists()]
    for name in gone:
        p = run.path / name
        shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
    return gone


def remove_unfinished(run_dir: Path, *, created: bool) -> None:
    """A new run that stopped before its first checkpoint leaves nothing to resume: what it wrote goes
    (and the directory, when this run created it), so the same ``--out`` starts afresh."""
    run = RunDir(run_dir)
    if run.has_checkpoint():
        return
    discard_leftovers(run_dir)
    if run.checkpoints.is_dir() and all(p.name.startswith(".") for p in run.checkpoints.iterdir()):
        shutil.rmtree(run.checkpoints, ignore_errors=True)  # empty, or staging only
    (run.path / LOCK_NAME).unlink(missing_ok=True)
    if created:
        try:
            run.path.rmdir()
        except OSError:  # something else is there now: leave it
            pass


def _holder(path: Path) -> str:
    try:
        with os.fdopen(open_run_file(path, os.O_RDONLY), "rb") as fh:
            pid = fh.read(64).decode("utf-8", errors="replace").strip()
    except (OSError, RunFileError):
        return "another process"
    return f"process {pid}" if pid.isdigit() else "another process"


def _locked_error(run_dir: Path) -> RunLockedError:
    return RunLockedError(f"{_holder(run_dir / LOCK_NAME)} is running `warmstart pretrain` on {run_dir}",
                          why="two runs writing one directory would interleave their metrics and checkpoints",
                          fix="wait for it to finish (or stop it), or pass another --out", path=run_dir)


def probe_lock(run_dir: Path) -> None:
    """Refuse now when another process holds the run's lock (nothing is created)."""
    lock = run_dir / LOCK_NAME
    if not os.path.lexists(lock):
        return
    fd = open_run_file(lock, os.O_RDONLY)
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
            fd = open_run_file(path, os.O_RDWR | os.O_CREAT)
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
            try:
                os.ftruncate(fd, 0)
                os.write(fd, f"{os.getpid()}\n".encode())
            except OSError as err:  # a full disk: no lock file is left
                path.unlink(missing_ok=True)
                os.close(fd)
                raise write_failure(path, err) from None
            self.fd, self.path = fd, path

    def release(self) -> None:
        """Remove the lock file (still holding it, so no other process can have it open and locked) and drop
        the lock."""
        if self.fd is not None:
            if self.path is not None:
                self.path.unlink(missing_ok=True)
            os.close(self.fd)  # closing the descriptor drops the flock
            self.fd = None


__all__ = ["ENTRIES", "LOCK_NAME", "MARKER", "RUN_FILES", "RunDir", "RunLock", "STEP_RE", "choose_run_dir",
           "discard_leftovers", "find_run", "open_run_file", "probe_lock", "read_metrics", "read_yaml",
           "remove_unfinished", "step_name"]
