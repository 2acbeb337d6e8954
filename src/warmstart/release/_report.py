"""Small shared pieces of qa and publish-check: the probe text, the GO / NO-GO verdict, its rendering."""

from __future__ import annotations

from typing import Any

from warmstart.checks import FAIL, Check

# The built-in probe for qa / publish-check: a paragraph of English and a snippet of Python.
PROBE_TEXT = (
    "The history of computing is a story of people who wanted to calculate faster than they could by "
    "hand. Early machines were mechanical, then electrical, and finally electronic. Today a small "
    "program can read a file, count the words in it, and print the most common ones in a fraction of "
    "a second.\n\n"
    "def count_words(path):\n"
    "    counts = {}\n"
    "    with open(path) as fh:\n"
    "        for line in fh:\n"
    "            for word in line.split():\n"
    "                counts[word] = counts.get(word, 0) + 1\n"
    "    return sorted(counts.items(), key=lambda kv: -kv[1])[:10]\n"
)
PROMPT_TEXT = "def count_words(path):\n"


def verdict(path, gates: list[Check], exit_code: int | None = None, **extra: Any) -> dict[str, Any]:
    """GO only when no gate failed; every failure becomes a blocker with its fix."""
    go = not any(g.status == FAIL for g in gates)
    return {
        "path": str(path),
        "verdict": "GO" if go else "NO-GO",
        "exit_code": 0 if go else (exit_code or 1),
        "gates": gates,
        "blockers": [f"{g.name}: {g.detail}" + (f" — fix: {g.fix}" if g.fix else "") for g in gates
                     if g.status == FAIL],
        **extra,
    }


def render_gates(title: str, report: dict) -> str:
    """The plain-text report of qa / publish-check: one row per gate, then the verdict."""
    lines = [f"{title}: {report['path']}"]
    lines += [g.row(20) for g in report["gates"]]
    lines.append(f"verdict: {report['verdict']}")
    return "\n".join(lines)


def probe_ids(ckpt_or_tokenizer, vocab_size: int, n: int = 48):
    """Token ids of the probe text (or a deterministic id pattern when there is no tokenizer)."""
    import torch

    tok = getattr(ckpt_or_tokenizer, "tokenizer", ckpt_or_tokenizer)
    ids: list[int] = []
    if tok is not None and hasattr(tok, "encode"):
        try:
            ids = [i for i in tok.encode(PROBE_TEXT, add_special_tokens=False).ids if i < vocab_size][:n]
        except Exception:  # noqa: BLE001 - fall back to the id pattern
            ids = []
    if len(ids) < 4:
        ids = [(7 * i + 3) % vocab_size for i in range(n)]
    return torch.tensor([ids], dtype=torch.long)
