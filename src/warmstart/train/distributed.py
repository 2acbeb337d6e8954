"""The distributed context of a run: rank, world size, device, and the few collectives the trainer needs.

``setup_distributed(device_flag)`` reads torchrun's environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``;
``MASTER_ADDR``/``MASTER_PORT`` for the ``env://`` rendezvous) and joins the process group: NCCL
on CUDA, gloo on CPU. A process started without torchrun is rank 0 of 1 and has no process group,
unless the caller asks for one (``want_group``: ``--parallel ddp|fsdp`` on one rank): then a group of
one over an in-memory store.

Host-side decisions (a gate's verdict, the stop flags) travel over a gloo group, so they never wait
on the GPU stream; on CPU that is the default group. ``decide_on_main`` is how a decision made by
rank 0 alone (the warm-start gates, the token cache, gate 7, the run directory) reaches every rank:
rank 0 broadcasts either its result or its error, on every path, and every rank returns the same
result or raises the same typed error. Only rank 0 prints such an error (``cli.main``); an error
one rank alone saw is recorded and printed by that rank, and every other rank stops silently with its
exit status (the rank-fault protocol, ``faults.py``; ``Dist.faults`` is its channel).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Callable, TypeVar

import torch
import torch.distributed as tdist

from warmstart import errors
from warmstart.errors import PeerFailedError, UsageError, WarmstartError
from warmstart.runtime import resolve_device
from warmstart.train.faults import FaultChannel, mark_shared

T = TypeVar("T")
TIMEOUT_ENV = "WARMSTART_DIST_TIMEOUT"  # seconds a collective may wait (default 1800)


def env_world() -> tuple[int, int, int]:
    """``(rank, world size, local rank)`` from torchrun's environment; ``(0, 1, 0)`` outside it."""
    env = os.environ
    return int(env.get("RANK", 0)), int(env.get("WORLD_SIZE", 1)), int(env.get("LOCAL_RANK", 0))


@dataclass
class Dist:
    """This process's place in the run. ``group``: a process group exists (even of one)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    group: bool = False
    control: Any = None  # the gloo group for host-side decisions (None: the default group)
    owns_group: bool = False  # this run created the process group (and so destroys it)
    faults: FaultChannel | None = None  # several ranks: where a rank's fault is recorded (faults.py)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def several(self) -> bool:
        return self.world_size > 1

    # ------------------------------------------------------------ host-side collectives
    def broadcast(self, obj: Any = None) -> Any:
        """Rank 0's ``obj`` on every rank (the others pass nothing)."""
        if not self.several:
            return obj
        box = [obj]
        tdist.broadcast_object_list(box, src=0, group=self.control)
        return box[0]

    def any(self, *flags: bool) -> tuple[bool, ...]:
        """Each flag OR-ed over the ranks (one host-side all-reduce; no GPU sync)."""
        if not self.several:
            return tuple(bool(f) for f in flags)
        t = torch.tensor([int(bool(f)) for f in flags], dtype=torch.int32)
        tdist.all_reduce(t, op=tdist.ReduceOp.MAX, group=self.control)
        return tuple(bool(v) for v in t.tolist())

    def failed_ranks(self, failed: bool) -> list[int]:
        """The ranks that report ``failed`` (every rank calls this)."""
        if not self.several:
            return [0] if failed else []
        t = torch.zeros(self.world_size, dtype=torch.int32)
        t[self.rank] = int(failed)
        tdist.all_reduce(t, group=self.control)
        return [r for r, v in enumerate(t.tolist()) if v]

    def barrier(self) -> None:
        if self.several:
            tdist.barrier(group=self.control)

    # ------------------------------------------------------------ device collectives
    def all_reduce_(self, t: torch.Tensor, op: str = "sum") -> torch.Tensor:
        """``sum`` / ``max`` / ``avg`` in place over the device group (asynchronous to the host on NCCL;
        ``avg`` as a sum divided here, since gloo has no AVG)."""
        if self.several:
            tdist.all_reduce(t, op=tdist.ReduceOp.MAX if op == "max" else tdist.ReduceOp.SUM)
            if op == "avg":
                t.div_(self.world_size)
        return t

    def close(self) -> None:
        """Leave the process group. The pause lets gloo's worker threads drop the last collectives'
        Python-owned tensors while the interpreter still runs (at exit they would abort the process)."""
        if self.owns_group and tdist.is_initialized():
            tdist.destroy_process_group()
            time.sleep(0.05)
        self.group = self.owns_group = False


def _timeout() -> timedelta:
    return timedelta(seconds=float(os.environ.get(TIMEOUT_ENV, 1800)))


