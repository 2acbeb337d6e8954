"""The step budget and the one stop condition: ``--max-steps``, ``--max-tokens``, ``--max-time``.

Under several ranks (issue 9) every rank must stop at the same step: ``stop_reason`` is the one
place that decision is made, so that is where a broadcast of the time check belongs.
"""

from __future__ import annotations

import math
import time

from warmstart.train.config import TrainConfig
from warmstart.train.state import TrainState


class Budget:
    def __init__(self, cfg: TrainConfig, tokens_per_step: int) -> None:
        self.cfg = cfg
        self.tokens_per_step = tokens_per_step
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
        if cfg.max_time is not None and now - state.started >= cfg.max_time:
            return "max-time"
        return None

    def eta(self, state: TrainState, now: float) -> float | None:
        """Seconds left by this process's step rate and the time budget, whichever ends first."""
        etas = []
        if self.total_steps is not None:
            rate = state.steps_this_run / max(now - state.started, 1e-9)
            etas.append((self.total_steps - state.step) / max(rate, 1e-9))
        if self.cfg.max_time is not None:
            etas.append(max(0.0, self.cfg.max_time - (now - state.started)))
        return min(etas) if etas else None
