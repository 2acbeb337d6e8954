"""Training speed bookkeeping: model FLOPs per token, the GPU's peak, MFU, time to the first step.

MFU (model FLOPs utilisation, PaLM appendix B) = achieved model FLOP/s over the accelerator's peak.
Model FLOPs per token are 6 x the matmul parameters (every projection and the LM head; not the
embedding lookup, norms or biases) plus 12 x layers x attended span x (heads x head_dim) for the
attention scores and values, forward and backward. The causal mask is not discounted (the
convention of PaLM, nanoGPT and litgpt), so a recomputed forward (activation checkpointing) is not
counted either. The peak is the datasheet's dense (no sparsity) figure for the dtype the matmuls
run in: bf16 under autocast, TF32 for fp32 on CUDA (the table below); a large matmul reaches only part
of it, so an MFU well below 100% is the practical ceiling.
"""

from __future__ import annotations

import contextlib
import os
import time

import torch

from warmstart.arch import ModelConfig
from warmstart.arch.config import SLIDING

# Dense datasheet TFLOP/s per device-name fragment (first match wins): (bf16/fp16, tf32).
PEAK_TFLOPS: tuple[tuple[str, float, float], ...] = (
    ("H100 NVL", 835.0, 418.0),
    ("H100 PCIe", 756.0, 378.0),
    ("H100", 989.0, 494.0),  # SXM5 ("NVIDIA H100 80GB HBM3")
    ("H200", 989.0, 494.0),
    ("GH200", 989.0, 494.0),
    ("B200", 2250.0, 1100.0),
    ("A100", 312.0, 156.0),
    ("L40S", 362.0, 183.0),
    ("L4", 121.0, 60.0),
    ("A10G", 70.0, 35.0),
    ("A10", 125.0, 62.5),
    ("RTX 4090", 165.0, 82.6),
)


def matmul_parameters(cfg: ModelConfig) -> int:
    """Weights that take part in a matmul per token: the blocks' projections and the LM head."""
    d, hd = cfg.hidden_size, cfg.head_dim
    attn = d * cfg.num_heads * hd * 2 + d * cfg.num_kv_heads * hd * 2  # q, o; k, v
    mlp = 3 * d * cfg.intermediate_size
    return cfg.num_layers * (attn + mlp) + cfg.vocab_size * d


def flops_per_token(cfg: ModelConfig, seq_len: int) -> float:
    """Model FLOPs of one training token (forward + backward) at context ``seq_len``."""
    span = sum(min(seq_len, cfg.sliding_window) if cfg.layer_type(i) == SLIDING else seq_len
               for i in range(cfg.num_layers))
    return 6.0 * matmul_parameters(cfg) + 12.0 * span * cfg.num_heads * cfg.head_dim


PEAK_ENV = "WARMSTART_PEAK_TFLOPS"  # overrides the table (another GPU, or a measured peak)


def peak_flops(device: torch.device | str, dtype: torch.dtype = torch.bfloat16) -> tuple[float, str] | None:
    """(peak FLOP/s, where it comes from) of ``device`` for matmuls in ``dtype``; None when unknown (CPU)."""
    device = torch.device(device)
    if device.type != "cuda" or not torch.cuda.is_available():
        return None
    if os.environ.get(PEAK_ENV):
        tflops = float(os.environ[PEAK_ENV])
        return tflops * 1e12, f"{PEAK_ENV}={tflops:g} TFLOP/s"
    name = torch.cuda.get_device_name(device)
    for fragment, bf16, tf32 in PEAK_TFLOPS:
        if fragment in name:
            low = dtype in (torch.bfloat16, torch.float16)
            tflops = bf16 if low else tf32
            return tflops * 1e12, f"{name} dense {'bf16' if low else 'tf32'} datasheet, {tflops:g} TFLOP/s"
    return None


def mfu(tokens_per_s: float, flops_token: float, peak: float | None) -> float | None:
    """Model FLOPs utilisation as a fraction, or None without a known peak."""
    return None if not peak else tokens_per_s * flops_token / peak


def flops_budget(mcfg: ModelConfig, seq_len: int, device: torch.device, amp) -> tuple[float, float] | None:
    """``(training FLOPs per token, peak FLOP/s of one device)`` for the meter's MFU; None on CPU
    or on a GPU whose peak is unknown. ``amp`` is the run's autocast factory (``nullcontext``: fp32)."""
    low = amp is not contextlib.nullcontext
    peak = peak_flops(device, torch.bfloat16 if low else torch.float32)
    return None if peak is None else (flops_per_token(mcfg, seq_len), peak[0])


class FirstStepClock:
    """Seconds from ``started`` (the run's start) to the end of its first optimizer step on the device.

    ``done(device)`` after each step: at the first call it waits for the device (one sync, once)
    and records the time; later calls are free.
    """

    def __init__(self, started: float) -> None:
        self.started = started
        self.seconds: float | None = None

    def done(self, device: torch.device) -> None:
        if self.seconds is None:
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            self.seconds = round(time.time() - self.started, 3)


__all__ = ["FirstStepClock", "PEAK_ENV", "PEAK_TFLOPS", "flops_budget", "flops_per_token", "matmul_parameters", "mfu", "peak_flops"]
