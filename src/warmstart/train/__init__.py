"""Optimizer, schedule, the training loop, run checkpoints and exact resume."""

from warmstart.train.config import TrainConfig, resolve_config
from warmstart.train.loop import RunSummary, evaluate, pretrain
from warmstart.train.optim import build_optimizer, lr_at, param_groups

__all__ = ["RunSummary", "TrainConfig", "build_optimizer", "evaluate", "lr_at", "param_groups", "pretrain",
           "resolve_config"]
