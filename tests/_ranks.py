"""Runs of two ranks for the rank-fault cases: real worker processes over gloo, on CPU.

``run_ranks``: each rank a process of its own, with its own arguments (as one node of a multi-node run
can lack the data another has). The test process hosts the rendezvous store, as torchrun's agent does
for its workers (``TORCHELASTIC_USE_AGENT_STORE``), so a rank's record outlives the rank.
``launch``: ``warmstart pretrain --nproc-per-node 2`` itself; ``during(proc, pids)`` runs while it does
(to kill a rank). Both wait for every process (at most ``RANK_LIMIT_S``) and record every worker's pid,
so a case can check that none is left (``ended_once``).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Callable

from _hostile import DOCUMENTED

RANK_LIMIT_S = 60.0


@dataclass
class Ranks:
    exit: int  # the launcher's status (run_ranks: rank 0's)
    exits: list[int]  # each process's own status (launch: the launcher's alone)
    out: str
    err: str
    seconds: float
    pids: set[int] = field(default_factory=set)  # every worker process seen

    @property
    def text(self) -> str:
        return self.out + self.err


def _env(extra: dict | None) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "WARMSTART_DEBUG"}
    env.update({"OMP_NUM_THREADS": "1", **(extra or {})})
    return env


def run_ranks(argv: list[list], *, env: dict | None = None) -> Ranks:
    """``warmstart ARGV[r]`` as rank r of ``len(argv)``, every process started at once."""
    import torch.distributed as tdist

    store = tdist.TCPStore("127.0.0.1", 0, is_master=True, wait_for_workers=False, timeout=timedelta(seconds=60))
    world, run_id = len(argv), uuid.uuid4().hex
    t0 = time.perf_counter()
    procs = []
    for rank, args in enumerate(argv):
        e = _env({**(env or {}), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(store.port), "RANK": str(rank),
                  "LOCAL_RANK": str(rank), "WORLD_SIZE": str(world), "LOCAL_WORLD_SIZE": str(world),
                  "TORCHELASTIC_USE_AGENT_STORE": "True", "TORCHELASTIC_RUN_ID": run_id})
        procs.append(subprocess.Popen([sys.executable, "-m", "warmstart", *map(str, args)], stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True, env=e))
    outs = [_wait(p, t0) for p in procs]
    del store
    return Ranks(procs[0].returncode, [p.returncode for p in procs], "".join(o for o, _ in outs),
                 "".join(e for _, e in outs), time.perf_counter() - t0, {p.pid for p in procs})


def _wait(proc: subprocess.Popen, t0: float) -> tuple[str, str]:
    try:
        return proc.communicate(timeout=max(1.0, RANK_LIMIT_S - (time.perf_counter() - t0)))
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        return out, err + f"\n(killed by the test after {RANK_LIMIT_S} s)\n"


def worker_pids(launcher: int) -> dict[int, int]:
    """{rank: pid} of the launcher's worker processes (their torchrun environment says the rank)."""
    out = {}
    try:
        kids = Path(f"/proc/{launcher}/task/{launcher}/children").read_text().split()
    except OSError:
        return out
    for pid in kids:
        try:
            env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        rank = [e for e in env if e.startswith(b"RANK=")]
        if rank:
            out[int(rank[0][5:])] = int(pid)
    return out


def launch(args: list, *, env: dict | None = None, nproc: int = 2,
           during: Callable[[subprocess.Popen, dict[int, int]], None] | None = None) -> Ranks:
    """``warmstart ARGS --nproc-per-node NPROC``; ``during(proc, {rank: pid})`` once both workers run."""
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "warmstart", *map(str, args), "--nproc-per-node", str(nproc)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(env))
    seen: dict[int, int] = {}

    def watch() -> None:
        while proc.poll() is None:
            seen.update(worker_pids(proc.pid))
            time.sleep(0.05)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        if during is not None:
            while len(seen) < nproc and proc.poll() is None and time.perf_counter() - t0 < RANK_LIMIT_S:
                time.sleep(0.05)
            during(proc, dict(seen))
        out, err = _wait(proc, t0)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    watcher.join()
    return Ranks(proc.returncode, [proc.returncode], out, err, time.perf_counter() - t0, set(seen.values()))


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_bytes().rsplit(b")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in (b"Z", b"X")


def ended_once(r: Ranks, code: str, exit_code: int, *, says: tuple[str, ...] = ()) -> Ranks:
    """Every rank ended, within the limit, with ``exit_code``; one paragraph, ``[code]`` (documented), no
    traceback, no WS999, naming what ``says`` lists."""
    assert code in DOCUMENTED, f"{code} is not documented in docs/errors.md"
    assert r.seconds < RANK_LIMIT_S, f"took {r.seconds:.1f}s"
    assert not [p for p in r.pids if alive(p)], f"processes left: {[p for p in r.pids if alive(p)]}"
    assert "Traceback" not in r.text and "[WS999]" not in r.text, r.text
    assert r.err.count("error:") == 1 and f"[{code}]" in r.err, r.err
    assert all(e == exit_code for e in r.exits), (r.exits, r.err)
    for s in says:
        assert s in r.err, (s, r.err)
    return r


def wait_for(predicate: Callable[[], bool], proc: subprocess.Popen, limit: float = 60.0) -> None:
    """Poll ``predicate`` until it holds (the run must still be going)."""
    deadline = time.time() + limit
    while not predicate():
        assert proc.poll() is None, proc.communicate()
        assert time.time() < deadline, "the run never got there"
        time.sleep(0.05)


def kill(pid: int, sig: int = signal.SIGKILL) -> None:
    os.kill(pid, sig)
