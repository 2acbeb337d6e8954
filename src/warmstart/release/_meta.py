"""Identity and provenance metadata, read the same way for every format.

Where each format keeps it:

* HF directory: ``config.json`` (``architectures[0]`` = hf_architecture, ``model_type``) and
  ``warmstart.json`` (everything else, incl. ``architecture``, the family slug).
* single safetensors: ``__metadata__`` string values: ``config`` (the HF config as JSON) and
  one key per warmstart.json field (non-strings JSON-encoded).
* GGUF: ``general.architecture`` (family), ``general.license``, ``general.base_model.*``,
  ``general.dataset.*``, and ``warmstart.provenance`` (the warmstart.json object as JSON).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from warmstart.arch.families import SPECS, get_family, identity, normalize_family
from warmstart.release._formats import RawCheckpoint

PROVENANCE_KEYS = (
    "architecture", "hf_architecture", "model_type", "license", "data_sources", "data_license",
    "parent", "step", "tokens_seen", "val_loss", "data_fingerprint", "warmstart_version", "created",
)
GGUF_PROVENANCE_KEY = "warmstart.provenance"


def _maybe_json(v: Any) -> Any:
    if isinstance(v, str) and v[:1] in ("[", "{") or v in ("null", "true", "false"):
        try:
            return json.loads(v)
        except json.JSONDecodeError:
            return v
    if isinstance(v, str):
        try:
            return float(v) if any(c in v for c in ".eE") else int(v)
        except ValueError:
            return v
    return v


def read_warmstart_json(path: Path) -> dict:
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
        return obj if isinstance(obj, dict) else {}
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return {}


def read_provenance(rc: RawCheckpoint) -> dict:
    """warmstart.json-shaped provenance of any checkpoint (missing keys absent or None)."""
    prov: dict[str, Any] = {}
    if rc.format == "hf-dir":
        ws = rc.path / "warmstart.json"
        if ws.exists():
            prov.update(read_warmstart_json(ws))
    elif rc.format == "safetensors":
        meta = rc.files[0].metadata
        for k in PROVENANCE_KEYS:
            if k in meta:
                prov[k] = meta[k] if k in ("license", "data_license", "architecture", "hf_architecture",
                                           "model_type", "data_fingerprint", "warmstart_version",
                                           "created") else _maybe_json(meta[k])
        if "provenance" in meta:  # whole-object form
            obj = _maybe_json(meta["provenance"])
            if isinstance(obj, dict):
                for k, v in obj.items():
                    prov.setdefault(k, v)
        if not any(k in prov for k in PROVENANCE_KEYS):
            ws = rc.path.parent / "warmstart.json"
            if ws.exists():
                prov.update(read_warmstart_json(ws))
    elif rc.format == "gguf":
        kv = rc.files[0].metadata
        obj = _maybe_json(kv.get(GGUF_PROVENANCE_KEY)) if GGUF_PROVENANCE_KEY in kv else {}
        if isinstance(obj, dict):
            prov.update(obj)
        for k, v in kv.items():  # one key per field: warmstart.license, warmstart.data_sources, ...
            if k.startswith("warmstart.") and k != GGUF_PROVENANCE_KEY:
                prov[k.removeprefix("warmstart.")] = _maybe_json(v) if isinstance(v, str) and \
                    k.removeprefix("warmstart.") not in ("license", "data_license", "data_fingerprint",
                                                         "warmstart_version", "created") else v
        if kv.get("general.architecture"):
            prov["architecture"] = kv["general.architecture"]
        if kv.get("general.license") and not prov.get("license"):
            prov["license"] = kv["general.license"]
        n_ds = int(kv.get("general.dataset.count", 0) or 0)
        if n_ds and not prov.get("data_sources"):
            prov["data_sources"] = [kv.get(f"general.dataset.{i}.name") or kv.get(f"general.dataset.{i}.repo_url")
                                    for i in range(n_ds)]
        n_bm = int(kv.get("general.base_model.count", 0) or 0)
        if n_bm and not prov.get("parent"):
            prov["parent"] = {"path": kv.get("general.base_model.0.repo_url") or kv.get("general.base_model.0.name"),
                              "name": kv.get("general.base_model.0.name"), "sha256": None}
    return prov


def declared_identity(rc: RawCheckpoint, prov: dict | None = None) -> dict[str, tuple[str | None, str]]:
    """{"architecture"|"hf_architecture"|"model_type": (value, where)}."""
    prov = read_provenance(rc) if prov is None else prov
    cfg = rc.config or {}
    archs = cfg.get("architectures")
    cfg_arch = archs[0] if isinstance(archs, list) and archs else (archs if isinstance(archs, str) else None)
    if rc.format == "hf-dir":
        where_cfg = "config.json"
        where_prov = "warmstart.json"
    elif rc.format == "safetensors":
        where_cfg = "__metadata__['config']" if "config" in rc.files[0].metadata else "config.json"
        where_prov = "__metadata__"
    else:
        where_cfg = "GGUF warmstart.*"
        where_prov = "GGUF warmstart.*"
    out: dict[str, tuple[str | None, str]] = {}
    if rc.format == "gguf":
        out["architecture"] = (prov.get("architecture"), "general.architecture")
    else:
        out["architecture"] = (prov.get("architecture"), f"{where_prov} architecture")
    hf = cfg_arch or prov.get("hf_architecture")
    out["hf_architecture"] = (hf, f"{where_cfg} architectures" if cfg_arch else f"{where_prov} hf_architecture")
    mt = cfg.get("model_type") or prov.get("model_type")
    out["model_type"] = (mt, f"{where_cfg} model_type" if cfg.get("model_type") else f"{where_prov} model_type")
    return out


def evidence_family(rc: RawCheckpoint) -> tuple[str | None, str]:
    from warmstart.init.evidence import infer_family_from_names

    return infer_family_from_names(list(rc.tensors))


def family_identity(family: str) -> dict[str, str]:
    """architecture / hf_architecture / model_type of a family, from its spec (or registry entry)."""
    return identity(family)


def gguf_arch_name(family: str) -> str:
    """llama.cpp's general.architecture for a warmstart family (its spec's ``gguf_arch``)."""
    spec = SPECS.get(family)
    return spec.gguf_arch if spec else family


def default_fixed_path(ckpt_path: str | Path) -> Path:
    p = Path(ckpt_path)
    return p.with_name(p.stem + "-fixed" + p.suffix) if p.suffix else p.with_name(p.name + "-fixed")


def _display_path(ckpt_path: str | Path) -> tuple[str | Path, str | None]:
    """A file shipped in a Python package is shown by its alias (e.g. smollm2-135m-instruct)."""
    try:
        from warmstart.checkpoint.aliases import ALIASES
    except ImportError:  # pragma: no cover
        return ckpt_path, None
    name = Path(ckpt_path).name
    for alias, (_pkg, filename, _pip) in ALIASES.items():
        if name == filename and "site-packages" in str(ckpt_path):
            return alias, f"{alias}-fixed{Path(filename).suffix}"
    return ckpt_path, None


def stamp_recipe(ckpt_path: str | Path, family: str | None, extra_flags: list[str] | None = None,
                 out: str | Path | None = None) -> str:
    """The `warmstart stamp` line that supplies identity (and the listed provenance flags)."""
    import shlex

    ckpt_path, alias_out = _display_path(ckpt_path)
    if out is None and alias_out is not None:
        out = alias_out
    parts = ["warmstart", "stamp", shlex.quote(str(ckpt_path))]
    if family:
        ident = family_identity(family)
        parts += ["--architecture", ident["architecture"], "--hf-architecture", ident["hf_architecture"],
                  "--model-type", ident["model_type"]]
    parts += list(extra_flags or [])
    parts += ["-o", shlex.quote(str(out if out is not None else default_fixed_path(ckpt_path)))]
    return " ".join(parts)


__all__ = [
    "PROVENANCE_KEYS", "GGUF_PROVENANCE_KEY", "declared_identity", "default_fixed_path", "evidence_family", "family_identity",
    "get_family", "gguf_arch_name", "normalize_family", "read_provenance", "stamp_recipe",
]
