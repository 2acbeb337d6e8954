"""AdamW with decay / no-decay groups, and the learning-rate schedules.

Every schedule starts with a linear warmup over ``warmup`` updates (update ``s`` < ``warmup`` gets
``lr·(s+1)/warmup``), then, with ``H`` the horizon (``decay_steps``: ``--lr-decay-steps`` or the step
budget) and ``floor = lr·min_ratio``:

* ``cosine``: cosine from ``lr`` at ``warmup`` to ``floor`` at ``H``;
* ``wsd`` (warmup-stable-decay): ``lr`` until the decay starts at ``S = max(warmup, H − round(f·H))``
  (``f``: ``--decay-fraction``), then ``floor + (lr − floor)·(1 − sqrt((s − S)/(H − S)))`` (the
  "1-sqrt" cooldown), reaching ``floor`` at ``H``;
* ``constant``: ``lr`` after the warmup, for ever.

From ``H`` on, ``cosine`` and ``wsd`` stay at ``floor``. A run with ``--init`` re-warms: its schedule
starts at update 0 like any new run (the parent's optimizer and schedule are not carried over);
``--resume`` continues the run's own schedule at its step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from warmstart.train.config import SCHEDULES


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Weight decay on matrices only: none on norms, biases or embeddings.

    A tied LM head shares the embedding's Parameter and so is not decayed either; an untied
    ``lm_head.weight`` is an ordinary projection and is decayed.
    """
    decay, no_decay = [], []
    decay_names, no_decay_names = [], []
    for name, p in model.named_parameters():  # shared (tied) parameters appear once
        if not p.requires_grad:
            continue
        if p.ndim < 2 or "embed_tokens" in name or name.endswith("norm.weight") or name.endswith(".bias"):
            no_decay.append(p)
            no_decay_names.append(name)
        else:
            decay.append(p)
            decay_names.append(name)
    return [
        {"params": decay, "weight_decay": weight_decay, "names": decay_names},
        {"params": no_decay, "weight_decay": 0.0, "names": no_decay_names},
    ]


def build_optimizer(model: nn.Module, *, lr: float, weight_decay: float, betas: tuple[float, float],
                    eps: float = 1e-8, device: torch.device | str = "cpu",
                    kind: str = "adamw") -> torch.optim.Optimizer:
    """``--optimizer kind``: AdamW, the fused CUDA kernel on CUDA (which also honours ``optimizer.found_inf``);
    ``adamw-bf16`` / ``adamw-8bit``: torchao's update with low-memory moments (``train/lowbit.py``)."""
    groups = param_groups(model, weight_decay)
    if kind != "adamw":
        from warmstart.train import lowbit

        return lowbit.build(kind, groups, lr=lr, betas=betas, eps=eps)
    on_cuda = torch.device(device).type == "cuda"
    kwargs = {"fused": True} if on_cuda else {"foreach": True}
    opt = torch.optim.AdamW([{k: v for k, v in g.items()} for g in groups], lr=lr, betas=betas, eps=eps,
                            **kwargs)
    return opt


def wsd_decay_start(warmup: int, decay_steps: int, decay_fraction: float) -> int:
    """The first update of a WSD schedule's decay: the last ``decay_fraction`` of the horizon, after the warmup."""
    return max(warmup, decay_steps - max(1, round(decay_fraction * decay_steps)))


def lr_at(step: int, *, lr: float, warmup: int, decay_steps: int, min_ratio: float, kind: str = "cosine",
          decay_fraction: float = 0.2) -> float:
    """Learning rate for update number ``step`` (0-based) of the ``kind`` schedule (module docstring)."""
    if kind not in SCHEDULES:
        raise ValueError(f"unknown schedule {kind!r}")
    floor = lr * min_ratio
    if warmup > 0 and step < warmup:
        return lr * (step + 1) / warmup
    if kind == "constant":
        return lr
    if step >= decay_steps:
        return floor
    if kind == "wsd":
        start = wsd_decay_start(warmup, decay_steps, decay_fraction)
        if step < start:
            return lr
        return floor + (lr - floor) * (1.0 - math.sqrt((step - start) / (decay_steps - start)))
    span = max(1, decay_steps - warmup)
    progress = (step - warmup) / span
    return floor + 0.5 * (lr - floor) * (1.0 + math.cos(math.pi * progress))


@dataclass(frozen=True)
class Schedule:
    """The learning-rate schedule of one run (``lr_at`` with its settings bound)."""

    lr: float
    warmup: int
    decay_steps: int
    min_ratio: float
    kind: str = "cosine"
    decay_fraction: float = 0.2

    def at(self, step: int) -> float:
        return lr_at(step, lr=self.lr, warmup=self.warmup, decay_steps=self.decay_steps, min_ratio=self.min_ratio,
                     kind=self.kind, decay_fraction=self.decay_fraction)

    def record(self, step: int) -> dict:
        """What a checkpoint records about the schedule (``state.json`` ``scheduler``)."""
        rec = {"step": step, "lr_next": self.at(step), "decay_steps": self.decay_steps}
        if self.kind != "cosine":  # a cosine run's record is what it has always been
            rec["kind"] = self.kind
        if self.kind == "wsd":
            rec["decay_start"] = wsd_decay_start(self.warmup, self.decay_steps, self.decay_fraction)
        return rec


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        if torch.is_tensor(group["lr"]):  # torchao's optimizers take it as a tensor
            group["lr"].fill_(lr)
        else:
            group["lr"] = lr
