"""Identity as a checkpoint declares it, and the ``warmstart stamp`` line that repairs it.

Provenance itself is read by ``warmstart.checkpoint.metadata.provenance`` (one parser for every
format); this module says where each identity field was declared. Stamp recipes are
``warmstart.checkpoint.aliases.stamp_recipe``.
"""

from __future__ import annotations

from warmstart.arch.families import SPECS, get_family, normalize_family
from warmstart.checkpoint.formats import FORMAT_GGUF
from warmstart.checkpoint.metadata import provenance

_PROVENANCE_PLACE = {"hf-dir": "warmstart.json", "safetensors": "safetensors metadata"}


def declared_identity(ckpt, prov: dict | None = None) -> dict[str, tuple[str | None, str]]:
    """{"architecture"|"hf_architecture"|"model_type": (value or None, where it is declared)}.

    A GGUF's HF config is derived from its llama.cpp keys, so only what the file states counts."""
    prov = provenance(ckpt) if prov is None else prov
    gguf = ckpt.format == FORMAT_GGUF
    cfg = {} if gguf else (ckpt.config or {})
    where_cfg = ckpt.config_source or "config.json"
    where_prov = _PROVENANCE_PLACE.get(ckpt.format, "GGUF warmstart.*")
    archs = cfg.get("architectures")
    cfg_arch = archs[0] if isinstance(archs, list) and archs else (archs if isinstance(archs, str) else None)
    out: dict[str, tuple[str | None, str]] = {
        "architecture": (prov.get("architecture"), "general.architecture" if gguf else f"{where_prov} architecture"),
    }
    hf = cfg_arch or prov.get("hf_architecture")
    out["hf_architecture"] = (hf, f"{where_cfg} architectures" if cfg_arch else f"{where_prov} hf_architecture")
    mt = cfg.get("model_type") or prov.get("model_type")
    out["model_type"] = (mt, f"{where_cfg} model_type" if cfg.get("model_type") else f"{where_prov} model_type")
    return out


def gguf_arch_name(family: str) -> str:
    """llama.cpp's general.architecture for a warmstart family (its spec's ``gguf_arch``)."""
    spec = SPECS.get(family)
    return spec.gguf_arch if spec else family


__all__ = ["declared_identity", "get_family", "gguf_arch_name", "normalize_family"]
