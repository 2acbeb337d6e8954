"""The step budget and the one stop condition: ``--max-steps``, ``--max-tokens``, ``--max-time``, SIGTERM.

Steps and tokens are the same on every rank; the clock and a SIGTERM are not. So under several
ranks ``stop_reason`` passes the time and signal flags through ``agree`` (a host-side all-reduce
over the ranks, once per step, no GPU sync): every rank stops at the same step. A SIGTERM
(``StopSignal``) arriving while steps run (an evaluation between them included) asks for a stop at
the next step boundary, with a final checkpoint; at any other moment (setup and the step-0
evaluation, a save), or a second time, it ends the process at once: an interrupted save leaves the
previous checkpoint as ``latest``.
"""

from __future__ import annotations

import math
import signal
import time
from typing import Callable

from warmstart.train.config import TrainConfig
from warmstart.train.state import TrainState

TERM_EXIT = 128 + signal.SIGTERM


class StopSignal:
    """SIGTERM as a request to stop (while ``stepping``), else as an immediate exit (status 143)."""

    def __init__(self) -> None:
        self.requested = False
        self.stepping = False
        self._previous = None

    def _handle(self, signum, frame) -> None:
        if self.stepping and not self.requested:
            self.requested = True
            return
        raise SystemExit(TERM_EXIT)

    def __enter__(self) -> "StopSignal":
        try:
            self._previous = signal.signal(signal.SIGTERM, self._handle)
        except ValueError:  # not the main thread: leave the default handler
            self._previous = None
        return self

    def __exit__(self, *exc) -> None:
        # (a rank settling a fault ignores SIGTERM from then on: train/faults.py; that stays)
        if self._previous is not None and signal.getsignal(signal.SIGTERM) == self._handle:
            signal.signal(signal.SIGTERM, self._previous)


class Budget:
    def __init__(self, cfg: TrainConfig, tokens_per_step: int, *, signal_: StopSignal | None = None,
                 agree: Callable[..., tuple[bool, ...]] | None = None) -> None:
        self.cfg = cfg
        self.tokens_per_step = tokens_per_step
        self.signal = signal_ or StopSignal()  # a StopSignal not entered never fires
        self.agree = agree  # the flags OR-ed over the ranks; called once per stop_reason under several ranks
        limits = []
        if cfg.max_steps is not None:
            limits.append(int(cfg.max_steps))
        if cfg.max_tokens is not None:
            limits.append(int(math.ceil(cfg.max_tokens / tokens_per_step)))
        self.total_steps: int | None = min(limits) if limits else None

    @property
    def decay_steps(self) -> int:
        """The cosine horizon: ``--lr-decay-steps``, else the step budget."""
        return self.cfg.lr_decay_steps or self.total_steps or 10**12

    def stop_reason(self, state: TrainState, now: float | None = None) -> str | None:
        """``max-steps`` / ``max-tokens`` / ``max-time`` once the run must stop, else None."""
        cfg = self.cfg
        if self.total_steps is not None and state.step >= self.total_steps:
            by_tokens = cfg.max_tokens is not None and (cfg.max_steps is None or state.tokens_seen >= cfg.max_tokens)
            return "max-tokens" if by_tokens else "max-steps"
        now = time.time() if now is None else now
        timed_out = cfg.max_time is not None and now - state.started >= cfg.max_time
        term = self.signal.requested
        if self.agree is not None:
            timed_out, term = self.agree(timed_out, term)
        if term:
            return "sigterm"
        return "max-time" if timed_out else None

    def eta(self, state: TrainState, now: float) -> float | None:
        """Seconds left by this process's step rate and the time budget, whichever ends first."""
        etas = []
        if self.total_steps is not None:
            rate = state.steps_this_run / max(now - state.started, 1e-9)
            etas.append((self.total_steps - state.step) / max(rate, 1e-9))
        if self.cfg.max_time is not None:
            etas.append(max(0.0, self.cfg.max_time - (now - state.started)))
        return min(etas) if etas else None
