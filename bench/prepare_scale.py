"""`warmstart prepare` at scale: wall time, tokens/s and peak RSS at several corpus sizes, beside raw `tokenizers`
encode_batch_fast throughput on the same text and cores, measured in the same run (raw, prepare, raw); the
in-process (tokenizer threads) and worker-process ways of using the cores side by side; the time from launch to
the first step of `pretrain --max-steps 1` on the largest cache.

The corpus is real text found on this machine (the Python standard library, site-packages, /usr/share/doc,
/usr/include: .py .pyi .md .rst .txt .c .h .html files), written as JSON Lines shards of 64 MB, one record per
file; where more text is needed than there is, files come again with a varying first line
("# copy K of PATH"). The smaller corpora are the first shards of the largest (symbolic links).

    python bench/prepare_scale.py --tokenizer smollm2-tokenizer.json --work /work/bigdata/b20 \\
        --sizes 0.25,1,4 --out bench/results/cpu/prepare_scale.json

Peak RSS is the largest sum over the process and its children (workers) sampled every 0.1 s from /proc.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOTS = ["STDLIB", "SITE", "/usr/share/doc", "/usr/include"]
SUFFIXES = (".py", ".pyi", ".md", ".rst", ".txt", ".c", ".h", ".html")
SHARD = 64 << 20
HERE = Path(__file__).resolve().parent


def _roots() -> list[Path]:
    import site
    import sysconfig

    named = {"STDLIB": sysconfig.get_paths()["stdlib"], "SITE": site.getsitepackages()[0]}
    return [Path(named.get(r, r)) for r in ROOTS if Path(named.get(r, r)).is_dir()]


def _texts():
    for root in _roots():
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames.sort()
            for fn in sorted(filenames):
                p = Path(dirpath) / fn
                if fn.endswith(SUFFIXES) and not p.is_symlink():
                    try:
                        text = p.read_text(encoding="utf-8")
                    except (OSError, UnicodeDecodeError):
                        continue
                    if text.strip() and len(text) < 4 << 20:
                        yield str(p), text


def make_corpus(work: Path, total: int) -> Path:
    """JSON Lines shards holding ``total`` bytes of real text (records cycle through the files found)."""
    shards = work / "shards"
    done = work / "shards.done"
    if done.is_file() and int(done.read_text()) >= total:
        return shards
    shutil.rmtree(shards, ignore_errors=True)
    shards.mkdir(parents=True)
    written, k, n, fh = 0, 0, 0, None
    while written < total:
        for path, text in _texts():
            if fh is None or fh.tell() >= SHARD:
                if fh is not None:
                    fh.close()
                fh = open(shards / f"part-{n:05d}.jsonl", "w", encoding="utf-8")
                n += 1
            rec = json.dumps({"text": (f"# copy {k} of {path}\n" if k else "") + text}) + "\n"
            fh.write(rec)
            written += len(rec.encode())
            if written >= total:
                break
        k += 1
    fh.close()
    done.write_text(str(total))
    return shards


def subset(work: Path, shards: Path, size: int) -> Path:
    """A directory of links to the first shards holding ``size`` bytes."""
    d = work / f"corpus-{size}"
    shutil.rmtree(d, ignore_errors=True)
    d.mkdir()
    have = 0
    for p in sorted(shards.glob("*.jsonl")):
        if have >= size:
            break
        (d / p.name).symlink_to(p)
        have += p.stat().st_size
    return d


def _tree_rss(pid: int) -> int:
    """RSS (bytes) of ``pid`` and its descendants."""
    kids: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                ppid = int(open(f"/proc/{d}/stat").read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            kids.setdefault(ppid, []).append(int(d))
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        todo += kids.get(p, [])
        try:
            m = re.search(r"VmRSS:\s+(\d+) kB", open(f"/proc/{p}/status").read())
            total += int(m.group(1)) * 1024 if m else 0
        except OSError:
            pass
    return total


def measured(cmd: list[str], env: dict | None = None) -> dict:
    """Run ``cmd`` (niced) sampling its process tree's RSS; wall time, peak RSS, output."""
    t0, before = time.time(), resource.getrusage(resource.RUSAGE_CHILDREN)
    p = subprocess.Popen(["nice", "-n", "5", *cmd], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         env={**os.environ, **(env or {})})
    peak = [0]

    def sample():
        while p.poll() is None:
            peak[0] = max(peak[0], _tree_rss(p.pid))
            time.sleep(0.1)

    t = threading.Thread(target=sample, daemon=True)
    t.start()
    out, err = p.communicate()
    t.join()
    wall, after = time.time() - t0, resource.getrusage(resource.RUSAGE_CHILDREN)
    if p.returncode:
        raise SystemExit(f"{cmd} failed ({p.returncode}):\n{out}\n{err}")
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    return {"wall_s": round(wall, 2), "cpu_s": round(cpu, 2), "peak_rss_mib": round(peak[0] / 2**20, 1), "stdout": out}


