"""Training-step throughput (tokens/s), MFU, time to the first step: warmstart beside litgpt and transformers.

Every variant times the same step, the one ``warmstart pretrain`` runs: forward + loss under bf16
autocast (fp32 master weights; fp32 on CPU), backward, global-norm clipping (``train.step.clip_gradients``), the
device-side divergence flag, fused AdamW (``found_inf`` wired; foreach AdamW on CPU),
``zero_grad``. Random token ids already on the device, the same batch for every variant.
``first_step_s`` is the first step from a built model (compilation included); warmup steps are
excluded from tokens/s; ``torch.cuda.synchronize()`` brackets the timed region.

Variants (``--variants``, comma separated):
  warmstart            blocks compiled one by one (train/compile.py) + fused LM head/loss (arch/loss.py)
  warmstart-inductor-ce  the same with the loss's per-chunk arithmetic through torch.compile, not Triton
  warmstart-eager      no compilation, fused LM head/loss (the default CPU path)
  warmstart-fp8        warmstart with --fp8 tensorwise: the blocks' linear layers through torchao's Float8Linear
  warmstart-fp8-rowwise  the same with --fp8 rowwise
  warmstart-logits     the path before issue 12: torch.compile(whole loss), fp32 logits + F.cross_entropy
  warmstart-logits-eager  the same without compilation
  litgpt               litgpt 0.5.13 GPT(Config.from_name(...)), torch.compile(model) and its
                       chunked_cross_entropy outside the graph, as litgpt's pretrain.py does
  litgpt-full          litgpt's model and F.cross_entropy(logits.float()) compiled as one graph
  transformers         transformers' model of the same shape (SDPA), eager
  transformers-compile the same through torch.compile(whole loss)

On the H100 (one lease, the same batch):

    python bench/train_throughput.py --preset smollm2-135m --batch-size 16 \\
        --variants warmstart,warmstart-logits,litgpt,litgpt-full --out bench/results/h100/side_by_side.json

CPU (llama-small B8x256):

    python bench/train_throughput.py --device cpu --preset llama-small --batch-size 8 --seq-len 256 \\
        --variants warmstart-eager,transformers --steps 5

``--optimizer adamw,adamw-bf16,adamw-8bit`` times each variant with each of pretrain's optimizers (the low-memory
ones through torchao, train/lowbit.py; the step then checks divergence on the host, as the trainer does). A
variant that runs out of memory is recorded as such (which combinations fit the Llama-3-8B shape:
``--preset llama3-8b --batch-size 2 --activation-checkpointing --variants warmstart-fp8 --optimizer adamw,adamw-8bit``).

Appends one JSON line per variant to ``--out`` (.jsonl) or writes one JSON document (.json).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import platform
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "bench"))

from _models import build_variant  # noqa: E402
from warmstart.arch import get_preset  # noqa: E402
from warmstart.train.optim import build_optimizer  # noqa: E402
from warmstart.train.step import clip_gradients  # noqa: E402
from warmstart.train.perf import flops_per_token, peak_flops  # noqa: E402

VARIANTS = ("warmstart", "warmstart-inductor-ce", "warmstart-eager", "warmstart-logits", "warmstart-logits-eager",
            "warmstart-fp8", "warmstart-fp8-rowwise", "litgpt", "litgpt-full", "transformers", "transformers-compile")
OPTIMIZERS = ("adamw", "adamw-bf16", "adamw-8bit")


def make_step(model, loss_fn, device: torch.device, bf16: bool, optimizer: str = "adamw"):
    """The trainer's step over ``model``'s parameters; returns (step(batch) -> loss, optimizer, flag)."""
    opt = build_optimizer(model, lr=3e-4, weight_decay=0.1, betas=(0.9, 0.95), device=device, kind=optimizer)
    params = [p for g in opt.param_groups for p in g["params"]]
    fused = bool(opt.defaults.get("fused"))  # else the trainer's guard reads the flag every step (a host sync)
    amp = (lambda: torch.autocast(device_type=device.type, dtype=torch.bfloat16)) if bf16 else contextlib.nullcontext
    bad_any = torch.zeros((), dtype=torch.float32, device=device)

    def step(batch: torch.Tensor) -> torch.Tensor:
        nonlocal bad_any
        with amp():
            loss = loss_fn(batch[:, :-1], batch[:, 1:])
        loss.backward()
        gnorm = clip_gradients(params, 1.0, opt)  # the trainer's clip (train/step.py)
        ok = torch.isfinite(loss.detach()) & torch.isfinite(gnorm)
        bad_any = torch.maximum(bad_any, (~ok).float())
        if fused:
            opt.found_inf = bad_any
        elif bool(bad_any):
            return loss.detach()  # the trainer raises here; the bench reports it as diverged
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss.detach()

    return step, opt, lambda: bool(bad_any.item() > 0)


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench_one(variant: str, preset: str, *, device: torch.device, seq_len: int, batch_size: int, steps: int,
              warmup: int, bf16: bool, act_ckpt: bool, seed: int = 0, profile_dir: Path | None = None,
              optimizer: str = "adamw") -> dict:
    cfg = get_preset(preset)
    torch.manual_seed(seed)
    gen = torch.Generator(device="cpu").manual_seed(seed)
    data = torch.randint(0, cfg.vocab_size, (4, batch_size, seq_len + 1), generator=gen).to(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    model, loss_fn, n_params = build_variant(variant, preset, cfg, device=device, seq_len=seq_len, act_ckpt=act_ckpt,
                                             seed=seed)
    step, opt, diverged = make_step(model, loss_fn, device, bf16, optimizer)
    _sync(device)
    t0 = time.perf_counter()
    step(data[0])
    _sync(device)
    first = time.perf_counter() - t0
    for i in range(1, warmup):
        step(data[i % 4])
    _sync(device)
    t0 = time.perf_counter()
    for i in range(steps):
        last = step(data[i % 4])
    _sync(device)
    dt = time.perf_counter() - t0
    res = {"variant": variant, "preset": preset, "optimizer": optimizer, "params": n_params, "bf16_autocast": bf16,
           "activation_checkpointing": act_ckpt, "seq_len": seq_len, "batch_size": batch_size, "steps": steps,
           "warmup_steps": warmup, "first_step_s": round(first, 2), "seconds": round(dt, 4),
           "tokens_per_s": round(steps * batch_size * seq_len / dt, 1), "ms_per_step": round(1000 * dt / steps, 2),
           "final_loss": float(last.item()), "diverged": diverged()}
    if device.type == "cuda":
        res["peak_mem_gib"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 2)
        res["tflops"] = round(flops_per_token(cfg, seq_len) * res["tokens_per_s"] / 1e12, 1)
        peak = peak_flops(device, torch.bfloat16 if bf16 else torch.float32)
        if peak:
            res["mfu"] = round(res["tflops"] * 1e12 / peak[0], 4)
    if profile_dir is not None:
        from _profile import profile_steps

        res["profile"] = profile_steps(step, data, device, profile_dir / f"profile-{variant}-{preset}.txt")
    del model, opt, loss_fn, step, data
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    torch._dynamo.reset()
    return res


def matmul_ceiling(device: torch.device, n: int = 8192) -> float:
    """Measured bf16 matmul TFLOP/s (random data, n x n x n, median of 10)."""
    a = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    times = []
    for _ in range(10):
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record()
        a @ b
        e.record()
        e.synchronize()
        times.append(s.elapsed_time(e) / 1000)
    return round(2 * n**3 / sorted(times)[5] / 1e12, 1)


def env_info(device: torch.device) -> dict:
    env = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
           "torch": torch.__version__, "python": platform.python_version(), "cuda": torch.version.cuda,
           "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "threads": torch.get_num_threads()}
    if device.type == "cuda":
        env["matmul_tflops_measured"] = matmul_ceiling(device)
        peak = peak_flops(device)
        env["peak"] = peak[1] if peak else None
    return env


def print_table(results: list[dict]) -> None:
    header = (f"{'variant':<22} {'optimizer':<10} {'preset':<13} {'B':>3} {'AC':>2} {'tokens/s':>10} {'ms/step':>8} "
              f"{'1st step s':>10} {'MFU':>6} {'GiB':>6}")
    print("\n" + header + "\n" + "-" * len(header))
    for r in results:
        head = (f"{r['variant']:<22} {r.get('optimizer', 'adamw'):<10} {r['preset']:<13} {r['batch_size']:>3} "
                f"{int(r.get('activation_checkpointing', 0)):>2}")
        if "error" in r:
            print(f"{head}  {r['error'][:70]}")
            continue
        mfu = f"{r['mfu']:.1%}" if "mfu" in r else "-"
        print(f"{head} {r['tokens_per_s']:>10,.0f} {r['ms_per_step']:>8.1f} {r['first_step_s']:>10.1f} {mfu:>6} "
              f"{r.get('peak_mem_gib', float('nan')):>6}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--preset", action="append", help="repeatable; default smollm2-135m and qwen2.5-0.5b")
    ap.add_argument("--seq-len", type=int, default=2048)
    ap.add_argument("--batch-size", type=int, action="append", help="repeatable (one per preset, or one for all)")
    ap.add_argument("--steps", type=int, default=20, help="timed steps")
    ap.add_argument("--warmup", type=int, default=None, help="untimed steps first, the first included "
                                                               "(default 5 CUDA, 2 CPU)")
    ap.add_argument("--variants", default=None, help=f"comma separated, of {', '.join(VARIANTS)}")
    ap.add_argument("--dtype", choices=["bf16", "fp32"], default=None, help="default bf16 on CUDA, fp32 on CPU")
    ap.add_argument("--activation-checkpointing", action="store_true")
    ap.add_argument("--optimizer", default="adamw", help=f"comma separated, of {', '.join(OPTIMIZERS)}")
    ap.add_argument("--repeat", type=int, default=1, help="run the variant list this many times, interleaved")
    ap.add_argument("--profile-dir", default=None, help="also profile 3 steps of each variant; tables go here")
    ap.add_argument("--profile-variants", default=None, help="comma separated: profile only these")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "train_throughput.json"))
    args = ap.parse_args(argv)

    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    presets = args.preset or ["smollm2-135m", "qwen2.5-0.5b"]
    sizes = args.batch_size or [16 if device.type == "cuda" else 8]
    sizes = sizes * len(presets) if len(sizes) == 1 else sizes
    variants = (args.variants or ("warmstart,warmstart-logits,litgpt" if device.type == "cuda"
                                  else "warmstart-eager,transformers")).split(",")
    unknown = sorted(set(variants) - set(VARIANTS))
    if unknown:
        ap.error(f"unknown variants {unknown}")
    optimizers = args.optimizer.split(",")
    if set(optimizers) - set(OPTIMIZERS):
        ap.error(f"unknown optimizers {sorted(set(optimizers) - set(OPTIMIZERS))}")
    bf16 = (args.dtype or ("bf16" if device.type == "cuda" else "fp32")) == "bf16"
    warmup = args.warmup if args.warmup is not None else (5 if device.type == "cuda" else 2)
    profile_dir = Path(args.profile_dir) if args.profile_dir else None
    profiled = set(args.profile_variants.split(",") if args.profile_variants else variants)
    if profile_dir:
        profile_dir.mkdir(parents=True, exist_ok=True)
    env = env_info(device)
    print(json.dumps(env), flush=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    results = []
    for _ in range(args.repeat):
        for preset, bs in zip(presets, sizes):
            for v, o in ((v, o) for v in variants for o in optimizers):
                try:
                    r = bench_one(v, preset, device=device, seq_len=args.seq_len, batch_size=bs, steps=args.steps,
                                  warmup=warmup, bf16=bf16, act_ckpt=args.activation_checkpointing,
                                  profile_dir=profile_dir if v in profiled else None, optimizer=o)
                except torch.OutOfMemoryError as err:  # noqa: PERF203
                    r = {"variant": v, "preset": preset, "optimizer": o, "batch_size": bs,
                         "activation_checkpointing": args.activation_checkpointing,
                         "peak_mem_gib": round(torch.cuda.max_memory_allocated(device) / 2**30, 2),
                         "error": f"OOM: {err}"[:300]}
                    gc.collect()
                    torch.cuda.empty_cache()
                    torch._dynamo.reset()
                results.append(r)
                print(json.dumps(r), flush=True)
                if out.suffix == ".jsonl":
                    with out.open("a") as fh:
                        fh.write(json.dumps({"env": env, **r}) + "\n")
    print_table(results)
    if out.suffix != ".jsonl":
        out.write_text(json.dumps({"env": env, "results": results}, indent=2) + "\n")
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
