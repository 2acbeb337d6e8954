"""The rank-fault protocol: a run of several ranks that fails ends on every rank within seconds, with one
paragraph naming the rank and the same exit status on every rank (docs/multinode.md, "When a rank fails").

Every exception that ends ``pretrain`` on a rank passes through ``settle``:

- An error every rank raises together (rank 0's decision broadcast by ``decide_on_main``, a divergence
  the ranks agreed on, a checkpoint shard every rank failed to write or read; marked ``shared``) is
  printed by rank 0 alone and recorded; the other ranks wait for that record before they end, so the
  launcher cannot stop rank 0 before it has spoken (a rank that sees no record speaks for itself).
- An error of this rank alone (a refusal only it saw, a full disk, a bug) is recorded in the run's
  rendezvous store before the rank exits (the first record wins) and printed, prefixed ``[rank N]``,
  by the rank whose record won.
- A rank stopped by another (``PeerFailedError``; a collective failing because a peer's connection
  closed; the launcher's SIGTERM once a worker ended) prints nothing and exits with the recorded status.
- When nothing was recorded, a peer ended without a word (SIGKILL, the OOM killer, a crash): the first
  survivor to see it records and prints WS232 naming the ranks whose processes are gone. A survivor that
  cannot reach the store (its host ended) prints WS232 itself.

torchrun's agent hosts the store and outlives its workers, so a dead rank's record stays readable; a run
started without torchrun has the store in rank 0, and rank 0's end takes the record with it. Each rank
records ``host pid`` at the start, which is how a survivor names a peer that died on its host. SIGTERM is
ignored from the moment a rank settles, so the launcher stopping the survivors cannot cut a report short.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import sys
import time
from typing import Any

from warmstart.checkpoint.write import write_only_failure
from warmstart.errors import PeerFailedError, PeerLostError, WarmstartError, unexpected_text

TERM_EXIT = 128 + signal.SIGTERM
PEER_WAIT_S = 10.0  # a rank stopped by PeerFailedError waits this long for the failed rank's record
COMM_WAIT_S = 0.3  # a rank whose collective failed waits this long for a record before naming a lost peer
_COMM = re.compile(r"gloo|nccl|connection (?:closed|reset|refused)|broken pipe|socket|timed? ?out", re.I)
_HOST = socket.gethostname()


class FaultChannel:
    """The run's fault record in the rendezvous store (keys under ``warmstart-fault/<restart>/``)."""

    def __init__(self, store, rank: int, world: int) -> None:
        self.store, self.rank, self.world = store, rank, world

    @classmethod
    def open(cls, rank: int, world: int) -> "FaultChannel | None":
        """The channel of this run (every rank calls it after joining the process group); None without a store."""
        import torch.distributed as tdist
        from torch.distributed.distributed_c10d import _get_default_store

        try:
            prefix = f"warmstart-fault/{os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')}/"
            store = tdist.PrefixStore(prefix, _get_default_store())
            store.set(f"pid/{rank}", f"{_HOST} {os.getpid()}")
        except Exception:  # noqa: BLE001 - no store, no protocol: each rank reports for itself
            return None
        return cls(store, rank, world)

    def claim(self, record: dict) -> dict | None:
        """Record ``record`` unless a fault is recorded already; the record that stands (None: no store)."""
        mine = json.dumps(record)
        try:
            return json.loads(self.store.compare_set("first", "", mine))
        except Exception:  # noqa: BLE001 - the store's host is gone
            return None

    def recorded(self, wait: float) -> tuple[bool, dict | None]:
        """(the store answers, the fault recorded), waiting up to ``wait`` seconds for one."""
        deadline = time.monotonic() + wait
        while True:
            try:
                if self.store.check(["first"]):
                    return True, json.loads(self.store.get("first"))
            except Exception:  # noqa: BLE001
                return False, None
            if time.monotonic() >= deadline:
                return True, None
            time.sleep(0.05)

    def gone(self) -> list[tuple[int, int]]:
        """``(rank, pid)`` of the other ranks on this host whose processes have ended."""
        out = []
        for r in range(self.world):
            try:
                if r == self.rank or not self.store.check([f"pid/{r}"]):
                    continue
                host, pid = self.store.get(f"pid/{r}").decode().split()
            except Exception:  # noqa: BLE001
                return out
            if host == _HOST and not _alive(int(pid)):
                out.append((r, int(pid)))
        return out


def _alive(pid: int) -> bool:
    """Is process ``pid`` running (a zombie, killed but not yet reaped by its launcher, is not)?"""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            return fh.read().rsplit(b")", 1)[1].split()[0] not in (b"Z", b"X")
    except FileNotFoundError:
        return False
    except (OSError, IndexError):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except OSError:
            pass
        return True


# ------------------------------------------------------------------ settling an exception


