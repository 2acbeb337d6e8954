"""Release tooling: inspect, validate, inspect --quality, stamp, export, qa, card, publish-check.

One module each (see docs/design.md). Every checkpoint is read through ``warmstart.checkpoint``
(``load_checkpoint``, ``read_structure``, ``provenance``, ``lineage_hash``); results are
``warmstart.checks.Check`` lists, refusals ``WarmstartError``s. The names below are imported lazily
so that ``import warmstart.release.quality`` (used by ``inspect --quality``) stays light.

    inspect_summary(ckpt) -> dict            (what ``warmstart inspect`` prints)
    validate(path) -> report dict            (verdict PASS/FAIL/UNREADABLE, exit_code 0/1/2)
    quality_report(ckpt) -> dict             (0-100 score in named dimensions, stamp recipe)
    stamp_checkpoint(src, out, ...) -> dict  (same format, tensors byte-identical, sha256-verified)
    export_checkpoint(src, to, out, dtype=)  (hf | safetensors | gguf; read back and compared)
    run_qa(path) -> dict                     (GO / NO-GO)
    write_card(path, out, force=) -> Path    (Hugging Face model card)
    publish_check(path, card=, env=) -> dict (the seven publish gates, GO / NO-GO)
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "inspect_summary": "warmstart.release.inspect",
    "validate": "warmstart.release.validate",
    "quality_report": "warmstart.release.quality",
    "render_quality": "warmstart.release.quality",
    "stamp_checkpoint": "warmstart.release.stamp",
    "export_checkpoint": "warmstart.release.export",
    "write_gguf": "warmstart.checkpoint.gguf.write",
    "run_qa": "warmstart.release.qa",
    "build_card": "warmstart.release.card",
    "write_card": "warmstart.release.card",
    "publish_check": "warmstart.release.publish_check",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'warmstart.release' has no attribute {name!r}")
