"""Weak scaling of warmstart's training step over the GPUs of one host (issue 10).

Run it under torchrun, once per GPU count, with the same micro-batch per GPU; each row is one
variant of the parallel setup, built, compiled and timed in turn by ``fsdp_overhead.bench_one``
(warmstart's own ``train_step`` on the model ``pretrain`` builds; random token ids on the device):

    torchrun --standalone --nproc-per-node 1 bench/scaling.py --preset qwen2.5-0.5b --batch-size 8 --out r1.jsonl
    torchrun --standalone --nproc-per-node 2 bench/scaling.py --preset qwen2.5-0.5b --batch-size 8 --out r2.jsonl
    python bench/scaling.py --summary r1.jsonl r2.jsonl      # tokens/s per GPU, MFU, memory, efficiency

A variant is ``MODE[:KEY=VALUE,...]``: MODE is fsdp, ddp or none; keys ``reshard`` (FSDP's
``reshard_after_forward`` for the decoder layers: ``yes``, ``no`` or ``auto`` = what ``pretrain``
does), ``reduce`` (fp32 or bf16 gradient reduction), ``ac`` (activation checkpointing, 1/0),
``compile`` (1/0), ``cmode`` (torch.compile's mode for the blocks, e.g. reduce-overhead), ``profile`` (1: a torch.profiler summary of three more steps in the --out folder).

CPU smoke test (gloo): torchrun --nproc-per-node 2 bench/scaling.py --device cpu --preset llama-tiny \
    --seq-len 64 --batch-size 2 --steps 2 --warmup 1 --variant fsdp:compile=0 --out /tmp/scaling.jsonl
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import json
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "bench"))

from fsdp_overhead import bench_one  # noqa: E402

from warmstart.arch import get_preset  # noqa: E402
from warmstart.train import parallel as parallel_mod  # noqa: E402
from warmstart.train.distributed import setup_distributed  # noqa: E402
from warmstart.train.perf import flops_per_token, mfu, peak_flops  # noqa: E402


def parse_variant(text: str) -> tuple[str, dict[str, str]]:
    mode, _, rest = text.partition(":")
    keys = dict(kv.split("=", 1) for kv in rest.split(",") if kv)
    unknown = set(keys) - {"reshard", "reduce", "ac", "compile", "profile", "cmode"}
    if mode not in ("fsdp", "ddp", "none") or unknown:
        raise SystemExit(f"bad variant {text!r}")
    return mode, keys


@contextlib.contextmanager
def fsdp_settings(reshard: str, reduce: str):
    """Run ``shard_model`` with another ``reshard_after_forward`` for the layers / reduce dtype."""
    import torch.distributed.fsdp as F

    orig_fs, orig_mp = F.fully_shard, F.MixedPrecisionPolicy

    def fully_shard(module, **kw):
        if reshard != "auto" and kw.get("reshard_after_forward") is not None and module is not None \
                and type(module).__name__ != "CausalLM":
            kw["reshard_after_forward"] = reshard == "yes"
        return orig_fs(module, **kw)

    def policy(**kw):
        if reduce == "bf16":
            kw["reduce_dtype"] = torch.bfloat16
        return orig_mp(**kw)

    F.fully_shard, F.MixedPrecisionPolicy = fully_shard, policy
    try:
        yield
    finally:
        F.fully_shard, F.MixedPrecisionPolicy = orig_fs, orig_mp


def run_variant(text: str, args, dist) -> dict:
    mode, keys = parse_variant(text)
    overrides = {"activation_checkpointing": keys.get("ac", "0") == "1"}
    name = "".join(c if c.isalnum() else "_" for c in text)
    prof = None  # every rank profiles (the collectives must match); rank 0 writes
    if keys.get("profile") == "1":
        prof = Path(args.out).with_name(f"profile-{args.preset}-w{dist.world_size}-{name}.txt") if dist.is_main \
            else Path("/dev/null")
    orig_compile = parallel_mod.compile_blocks
    if keys.get("cmode"):
        parallel_mod.compile_blocks = functools.partial(orig_compile, mode=keys["cmode"])
    with fsdp_settings(keys.get("reshard", "auto"), keys.get("reduce", "fp32")):
        r = bench_one(args.preset, mode, device=args.device, seq_len=args.seq_len, batch_size=args.batch_size,
                      steps=args.steps, warmup=args.warmup, compile_=keys.get("compile", "1") == "1", dist=dist,
                      overrides=overrides, profile_to=prof, vocab_size=args.vocab_size)
    parallel_mod.compile_blocks = orig_compile
    mcfg = dataclasses.replace(get_preset(args.preset), **({"vocab_size": args.vocab_size} if args.vocab_size else {}))
    per_gpu = r["tokens_per_s"]  # each rank times its own steps of batch_size x seq_len tokens
    peak = peak_flops(dist.device)
    r.update(variant=text, world_size=dist.world_size, vocab_size=mcfg.vocab_size, tokens_per_s_per_gpu=per_gpu,
             tokens_per_s=round(per_gpu * dist.world_size, 1),
             mfu=None if peak is None else round(mfu(per_gpu, flops_per_token(mcfg, args.seq_len), peak[0]), 4))
    if dist.device.type == "cuda":
        r["peak_mem_gib_max_rank"] = _max_over_ranks(r["peak_mem_gib"], dist)
        r["device"] = torch.cuda.get_device_name(dist.device)
    return r


def _max_over_ranks(x: float, dist) -> float:
    t = torch.tensor([x], device=dist.device)
    dist.all_reduce_(t, "max")
    return round(float(t.item()), 2)


def summarize(paths: list[str]) -> None:
    """The table: per-GPU tokens/s over the 1-GPU run of the same kind (FSDP2 over FSDP2 at world size 1,
    DDP over the plain step; the newest such row) and over the best 1-GPU row."""
    rows = [json.loads(line) for p in paths for line in Path(p).read_text().splitlines() if line.strip()]
    same: dict = {}
    best: dict = {}
    for r in rows:
        if r["world_size"] == 1:
            key = (r["preset"], r["batch_size"], r.get("vocab_size"))
            same[key + (r["mode"],)] = r["tokens_per_s_per_gpu"]
            best[key] = max(best.get(key, 0.0), r["tokens_per_s_per_gpu"])
    print(f"{'preset':<14}{'B':>3}{'vocab':>8}{'GPUs':>5}  {'variant':<28}{'tok/s':>10}{'per GPU':>10}{'MFU':>7}"
          f"{'GiB':>7}{'eff same':>9}{'eff best':>9}")
    for r in rows:
        key = (r["preset"], r["batch_size"], r.get("vocab_size"))
        one = same.get(key + ({"ddp": "none"}.get(r["mode"], r["mode"]),))
        eff = [f"{r['tokens_per_s_per_gpu'] / b:.3f}" if b else "n/a" for b in (one, best.get(key))]
        m = f"{100 * r['mfu']:.1f}%" if r.get("mfu") is not None else "n/a"
        print(f"{r['preset']:<14}{r['batch_size']:>3}{r.get('vocab_size') or '':>8}{r['world_size']:>5}  "
              f"{r['variant']:<28}{r['tokens_per_s']:>10,.0f}{r['tokens_per_s_per_gpu']:>10,.0f}{m:>7}"
              f"{r.get('peak_mem_gib_max_rank', r.get('peak_mem_gib', 0)):>7}{eff[0]:>9}{eff[1]:>9}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--summary", nargs="+", help="print the table of these result files and exit")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--preset", default="qwen2.5-0.5b")
    ap.add_argument("--seq-len", type=int, default=2048)
    ap.add_argument("--batch-size", type=int, default=8, help="micro-batch per GPU")
    ap.add_argument("--vocab-size", type=int, default=None, help="the embedding's rows (default: the preset's)")
    ap.add_argument("--steps", type=int, default=15)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--variant", action="append", help="repeatable; default fsdp")
    ap.add_argument("--out", default="scaling.jsonl")
    args = ap.parse_args(argv)
    if args.summary:
        summarize(args.summary)
        return 0
    dist = setup_distributed(args.device, want_group=True)
    if dist.device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    for text in args.variant or ["fsdp"]:
        r = run_variant(text, args, dist)
        r["created"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        if dist.is_main:
            print(json.dumps(r), flush=True)
            with open(args.out, "a") as f:
                f.write(json.dumps(r) + "\n")
    dist.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
