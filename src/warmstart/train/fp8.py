"""``--fp8``: float8 matmuls in the decoder blocks' linear layers, through torchao's float8 training.

A compute choice, never a storage one. ``convert_blocks`` swaps each ``nn.Linear`` of the decoder
blocks for torchao's ``Float8Linear``, an ``nn.Linear`` subclass that keeps the very ``weight`` and
``bias`` parameters (fp32 master weights: the same names, shapes and dtypes) and casts input, weight
and output gradient to float8 inside its three matmuls. The embedding and the LM head (fused into
the loss, ``arch/loss.py``) stay in bf16. So a checkpoint, an export and a resume are those of a run
without ``--fp8``, and a run may resume with or without it.

Recipes (torchao's): ``tensorwise`` (one dynamic scale per tensor) and ``rowwise`` (one per row,
scales rounded to powers of two). With FSDP2 on several ranks, ``tensorwise`` weights are
all-gathered in float8 (torchao's ``enable_fsdp_float8_all_gather``) and their scales computed
for every layer at once after each optimizer step (``precompute_float8_dynamic_scale_for_fsdp``),
as torchtitan does.

Where it cannot run it is refused before any data is read or model built: a CPU or a GPU below
compute capability 8.9 (WS220, ``check_device``), torchao missing (WS002), a block linear layer or
``--seq-len`` not a multiple of 16 (float8 matmuls need it; WS221, ``check_shapes``).
Without ``--compile`` it runs, but torchao's casts then run as separate kernels. Evaluation runs the blocks
in high precision (``high_precision``): the validation loss is the weights', as an export will use them.
"""

from __future__ import annotations

import contextlib
import os
import sys
import types
from typing import Any

import torch
from torch import nn

from warmstart.errors import Fp8DeviceError, Fp8ShapeError, UsageError

MIN_CAPABILITY = (8, 9)  # the first GPUs with float8 tensor cores (Ada, then Hopper)
ALIGN = 16  # float8 matmuls (torch._scaled_mm) need every matrix dimension a multiple of this
BLOCKS = "model.layers."  # the decoder blocks' module names; nothing outside them is converted
CPU_TEST_ENV = "WARMSTART_TEST_FP8_ON_CPU"  # tests: let --fp8 run on a CPU (torch emulates the matmul there)


def require_torchao(what: str) -> Any:
    """``import torchao``, or WS002 naming ``what`` needs it and the install line."""
    try:
        import torchao
    except ImportError:
        raise UsageError(f"{what} needs torchao, which is not installed",
                         why="warmstart uses torchao's float8 training and low-bit optimizers",
                         fix="pip install 'warmstart[fp8]' (or pip install torchao)") from None
    return torchao


def fp8_capable(capability: tuple[int, int] | None) -> bool:
    """Whether a CUDA device of ``capability`` (major, minor; None: not a CUDA device) has float8 matmuls."""
    return capability is not None and tuple(capability) >= MIN_CAPABILITY


def check_device(recipe: str, device: torch.device) -> None:
    """WS220 where ``--fp8 recipe`` cannot run on ``device``; WS002 when torchao is missing."""
    if recipe == "none":
        return
    if device.type == "cuda":
        cap = torch.cuda.get_device_capability(device)
        where = f"{torch.cuda.get_device_name(device)} (compute capability {cap[0]}.{cap[1]})"
    else:
        cap, where = None, f"the {device.type.upper()}"
        if device.type == "cpu" and os.environ.get(CPU_TEST_ENV) == "1":
            cap = MIN_CAPABILITY
    if not fp8_capable(cap):
        raise Fp8DeviceError(f"--fp8 {recipe} needs float8 matmuls, which {where} does not have",
                             why=f"float8 tensor cores start at compute capability {MIN_CAPABILITY[0]}."
                                 f"{MIN_CAPABILITY[1]} (Ada, Hopper and later)",
                             fix="leave --fp8 out (bf16 autocast), or train on such a GPU")
    require_torchao(f"--fp8 {recipe}")


def block_linears(model: nn.Module) -> list[tuple[str, nn.Linear]]:
    """The decoder blocks' linear layers (the ones ``--fp8`` converts), by module name."""
    return [(name, m) for name, m in model.named_modules() if name.startswith(BLOCKS) and isinstance(m, nn.Linear)]


def misaligned(model: nn.Module, seq_len: int) -> list[str]:
    """What stops float8 matmuls in ``model``'s blocks: each block linear layer with a dimension that is not
    a multiple of 16 (one per distinct shape), and ``seq_len`` when it is not one (a batch of any number of
    windows then has a multiple of 16 tokens, the last evaluation batch included)."""
    out, seen = [], set()
    for name, m in block_linears(model):
        shape = (m.in_features, m.out_features)
        if any(d % ALIGN for d in shape) and shape not in seen:
            seen.add(shape)
            out.append(f"{name} ({m.in_features} -> {m.out_features})")
    if seq_len % ALIGN:
        out.append(f"--seq-len {seq_len}")
    return out