def rank_device(device_flag: str, world: int, local_rank: int = 0) -> torch.device:
    """The device of a rank: ``cuda:LOCAL_RANK`` under several ranks on CUDA (``--device cuda:N``,
    one GPU for every rank, is refused), else ``--device`` as resolved for one process."""
    device = resolve_device(device_flag)
    if world > 1 and device.type == "cuda":
        if device_flag.startswith("cuda:"):
            raise UsageError(f"--device {device_flag} names one GPU for each of {world} ranks",
                             fix="pass --device cuda (or auto): each rank uses the GPU of its LOCAL_RANK")
        device = torch.device("cuda", local_rank)
    return device


def setup_distributed(device_flag: str, *, want_group: bool = False) -> Dist:
    """Join torchrun's process group when there is one (or make a group of one with ``want_group``)."""
    rank, world, local = env_world()
    device = rank_device(device_flag, world, local)
    if device.type == "cuda" and device.index is not None:
        torch.cuda.set_device(device)
    if world == 1 and not want_group:
        return Dist(device=device)
    if device.type == "cuda" and device.index is None:  # DDP and NCCL want the index
        device = torch.device("cuda", torch.cuda.current_device())
    backend = "nccl" if device.type == "cuda" else "gloo"
    owns = not tdist.is_initialized()
    if owns and world > 1:
        tdist.init_process_group(backend, timeout=_timeout())
    elif owns:
        tdist.init_process_group(backend, store=tdist.HashStore(), rank=0, world_size=1, timeout=_timeout())
    control = tdist.new_group(backend="gloo", timeout=_timeout()) if backend != "gloo" and world > 1 else None
    return Dist(rank=rank, world_size=world, local_rank=local, device=device, group=True, control=control,
                owns_group=owns, faults=FaultChannel.open(rank, world) if world > 1 else None)


# ------------------------------------------------------------------ rank 0 decides


def error_record(err: WarmstartError) -> dict:
    return {"class": type(err).__name__, **err.to_dict()}


def rebuild_error(rec: dict) -> WarmstartError:
    """The same typed error on another rank (same class, code and paragraph; rank 0 prints it)."""
    cls = getattr(errors, rec["class"], None)
    if not (isinstance(cls, type) and issubclass(cls, WarmstartError)):
        cls = WarmstartError
    return mark_shared(cls(rec["found"], why=rec["why"], fix=rec["fix"], path=rec["path"], code=rec["code"]))


def decide_on_main(dist: Dist, fn: Callable[[], T], share: Callable[[T], Any] = lambda x: x,
                   adopt: Callable[[Any], T] = lambda x: x) -> T:
    """Rank 0 runs ``fn``; every other rank gets ``adopt(share(result))`` or raises rank 0's error.

    Rank 0 broadcasts on every path (result, typed error, or any other failure), so no rank waits
    for a verdict that never comes.
    """
    if not dist.several:
        return fn()
    if dist.is_main:
        try:
            result = fn()
            dist.broadcast(("ok", share(result)))  # pickled before anything is sent
        except WarmstartError as err:
            announce(err)  # before the others learn of it: they may exit, and the launcher stop this rank, first
            dist.broadcast(("error", error_record(err)))
            raise
        except BaseException as err:
            dist.broadcast(("failed", f"{type(err).__name__}: {err}"))
            raise
        return result
    kind, payload = dist.broadcast(None)
    if kind == "ok":
        return adopt(payload)
    if kind == "error":
        raise rebuild_error(payload)
    raise PeerFailedError(f"rank 0 stopped with an error ({payload})", why="every rank stops with it")


def announce(err: WarmstartError) -> None:
    """Rank 0 prints a refusal every rank is about to raise now, and marks it printed (``cli.main``
    does not print it again)."""
    errors.print_error(err)
    err.printed = True
    mark_shared(err)


def local_error(err: BaseException) -> BaseException:
    """Mark ``err`` as seen by this rank alone: it prints it (``speaks``), whatever its rank (any other
    exception is printed by every rank that raises it)."""
    if isinstance(err, WarmstartError):
        err.rank_local = True
    return err


def agree_ok(dist: Dist, err: BaseException | None, what: str) -> None:
    """Every rank reports whether its part of ``what`` worked; if any failed, every rank raises
    (the failed rank its own error, the others ``PeerFailedError`` naming the failed ranks)."""
    failed = dist.failed_ranks(err is not None)
    if err is not None:
        raise local_error(err)
    if failed:
        raise PeerFailedError(f"rank(s) {', '.join(map(str, failed))} failed to {what}",
                              why="their own message says why; nothing of this step was kept",
                              fix="fix the cause on that node, then --resume the run")


__all__ = ["Dist", "agree_ok", "announce", "decide_on_main", "env_world", "local_error", "rank_device", "rebuild_error",
           "setup_distributed"]
