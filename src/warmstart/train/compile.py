"""Regional compilation: ``torch.compile`` each decoder block on its own, once for all blocks.

Compiling the whole training loss unrolls every layer into one graph, and its compile time grows with
the depth. The blocks share their code and shapes, so one compiled graph
(forward and backward) serves all of them: dynamo compiles the first block and reuses the result for
the rest. The embedding, the final norm and the fused LM head + loss (``arch/loss.py``) stay eager.

Only the training path is compiled: a block called without gradients (evaluation) or with a KV
cache (generation) runs eagerly, so neither triggers another compilation before the first step.
With activation checkpointing the checkpoint goes inside the compiled region, as torchtitan
does (compile sees the recomputation and can plan it); ``model.activation_checkpointing`` is then
off, the blocks do it themselves. FSDP2's hooks run in a block's ``__call__``, around the ``forward``
this replaces, so they stay outside the compiled graphs whether the model was sharded before or after
(``compile_loss`` compiles the already sharded model; bench/results/h100/wave2/pretrain-fsdp-compile.log).
"""

from __future__ import annotations

from functools import lru_cache

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from warmstart.arch import CausalLM


def _block(layer: nn.Module, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, mask=None) -> torch.Tensor:
    return type(layer).forward(layer, x, cos, sin, None, mask)


def _checkpointed_block(layer: nn.Module, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                        mask=None) -> torch.Tensor:
    return checkpoint(type(layer).forward, layer, x, cos, sin, None, mask, use_reentrant=False)


@lru_cache(maxsize=None)
def _compiled(checkpointed: bool, mode: str | None):
    return torch.compile(_checkpointed_block if checkpointed else _block, fullgraph=True, mode=mode)


class _TrainingForward:
    """A block's ``forward``: the compiled graph when training (gradients on, no cache), else eager."""

    def __init__(self, layer: nn.Module, compiled) -> None:
        self.layer, self.compiled = layer, compiled

    def __call__(self, x, cos, sin, cache=None, mask=None):
        if cache is None and torch.is_grad_enabled():
            return self.compiled(self.layer, x, cos, sin, mask)
        return type(self.layer).forward(self.layer, x, cos, sin, cache, mask)


def compile_blocks(model: CausalLM, *, mode: str | None = None) -> CausalLM:
    """Compile ``model``'s decoder blocks in place (regional compilation); returns ``model``.

    ``mode`` is ``torch.compile``'s (None: the default). Idempotent.
    """
    if blocks_compiled(model):
        return model
    checkpointed = bool(model.activation_checkpointing)
    model.activation_checkpointing = False  # the compiled blocks checkpoint themselves
    compiled = _compiled(checkpointed, mode)
    for layer in model.model.layers:
        layer.forward = _TrainingForward(layer, compiled)
    return model


def blocks_compiled(model: CausalLM) -> bool:
    return all(isinstance(layer.__dict__.get("forward"), _TrainingForward) for layer in model.model.layers)


__all__ = ["blocks_compiled", "compile_blocks"]