def check_shapes(recipe: str, model: nn.Module, seq_len: int) -> None:
    """WS221 when a dimension of ``model``'s block matmuls (or ``--seq-len``) is not a multiple of 16."""
    if recipe == "none":
        return
    bad = misaligned(model, seq_len)
    if bad:
        raise Fp8ShapeError(f"--fp8 {recipe}: not a multiple of {ALIGN}: " + ", ".join(bad[:6])
                            + (f" and {len(bad) - 6} more" if len(bad) > 6 else ""),
                            why="float8 matmuls need every matrix dimension, the tokens of a batch included, to be "
                                f"a multiple of {ALIGN}",
                            fix=f"leave --fp8 out for this model, or pass a --seq-len that is a multiple of {ALIGN}")


def check_model(recipe: str, mcfg, seq_len: int) -> None:
    """``check_shapes`` on the model ``mcfg`` describes (built on the meta device: no memory, the real modules)."""
    if recipe == "none":
        return
    from warmstart.arch import CausalLM

    with torch.device("meta"):
        check_shapes(recipe, CausalLM(mcfg), seq_len)


def convert_blocks(model: nn.Module, recipe: str, device: torch.device, *,
                   fsdp_float8_all_gather: bool = False) -> nn.Module:
    """Swap the decoder blocks' ``nn.Linear`` for torchao's ``Float8Linear`` in place (the same parameters) for a
    run on ``device``; ``fsdp_float8_all_gather`` (tensorwise, before ``fully_shard``): weights that FSDP2
    all-gathers in float8. On a CPU (tests only, ``check_device``) torchao's emulation: the same float8 casts,
    the matmuls in high precision."""
    if recipe == "none":
        return model
    from dataclasses import replace

    from torchao.float8 import Float8LinearConfig, convert_to_float8_training

    config = Float8LinearConfig.from_recipe_name(recipe)
    if fsdp_float8_all_gather or device.type == "cpu":
        config = replace(config, enable_fsdp_float8_all_gather=fsdp_float8_all_gather, emulate=device.type == "cpu")
    if recipe == "rowwise":  # torchtitan's workaround for inductor's rowwise casts (pytorch/pytorch#150859)
        import torch._inductor.config

        torch._inductor.config.emulate_precision_casts = True
    from torchao.float8.float8_linear import Float8Linear

    convert_to_float8_training(model, config=config, module_filter_fn=lambda m, fqn: fqn.startswith(BLOCKS)
                               and not isinstance(m, Float8Linear))
    return model


@contextlib.contextmanager
def high_precision(model: nn.Module):
    """Within: the converted block linear layers compute as ``nn.Linear`` (under autocast, bf16), as the checkpoint
    will be used once exported, so that validation losses (gate 7's at step 0 included) measure the weights, not
    float8's rounding of one forward. Layers whose weights FSDP2 all-gathers in float8 keep float8."""
    swapped = [m for _, m in block_linears(model) if _float8(m) and not m.config.enable_fsdp_float8_all_gather]
    for m in swapped:
        m.forward = types.MethodType(nn.Linear.forward, m)
    try:
        yield
    finally:
        for m in swapped:
            del m.forward


def _float8(m: nn.Module) -> bool:
    if "torchao" not in sys.modules:  # nothing was converted
        return False
    from torchao.float8.float8_linear import Float8Linear

    return isinstance(m, Float8Linear)


def float8_all_gather(recipe: str, mode: str, world_size: int) -> bool:
    """Whether FSDP2 all-gathers the block weights in float8: tensorwise scaling, FSDP, several ranks (with one
    rank there is nothing to communicate)."""
    return recipe == "tensorwise" and mode == "fsdp" and world_size > 1


def precompute_scales(model: nn.Module) -> None:
    """After an optimizer step with float8 all-gather: every weight's float8 scale in one all-reduce."""
    from torchao.float8 import precompute_float8_dynamic_scale_for_fsdp

    precompute_float8_dynamic_scale_for_fsdp(model)


def plain(t: torch.Tensor) -> torch.Tensor:
    """A weight as a plain tensor: the high-precision tensor inside torchao's float8 all-gather wrapper (what a
    state dict of an FSDP2 ``--fp8`` run holds), else ``t`` itself."""
    if "torchao" not in sys.modules:  # no run of this process converted anything
        return t
    from torchao.float8.fsdp_utils import WeightWithDynamicFloat8CastTensor

    return t._tensor if isinstance(t, WeightWithDynamicFloat8CastTensor) else t


__all__ = ["check_device", "check_model", "check_shapes", "convert_blocks", "float8_all_gather", "fp8_capable",
           "high_precision", "misaligned", "plain", "precompute_scales", "require_torchao"]
