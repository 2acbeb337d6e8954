"""CPU training step: warmstart's default path beside transformers eager, taking turns, in one run.

On a shared machine the load of other processes changes from second to second, so the variants
take turns, round after round, and each is summarised by the median of its step times (and the
quartiles). The step is the trainer's (fp32, forward + loss, backward, clip, foreach AdamW).

Each variant runs in its own process, as a user would run it: warmstart's variants import
warmstart first (which asks OpenMP to let waiting threads sleep, src/warmstart/__init__.py); the
others see OpenMP's defaults (``OMP_WAIT_POLICY`` left to the runtime). ``--same-process`` runs
all variants in this process instead, under one environment (the code alone compared).

    python bench/cpu_speed.py --preset llama-small --batch-size 8 --seq-len 256 --rounds 8 \\
        --variants warmstart-eager,warmstart,transformers --out bench/results/cpu/cpu_speed.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _child(variant: str, preset: str, batch: int, seq: int, warmup: int, steps: int, seed_round: int) -> dict:
    """Build ``variant`` and time ``steps`` trainer steps after ``warmup``; (wall seconds per step)."""
    if variant.startswith("warmstart"):
        import warmstart  # noqa: F401 - before torch, as the CLI does
    policy = os.environ.get("OMP_WAIT_POLICY")  # what OpenMP reads when torch loads it, next
    import torch

    sys.path[:0] = [str(ROOT / "src"), str(ROOT / "bench")]
    from _models import build_variant
    from train_throughput import make_step

    from warmstart.arch import get_preset

    cfg = get_preset(preset)
    data = torch.randint(0, cfg.vocab_size, (4, batch, seq + 1), generator=torch.Generator().manual_seed(seed_round))
    torch.manual_seed(0)
    model, loss_fn, _ = build_variant(variant, preset, cfg, device=torch.device("cpu"), seq_len=seq, act_ckpt=False,
                                      seed=0)
    step = make_step(model, loss_fn, torch.device("cpu"), bf16=False)[0]
    t0 = time.perf_counter()
    for i in range(warmup):
        step(data[i % 4])
    warm = time.perf_counter() - t0
    times = []
    for i in range(steps):
        t0 = time.perf_counter()
        step(data[i % 4])
        times.append(time.perf_counter() - t0)
    return {"warmup_s": warm, "step_s": times, "threads": torch.get_num_threads(), "omp_wait_policy": policy}


def _run_isolated(variant: str, args, r: int) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), env.get("PYTHONPATH", "")])
    if not variant.startswith("warmstart"):
        env.pop("OMP_WAIT_POLICY", None)  # torch (OpenMP) loads before warmstart in that child: the defaults
    cmd = [sys.executable, __file__, "--child", variant, "--preset", args.preset, "--batch-size", str(args.batch_size),
           "--seq-len", str(args.seq_len), "--warmup", str(args.warmup), "--steps-per-turn", str(args.steps_per_turn),
           "--round", str(r)]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def _summary(variant: str, runs: list[dict], tokens: int, ref: float) -> dict:
    ts = [t for run in runs for t in run["step_s"]]
    q = statistics.quantiles(ts, n=4) if len(ts) > 1 else [ts[0]] * 3
    med = statistics.median(ts)
    return {"variant": variant, "median_step_s": round(med, 4), "tokens_per_s": round(tokens / med, 1),
            "tokens_per_s_q1_q3": [round(tokens / q[2], 1), round(tokens / q[0], 1)], "vs_last": round(ref / med, 3),
            "warmup_s": round(statistics.median(run["warmup_s"] for run in runs), 2), "threads": runs[0]["threads"],
            "omp_wait_policy": runs[0]["omp_wait_policy"], "step_s": [round(t, 4) for t in ts]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="llama-small")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--seq-len", type=int, default=256)
    ap.add_argument("--rounds", type=int, default=6, help="turns of each variant")
    ap.add_argument("--steps-per-turn", type=int, default=3, help="timed steps in each turn")
    ap.add_argument("--warmup", type=int, default=2, help="untimed steps first in each turn (compilation)")
    ap.add_argument("--variants", default="warmstart-eager,warmstart,transformers")
    ap.add_argument("--same-process", action="store_true", help="no child processes: one environment for all")
    ap.add_argument("--out", default=None)
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--round", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        print(json.dumps(_child(args.child, args.preset, args.batch_size, args.seq_len, args.warmup,
                                args.steps_per_turn, args.round)))
        return 0
    variants = args.variants.split(",")
    runs: dict[str, list[dict]] = {v: [] for v in variants}
    for r in range(args.rounds):
        for v in variants:
            if args.same_process:
                runs[v].append(_child(v, args.preset, args.batch_size, args.seq_len, args.warmup,
                                      args.steps_per_turn, r))
            else:
                runs[v].append(_run_isolated(v, args, r))
    tokens = args.batch_size * args.seq_len
    ref = statistics.median(t for run in runs[variants[-1]] for t in run["step_s"])
    rows = [_summary(v, runs[v], tokens, ref) for v in variants]
    print(f"{'variant':<22} {'threads':>7} {'OMP wait':>8} {'tok/s median':>12} {'q1..q3 tok/s':>17} "
          f"{'x last':>7} {'warmup s':>9}")
    for row in rows:
        q1, q3 = row["tokens_per_s_q1_q3"]
        print(f"{row['variant']:<22} {row['threads']:>7} {row['omp_wait_policy'] or 'default':>8} "
              f"{row['tokens_per_s']:>12,.0f} {q1:>8,.0f}..{q3:<8,.0f} {row['vs_last']:>7.2f} {row['warmup_s']:>9}")
    if args.out:
        env = {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
               "load_average_at_end": os.getloadavg(), "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
               "preset": args.preset, "batch_size": args.batch_size, "seq_len": args.seq_len, "rounds": args.rounds,
               "steps_per_turn": args.steps_per_turn, "isolated_processes": not args.same_process}
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps({"env": env, "results": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
