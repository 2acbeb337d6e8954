"""``TrainState``: a run's progress besides the model and optimizer; RNG capture and restore.

``state_dict()`` / ``load_state_dict()`` have the shape of ``torch.distributed.checkpoint``'s
``Stateful`` protocol, so a distributed checkpoint can save and load the object as it is (per-rank
RNG and data cursor included). Run checkpoints write it as ``trainer_state/state.json``
(the JSON part) and ``trainer_state/rng.safetensors`` (the RNG tensors); see ``checkpoints.py``.

Keys of ``state_dict()``, the same as ``state.json`` has always held: ``step``, ``tokens_seen``,
``scheduler``, ``sampler``, ``data_fingerprint``, ``val_loss``, ``first_val_loss``, ``best``,
``elapsed``, ``created``, ``rng`` (``{"tensors": {...}, "python": [...], "numpy": [...]}``; this rank's);
``eval_losses`` / ``first_eval_losses`` (``{name: loss}`` of the ``--eval-data`` sets; only in runs
that have some); under several ranks also ``world_size`` and ``global_batch`` (windows per step over
every rank: a resume on another number of ranks keeps it; a checkpoint without them was written by
one rank).
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from warmstart.data import BatchSampler
from warmstart.train.optim import Schedule


def utc_now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> dict[str, Any]:
    """Every RNG the run draws from: torch CPU (and CUDA, when initialised) as tensors, Python and NumPy as JSON."""
    tensors = {"torch_cpu": torch.get_rng_state().clone()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"torch_cuda_{i}"] = s.clone()
    py = random.getstate()
    np_state = np.random.get_state()
    return {
        "tensors": tensors,
        "python": [py[0], list(py[1]), py[2]],
        "numpy": [np_state[0], np_state[1].tolist(), int(np_state[2]), int(np_state[3]), float(np_state[4])],
    }


def set_rng_state(rng: dict[str, Any]) -> None:
    tensors = rng["tensors"]
    torch.set_rng_state(tensors["torch_cpu"])
    cuda = [tensors[k] for k in sorted((k for k in tensors if k.startswith("torch_cuda_")),
                                        key=lambda k: int(k.rsplit("_", 1)[1]))]
    if cuda and torch.cuda.is_available():
        n = min(len(cuda), torch.cuda.device_count())
        torch.cuda.set_rng_state_all(cuda[:n])
    py = rng["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    n = rng["numpy"]
    np.random.set_state((n[0], np.asarray(n[1], dtype=np.uint32), n[2], n[3], n[4]))


@dataclass
class TrainState:
    """Step, tokens seen, time, data cursor, validation losses, best checkpoint, schedule, RNG."""

    sampler: BatchSampler  # the data cursor (its state is saved, the object is this run's)
    data_fingerprint: str
    schedule: Schedule
    step: int = 0
    tokens_seen: int = 0
    elapsed_before: float = 0.0  # seconds spent by earlier processes of this run
    first_val_loss: float | None = None
    val_loss: float | None = None  # the latest evaluation
    best: dict | None = None  # {"step", "val_loss", "dir"} of the best checkpoint
    first_eval_losses: dict[str, float] = field(default_factory=dict)  # --eval-data sets at step 0
    eval_losses: dict[str, float] = field(default_factory=dict)  # --eval-data sets at the latest evaluation
    world_size: int = 1  # ranks training now (recorded: a resume on another count keeps global_batch)
    global_batch: int | None = None  # windows per optimizer step over every rank
    # this process only, never saved
    started: float = field(default_factory=time.time)
    start_step: int = 0
    last_checkpoint: Path | None = None

    @property
    def elapsed(self) -> float:
        return self.elapsed_before + time.time() - self.started

    @property
    def steps_this_run(self) -> int:
        return self.step - self.start_step

    def advance(self, tokens: int) -> None:
        self.step += 1
        self.tokens_seen += tokens

    def improves(self, val_loss: float | None) -> bool:
        """Would a checkpoint with ``val_loss`` become the best?"""
        return val_loss is not None and (self.best is None or val_loss < self.best["val_loss"])

    def state_dict(self) -> dict[str, Any]:
        several = {"world_size": self.world_size, "global_batch": self.global_batch} if self.world_size > 1 else {}
        return {
            "step": self.step, "tokens_seen": self.tokens_seen, "scheduler": self.schedule.record(self.step),
            "sampler": self.sampler.state_dict(), "data_fingerprint": self.data_fingerprint,
            "val_loss": self.val_loss, "first_val_loss": self.first_val_loss, "best": self.best,
            "elapsed": self.elapsed, "created": utc_now(), **several, "rng": rng_state(),
            **({"eval_losses": self.eval_losses, "first_eval_losses": self.first_eval_losses}
               if self.eval_losses or self.first_eval_losses else {}),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from ``state`` (RNG included when present); the schedule stays this run's own."""
        self.sampler.load_state_dict(state["sampler"])
        self.step = self.start_step = int(state["step"])
        self.tokens_seen = int(state["tokens_seen"])
        self.elapsed_before = float(state.get("elapsed", 0.0))
        self.data_fingerprint = state.get("data_fingerprint", self.data_fingerprint)
        self.first_val_loss = state.get("first_val_loss")
        self.val_loss = state.get("val_loss")
        self.best = state.get("best")
        self.eval_losses = dict(state.get("eval_losses") or {})
        self.first_eval_losses = dict(state.get("first_eval_losses") or {})
        if state.get("rng"):
            set_rng_state(state["rng"])
