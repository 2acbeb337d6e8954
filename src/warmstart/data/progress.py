"""Progress of a ``prepare``, shown and shared: the cache entry's lock, the bar, the status file waiters read.

The entry's lock (``EntryLock``, ``fcntl.flock`` on ``<entry>/.lock``): the process that tokenizes
holds it exclusively, a process that only checks the entry holds it shared. ``warmstart prepare``
refuses a busy entry at once (WS210); a training rank waits for it, however long that takes,
polling the lock and printing what the holder's status file (``<entry>/.progress.json``,
rewritten every few seconds) says, so no rank sits in a collective with a timeout meanwhile. A
holder that dies drops the lock with its process; a waiter then takes over where it stopped.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import sys
import time
from pathlib import Path
from typing import Callable

from warmstart.data.units import cache_write_error
from warmstart.errors import CacheBusyError

LOCK, STATUS = ".lock", ".progress.json"
STATUS_EVERY = 3.0  # seconds between status file writes
LINE_EVERY = 30.0  # seconds between progress lines when stderr is not a terminal
FIRST_WAIT_LINE = 5.0  # seconds a waiter waits before it says so
POLL = 1.0  # seconds between a waiter's attempts at the lock


def _human(n: float, unit: str = "") -> str:
    for div, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= div:
            return f"{n / div:.1f}{suffix}{unit}"
    return f"{n:.0f}{unit}"


def _eta(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    seconds = int(seconds)
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 60}m{seconds % 60:02d}s"


class EntryLock:
    def __init__(self, entry: Path) -> None:
        self.path, self.fd, self.mode = entry / LOCK, None, None

    def take(self, exclusive: bool) -> bool:
        """Take the lock without waiting; False when another process holds it (exclusively, or at all)."""
        self.release()
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        if exclusive:
            try:
                os.ftruncate(fd, 0)
                os.write(fd, f"{os.getpid()} {socket.gethostname()}\n".encode())
            except OSError as err:  # a full disk: no lock file is left, the cache's own write error says so
                self.path.unlink(missing_ok=True)
                os.close(fd)
                raise cache_write_error(self.path.parent, err) from None
        self.fd, self.mode = fd, exclusive
        return True

    def holder(self) -> str:
        try:
            pid, _, host = self.path.read_text(encoding="utf-8", errors="replace").strip().partition(" ")
        except OSError:
            return "another process"
        return f"pid {pid}" + (f" on {host}" if host and host != socket.gethostname() else "") if pid else \
            "another process"

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = self.mode = None

    def busy_error(self, entry: Path) -> CacheBusyError:
        return CacheBusyError(f"{self.holder()} is preparing this token cache entry now",
                              why="two processes tokenizing into one entry would each redo the other's work",
                              fix="wait for it to finish (a pretrain on this data waits by itself), or pass another "
                                  "--cache-dir", path=entry)

    def wait(self, exclusive: bool, say: Callable[[str], None], entry: Path) -> None:
        """Take the lock, waiting as long as the holder works; progress lines every ``LINE_EVERY`` s."""
        last = time.monotonic() - LINE_EVERY + FIRST_WAIT_LINE
        while not self.take(exclusive):
            if time.monotonic() - last >= LINE_EVERY:
                say(f"waiting for {self.holder()} preparing {entry}: {read_status(entry)}")
                last = time.monotonic()
            time.sleep(POLL)


def read_status(entry: Path) -> str:
    try:
        s = json.loads((entry / STATUS).read_text(encoding="utf-8"))
        return (f"{_human(s['bytes'], 'B')} of {_human(s['total'], 'B')} read, {_human(s['tokens'])} tokens, "
                f"ETA {_eta(s.get('eta'))}")
    except (OSError, ValueError, KeyError, TypeError):
        return "no progress reported yet"


class Progress:
    """Input bytes and documents read, tokens written, tokens/s and ETA: a bar on a terminal, a line every
    ``LINE_EVERY`` s otherwise (none when quiet); ``status`` (a path) gets the same for waiters."""

    def __init__(self, total: int, *, quiet: bool = False, status: Path | None = None, stream=None) -> None:
        self.total, self.bytes, self.docs, self.tokens = max(1, total), 0, 0, 0
        self.started = self.shown = self.saved = time.monotonic()
        self.stream = stream or sys.stderr
        self.status, self.quiet = status, quiet
        self.bar = None
        if not quiet and getattr(self.stream, "isatty", lambda: False)():
            self.bar = _rich_bar(self.stream, self.total)

    def add(self, nbytes: int, docs: int, tokens: int) -> None:
        self.bytes, self.docs, self.tokens = self.bytes + nbytes, self.docs + docs, self.tokens + tokens
        now = time.monotonic()
        if self.bar is not None:
            self.bar[0].update(self.bar[1], completed=min(self.bytes, self.total), docs=self.docs,
                               tokens=_human(self.tokens), rate=_human(self.rate, "/s"))
        elif not self.quiet and now - self.shown >= LINE_EVERY:
            print(f"prepare: {self.line()}", file=self.stream, flush=True)
            self.shown = now
        if self.status is not None and now - self.saved >= STATUS_EVERY:
            self.save()
            self.saved = now

    @property
    def rate(self) -> float:
        return self.tokens / max(1e-9, time.monotonic() - self.started)

    @property
    def eta(self) -> float | None:
        spent = time.monotonic() - self.started
        return spent * (self.total - self.bytes) / self.bytes if self.bytes else None

    def line(self) -> str:
        return (f"{_human(self.bytes, 'B')} of {_human(self.total, 'B')} read, {self.docs:,} documents, "
                f"{_human(self.tokens)} tokens, {_human(self.rate)} tokens/s, ETA {_eta(self.eta)}")

    def save(self) -> None:
        tmp = self.status.with_name(f".{self.status.name}.{os.getpid()}")
        try:
            tmp.write_text(json.dumps({"pid": os.getpid(), "bytes": self.bytes, "total": self.total,
                                       "tokens": self.tokens, "documents": self.docs, "eta": self.eta}))
            os.replace(tmp, self.status)
        except OSError:  # a status file is a courtesy to waiters: a full disk shows in the shard writes
            tmp.unlink(missing_ok=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar[0].stop()
            self.bar = None
        if self.status is not None:
            self.status.unlink(missing_ok=True)


def _rich_bar(stream, total: int):
    from rich.console import Console
    from rich.progress import BarColumn, DownloadColumn, Progress as Bar, TextColumn, TimeRemainingColumn

    bar = Bar(TextColumn("prepare"), BarColumn(), DownloadColumn(), TextColumn("{task.fields[docs]:,} docs"),
              TextColumn("{task.fields[tokens]} tokens"), TextColumn("{task.fields[rate]} tok/s"),
              TimeRemainingColumn(), console=Console(file=stream), transient=True)
    task = bar.add_task("prepare", total=total, docs=0, tokens="0", rate="0/s")
    bar.start()
    return bar, task


__all__ = ["EntryLock", "Progress", "read_status"]
