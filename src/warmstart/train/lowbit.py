"""``--optimizer adamw-bf16 | adamw-8bit``: AdamW with low-memory moments, through torchao.

- ``adamw`` (the default, ``optim.build_optimizer``): torch's AdamW, fp32 moments, 8 bytes of state a
  parameter (16 with the fp32 weight and gradient).
- ``adamw-bf16``: the two moments in bf16, 4 bytes a parameter.
- ``adamw-8bit``: torchao's ``AdamW8bit``: each moment quantised in blocks of 256 values to 8-bit codes of a
  dynamic (tree) map with one fp32 scale a block, about 2 bytes a parameter.

Both run torchao's update: one compiled function per parameter that computes in fp32 from the stored
moments and writes them back rounded (bf16: to nearest; 8-bit: re-quantised), so only the moments'
storage is smaller. Tensors of fewer than 4096 values (norms, biases) keep fp32 moments (torchao's
rule, after bitsandbytes). Rounding loses an update to a moment smaller than its precision, which
matters most for the second moment with ``--beta2`` close to 1 (docs/large-models.md). Neither kernel
reads ``found_inf`` or ``grad_scale``: the step clips with ``clip_grad_norm_`` and the divergence
guard checks every step on the host (``train/step.py``).

Checkpoints hold the state as the optimizer holds it, without pickle, so a resume continues exactly:
bf16 moments as bf16 tensors, an 8-bit moment as its codes (uint8, the parameter's shape), block scales
and map (``encode`` / ``decode``; ``train/checkpoints.py`` writes them into ``optimizer.safetensors``).
The 8-bit blocks are cut from the whole tensor one process holds, so ``adamw-8bit`` runs in one process
without ``--cpu-offload`` (WS222); ``adamw-bf16`` also runs under DDP and FSDP2 (DCP checkpoints).
A run resumes with the optimizer it was saved with (``check_same_kind``).
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import torch

from warmstart.errors import OptimizerPlacementError, ResumeError
from warmstart.train.fp8 import require_torchao

CLASS_NAMES = {"adamw": "AdamW", "adamw-bf16": "AdamWBf16", "adamw-8bit": "AdamW8bit"}  # optimizer.json "class"


def check_available(kind: str) -> None:
    """WS002 with the install line when ``--optimizer kind`` needs torchao and it is missing."""
    if kind != "adamw":
        require_torchao(f"--optimizer {kind}")


def check_placement(kind: str, mode: str, cpu_offload: bool) -> None:
    """WS222: ``adamw-8bit`` under a process group (``mode`` ddp / fsdp) or with ``--cpu-offload``."""
    if kind == "adamw-8bit" and (mode != "none" or cpu_offload):
        where = "--cpu-offload" if cpu_offload else f"--parallel {mode}"
        raise OptimizerPlacementError(
            f"--optimizer adamw-8bit cannot run with {where}",
            why="its moments are quantised in blocks cut from the whole tensor one process holds, and are saved "
                "and resumed as such",
            fix="use --optimizer adamw-bf16 (or adamw) with several ranks or --cpu-offload, or train in one "
                "process")


@lru_cache(maxsize=None)
def _classes() -> dict[str, type]:
    """The two optimizer classes (built on first use: torchao is imported only then)."""
    from torchao.optim import AdamW8bit as _TorchaoAdamW8bit
    from torchao.optim import _AdamW

    class AdamWBf16(_Restoring, _AdamW):
        """torchao's AdamW update with bf16 moments for every tensor of 4096 values or more."""

        def __init__(self, params, **kwargs) -> None:
            super().__init__(params, **kwargs)
            self.block_size = 1  # every tensor torchao would quantise gets ``_subclass_zeros``: bf16 zeros

        @staticmethod
        def _subclass_zeros(p: torch.Tensor, signed: bool, block_size: int) -> torch.Tensor:
            return torch.zeros_like(p, dtype=torch.bfloat16)

    class AdamW8bit(_Restoring, _TorchaoAdamW8bit):
        """torchao's AdamW8bit, restoring its saved state as it was held."""

    return {"adamw-bf16": AdamWBf16, "adamw-8bit": AdamW8bit}