def settle(dist, err: BaseException) -> BaseException:
    """What this rank raises for ``err``, which ends the run on it (module docstring); printed here when
    this rank speaks for the run. A single process, or a run without a store, gets ``err`` back as it is."""
    channel = getattr(dist, "faults", None)
    if channel is None:
        return err
    _ignore_sigterm()
    err = write_only_failure(err) or err  # (a full disk the write helpers did not see: its code all the same)
    if getattr(err, "shared", False):
        return _shared(channel, err)
    if isinstance(err, PeerFailedError) and not isinstance(err, PeerLostError):
        return _after_peer(channel, err, PEER_WAIT_S)
    if _comm_failure(err) or isinstance(err, (SystemExit, KeyboardInterrupt)):
        return _after_peer(channel, err, COMM_WAIT_S)
    return _own(channel, err)


def _shared(channel: FaultChannel, err: BaseException) -> BaseException:
    """An error every rank raises: rank 0 prints (unless it did) and records it; the others wait for that."""
    if channel.rank == 0:
        if not getattr(err, "printed", False) and _line(err) is not None:
            sys.stderr.write(_line(err) + "\n")
            sys.stderr.flush()
        err.printed = True  # type: ignore[attr-defined]
        channel.claim({"rank": 0, "exit": exit_status(err), "text": None})
        return err
    _reachable, record = channel.recorded(PEER_WAIT_S)
    if record is None:
        return _own(channel, err)
    err.printed = True  # type: ignore[attr-defined]
    return err


def _own(channel: FaultChannel, err: BaseException) -> BaseException:
    """This rank's own error: recorded, and printed when its record is the run's; else silent."""
    record = {"rank": channel.rank, "exit": exit_status(err), "text": _line(err)}
    won = channel.claim(record)
    if won is not None and won != record:
        return silent(won)
    if record["text"] is not None:
        sys.stderr.write(f"[rank {channel.rank}] {record['text']}\n")
        sys.stderr.flush()
        err.printed = True  # type: ignore[attr-defined]
    return err


def _after_peer(channel: FaultChannel, err: BaseException, wait: float) -> BaseException:
    """Stopped by another rank: silent with the recorded status; with no record, a peer was lost."""
    reachable, record = channel.recorded(wait)
    if record is not None:
        return silent(record)
    gone = channel.gone() if reachable else []
    if isinstance(err, (SystemExit, KeyboardInterrupt)) and reachable and not gone:
        return _own(channel, err)  # this run was asked to stop (SIGTERM, Ctrl-C): recorded so peers stay silent
    return _own(channel, lost(gone, err, reachable))


def lost(gone: list[tuple[int, int]], err: BaseException, reachable: bool) -> PeerLostError:
    """WS232 naming the ranks whose processes ended without a word (or what this rank saw instead)."""
    if gone:
        who = ", ".join(f"rank {r} (pid {pid})" for r, pid in gone)
        found = f"{who} ended without reporting an error"
    elif not reachable:
        found = "lost contact with the other ranks and with the rendezvous store (its host, rank 0 or the " \
                "launcher of its node, has ended)"
    else:
        found = f"the connection to another rank was lost ({_first_line(err)})"
    return PeerLostError(found, why="a rank killed by a signal (SIGKILL, the out-of-memory killer), crashed or cut "
                         "off ends without a message; every other rank stops with it and nothing of the current "
                         "step or save is kept",
                         fix="look at that node's log (dmesg for the OOM killer), then --resume the run")


def silent(record: dict) -> PeerFailedError:
    """The error of a rank stopped by the recorded fault: printed by the failed rank, exit status its."""
    err = PeerFailedError(f"rank {record['rank']} failed", why="its own message says why")
    err.exit_code = int(record.get("exit", 1))
    err.printed = True  # type: ignore[attr-defined]
    return err


def exit_status(err: BaseException) -> int:
    """The status a rank ends with for ``err`` (as ``cli.main`` turns it into one)."""
    if isinstance(err, WarmstartError):
        return err.exit_code
    if isinstance(err, SystemExit):
        return err.code if isinstance(err.code, int) else 1
    if isinstance(err, KeyboardInterrupt):
        return 130
    return unexpected_text(err)[1]


def _line(err: BaseException) -> str | None:
    """The paragraph this rank prints for its own ``err`` (None: nothing, as for SIGTERM or Ctrl-C)."""
    if isinstance(err, WarmstartError):
        return "error: " + err.paragraph()
    if isinstance(err, (SystemExit, KeyboardInterrupt)):
        return None
    text, status = unexpected_text(err)
    return None if status == 3 and os.environ.get("WARMSTART_DEBUG") else text  # (the CLI shows that traceback)


def _comm_failure(err: BaseException) -> bool:
    """A collective or store operation failed (its peer's connection closed, a timeout), not this rank's code."""
    import torch.distributed as tdist

    if isinstance(err, WarmstartError):
        return False
    return isinstance(err, (tdist.DistError, ConnectionError)) or (
        isinstance(err, RuntimeError) and bool(_COMM.search(str(err))))


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0][:160]}" if text else type(err).__name__


def _ignore_sigterm() -> None:
    try:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    except ValueError:  # not the main thread
        pass


def mark_shared(err: Any) -> Any:
    """Mark ``err`` as raised by every rank together (rank 0 prints it; ``settle`` leaves it as it is)."""
    err.shared = True
    return err


__all__ = ["FaultChannel", "exit_status", "lost", "mark_shared", "settle", "silent"]
