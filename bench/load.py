"""Benchmark: load the SmolLM2-135M-Instruct Q4_1 GGUF ready to train (fp32 model + tokenizer).

warmstart:    load_checkpoint + populate_model (fp32) + the GGUF tokenizer
transformers: AutoModelForCausalLM.from_pretrained(gguf_file=...) (fp32) + AutoTokenizer(gguf_file=...)

Every measurement runs in a fresh Python process (so imports, page cache aside, and peak RSS
are the loader's own); peak RSS is ``resource.getrusage(RUSAGE_SELF).ru_maxrss``. The table
reports the median over --repeats runs. Results go to bench/results/load.json.

    python bench/load.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results" / "load.json"


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def worker(which: str) -> dict:
    t0 = time.perf_counter()
    import torch

    from warmstart.checkpoint import resolve_checkpoint_path

    path = resolve_checkpoint_path("smollm2-135m-instruct")
    if which == "transformers":
        import transformers  # noqa: F401  (import cost counted separately from loading)
    t_import = time.perf_counter()
    rss_import = _rss_mb()
    if which == "warmstart":
        from warmstart.checkpoint import load_checkpoint
        from warmstart.init.population import populate_model

        ckpt = load_checkpoint(path)
        model = populate_model(ckpt, dtype=torch.float32)
        t_model = time.perf_counter()
        tok = ckpt.tokenizer
        vocab = tok.get_vocab_size()
    else:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32)
        t_model = time.perf_counter()
        tok = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
        vocab = len(tok)
    t_done = time.perf_counter()
    params = sum(p.numel() for p in model.parameters())
    assert all(p.dtype == torch.float32 for p in model.parameters())
    return {
        "loader": which,
        "import_s": t_import - t0,
        "model_s": t_model - t_import,
        "tokenizer_s": t_done - t_model,
        "ready_s": t_done - t_import,  # model + tokenizer, imports excluded
        "process_s": t_done - t0,  # including imports
        "rss_after_imports_mb": rss_import,
        "peak_rss_mb": _rss_mb(),
        "parameters": params,
        "fp32_model_mb": params * 4 / 2**20,
        "vocab": vocab,
    }


def run_worker(which: str) -> dict:
    env = dict(os.environ, TRANSFORMERS_VERBOSITY="error", HF_HUB_DISABLE_PROGRESS_BARS="1",
               TQDM_DISABLE="1")
    out = subprocess.run([sys.executable, __file__, "--worker", which], capture_output=True, text=True, env=env,
                         check=False)
    if out.returncode != 0:
        raise SystemExit(f"{which} worker failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--worker", choices=["warmstart", "transformers"])
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker)))
        return

    runs: dict[str, list[dict]] = {"warmstart": [], "transformers": []}
    for _ in range(args.repeats):  # interleaved, so drift affects both alike
        for which in runs:
            runs[which].append(run_worker(which))
    keys = ("import_s", "model_s", "tokenizer_s", "ready_s", "process_s", "rss_after_imports_mb", "peak_rss_mb")
    summary = {w: {k: statistics.median(r[k] for r in rs) for k in keys} for w, rs in runs.items()}
    for w, rs in runs.items():
        summary[w].update(parameters=rs[0]["parameters"], fp32_model_mb=rs[0]["fp32_model_mb"], vocab=rs[0]["vocab"])
    ws, tf = summary["warmstart"], summary["transformers"]
    speedup = tf["ready_s"] / ws["ready_s"]

    print(f"SmolLM2-135M-Instruct Q4_1 GGUF -> fp32 model + tokenizer, median of {args.repeats} fresh processes")
    print(f"{'':14}{'ready (s)':>10}{'model (s)':>10}{'tok (s)':>9}{'+import (s)':>12}{'peak RSS':>11}"
          f"{'RSS-import':>12}")
    for name, r in summary.items():
        print(f"{name:14}{r['ready_s']:>10.2f}{r['model_s']:>10.2f}{r['tokenizer_s']:>9.2f}{r['process_s']:>12.2f}"
              f"{r['peak_rss_mb']:>9.0f}MB{r['peak_rss_mb'] - r['rss_after_imports_mb']:>10.0f}MB")
    print(f"warmstart is {speedup:.1f}x faster to ready; fp32 model size {ws['fp32_model_mb']:.0f} MB; "
          f"warmstart peak RSS / fp32 size = {ws['peak_rss_mb'] / ws['fp32_model_mb']:.2f}")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({
        "benchmark": "load SmolLM2-135M-Instruct Q4_1 GGUF ready to train (fp32 model + tokenizer)",
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(), "platform": platform.platform()},
        "repeats": args.repeats,
        "median": summary,
        "speedup_ready": speedup,
        "runs": runs,
    }, indent=2) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
