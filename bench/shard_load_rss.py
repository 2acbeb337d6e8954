"""Peak host memory (RSS) of loading a checkpoint: one process (the full fp32 model) vs 2 ranks
(FSDP2 sharded loading: each rank allocates and fills only its own shards).

What is timed and measured is warmstart's own code: one process runs ``populate_model`` (what
``pretrain --init`` does without a process group); each of 2 CPU ranks (gloo, started through
torchrun's API) builds the model on the meta device, ``fully_shard``s it (``shard_model``),
allocates its shards (``materialize``) and copies its rows from the checkpoint
(``populate_shards``). Each process reports its peak RSS (``VmHWM``), the RSS after imports, and
its anonymous / file-backed RSS once the model is loaded.

Checkpoints: the SmolLM2-135M-Instruct GGUF (alias ``smollm2-135m-instruct``, dequantised one
tensor at a time) and a Qwen2.5-0.5B-shaped HF directory with random bf16 weights (written once
under --scratch).

    python bench/shard_load_rss.py            # writes bench/results/cpu/shard_load_rss.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))


def status_kib() -> dict[str, int]:
    out = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmHWM", "VmRSS", "RssAnon", "RssFile"):
            out[key] = int(rest.split()[0])
    return out


def qwen_checkpoint(scratch: Path) -> Path:
    """A Qwen2.5-0.5B-shaped HF directory with random bf16 weights (about 1 GB), written once."""
    out = scratch / "qwen2.5-0.5b-random"
    if (out / "model.safetensors").is_file():
        return out
    import torch

    from warmstart.arch import get_preset
    from warmstart.checkpoint.write import save_hf_checkpoint
    from warmstart.init.population import empty_model

    cfg = get_preset("qwen2.5-0.5b")
    model = empty_model(cfg, dtype=torch.bfloat16)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(torch.ones(p.shape) if "norm" in name else 0.02 * torch.randn(p.shape, generator=gen))
    save_hf_checkpoint(out, cfg, model.canonical_state_dict(), overwrite=True)
    return out


def worker(ckpt_path: str) -> dict:
    """Load ``ckpt_path`` as this process's role says (torchrun environment: sharded, else full)."""
    import torch

    from warmstart.checkpoint import load_checkpoint
    from warmstart.init.population import materialize, populate_model, populate_shards
    from warmstart.train.config import TrainConfig
    from warmstart.train.distributed import setup_distributed
    from warmstart.train.parallel import shard_model

    base = status_kib()
    t0 = time.perf_counter()
    ckpt = load_checkpoint(ckpt_path)
    cfg = ckpt.model_config()
    dist = setup_distributed("cpu")
    if dist.several:
        from warmstart.arch import CausalLM

        with torch.device("meta"):
            model = CausalLM(cfg)
        shard_model(model, TrainConfig(device="cpu"), dist)
        materialize(model, device="cpu")
        populate_shards(model, ckpt, cfg)
        local = sum(p.to_local().numel() for p in model.parameters())
    else:
        model = populate_model(ckpt, cfg)
        local = sum(p.numel() for p in model.parameters())
    seconds = time.perf_counter() - t0
    after = status_kib()
    res = {"rank": dist.rank, "world_size": dist.world_size, "params": model.num_parameters(),
           "local_params": local, "seconds": round(seconds, 2),
           "rss_after_imports_mib": round(base["VmRSS"] / 1024, 1), "peak_rss_mib": round(after["VmHWM"] / 1024, 1),
           "anon_rss_loaded_mib": round(after["RssAnon"] / 1024, 1),
           "file_rss_loaded_mib": round(after["RssFile"] / 1024, 1)}
    dist.close()
    return res


def run_case(name: str, path: Path, nproc: int, out_dir: Path) -> list[dict]:
    results = out_dir / f"{name}-{nproc}-{uuid.uuid4().hex[:6]}"
    results.mkdir(parents=True)
    cmd = [sys.executable, __file__, "--worker", str(path), "--report", str(results)]
    if nproc > 1:
        from torch.distributed.launcher.api import LaunchConfig, elastic_launch

        cfg = LaunchConfig(min_nodes=1, max_nodes=1, nproc_per_node=nproc, run_id=uuid.uuid4().hex,
                           rdzv_backend="c10d", rdzv_endpoint="localhost:0", max_restarts=0, monitor_interval=0.1)
        elastic_launch(cfg, sys.executable)(*cmd[1:])
    else:
        env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
        subprocess.run(cmd, check=True, env=env)
    rows = [json.loads(p.read_text()) for p in sorted(results.glob("rank-*.json"))]
    for r in rows:
        r.update(checkpoint=name, path=str(path))
        print(json.dumps(r), flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--report", help=argparse.SUPPRESS)
    ap.add_argument("--scratch", default="/tmp/warmstart-bench", help="where the Qwen-shaped checkpoint is written")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "cpu" / "shard_load_rss.json"))
    args = ap.parse_args(argv)
    if args.worker:
        res = worker(args.worker)
        Path(args.report, f"rank-{res['rank']}.json").write_text(json.dumps(res))
        return 0

    os.environ.setdefault("OMP_NUM_THREADS", "1")
    from warmstart.checkpoint import resolve_checkpoint_path

    scratch = Path(args.scratch)
    cases = {"smollm2-135m-instruct (GGUF Q4_1)": Path(resolve_checkpoint_path("smollm2-135m-instruct")),
             "qwen2.5-0.5b shape (HF safetensors bf16, random)": qwen_checkpoint(scratch)}
    rows = []
    for name, path in cases.items():
        for nproc in (1, 2):
            rows += run_case(name, path, nproc, scratch / "reports")
    env = {"machine": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
           "python": platform.python_version(), "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    import torch

    env["torch"] = torch.__version__
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"env": env, "results": rows}, indent=2) + "\n")
    print(f"{'checkpoint':<50} {'ranks':>5} {'rank':>4} {'peak RSS MiB':>13} {'after imports':>13} {'anon loaded':>11}")
    for r in rows:
        print(f"{r['checkpoint']:<50} {r['world_size']:>5} {r['rank']:>4} {r['peak_rss_mib']:>13} "
              f"{r['rss_after_imports_mib']:>13} {r['anon_rss_loaded_mib']:>11}")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
