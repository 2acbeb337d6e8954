"""A torch.profiler summary of a few training steps: where the device time goes, by kind of kernel."""

from __future__ import annotations

import re
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

# kernel name -> category, first match wins
CATEGORIES = (
    ("attention", re.compile(r"flash|fmha|attention|cudnn.*sdpa|sdpa", re.I)),
    ("matmul", re.compile(r"gemm|nvjet|cutlass|sm90_xmma|wgmma|splitk|cublas", re.I)),
    ("optimizer", re.compile(r"adam|multi_tensor_apply|foreach", re.I)),
    ("compiled (inductor)", re.compile(r"^triton_", re.I)),
    ("eager reductions", re.compile(r"reduce|norm_kernel|softmax|logsumexp|nll", re.I)),
    ("eager elementwise", re.compile(r"elementwise|vectorized|unrolled|copy|fill|index|scatter|gather|embedding",
                                     re.I)),
    ("memcpy/memset", re.compile(r"memcpy|memset", re.I)),
)


ANNOTATIONS = {"Optimizer.step#AdamW.step", "_LinearCrossEntropy"}


def _category(name: str) -> str:
    return next((c for c, pat in CATEGORIES if pat.search(name)), "other")


def profile_steps(step, data, device, path: Path, n: int = 3) -> dict:
    """Profile ``n`` steps; write the top kernels and the per-category sums to ``path``; return the sums."""
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    with profile(activities=acts) as prof:
        for i in range(n):
            step(data[i % len(data)])
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    # kernels only: a user annotation (Optimizer.step, an autograd Function's range) spans kernels counted already
    events = [e for e in prof.key_averages() if not getattr(e, "is_user_annotation", False)
              and e.key not in ANNOTATIONS]
    if device.type == "cuda":
        events = [e for e in events if e.device_type == torch.autograd.DeviceType.CUDA]
    attr = "self_device_time_total" if device.type == "cuda" else "self_cpu_time_total"
    sums: dict[str, float] = {}
    for e in events:
        sums[_category(e.key)] = sums.get(_category(e.key), 0.0) + getattr(e, attr) / 1000 / n
    wall = _step_wall_ms(prof, n)
    busy = sum(sums.values())
    table = prof.key_averages().table(sort_by=attr, row_limit=40, max_name_column_width=90)
    lines = [f"{n} steps; per step: wall {wall:.1f} ms, device busy {busy:.1f} ms", ""]
    lines += [f"{k:<22} {v:9.2f} ms  {v / max(busy, 1e-9):6.1%}" for k, v in sorted(sums.items(), key=lambda x: -x[1])]
    path.write_text("\n".join(lines) + "\n\n" + table + "\n")
    return {"wall_ms": round(wall, 2), "busy_ms": round(busy, 2), **{k: round(v, 2) for k, v in sums.items()}}


def _step_wall_ms(prof, n: int) -> float:
    events = prof.events()
    if not events:
        return float("nan")
    start = min(e.time_range.start for e in events)
    end = max(e.time_range.end for e in events)
    return (end - start) / 1000 / n
