"""Metadata and provenance, parsed one way for every format.

Where each format keeps warmstart's provenance (the fields of ``warmstart.json``):

* HF directory: ``warmstart.json`` beside the weights;
* single safetensors: one ``__metadata__`` string per field (non-strings JSON-encoded), or a
  whole-object ``provenance`` key; ``warmstart.json`` beside a ``model.safetensors``;
* GGUF: one ``warmstart.<field>`` key per field (or ``warmstart.provenance``, the whole object),
  with llama.cpp's ``general.architecture``, ``general.license``, ``general.dataset.*`` and
  ``general.base_model.*`` standing in for fields warmstart did not write.

``metadata_value`` types one stored value (the loader builds ``Checkpoint.metadata`` with it);
``provenance(ckpt)`` is the warmstart.json-shaped view every command reads.
"""

from __future__ import annotations

import json
from typing import Any

PROVENANCE_KEYS = (
    "architecture", "hf_architecture", "model_type", "license", "data_sources", "data_license",
    "parent", "step", "tokens_seen", "val_loss", "data_fingerprint", "warmstart_version", "created",
)
# Fields that are text whatever they look like ("1.0" stays a version string).
TEXT_KEYS = ("architecture", "hf_architecture", "model_type", "license", "data_license", "data_fingerprint",
             "warmstart_version", "created")
# Fields stored JSON-encoded where a format only holds strings (safetensors metadata, GGUF strings).
JSON_KEYS = ("parent", "step", "tokens_seen", "val_loss", "val_windows", "data_sources", "provenance")
# safetensors metadata keys that are not provenance: the file format, the model config, the tokenizer.
NOT_PROVENANCE = ("format", "config", "tokenizer")


def metadata_value(key: str, value: Any) -> Any:
    """One stored metadata value, typed: JSON objects and lists decoded, and for the JSON-encoded
    fields also numbers, null and booleans; text fields and anything that does not parse stay as stored."""
    if not isinstance(value, str) or key in TEXT_KEYS:
        return value
    if value[:1] in "[{" or key in JSON_KEYS:
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value
    return value


def safetensors_metadata(raw: dict[str, str]) -> dict[str, Any]:
    """``__metadata__`` of a safetensors file without the format, config and tokenizer entries, typed."""
    return {k: metadata_value(k, v) for k, v in raw.items() if k not in NOT_PROVENANCE}


def recorded_parent(metadata: dict | None) -> dict | None:
    """The ``parent`` record warmstart wrote into a checkpoint's metadata, or None (a GGUF's
    ``general.base_model`` names a hub model, not a file to follow)."""
    parent = metadata_value("parent", (metadata or {}).get("parent"))
    return parent if isinstance(parent, dict) else None


def provenance(ckpt) -> dict[str, Any]:
    """The warmstart.json-shaped provenance of a loaded ``Checkpoint`` of any format.

    Fields the checkpoint does not record are absent. A fresh dict: callers may update it."""
    meta = ckpt.metadata or {}
    prov: dict[str, Any] = {}
    whole = metadata_value("provenance", meta.get("provenance"))
    if isinstance(whole, dict):
        prov.update(whole)
    prov.update({k: metadata_value(k, v) for k, v in meta.items()
                 if k != "provenance" and not k.startswith("general.")})
    if ckpt.format == "gguf":
        _gguf_general(meta, prov)
    return prov


def _gguf_general(kv: dict[str, Any], prov: dict[str, Any]) -> None:
    """llama.cpp's ``general.*`` keys for the fields warmstart did not write itself."""
    if kv.get("general.architecture"):
        prov["architecture"] = kv["general.architecture"]
    if kv.get("general.license") and not prov.get("license"):
        prov["license"] = kv["general.license"]
    n_ds = _count(kv.get("general.dataset.count"))
    if n_ds and not prov.get("data_sources"):
        prov["data_sources"] = [kv.get(f"general.dataset.{i}.name") or kv.get(f"general.dataset.{i}.repo_url")
                                for i in range(n_ds)]
    if _count(kv.get("general.base_model.count")) and not prov.get("parent"):
        name = kv.get("general.base_model.0.name")
        prov["parent"] = {"path": kv.get("general.base_model.0.repo_url") or name, "name": name, "sha256": None}


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


__all__ = ["JSON_KEYS", "NOT_PROVENANCE", "PROVENANCE_KEYS", "TEXT_KEYS", "metadata_value", "provenance",
           "recorded_parent", "safetensors_metadata"]
