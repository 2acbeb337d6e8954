"""Lineage: the one hash that names a checkpoint in its children's provenance, and the walk up the chain.

``lineage_hash(ckpt)`` is the sha256 over the checkpoint's tensor files as ``load_checkpoint``
lists them (``ckpt.files``): a single file (a GGUF, a loose safetensors, a directory's
``model.safetensors``) hashes to its own sha256, as ``sha256sum`` prints it; shards hash to the
sha256 of their ``"<name> <sha256>\\n"`` lines in name order. ``pretrain --init`` and
``stamp --parent`` record it through ``parent_record``; ``inspect`` checks recorded ancestors
against it; ``card`` prints it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from warmstart.checkpoint.aliases import sha256_files
from warmstart.checkpoint.metadata import provenance
from warmstart.errors import WarmstartError


def lineage_hash(ckpt) -> str:
    """sha256 of a loaded checkpoint's tensor files (see the module docstring)."""
    return sha256_files(ckpt.files)


def _number(value: Any) -> float | None:
    try:
        return float(value) if value is not None else None
    except (TypeError, ValueError):
        return None


def parent_record(ckpt, *, family: str | None) -> dict[str, Any]:
    """What a child records of the checkpoint it was started from (warmstart.json ``parent``)."""
    prov = provenance(ckpt)
    return {
        "path": str(Path(ckpt.path).resolve()),
        "sha256": lineage_hash(ckpt),
        "family": family,
        "format": ckpt.format,
        "step": prov.get("step"),
        "val_loss": _number(prov.get("val_loss")),
    }


def lineage_chain(ckpt, max_depth: int = 16) -> list[dict]:
    """The chain of warm starts: parent, grandparent, … as far as the recorded paths lead.

    Each entry is the recorded ``parent`` dict plus ``present`` (the path still exists) and
    ``sha256_matches`` (the checkpoint there still has the recorded lineage hash; None when it
    cannot be told). The walk stops at a missing or unreadable ancestor, a cycle, or ``max_depth``.
    """
    from warmstart.checkpoint.load import load_checkpoint

    chain: list[dict] = []
    seen: set[str] = set()
    parent = ckpt.parent
    while parent and len(chain) < max_depth:
        path = parent.get("path")
        entry = dict(parent, present=bool(path) and Path(path).exists(), sha256_matches=None)
        chain.append(entry)
        if not entry["present"] or path in seen:
            break
        seen.add(path)
        try:
            with load_checkpoint(path) as ancestor:
                if parent.get("sha256"):
                    entry["sha256_matches"] = lineage_hash(ancestor) == parent["sha256"]
                parent = ancestor.parent
        except WarmstartError:
            break
    return chain


__all__ = ["lineage_chain", "lineage_hash", "parent_record"]
