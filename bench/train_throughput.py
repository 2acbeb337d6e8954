"""Training-step throughput (tokens/s) of warmstart's trainer step.

The timed step is the one ``warmstart pretrain`` runs: forward + loss under bf16 autocast
(fp32 master weights), backward, global-norm gradient clipping, the device-side divergence
flag, fused AdamW step (``found_inf`` wired), ``zero_grad``. Data are random token ids already
on the device. Warmup steps (which include torch.compile's compilation) are excluded;
``torch.cuda.synchronize()`` brackets the timed region.

On the H100 (the SPEC §7 numbers):

    python bench/train_throughput.py --device cuda

CPU smoke test (slow, tiny shape):

    python bench/train_throughput.py --device cpu --preset llama-tiny --steps 3

Prints a table and writes bench/results/train_throughput.json.
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

from warmstart.arch import CausalLM, get_preset  # noqa: E402
from warmstart.train.optim import build_optimizer  # noqa: E402

DEFAULT_BATCH = {"smollm2-135m": 32, "qwen2.5-0.5b": 16}  # measured best fits on an H100 80GB


def transformers_model(cfg):
    """The same shape built by transformers (SDPA attention): the side-by-side baseline."""
    import torch.nn.functional as F
    from transformers import AutoConfig, AutoModelForCausalLM

    d = cfg.to_hf_config()
    model_type = d.pop("model_type")
    d.pop("architectures")
    hf = AutoModelForCausalLM.from_config(AutoConfig.for_model(model_type, **d), attn_implementation="sdpa")

    def loss(x, y):
        logits = hf(input_ids=x).logits
        return F.cross_entropy(logits.reshape(-1, logits.size(-1)).float(), y.reshape(-1))

    hf.loss = loss
    return hf


def bench_one(preset: str, *, device: torch.device, seq_len: int, batch_size: int, steps: int, warmup: int,
              compile_: bool, bf16: bool, act_ckpt: bool, seed: int = 0, impl: str = "warmstart") -> dict:
    cfg = get_preset(preset)
    torch.manual_seed(seed)
    if impl == "transformers":
        model = transformers_model(cfg)
        if act_ckpt:
            model.gradient_checkpointing_enable()
    else:
        model = CausalLM(cfg)
        model.reset_parameters(seed)
        model.activation_checkpointing = act_ckpt
    model = model.to(device=device, dtype=torch.float32).train()
    opt = build_optimizer(model, lr=3e-4, weight_decay=0.1, betas=(0.9, 0.95), device=device)
    fused = device.type == "cuda"
    params = [p for g in opt.param_groups for p in g["params"]]
    loss_fn = torch.compile(model.loss) if compile_ else model.loss
    amp = (lambda: torch.autocast(device_type=device.type, dtype=torch.bfloat16)) if bf16 else contextlib.nullcontext
    gen = torch.Generator(device="cpu").manual_seed(seed)
    n_batches = 4
    data = torch.randint(0, cfg.vocab_size, (n_batches, batch_size, seq_len + 1), generator=gen).to(device)
    bad_any = torch.zeros((), dtype=torch.float32, device=device)

    def step(i: int) -> torch.Tensor:
        nonlocal bad_any
        batch = data[i % n_batches]
        with amp():
            loss = loss_fn(batch[:, :-1], batch[:, 1:])
        loss.backward()
        gnorm = torch.nn.utils.clip_grad_norm_(params, 1.0, foreach=True)
        ok = torch.isfinite(loss.detach()) & torch.isfinite(gnorm)
        if fused:
            bad_any = torch.maximum(bad_any, (~ok).float())
            opt.found_inf = bad_any
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss.detach()

    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    t0 = time.perf_counter()
    for i in range(warmup):
        step(i)
    sync()
    warm_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    last = None
    for i in range(steps):
        last = step(warmup + i)
    sync()
    dt = time.perf_counter() - t0
    tokens = steps * batch_size * seq_len
    res = {
        "impl": impl, "preset": preset, "params": model.num_parameters(), "compile": compile_, "bf16_autocast": bf16,
        "activation_checkpointing": act_ckpt, "seq_len": seq_len, "batch_size": batch_size, "steps": steps,
        "warmup_steps": warmup, "warmup_seconds": round(warm_s, 2), "seconds": round(dt, 4),
        "tokens_per_s": round(tokens / dt, 1), "ms_per_step": round(1000 * dt / steps, 2),
        "final_loss": float(last.item()) if last is not None else None, "diverged": bool(bad_any.item() > 0),
    }
    if device.type == "cuda":
        res["peak_mem_gib"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 2)
        # model FLOPs utilisation estimate: 6*N per token + attention 12*L*T*d (fwd+bwd)
        n = res["params"] - cfg.vocab_size * cfg.hidden_size * (1 if cfg.tie_word_embeddings else 0)
        flops_tok = 6 * (n + cfg.vocab_size * cfg.hidden_size) + 12 * cfg.num_layers * seq_len * cfg.num_heads * cfg.head_dim
        res["tflops"] = round(flops_tok * res["tokens_per_s"] / 1e12, 1)
    del model, opt, data, loss_fn
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    if compile_:
        torch._dynamo.reset()
    return res


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--preset", action="append", help="repeatable; default smollm2-135m and qwen2.5-0.5b")
    ap.add_argument("--seq-len", type=int, default=2048)
    ap.add_argument("--batch-size", type=int, default=None, help="default per preset (32 / 16), 1 on CPU")
    ap.add_argument("--steps", type=int, default=20, help="timed steps")
    ap.add_argument("--warmup", type=int, default=None, help="untimed steps first (default 5 CUDA, 1 CPU)")
    ap.add_argument("--compile", choices=["both", "on", "off"], default=None,
                    help="default: both on CUDA, off on CPU")
    ap.add_argument("--dtype", choices=["bf16", "fp32"], default=None, help="default bf16 on CUDA, fp32 on CPU")
    ap.add_argument("--activation-checkpointing", action="store_true")
    ap.add_argument("--impl", choices=["warmstart", "transformers", "both"], default="warmstart",
                    help="also time transformers' model of the same shape in the same run (baseline)")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "train_throughput.json"))
    args = ap.parse_args(argv)

    device = torch.device(args.device)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            print("CUDA is not available; use --device cpu", file=sys.stderr)
            return 2
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    presets = args.preset or ["smollm2-135m", "qwen2.5-0.5b"]
    compile_mode = args.compile or ("both" if device.type == "cuda" else "off")
    modes = {"both": [False, True], "on": [True], "off": [False]}[compile_mode]
    bf16 = (args.dtype or ("bf16" if device.type == "cuda" else "fp32")) == "bf16"
    warmup = args.warmup if args.warmup is not None else (5 if device.type == "cuda" else 1)

    results = []
    impls = ["warmstart", "transformers"] if args.impl == "both" else [args.impl]
    for preset in presets:
        bs = args.batch_size or (DEFAULT_BATCH.get(preset, 8) if device.type == "cuda" else 1)
        for c in modes:
            for impl in impls:
                try:
                    r = bench_one(preset, device=device, seq_len=args.seq_len, batch_size=bs, steps=args.steps,
                                  warmup=warmup, compile_=c, bf16=bf16, act_ckpt=args.activation_checkpointing,
                                  impl=impl)
                except torch.OutOfMemoryError as err:  # noqa: PERF203
                    r = {"impl": impl, "preset": preset, "compile": c, "batch_size": bs,
                         "error": f"OOM: {err}"[:300]}
                    if device.type == "cuda":
                        torch.cuda.empty_cache()
                results.append(r)
                print(json.dumps(r), flush=True)

    header = (f"{'impl':<12} {'preset':<14} {'compile':<8} {'batch':>5} {'seq':>5} {'tokens/s':>12} {'ms/step':>9} "
              f"{'peak GiB':>9}")
    print("\n" + header + "\n" + "-" * len(header))
    for r in results:
        if "error" in r:
            print(f"{r['impl']:<12} {r['preset']:<14} {str(r['compile']):<8} {r['batch_size']:>5}  {r['error'][:60]}")
            continue
        print(f"{r['impl']:<12} {r['preset']:<14} {str(r['compile']):<8} {r['batch_size']:>5} {r['seq_len']:>5} "
              f"{r['tokens_per_s']:>12,.0f} {r['ms_per_step']:>9.1f} {r.get('peak_mem_gib', float('nan')):>9}")
    env = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        "torch": torch.__version__, "python": platform.python_version(),
        "cuda": torch.version.cuda, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "threads": torch.get_num_threads(),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"env": env, "results": results}, indent=2) + "\n")
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