RAW = """
import json, sys, time, pathlib
from tokenizers import Tokenizer
tok = Tokenizer.from_file(sys.argv[1]); limit = int(sys.argv[3]); tokens = spent = read = cpu = 0
for path in sorted(pathlib.Path(sys.argv[2]).glob("*.jsonl")):
    batch = []
    for line in open(path, encoding="utf-8"):
        batch.append(json.loads(line)["text"]); read += len(line)
        if len(batch) == 512 or read >= limit:
            t0, c0 = time.perf_counter(), time.process_time()
            encs = tok.encode_batch_fast(batch, add_special_tokens=False)
            spent += time.perf_counter() - t0; cpu += time.process_time() - c0
            tokens += sum(len(e) for e in encs); batch = []
        if read >= limit: break
    if batch:
        t0, c0 = time.perf_counter(), time.process_time()
        encs = tok.encode_batch_fast(batch, add_special_tokens=False)
        spent += time.perf_counter() - t0; cpu += time.process_time() - c0; tokens += sum(len(e) for e in encs)
    if read >= limit: break
print(json.dumps({"tokens": tokens, "encode_s": spent, "bytes": read, "encode_cpu_s": cpu}))
"""


def raw(tok: str, corpus: Path, limit: int) -> dict:
    """encode_batch_fast alone (the tokenizer's own threads on every core), timed around the calls only."""
    r = measured([sys.executable, "-c", RAW, tok, str(corpus), str(limit)])
    d = json.loads(r["stdout"])
    return {"tokens": d["tokens"], "bytes": d["bytes"], "encode_s": round(d["encode_s"], 2),
            "encode_cpu_s": round(d["encode_cpu_s"], 2), "tokens_per_s": round(d["tokens"] / d["encode_s"]),
            "tokens_per_cpu_s": round(d["tokens"] / d["encode_cpu_s"])}


def prepare(tok: str, corpus: Path, cache: Path, extra: dict | None = None) -> dict:
    """`warmstart prepare` (or, with ``extra`` settings, the same through the Python API), fresh cache."""
    shutil.rmtree(cache, ignore_errors=True)
    if extra is None:
        cmd = [sys.executable, "-m", "warmstart", "prepare", "--data", str(corpus), "--tokenizer", tok,
               "--cache-dir", str(cache), "--quiet"]
    else:
        cmd = [sys.executable, "-c", "import sys; from warmstart.data import DataSettings, build_dataset; "
               f"ds = build_dataset([sys.argv[1]], DataSettings(cache_dir=sys.argv[2], **{extra!r}), "
               "tokenizer_path=sys.argv[3], log=print); print(ds.summary()); print('cache:', ds.cache_path)",
               str(corpus), str(cache), tok]
    r = measured(cmd)
    line = next(x for x in r["stdout"].splitlines() if x.startswith("tokenized "))
    tokens = int(re.search(r"into ([\d,]+) tokens", line).group(1).replace(",", ""))
    shards = int(re.search(r"in (\d+) shards", line).group(1))
    entry = next(x.split("cache: ", 1)[1].strip() for x in r["stdout"].splitlines() if x.startswith("cache: "))
    return {"tokens": tokens, "shards": shards, "wall_s": r["wall_s"], "cpu_s": r["cpu_s"],
            "peak_rss_mib": r["peak_rss_mib"], "tokens_per_s": round(tokens / r["wall_s"]),
            "tokens_per_cpu_s": round(tokens / r["cpu_s"]), "entry": entry}


