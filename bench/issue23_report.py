"""Issue 23's tables and plots from what the two device calls return (bench/gpu/issue23_perf.sh, issue23_numerics.sh).

    python bench/issue23_report.py --perf DIR_OF_CALL_1 --numerics DIR_OF_CALL_3 --out bench/results/h200/issue23

writes OUT/tables.md (throughput beside litgpt, the Llama-3-8B shape, the optimizers' 100 steps, the first step,
the fp8 loss curves' final values) and OUT/numerics.png, OUT/optimizers.png (loss curves), and copies the raw
files beside them. Either directory may be left out.
"""

from __future__ import annotations

import argparse
import json
import shutil
from collections import defaultdict
from pathlib import Path

PEAK_TFLOPS = 989.0  # H200 dense bf16, the datasheet's (MFU in the tables is against it, as train/perf.py does)


def jsonl(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip().startswith("{")]


def _f(x, spec: str = ",.0f") -> str:
    return "-" if x is None else format(x, spec)


def throughput_table(rows: list[dict]) -> list[str]:
    """One row per (preset, batch, checkpointing, variant, optimizer); ratios against litgpt and warmstart bf16."""
    out = ["| model | B | AC | variant | optimizer | tokens/s | vs litgpt | vs warmstart bf16 | MFU | peak GiB | "
           "first step s |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    base = defaultdict(dict)
    for r in rows:
        if "tokens_per_s" in r and r.get("optimizer", "adamw") == "adamw":
            base[(r["preset"], r["batch_size"], bool(r.get("activation_checkpointing")))][r["variant"]] = \
                r["tokens_per_s"]
    for r in rows:
        key = (r["preset"], r["batch_size"], bool(r.get("activation_checkpointing")))
        head = (f"| {r['preset']} | {r['batch_size']} | {'yes' if key[2] else 'no'} | {r['variant']} | "
                f"{r.get('optimizer', 'adamw')} |")
        if "error" in r:
            out.append(f"{head} {r['error'][:40]} | | | | {_f(r.get('peak_mem_gib'), '.1f')} | |")
            continue
        tps, ref = r["tokens_per_s"], base[key]
        lit = f"{tps / ref['litgpt']:.2f}x" if ref.get("litgpt") and r["variant"] != "litgpt" else "-"
        ws = f"{tps / ref['warmstart']:.2f}x" if ref.get("warmstart") and r["variant"] != "warmstart" else "-"
        mfu = f"{r['mfu']:.1%}" if "mfu" in r else "-"
        out.append(f"{head} {tps:,.0f} | {lit} | {ws} | {mfu} | {_f(r.get('peak_mem_gib'), '.1f')} | "
                   f"{_f(r.get('first_step_s'), '.1f')} |")
    return out


def curves(recs: list[dict]) -> dict[str, dict[str, list[tuple[int, float]]]]:
    """{run: {"loss": [(step, loss)], "val_loss": [(step, val)]}} from metrics records tagged with "run"."""
    out: dict = defaultdict(lambda: {"loss": [], "val_loss": []})
    for r in recs:
        for k in ("loss", "val_loss"):
            if r.get(k) is not None:
                out[r["run"]][k].append((r["step"], r[k]))
    return out


def final_table(cs: dict, groups: list[tuple[str, list[str]]]) -> list[str]:
    """Per group (reference run, other runs): each run's first and final val loss, its mean train loss over the last
    25 steps, and its final val loss against the reference's."""
    out = ["| run | steps | val loss at step 0 | final val loss | train loss, last 25 steps | final val vs reference |",
           "|---|---|---|---|---|---|"]
    for ref, runs in groups:
        for name in (ref, *runs):
            c = cs.get(name)
            if not c or not c["val_loss"]:
                out.append(f"| {name} | missing | | | | |")
                continue
            last = c["val_loss"][-1]
            tail = [v for s, v in c["loss"] if s > last[0] - 25]
            rel = ""
            if name != ref and cs.get(ref, {}).get("val_loss"):
                r = cs[ref]["val_loss"][-1][1]
                rel = f"{(last[1] - r) / r:+.2%} (vs {ref})"
            out.append(f"| {name} | {last[0]} | {c['val_loss'][0][1]:.4f} | {last[1]:.4f} | "
                       f"{sum(tail) / max(1, len(tail)):.4f} | {rel} |")
    return out


def plot(cs: dict, groups: list[tuple[str, list[str]]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(groups), figsize=(6 * len(groups), 4.2), squeeze=False)
    for ax, (title, runs) in zip(axes[0], groups):
        for i, name in enumerate(runs):
            c = cs.get(name)
            if not c:
                continue
            color = f"C{i}"
            if c["loss"]:
                ax.plot(*zip(*c["loss"]), color=color, alpha=0.45, lw=1, label=f"{name} train")
            if c["val_loss"]:
                ax.plot(*zip(*c["val_loss"]), color=color, marker="o", ms=3, lw=1.6, label=f"{name} val")
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.set_ylabel("loss")
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def perf_sections(d: Path, out: Path) -> list[str]:
    rows = jsonl(d / "throughput.jsonl")
    lines = ["## Throughput (seq 2048; bench/train_throughput.py)", "", *throughput_table(rows), ""]
    env = next((r["env"] for r in rows if "env" in r), None)
    if env:
        lines += [f"Device: {env.get('device')}, torch {env.get('torch')}, bf16 matmul measured "
                  f"{env.get('matmul_tflops_measured')} TFLOP/s; MFU against {PEAK_TFLOPS:.0f} TFLOP/s.", ""]
    cs = curves(jsonl(d / "optim_loss.jsonl"))
    if cs:
        lines += ["## Optimizers: 100 steps from scratch (SmolLM2 shape, B16 x 2048, --fp8 tensorwise, the stdlib)", "",
                  *final_table(cs, [("adamw", ["adamw-bf16", "adamw-8bit"])]), "", "![](optimizers.png)", ""]
        plot(cs, [("optimizers, 100 steps", ["adamw", "adamw-bf16", "adamw-8bit"])], out / "optimizers.png")
    for name, title in (("first_step.txt", "Time to the first step"), ("steps.txt", "Steps of the call"),
                        ("gpu_tests.txt", "GPU tests")):
        if (d / name).is_file():
            lines += [f"## {title}", "", "```", (d / name).read_text().strip(), "```", ""]
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--perf", type=Path, help="the files call 1 (issue23_perf.sh) returned")
    ap.add_argument("--numerics", type=Path, help="the files call 3 (issue23_numerics.sh) returned")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    lines = ["# Issue 23: measured on the device (generated by bench/issue23_report.py)", ""]
    for d, sub in ((args.perf, "perf"), (args.numerics, "numerics")):
        if d is not None:
            shutil.copytree(d, args.out / sub, dirs_exist_ok=True)
    if args.perf is not None:
        lines += perf_sections(args.out / "perf", args.out)
    if args.numerics is not None:
        cs = curves(jsonl(args.out / "numerics" / "numerics.jsonl"))
        lines += ["## --fp8 tensorwise against bf16: 300 warm-start steps", "",
                  *final_table(cs, [("smol-bf16", ["smol-fp8"]), ("qwen-bf16", ["qwen-fp8"]), ("qwen-scratch", [])]),
                  "", "![](numerics.png)", ""]
        plot(cs, [("SmolLM2-135M GGUF warm start", ["smol-bf16", "smol-fp8"]),
                  ("Qwen2.5-0.5B shape warm start", ["qwen-bf16", "qwen-fp8"])], args.out / "numerics.png")
    (args.out / "tables.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
