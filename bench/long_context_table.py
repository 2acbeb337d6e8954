"""The long-window table (markdown) from bench/long_context.py's JSON lines: tokens/s, ms/step and peak memory
of each configuration, and document attention's tokens/s against causal at the same length.

    python bench/long_context_table.py bench/results/h200/issue24/long_qwen05.jsonl bench/results/h200/issue24/long_qwen15.jsonl
"""

from __future__ import annotations

import json
import sys


def rows(paths: list[str]) -> list[dict]:
    out = []
    for path in paths:
        try:
            with open(path) as fh:
                out += [json.loads(line) for line in fh if line.strip()]
        except OSError as err:
            print(f"(no {path}: {err.strerror})")
    return out


def table(results: list[dict]) -> str:
    causal = {(r["preset"], r["seq_len"]): r.get("tokens_per_s") for r in results if r.get("mode") == "causal"}
    lines = ["| shape | window | attention | docs/window | tokens/s | vs causal | ms/step | peak GiB | first step s |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        head = f"| {r['preset']} | {r['seq_len']} | {r['mode']} |"
        if "error" in r:
            lines.append(f"{head} – | {r['error'][:80]} | | | | |")
            continue
        base = causal.get((r["preset"], r["seq_len"]))
        ratio = f"{r['tokens_per_s'] / base:.3f}" if base and r["mode"] != "causal" else "–"
        lines.append(f"{head} {r['docs_per_window']} | {r['tokens_per_s']:,.0f} | {ratio} | {r['ms_per_step']:.1f} | "
                     f"{r.get('peak_mem_gib', '–')} | {r['first_step_s']} |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(table(rows(sys.argv[1:])))
