"""The fused LM head + loss on CPU by chunk size, against the unfused head + ``F.cross_entropy``.

Forward + backward of ``linear_cross_entropy(h, W, y)`` for N rows, vocabulary V and hidden d (median of 5
after one warmup), one line per ``CHUNK_ELEMENTS["cpu"]`` value. It picked the CPU chunk in arch/loss.py.

    python bench/cpu_loss_chunks.py                  # SmolLM2's head at make demo's batch: 1024 x 49152 x 576
    python bench/cpu_loss_chunks.py 2048 8192 256    # llama-small at B8x256
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))
import warmstart.arch.loss as L  # noqa: E402


def main(argv: list[str]) -> None:
    n, v, d = (int(a) for a in argv) if argv else (1024, 49152, 576)
    torch.manual_seed(0)
    h = torch.randn(n, d, requires_grad=True)
    w = (torch.randn(v, d) * 0.02).requires_grad_()
    t = torch.randint(0, v, (n,))

    def bench(fn, reps: int = 5) -> float:
        times = []
        for _ in range(reps + 1):
            h.grad = w.grad = None
            t0 = time.perf_counter()
            fn().backward()
            times.append(time.perf_counter() - t0)
        return sorted(times[1:])[reps // 2]

    print(f"N={n} V={v} d={d}, {torch.get_num_threads()} threads")
    print(f"unfused (logits + F.cross_entropy)  {bench(lambda: F.cross_entropy((h @ w.T).float(), t)):.3f} s")
    default = L.CHUNK_ELEMENTS["cpu"]
    for chunk in (2**21, 2**23, 2**25, 2**27):
        L.CHUNK_ELEMENTS["cpu"] = chunk
        mark = "  (default)" if chunk == default else ""
        print(f"fused, chunk 2^{chunk.bit_length() - 1:<2} elements       "
              f"{bench(lambda: L.linear_cross_entropy(h, w, t, -100)):.3f} s{mark}")
    L.CHUNK_ELEMENTS["cpu"] = default


if __name__ == "__main__":
    main(sys.argv[1:])
