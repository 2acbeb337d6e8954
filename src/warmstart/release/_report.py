"""Small shared pieces: check results, the probe text, model building, plain-text rendering."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from typing import Any

PASS, FAIL, WARN, SKIP = "PASS", "FAIL", "WARN", "SKIP"

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


@dataclass
class Check:
    name: str
    status: str
    detail: str = ""
    fix: str = ""
    items: list[str] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


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


def status_line(c: Check, width: int = 22) -> str:
    line = f"  {c.status:<4}  {c.name:<{width}} {c.detail}"
    for it in c.items[:12]:
        line += f"\n          - {it}"
    if len(c.items) > 12:
        line += f"\n          - … ({len(c.items) - 12} more)"
    if c.fix and c.status in (FAIL, WARN):
        line += f"\n          fix: {c.fix}"
    return line


def to_plain(obj: Any) -> Any:
    """Checks, dataclasses, paths, numpy/torch scalars -> JSON types; non-finite floats -> strings."""
    if hasattr(obj, "to_dict"):
        obj = obj.to_dict()
    if isinstance(obj, dict):
        return {str(k): to_plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set)):
        return [to_plain(v) for v in obj]
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else str(obj)
    if obj is None or isinstance(obj, (str, int, bool)):
        return obj
    if hasattr(obj, "item"):
        return to_plain(obj.item())
    return str(obj)


def dumps(obj: Any) -> str:
    return json.dumps(to_plain(obj), indent=2, allow_nan=False)


def build_model(ckpt, cfg=None):
    """An fp32 ``CausalLM`` populated strictly from ``ckpt`` (warmstart's gate 6 population)."""
    import torch

    from warmstart.init.population import populate_model

    model = populate_model(ckpt, cfg, allow_unused=True, dtype=torch.float32, device="cpu")
    model.eval()
    return model


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
