"""Gate 3 helpers: infer the family from tensor names alone, HF or llama.cpp GGUF names.

Foreign families (gpt2, gpt_neox, opt, bert/roberta, t5, mamba, rwkv) are recognised by their own
name patterns (``arch/families/_known.py``). A checkpoint of warmstart's layout (attention +
gated MLP) is matched against every supported family's evidence signatures (its spec's
``evidence``): the fitting signature with the most required features wins, e.g. qwen3 ⇐ per-head
q/k norm; qwen2 ⇐ q/k/v biases without q/k norm or o_proj bias; llama ⇐ neither.
Returns ``(None, reason)`` when the names cannot decide.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from warmstart.arch.families import FOREIGN_NAMES, SPECS

_ATTENTION = re.compile(r"(layers\.\d+\.self_attn\.q_proj\.weight|blk\.\d+\.attn_q\.weight)$")
_GATED_MLP = re.compile(r"(layers\.\d+\.mlp\.gate_proj\.weight|blk\.\d+\.ffn_gate\.weight)$")


def infer_family_from_names(names: Iterable[str]) -> tuple[str | None, str]:
    """The family the tensor names alone point to, and the evidence for it."""
    names = list(names)
    if not names:
        return None, "the checkpoint holds no tensors"
    for family, pattern in FOREIGN_NAMES:
        hits = [n for n in names if pattern.search(n)]
        if hits:
            return family, f"{family} tensor names (e.g. '{hits[0]}')"
    if not (any(_ATTENTION.search(n) for n in names) and any(_GATED_MLP.search(n) for n in names)):
        return None, "no llama-layout attention and gated-MLP tensors, nor any known family's pattern"
    fits = [(len(sig.present), spec.name, sig) for spec in SPECS.values() for sig in spec.evidence
            if all(f.hits(names) for f in sig.present) and not any(f.hits(names) for f in sig.absent)]
    if not fits:
        return None, "the attention and MLP tensors fit no supported family's signature"
    best = max(n for n, _, _ in fits)
    winners = {name for n, name, _ in fits if n == best}
    if len(winners) > 1:
        return None, f"the tensor names fit {' and '.join(sorted(winners))} equally"
    _, family, sig = next(f for f in fits if f[0] == best)
    example = f" (e.g. '{sig.present[0].hits(names)[0]}')" if sig.present else ""
    return family, sig.why + example
