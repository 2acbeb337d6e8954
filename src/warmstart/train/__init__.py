"""The trainer in parts: config, model source, train state, step, guard, budget, parallelism, checkpoints.

``pretrain`` (loop.py) assembles them; see its module docstring for the order of work. Several
ranks: ``distributed`` (the process group, rank-0 decisions), ``parallel`` (FSDP2 / DDP),
``dist_checkpoint`` (sharded optimizer state through DCP), ``launch`` (``--nproc-per-node``);
docs/multinode.md.
"""

from warmstart.train.config import TrainConfig, resolve_config
from warmstart.train.evaluate import evaluate
from warmstart.train.loop import RunSummary, pretrain
from warmstart.train.optim import build_optimizer, lr_at, param_groups
from warmstart.train.parallel import parallelize
from warmstart.train.state import TrainState
from warmstart.train.step import DivergenceGuard, train_step

__all__ = ["DivergenceGuard", "RunSummary", "TrainConfig", "TrainState", "build_optimizer", "evaluate", "lr_at",
           "param_groups", "parallelize", "pretrain", "resolve_config", "train_step"]
