"""Where the work runs: device resolution and the autocast context, shared by every command."""

from __future__ import annotations

import contextlib
from typing import Callable

import torch

from warmstart.choices import DEVICES
from warmstart.errors import UsageError


def resolve_device(name: str) -> torch.device:
    """``auto`` | ``cpu`` | ``cuda`` | ``cuda:N`` -> a torch.device; WS002 when CUDA is asked for but absent."""
    DEVICES.check("--device", name)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UsageError(f"--device {name} was asked for but CUDA is not available",
                         fix="use --device cpu (or auto)")
    return torch.device(name)


def amp_context(device: torch.device, dtype_flag: str = "auto") -> Callable[[], contextlib.AbstractContextManager]:
    """A factory of autocast contexts: bf16 on CUDA by default (``auto``) or when asked (``bf16``), else none."""
    use_bf16 = dtype_flag == "bf16" or (dtype_flag == "auto" and device.type == "cuda")
    if not use_bf16:
        return contextlib.nullcontext
    return lambda: torch.autocast(device_type=device.type, dtype=torch.bfloat16)


__all__ = ["amp_context", "resolve_device"]
