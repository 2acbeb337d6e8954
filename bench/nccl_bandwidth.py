"""Bus bandwidth of the collectives FSDP2 and DDP issue, between the GPUs torchrun starts (issue 10).

    torchrun --standalone --nproc-per-node 2 bench/nccl_bandwidth.py

For each size: all-gather of bf16 (FSDP2's parameter gather), reduce-scatter of fp32 (its gradient
reduction), all-reduce of fp32 (DDP's buckets). Bus bandwidth as nccl-tests defines it: bytes x
(n - 1) / n / time for all-gather and reduce-scatter, x 2 (n - 1) / n for all-reduce.
"""

from __future__ import annotations

import os
import time

import torch
import torch.distributed as dist


def timed(fn, iters: int = 10) -> float:
    fn()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(iters):
        fn()
    torch.cuda.synchronize()
    return (time.perf_counter() - t0) / iters


def main() -> None:
    dist.init_process_group("nccl")
    rank, n = dist.get_rank(), dist.get_world_size()
    torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    for mib in (1, 32, 256, 1024):
        numel = mib * 2**20 // 2
        full = torch.empty(numel, dtype=torch.bfloat16, device="cuda")
        part = torch.ones(numel // n, dtype=torch.bfloat16, device="cuda")
        ag = timed(lambda: dist.all_gather_into_tensor(full, part))
        g32 = torch.ones(numel, dtype=torch.float32, device="cuda")
        out32 = torch.empty(numel // n, dtype=torch.float32, device="cuda")
        rs = timed(lambda: dist.reduce_scatter_tensor(out32, g32))
        ar = timed(lambda: dist.all_reduce(g32))
        f = (n - 1) / n
        if rank == 0:
            print(f"{mib:>5} MiB (bf16 gathered; fp32 {2 * mib} MiB reduced): all-gather {mib * 2**20 * f / ag / 1e9:7.1f} GB/s"
                  f"  reduce-scatter {2 * mib * 2**20 * f / rs / 1e9:7.1f} GB/s"
                  f"  all-reduce {2 * mib * 2**20 * 2 * f / ar / 1e9:7.1f} GB/s", flush=True)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
