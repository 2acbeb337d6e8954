"""``warmstart pretrain --nproc-per-node N``: N local workers through torchrun's own API.

``launch_local`` calls ``torch.distributed.launcher.api.elastic_launch`` (what ``torchrun
--standalone`` runs) with the command line itself as the workers' program: ``python -m warmstart
pretrain ...`` without ``--nproc-per-node``. Each worker sees torchrun's environment, joins the
process group in ``pretrain`` and prints as usual (rank 0 alone speaks), straight to this
terminal. A worker's failure is its own message and exit status: the launcher's
``ChildFailedError`` report and torchelastic's error logs are not shown; when every failed worker
was killed by a signal (none could say a word) the launcher prints WS232 naming them. Several nodes: run
``torchrun`` itself on each (docs/multinode.md).
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import uuid

NPROC_FLAG = "--nproc-per-node"


def in_worker() -> bool:
    """Is this process already a worker started by torchrun (or by ``launch_local``)?"""
    return "TORCHELASTIC_RUN_ID" in os.environ or "LOCAL_RANK" in os.environ


def without_nproc(argv: list[str]) -> list[str]:
    """``argv`` without ``--nproc-per-node N`` / ``--nproc-per-node=N``."""
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == NPROC_FLAG:
            skip = True
        elif not arg.startswith(NPROC_FLAG + "="):
            out.append(arg)
    return out


def exit_status(failures: dict) -> int:
    """The status the launcher exits with: the lowest rank's that exited on its own (the others may
    have been stopped by the launcher once the first one failed), else 128 + the signal that killed one."""
    codes = {rank: f.exitcode for rank, f in failures.items()}
    own = sorted(r for r, c in codes.items() if c > 0)
    if own:
        return codes[own[0]]
    return 128 - min(codes.values()) if codes and min(codes.values()) < 0 else 1


def unreported(failures: dict):
    """When every failed worker was killed by a signal (none exited on its own, so none printed a word):
    the WS232 the launcher prints for them; else None (a worker's own paragraph says what happened)."""
    from warmstart.errors import PeerLostError

    codes = {rank: f.exitcode for rank, f in failures.items()}
    if not codes or any(c >= 0 for c in codes.values()):
        return None
    who = ", ".join(f"rank {r} (pid {failures[r].pid}, {_signal_name(-c)})" for r, c in sorted(codes.items()))
    return PeerLostError(f"{who} ended by a signal without reporting an error",
                         why="a worker killed by a signal (SIGKILL, the out-of-memory killer) or crashed says nothing",
                         fix="look at this node's log (dmesg for the OOM killer), then --resume the run")


def _signal_name(n: int) -> str:
    try:
        return signal.Signals(n).name
    except ValueError:
        return f"signal {n}"


def launch_local(nproc: int, argv: list[str]) -> int:
    """Run ``warmstart <argv>`` as ``nproc`` workers on this machine; returns the exit status."""
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    from warmstart.errors import print_error

    logging.getLogger("torch.distributed.elastic").setLevel(logging.CRITICAL)
    # As torchrun does, but sharing the cores among the workers rather than one thread each.
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc)))
    config = LaunchConfig(min_nodes=1, max_nodes=1, nproc_per_node=nproc, run_id=str(uuid.uuid4()),
                          rdzv_backend="c10d", rdzv_endpoint="localhost:0", max_restarts=0, monitor_interval=0.1)
    try:
        elastic_launch(config, sys.executable)("-m", "warmstart", *argv)
    except ChildFailedError as err:
        silent = unreported(err.failures)
        if silent is not None:
            print_error(silent)
        return exit_status(err.failures)
    except SignalException as err:
        return 128 + int(getattr(err, "sigval", signal.SIGTERM))
    return 0


__all__ = ["NPROC_FLAG", "exit_status", "in_worker", "launch_local", "unreported", "without_nproc"]