def first_step(entry: str, work: Path) -> dict:
    """`pretrain --max-steps 1` on the prepared cache with a tiny preset: launch to the end of the first step."""
    run = work / "run"
    shutil.rmtree(run, ignore_errors=True)
    t0 = time.time()
    r = measured([sys.executable, "-m", "warmstart", "pretrain", "--data", entry, "--preset", "llama-tiny",
                  "--max-steps", "1", "--batch-size", "4", "--eval-tokens", "512", "--eval-every", "0",
                  "--out", str(run), "--quiet"])
    m = re.search(r"first step after ([\d.]+)s", r["stdout"])
    imports = measured([sys.executable, "-c", "import warmstart.cli, warmstart.train"])["wall_s"]
    shutil.rmtree(run, ignore_errors=True)
    return {"process_wall_s": r["wall_s"], "first_step_after_pretrain_start_s": float(m.group(1)) if m else None,
            "import_s": imports, "launch_to_first_step_s": round(imports + float(m.group(1)), 2) if m else None,
            "peak_rss_mib": r["peak_rss_mib"], "t0": t0}


def load() -> str:
    return open("/proc/loadavg").read().split(" ", 3)[:3].__str__()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokenizer", required=True)
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--sizes", default="0.25,1,4")
    ap.add_argument("--raw-limit-gb", type=float, default=1.0, help="raw encode on at most this much of a corpus")
    ap.add_argument("--variants", action="store_true", help="in-process threads vs worker processes (first size)")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--keep", action="store_true", help="keep the corpus and the largest cache")
    a = ap.parse_args()
    sizes = [int(float(s) * 1e9) for s in a.sizes.split(",")]
    results = {"machine": {"cores": os.cpu_count(), "load_start": load()}, "runs": []}
    shards = make_corpus(a.work, max(sizes))
    for size in sizes:
        corpus = subset(a.work, shards, size)
        limit = min(size, int(a.raw_limit_gb * 1e9))
        rec = {"size_bytes": size, "load_before": load(), "raw_before": raw(a.tokenizer, corpus, limit)}
        rec["prepare"] = prepare(a.tokenizer, corpus, a.work / "cache")
        rec["raw_after"] = raw(a.tokenizer, corpus, limit)
        rec["load_after"] = load()
        raw_rate = (rec["raw_before"]["tokens_per_s"] + rec["raw_after"]["tokens_per_s"]) / 2
        rec["prepare_over_raw"] = round(rec["prepare"]["tokens_per_s"] / raw_rate, 3)
        raw_cpu = (rec["raw_before"]["tokens_per_cpu_s"] + rec["raw_after"]["tokens_per_cpu_s"]) / 2
        rec["prepare_over_raw_per_cpu_s"] = round(rec["prepare"]["tokens_per_cpu_s"] / raw_cpu, 3)
        if size == max(sizes):
            rec["first_step"] = first_step(rec["prepare"]["entry"], a.work)
        results["runs"].append(rec)
        print(json.dumps(rec), flush=True)
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(json.dumps(results, indent=1) + "\n")
    if a.variants:
        corpus = subset(a.work, shards, sizes[0])
        results["variants"] = {
            "load_before": load(),
            "worker_processes": prepare(a.tokenizer, corpus, a.work / "cache", {"unit_bytes": 32 << 20}),
            "tokenizer_threads": prepare(a.tokenizer, corpus, a.work / "cache", {"unit_bytes": 1 << 62}),
            "worker_processes_again": prepare(a.tokenizer, corpus, a.work / "cache", {"unit_bytes": 32 << 20}),
            "tokenizer_threads_again": prepare(a.tokenizer, corpus, a.work / "cache", {"unit_bytes": 1 << 62}),
            "load_after": load()}
        print(json.dumps(results["variants"]), flush=True)
    results["machine"]["load_end"] = load()
    a.out.write_text(json.dumps(results, indent=1) + "\n")
    if not a.keep:
        shutil.rmtree(a.work, ignore_errors=True)


if __name__ == "__main__":
    main()
