"""``TrainState``: a run's progress besides the model and optimizer; RNG capture and restore.

``state_dict()`` / ``load_state_dict()`` have the shape of ``torch.distributed.checkpoint``'s
``Stateful`` protocol, so a distributed checkpoint can save and load the object as it is (per-rank
RNG and data cursor included). Run checkpoints write it as ``trainer_state/state.json``
(the JSON part) and ``trainer_state/rng.safetensors`` (the RNG tensors); see ``checkpoints.py``.

Keys of ``state_dict()``, the same as ``state.json`` has always held: ``step``, ``tokens_seen``,
``scheduler``, ``sampler``, ``data_fingerprint``, ``val_loss``, ``first_val_loss``, ``best``,
``elapsed``, ``created``, ``rng`` (``{"tensors": {...}, "python": [...], "numpy": [...]}``; this rank's);
``eval_losses`` / ``first_eval_losses`` (``{name: loss}`` of the ``--eval-data`` sets; only in runs
that have some); ``world_size`` and ``global_batch`` (windows per step over every rank: a resume on
another number of ranks keeps it, whatever its ``--batch-size``; a checkpoint without them was written
by one rank before they were recorded there too).
"""

from __future__ import annotations

import math
import random
import re
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
        several = {"world_size": self.world_size, "global_batch": self.global_batch}
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


# ------------------------------------------------------------------ state.json at the edge

MAX_COUNT = 1 << 62  # steps, tokens, draws: any real run stays far below
MAX_RANKS = 1 << 20
MAX_GLOBAL_BATCH = 1 << 24  # windows per optimizer step over every rank


class _Missing:
    def __repr__(self) -> str:
        return "missing"


MISSING = _Missing()  # a field state.json lacks, as ``state_defects`` reports it


def _int(v: Any, low: int = 0, high: int = MAX_COUNT) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and low <= v <= high


def _number(v: Any, low: float = float("-inf")) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v >= low


def _losses(v: Any) -> bool:
    return isinstance(v, dict) and all(isinstance(k, str) and _number(x) for k, x in v.items())


def _best(v: Any) -> bool:
    return v is None or (isinstance(v, dict) and _int(v.get("step")) and _number(v.get("val_loss"))
                         and isinstance(v.get("dir"), str) and re.fullmatch(r"step-\d{6,}", v["dir"]) is not None)


def _rng(v: Any) -> bool:
    """This rank's Python and NumPy generators as ``rng_state`` writes them (the tensors are a file of their own)."""
    py, nps = (v.get("python"), v.get("numpy")) if isinstance(v, dict) else (None, None)
    return (isinstance(py, list) and len(py) == 3 and _int(py[0]) and isinstance(py[1], list)
            and all(_int(x) for x in py[1]) and (py[2] is None or _number(py[2]))
            and isinstance(nps, list) and len(nps) == 5 and isinstance(nps[0], str) and isinstance(nps[1], list)
            and all(_int(x, high=2**32 - 1) for x in nps[1]) and _int(nps[2]) and _int(nps[3]) and _number(nps[4]))


# field -> (test, what it must be, required); ``sampler`` is checked field by field (``_cursor_defects``)
STATE_RULES: dict[str, tuple[Any, str, bool]] = {
    "step": (_int, "an integer >= 0", True),
    "tokens_seen": (_int, "an integer >= 0", True),
    "data_fingerprint": (lambda v: isinstance(v, str) and bool(v), "a non-empty string", True),
    "elapsed": (lambda v: _number(v, 0.0), "a finite number of seconds >= 0", True),
    "val_loss": (lambda v: v is None or _number(v), "a finite number or null", True),
    "first_val_loss": (lambda v: v is None or _number(v), "a finite number or null", True),
    "best": (_best, 'null or {"step": integer >= 0, "val_loss": finite number, "dir": "step-NNNNNN"}', True),
    "eval_losses": (_losses, "an object of set name: finite number", False),
    "first_eval_losses": (_losses, "an object of set name: finite number", False),
    "world_size": (lambda v: _int(v, 1, MAX_RANKS), f"an integer in [1, {MAX_RANKS}]", False),
    "global_batch": (lambda v: v is None or _int(v, 1, MAX_GLOBAL_BATCH), f"null or an integer in [1, "
                     f"{MAX_GLOBAL_BATCH}]", False),
    "scheduler": (lambda v: isinstance(v, dict), "an object", False),
    "created": (lambda v: isinstance(v, str), "a string", False),
    "rng": (_rng, "this rank's generators: {\"python\": [version, [state ...], gauss], \"numpy\": [5 values]}", True),
}

# one sampler's cursor (``data.BatchSampler.state_dict``) and a mixture's (``data.MixtureSampler.state_dict``)
_CURSOR = {"epoch": (_int, "an integer >= 0"), "pos": (_int, "an integer >= 0"),
           "seed": (lambda v: _int(v, 0, 2**64 - 1), "an integer >= 0"),
           "n_windows": (lambda v: _int(v, 1), "an integer >= 1")}
_MIXTURE = {"seed": (lambda v: _int(v, 0, 2**64 - 1), "an integer >= 0"), "draws": (_int, "an integer >= 0"),
            "weights": (lambda v: isinstance(v, list) and bool(v) and all(_number(w) and w > 0 for w in v),
                        "a non-empty list of finite numbers > 0"),
            "counts": (lambda v: isinstance(v, list) and all(_int(c) for c in v), "a list of integers >= 0"),
            "parts": (lambda v: isinstance(v, list) and all(isinstance(p, dict) for p in v), "a list of objects")}


def state_defects(state: dict) -> list[tuple[str, Any, str]]:
    """What is wrong with a ``state.json`` object, field by field: ``[(field, value or MISSING, expected)]``."""
    bad = [(k, state.get(k, MISSING), what) for k, (ok, what, required) in STATE_RULES.items()
           if (k in state and not ok(state[k])) or (required and k not in state)]
    if "sampler" not in state:
        return bad + [("sampler", MISSING, "the data cursor (an object)")]
    return bad + _cursor_defects(state["sampler"], "sampler")


def _cursor_defects(c: Any, where: str, part: bool = False) -> list[tuple[str, Any, str]]:
    if not isinstance(c, dict):
        return [(where, c, "the data cursor (an object)")]
    mixture = c.get("kind") == "mixture"
    if mixture and part:
        return [(f"{where}.kind", c["kind"], "one source's cursor (a mixture does not nest)")]
    bad = [(f"{where}.{k}", c.get(k, MISSING), what) for k, (ok, what) in (_MIXTURE if mixture else _CURSOR).items()
           if not ok(c.get(k))]
    if bad:
        return bad
    if not mixture:
        if c["pos"] >= c["n_windows"]:
            bad.append((f"{where}.pos", c["pos"], f"an integer in [0, n_windows = {c['n_windows']})"))
        if "shuffle" in c and not isinstance(c["shuffle"], bool):
            bad.append((f"{where}.shuffle", c["shuffle"], "true or false"))
        return bad
    n = len(c["weights"])
    for k in ("counts", "parts"):
        if len(c[k]) != n:
            bad.append((f"{where}.{k}", c[k], f"one entry per source ({n}, as many as the weights)"))
    if not bad and sum(c["counts"]) != c["draws"]:
        bad.append((f"{where}.counts", c["counts"], f"counts that add up to draws = {c['draws']}"))
    for i, p in enumerate(c["parts"] if not bad else []):
        bad += _cursor_defects(p, f"{where}.parts[{i}]", part=True)
    return bad
