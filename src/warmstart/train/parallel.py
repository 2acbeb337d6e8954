"""How the model runs: the ``parallelize`` hook and ``torch.compile``.

``pretrain`` calls ``parallelize(model, cfg)`` once, after the model is built on its device and
before the step-0 evaluation, the optimizer and ``compile_loss``. It is the identity today. This
is where multi-GPU wrapping plugs in (issue 9): FSDP2 ``fully_shard`` per decoder layer and then
the root (with its mixed-precision policy), or DDP; the optimizer is then built over the wrapped
model's parameters, and ``compile_loss`` compiles what ``parallelize`` returned.
"""

from __future__ import annotations

from typing import Callable

import torch

from warmstart.arch import CausalLM
from warmstart.train.compile import compile_blocks
from warmstart.train.config import TrainConfig

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def parallelize(model: CausalLM, cfg: TrainConfig) -> CausalLM:
    """Wrap ``model`` for data-parallel / sharded training. One process, one device: unchanged."""
    return model


def compile_loss(model: CausalLM, cfg: TrainConfig) -> LossFn:
    """The training loss function: ``model.loss``; with ``--compile`` the decoder blocks are compiled
    first, each on its own (``train/compile.py``), and the fused LM head + loss stays eager."""
    if cfg.compile:
        compile_blocks(model)
    return model.loss
