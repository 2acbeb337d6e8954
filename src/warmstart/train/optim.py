"""AdamW with decay / no-decay groups, and the warmup + cosine learning-rate schedule."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn


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
                    eps: float = 1e-8, device: torch.device | str = "cpu") -> torch.optim.AdamW:
    """AdamW; the fused CUDA kernel on CUDA (which also honours ``optimizer.found_inf``)."""
    groups = param_groups(model, weight_decay)
    on_cuda = torch.device(device).type == "cuda"
    kwargs = {"fused": True} if on_cuda else {"foreach": True}
    opt = torch.optim.AdamW([{k: v for k, v in g.items()} for g in groups], lr=lr, betas=betas, eps=eps,
                            **kwargs)
    return opt


def lr_at(step: int, *, lr: float, warmup: int, decay_steps: int, min_ratio: float) -> float:
    """Learning rate for update number ``step`` (0-based): linear warmup, cosine to ``lr*min_ratio``."""
    floor = lr * min_ratio
    if warmup > 0 and step < warmup:
        return lr * (step + 1) / warmup
    if step >= decay_steps:
        return floor
    span = max(1, decay_steps - warmup)
    progress = (step - warmup) / span
    return floor + 0.5 * (lr - floor) * (1.0 + math.cos(math.pi * progress))


@dataclass(frozen=True)
class Schedule:
    """The warmup + cosine schedule of one run (``lr_at`` with its settings bound)."""

    lr: float
    warmup: int
    decay_steps: int
    min_ratio: float

    def at(self, step: int) -> float:
        return lr_at(step, lr=self.lr, warmup=self.warmup, decay_steps=self.decay_steps, min_ratio=self.min_ratio)

    def record(self, step: int) -> dict:
        """What a checkpoint records about the schedule (``state.json`` ``scheduler``)."""
        return {"step": step, "lr_next": self.at(step), "decay_steps": self.decay_steps}


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr
