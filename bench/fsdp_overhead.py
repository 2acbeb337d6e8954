"""What FSDP2 costs on one GPU: tokens/s of warmstart's plain path vs its FSDP2 path at world size 1.

Both rows run warmstart's own training step (``train_step``: bf16 autocast forward + loss,
backward, global-norm clip, the device-side divergence guard, fused AdamW with ``found_inf``,
``zero_grad``) on the model ``pretrain`` builds:

- ``plain``: ``--parallel none``: the fp32 model on the GPU, ``torch.compile`` of ``model.loss``.
- ``fsdp``: ``--parallel fsdp`` in a process group of one: built on the meta device,
  ``fully_shard`` per decoder layer + root with ``MixedPrecisionPolicy(bf16 params, fp32
  reduce)``, shards allocated on the GPU, compiled the same way.

Random token ids already on the device; warmup steps (which include compilation) excluded;
``torch.cuda.synchronize()`` brackets the timed steps. The issue's bar: fsdp >= 0.95 x plain.

    python bench/fsdp_overhead.py            # H100: writes bench/results/h100/fsdp_overhead.json

CPU smoke test: python bench/fsdp_overhead.py --device cpu --preset llama-tiny --seq-len 64 --batch-size 2 \
    --steps 2 --warmup 1 --compile off --out /tmp/fsdp_overhead.json
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import platform
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from warmstart.arch import get_preset  # noqa: E402
from warmstart.data import BatchSampler  # noqa: E402
from warmstart.runtime import amp_context  # noqa: E402
from warmstart.train.config import TrainConfig  # noqa: E402
from warmstart.train.distributed import setup_distributed  # noqa: E402
from warmstart.train.optim import Schedule, build_optimizer  # noqa: E402
from warmstart.train.parallel import compile_loss, parallelize, shard_model  # noqa: E402
from warmstart.train.source import Scratch, training_model  # noqa: E402
from warmstart.train.state import TrainState  # noqa: E402
from warmstart.train.step import DivergenceGuard, train_step  # noqa: E402

DEFAULT_BATCH = {"smollm2-135m": 32, "qwen2.5-0.5b": 16}  # as bench/train_throughput.py (H100 80GB)


def bench_one(preset: str, mode: str, *, device: str, seq_len: int, batch_size: int, steps: int, warmup: int,
              compile_: bool, dist, overrides: dict | None = None, profile_to: Path | None = None,
              vocab_size: int | None = None) -> dict:
    """One row: ``warmup`` untimed steps, then ``steps`` timed ones (``overrides``: more TrainConfig
    fields, e.g. activation_checkpointing); ``profile_to``: a torch.profiler summary of 3 more steps."""
    cfg = TrainConfig(preset=preset, device=device, compile=compile_, parallel=mode, seq_len=seq_len,
                      batch_size=batch_size, max_steps=steps, **(overrides or {}))
    mcfg = get_preset(preset)
    if vocab_size:  # as pretrain sizes a preset's embedding to its tokenizer
        mcfg = dataclasses.replace(mcfg, vocab_size=vocab_size)
    source = Scratch(tokenizer=None)
    shard = (lambda m: shard_model(m, cfg, dist)) if mode == "fsdp" else None
    model = training_model(source, mcfg, cfg, dist.device, shard=shard)
    par = parallelize(model, cfg, dist)
    opt = build_optimizer(model, lr=3e-4, weight_decay=0.1, betas=(0.9, 0.95), device=par.optimizer_device)
    state = TrainState(sampler=BatchSampler(1), data_fingerprint="bench", schedule=Schedule(3e-4, 0, 10**6, 0.1))
    guard = DivergenceGuard(dist.device, state, run_dir="bench", lr=3e-4, warmup_steps=0)
    loss_fn, amp = compile_loss(par, cfg), amp_context(dist.device, "auto")
    gen = torch.Generator().manual_seed(0)
    data = torch.randint(0, mcfg.vocab_size, (4, batch_size, seq_len + 1), generator=gen).to(dist.device)
    i = 0

    def next_batch():
        nonlocal i
        i += 1
        b = data[i % len(data)]
        return b[:, :-1], b[:, 1:]

    def run(n: int) -> torch.Tensor:
        for _ in range(n):
            loss, _ = train_step(loss_fn, opt, next_batch, grad_accum=1, clip=1.0, amp=amp, guard=guard, par=par)
        return loss

    sync = torch.cuda.synchronize if dist.device.type == "cuda" else (lambda: None)
    if dist.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dist.device)
    t0 = time.perf_counter()
    run(warmup)
    sync()
    warm_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    last = run(steps)
    sync()
    dt = time.perf_counter() - t0
    guard.check()
    if profile_to is not None:
        from _profile import profile_steps

        profile_steps(lambda _: run(1), [None], dist.device, profile_to)
    res = {"mode": mode, "preset": preset, "params": model.num_parameters(), "compile": compile_,
           "seq_len": seq_len, "batch_size": batch_size, "steps": steps, "warmup_steps": warmup,
           "warmup_seconds": round(warm_s, 2), "seconds": round(dt, 4),
           "tokens_per_s": round(steps * batch_size * seq_len / dt, 1), "ms_per_step": round(1000 * dt / steps, 2),
           "final_loss": float(last.item())}
    if dist.device.type == "cuda":
        res["peak_mem_gib"] = round(torch.cuda.max_memory_allocated(dist.device) / 2**30, 2)
    del model, par, opt, data, loss_fn
    gc.collect()
    if dist.device.type == "cuda":
        torch.cuda.empty_cache()
    torch._dynamo.reset()
    return res


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--preset", action="append", help="repeatable; default smollm2-135m and qwen2.5-0.5b")
    ap.add_argument("--seq-len", type=int, default=2048)
    ap.add_argument("--batch-size", type=int, default=None, help="default per preset (32 / 16)")
    ap.add_argument("--steps", type=int, default=30, help="timed steps")
    ap.add_argument("--warmup", type=int, default=8, help="untimed steps first (compilation included)")
    ap.add_argument("--compile", choices=["on", "off", "both"], default="on")
    ap.add_argument("--repeats", type=int, default=1, help="alternate plain/fsdp this many times per preset")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "h100" / "fsdp_overhead.json"))
    args = ap.parse_args(argv)

    dist = setup_distributed(args.device, want_group=True)  # a process group of one, for FSDP2's mesh
    if dist.device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    compiles = {"on": [True], "off": [False], "both": [False, True]}[args.compile]
    results = []
    for preset in args.preset or ["smollm2-135m", "qwen2.5-0.5b"]:
        bs = args.batch_size or DEFAULT_BATCH.get(preset, 8)
        for c in compiles:
            for _ in range(args.repeats):
                for mode in ("none", "fsdp"):
                    r = bench_one(preset, mode, device=args.device, seq_len=args.seq_len, batch_size=bs,
                                  steps=args.steps, warmup=args.warmup, compile_=c, dist=dist)
                    results.append(r)
                    print(json.dumps(r), flush=True)
    summary = []
    for preset in args.preset or ["smollm2-135m", "qwen2.5-0.5b"]:
        for c in compiles:
            best = {m: max(r["tokens_per_s"] for r in results if r["preset"] == preset and r["mode"] == m
                           and r["compile"] == c) for m in ("none", "fsdp")}
            ratio = best["fsdp"] / best["none"]
            summary.append({"preset": preset, "compile": c, "plain_tokens_per_s": best["none"],
                            "fsdp_tokens_per_s": best["fsdp"], "fsdp_over_plain": round(ratio, 4),
                            "within_5_percent": ratio >= 0.95})
            print(f"{preset:<14} compile={c!s:<5} plain {best['none']:>12,.0f} tok/s   fsdp {best['fsdp']:>12,.0f} "
                  f"tok/s   fsdp/plain {ratio:.3f} {'OK' if ratio >= 0.95 else 'OVER 5%'}")
    env = {"device": torch.cuda.get_device_name(dist.device) if dist.device.type == "cuda" else platform.processor(),
           "torch": torch.__version__, "cuda": torch.version.cuda, "python": platform.python_version(),
           "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    dist.close()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"env": env, "summary": summary, "results": results}, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