class _Restoring:
    """``load_state_dict`` that keeps each moment as saved (bf16, or an 8-bit tensor) on its parameter's
    device, where ``torch.optim.Optimizer``'s would cast every state tensor to the parameter's dtype (fp32);
    the learning rates become tensors again (torchao's update takes them as tensors)."""

    def load_state_dict(self, state_dict: dict) -> None:
        saved = state_dict["state"]
        super().load_state_dict({**state_dict, "state": {}})  # param groups only
        ids = [i for g in state_dict["param_groups"] for i in g["params"]]
        params = [p for g in self.param_groups for p in g["params"]]
        for pid, p in zip(ids, params):
            if pid in saved:
                self.state[p] = {k: v.to(device=p.device) if torch.is_tensor(v) and k != "step" else v
                                 for k, v in saved[pid].items()}
        for group in self.param_groups:
            if not torch.is_tensor(group["lr"]):
                group["lr"] = torch.tensor(float(group["lr"]), dtype=torch.float32)


def build(kind: str, groups: list[dict], *, lr: float, betas: tuple[float, float], eps: float) -> torch.optim.Optimizer:
    """The ``kind`` optimizer over ``groups`` (each with its own ``weight_decay`` and ``names``)."""
    check_available(kind)
    return _classes()[kind](groups, lr=lr, betas=betas, eps=eps)


def check_same_kind(index: dict, optimizer: torch.optim.Optimizer, where) -> None:
    """Refuse optimizer state saved by another ``--optimizer`` (``index``: the checkpoint's optimizer.json)."""
    saved, mine = index.get("class", "AdamW"), type(optimizer).__name__
    if saved != mine:
        names = {v: k for k, v in CLASS_NAMES.items()}
        raise ResumeError(f"the checkpoint's optimizer state is {saved}'s (--optimizer {names.get(saved, '?')}); "
                          f"this run builds {mine} (--optimizer {names.get(mine, '?')})",
                          why="each optimizer keeps its moments in its own form, which a resume continues exactly",
                          fix=f"resume with --optimizer {names.get(saved, 'adamw')} (or leave --optimizer out: the "
                              "run's config.yaml has it)", path=where)


# ------------------------------------------------------------------ checkpoint form of one state tensor


def _is_8bit(v: torch.Tensor) -> bool:
    return all(hasattr(v, a) for a in ("codes", "scale", "qmap", "signed"))


def encode(key: str, v: torch.Tensor) -> tuple[Any, dict[str, torch.Tensor]]:
    """``(index entry, tensors)`` of state tensor ``v`` saved under ``key``: a plain tensor as itself (entry: its
    key); an 8-bit one as its codes, block scales and map (entry: their keys and its signedness)."""
    if not _is_8bit(v):
        return key, {key: v.detach().to("cpu").contiguous()}
    parts = {f"{key}.{a}": getattr(v, a).detach().to("cpu").contiguous() for a in ("codes", "scale", "qmap")}
    return {"codes": f"{key}.codes", "scale": f"{key}.scale", "qmap": f"{key}.qmap", "signed": bool(v.signed)}, parts


def decode(entry: Any, tensors: dict[str, torch.Tensor]) -> torch.Tensor:
    """The state tensor ``encode`` wrote: ``entry`` and the checkpoint's tensors."""
    if isinstance(entry, str):
        return tensors[entry]
    from torchao.optim.subclass_8bit import OptimState8bit

    return OptimState8bit(tensors[entry["codes"]], tensors[entry["scale"]], tensors[entry["qmap"]],
                          bool(entry["signed"]))


__all__ = ["CLASS_NAMES", "build", "check_available", "check_placement", "check_same_kind", "decode", "encode"]
