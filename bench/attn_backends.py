"""Causal SDPA forward + backward per backend on the shapes warmstart trains (bf16, GPU).

    python bench/attn_backends.py

Prints ms per forward+backward and TFLOP/s (causal: half of 4*B*H*T*T*D forward, 2.5x that with
backward), for each backend that accepts the shape; GQA either native (enable_gqa) or by
repeating the k/v heads first.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

SHAPES = {  # name: (batch, heads, kv heads, seq, head_dim)
    "smollm2-135m B16": (16, 9, 3, 2048, 64),
    "qwen2.5-0.5b B8": (8, 14, 2, 2048, 64),
    "qwen2.5-1.5b B8": (8, 12, 2, 2048, 128),
    "qwen2.5-3b B4": (4, 16, 2, 2048, 128),
}
BACKENDS = {"flash": SDPBackend.FLASH_ATTENTION, "cudnn": SDPBackend.CUDNN_ATTENTION,
            "efficient": SDPBackend.EFFICIENT_ATTENTION}


def timed(fn, reps: int = 10) -> float:
    for _ in range(3):
        fn()
    times = []
    for _ in range(reps):
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record()
        fn()
        e.record()
        e.synchronize()
        times.append(s.elapsed_time(e))
    return sorted(times)[reps // 2]


def run(shape, backend, native_gqa: bool) -> float:
    B, H, KV, T, D = shape
    q = torch.randn(B, H, T, D, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    k = torch.randn(B, KV, T, D, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    v = torch.randn(B, KV, T, D, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    g = torch.randn(B, H, T, D, device="cuda", dtype=torch.bfloat16)

    def step():
        with sdpa_kernel([backend]):
            if native_gqa:
                y = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
            else:
                kk, vv = k.repeat_interleave(H // KV, 1), v.repeat_interleave(H // KV, 1)
                y = F.scaled_dot_product_attention(q, kk, vv, is_causal=True)
        y.backward(g)

    return timed(step)


def main() -> None:
    print(f"{'shape':<18} {'backend':<10} {'gqa':<7} {'ms fwd+bwd':>10} {'TFLOP/s':>8}")
    for name, shape in SHAPES.items():
        B, H, KV, T, D = shape
        flops = 3.5 * 2 * B * H * T * T * D  # causal fwd (2*B*H*T*T*D) + bwd (2.5x fwd)
        for bname, backend in BACKENDS.items():
            for native in (True, False):
                try:
                    ms = run(shape, backend, native)
                    print(f"{name:<18} {bname:<10} {'native' if native else 'repeat':<7} {ms:>10.2f} "
                          f"{flops / ms / 1e9:>8.0f}", flush=True)
                except RuntimeError as err:  # noqa: PERF203 - a backend that refuses the shape
                    print(f"{name:<18} {bname:<10} {'native' if native else 'repeat':<7} refused: "
                          f"{str(err).splitlines()[0][:60]}", flush=True)


if __name__ == "__main__":
    main()
