"""Long windows on one GPU: tokens/s and peak memory of causal vs document attention at 8k, 16k and 32k.

The step is the trainer's (``train_throughput.make_step``: bf16 autocast over fp32 master weights, the fused
LM head + loss, global-norm clipping, fused AdamW) on a model of a preset's shape with random weights (a
warm start's step costs the same: only the values differ), blocks compiled one by one (``--compile``'s
regional compilation) with activation checkpointing inside them, batch 1.

Each window packs documents whose lengths are drawn from an exponential of mean ``--doc-mean`` tokens,
each ended by the separator; the same windows serve both attentions. ``causal`` is SDPA's causal
kernel with window positions, ``document`` FlexAttention's block-causal mask with document positions;
``document-1doc`` (at the first length) times the document path on windows of a single document (no block
skipped beyond the causal ones: FlexAttention against SDPA on the same work). Configurations run in order; one that fails or would start past ``--budget-s`` is written
with its error and the rest go on. One JSON line per configuration is appended to ``--out`` as it ends.

    python bench/long_context.py --preset qwen2.5-0.5b --seq-len 8192 --seq-len 16384 --seq-len 32768 \\
        --out bench/results/h200/issue24/long_qwen05.jsonl

CPU dry run (tiny shapes, SDPA's boolean mask instead of FlexAttention):

    python bench/long_context.py --device cpu --preset qwen2-tiny --seq-len 256 --steps 2 --warmup 1 \\
        --doc-mean 64 --no-compile --out /tmp/long.jsonl
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import time
import traceback
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "bench"))

from train_throughput import make_step  # noqa: E402
from warmstart.arch import CausalLM, get_preset  # noqa: E402
from warmstart.arch.attention import Packing  # noqa: E402
from warmstart.train.compile import compile_blocks  # noqa: E402
from warmstart.train.perf import flops_per_token  # noqa: E402

SEP = 0  # the separator id of the packed windows
MODES = {"causal": Packing("causal", "window", SEP), "document": Packing("document", "document", SEP),
         "document-1doc": Packing("document", "document", SEP)}


def windows(n: int, seq_len: int, vocab: int, doc_mean: float | None, seed: int) -> torch.Tensor:
    """``n`` windows of ``seq_len + 1`` random ids; separators end documents of exponential lengths
    (mean ``doc_mean``; None: one document a window)."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, vocab, (n, seq_len + 1), generator=g)
    if doc_mean:
        for row in ids:
            pos = 0
            while True:
                pos += 1 + int(torch.empty(1).exponential_(1 / doc_mean, generator=g).item())
                if pos >= seq_len:
                    break
                row[pos] = SEP
    return ids


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench_one(preset: str, seq_len: int, mode: str, args, device: torch.device) -> dict:
    cfg = get_preset(preset)
    cfg = cfg.replace(max_position_embeddings=max(cfg.max_position_embeddings, seq_len))
    doc_mean = None if mode == "document-1doc" else args.doc_mean
    data = windows(4, seq_len, cfg.vocab_size, doc_mean, args.seed).to(device)
    docs_per_window = float((data[:, :-1] == SEP).sum(1).float().mean()) + 1
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    torch.manual_seed(args.seed)
    model = CausalLM(cfg)
    model.reset_parameters(args.seed)
    model = model.to(device=device, dtype=torch.float32).train()
    model.activation_checkpointing = args.activation_checkpointing
    model.packing = MODES[mode]
    if args.compile:
        compile_blocks(model)
    step, opt, diverged = make_step(model, model.loss, device, bf16=device.type == "cuda")
    t0 = time.perf_counter()
    step(data[0:1])
    _sync(device)
    first = time.perf_counter() - t0
    for i in range(1, args.warmup):
        step(data[i % 4:i % 4 + 1])
    _sync(device)
    t0 = time.perf_counter()
    for i in range(args.steps):
        last = step(data[i % 4:i % 4 + 1])
    _sync(device)
    dt = time.perf_counter() - t0
    res = {"preset": preset, "params": model.num_parameters(), "seq_len": seq_len, "batch_size": 1, "mode": mode,
           "attention": MODES[mode].attention, "positions": MODES[mode].positions,
           "docs_per_window": round(docs_per_window, 1), "compile": args.compile,
           "activation_checkpointing": args.activation_checkpointing, "steps": args.steps, "warmup": args.warmup,
           "first_step_s": round(first, 2), "tokens_per_s": round(args.steps * seq_len / dt, 1),
           "ms_per_step": round(1000 * dt / args.steps, 2), "final_loss": float(last.item()),
           "diverged": diverged()}
    if device.type == "cuda":
        res["peak_mem_gib"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 2)
        res["tflops"] = round(flops_per_token(cfg, seq_len) * res["tokens_per_s"] / 1e12, 1)
    del model, opt, step, data
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    torch._dynamo.reset()  # the next configuration compiles its own static shapes (no automatic dynamic)
    return res


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--preset", default="qwen2.5-0.5b")
    ap.add_argument("--seq-len", type=int, action="append", help="repeatable (default 8192, 16384, 32768)")
    ap.add_argument("--modes", default="causal,document", help=f"comma separated, of {', '.join(MODES)}")
    ap.add_argument("--first-only", default="document-1doc", help="modes run at the first --seq-len alone")
    ap.add_argument("--doc-mean", type=float, default=2048.0, help="mean document length in tokens")
    ap.add_argument("--steps", type=int, default=4, help="timed steps")
    ap.add_argument("--warmup", type=int, default=2, help="untimed steps first, the first (compiling) included")
    ap.add_argument("--compile", action=argparse.BooleanOptionalAction, default=True)
    ap.add_argument("--activation-checkpointing", action=argparse.BooleanOptionalAction, default=True)
    ap.add_argument("--budget-s", type=float, default=None, help="start no configuration after this many seconds")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
    started = time.perf_counter()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    lengths = args.seq_len or [8192, 16384, 32768]
    for seq_len in lengths:
        extra = [m for m in args.first_only.split(",") if m] if seq_len == lengths[0] else []
        for mode in [*args.modes.split(","), *extra]:
            if args.budget_s is not None and time.perf_counter() - started > args.budget_s:
                res = {"preset": args.preset, "seq_len": seq_len, "mode": mode, "error": "skipped: --budget-s spent"}
            else:
                try:
                    res = bench_one(args.preset, seq_len, mode, args, device)
                except Exception as err:  # keep going: an out-of-memory at 32k must not lose the rest
                    res = {"preset": args.preset, "seq_len": seq_len, "mode": mode,
                           "error": f"{type(err).__name__}: {err}"[:600], "trace": traceback.format_exc()[-2000:]}
                    gc.collect()
                    if device.type == "cuda":
                        torch.cuda.empty_cache()
            res["device"] = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
            res["torch"] = torch.__version__
            with out.open("a") as fh:
                fh.write(json.dumps(res) + "\n")
            print(json.dumps({k: v for k, v in res.items() if k != "trace"}), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
