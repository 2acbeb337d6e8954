"""The families warmstart knows: one spec module per supported decoder family, and the rest by name.

Every public module of this package (``llama.py``, ``qwen2.py``, ``qwen3.py``, ...) is a supported
family: it defines ``SPEC``, a ``FamilySpec`` (``_spec.py``) with everything warmstart knows about
that family. The modules are found by listing the package, so adding a family is adding its
module (and its tests). ``_known.py`` lists the families warmstart recognises but does not train.

Any spelling normalises: ``Qwen2ForCausalLM``, ``qwen2``, ``Qwen2``, ``Qwen2Model`` -> ``qwen2``.
A family's own names (slug, display name, model_type, HF class) win over another family's alias.
"""

from __future__ import annotations

import importlib
import pkgutil
import re

from warmstart.arch.families._known import FOREIGN_NAMES, KNOWN, Family
from warmstart.arch.families._spec import (
    ENCODER,
    ENCODER_DECODER,
    NON_TRANSFORMER,
    O_BIAS,
    QK_NORM,
    QKV_BIAS,
    SUPPORTED_DECODER,
    UNSUPPORTED_DECODER,
    FamilySpec,
    NameFeature,
    Signature,
)
from warmstart.errors import FamilyError


def _discover() -> dict[str, FamilySpec]:
    names = sorted(m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_"))
    specs = [importlib.import_module(f"{__name__}.{n}").SPEC for n in names]
    return {s.name: s for s in specs}


SPECS: dict[str, FamilySpec] = _discover()
SUPPORTED: tuple[str, ...] = tuple(SPECS)
FAMILIES: dict[str, FamilySpec | Family] = {**SPECS, **{f.name: f for f in KNOWN}}

_HF_SUFFIXES = (
    "forcausallm", "lmheadmodel", "forconditionalgeneration", "formaskedlm",
    "forsequenceclassification", "fortokenclassification", "forquestionanswering",
    "forpretraining", "mtmodel", "model",
)


def _squash(name: str) -> str:
    return re.sub(r"[^a-z0-9.]", "", name.lower())


def _lookup() -> dict[str, str]:
    table: dict[str, str] = {}
    for fam in FAMILIES.values():  # supported families first
        for key in (fam.name, fam.display, fam.model_type, fam.hf_architecture):
            if key:
                table.setdefault(_squash(key), fam.name)
    for fam in FAMILIES.values():
        for key in fam.aliases:
            table.setdefault(_squash(key), fam.name)
    return table


_LOOKUP = _lookup()


def normalize_family(name: str | None) -> str | None:
    """Map any architecture spelling to a canonical family slug, or None if unknown.

    >>> normalize_family("Qwen2ForCausalLM"), normalize_family("qwen2"), normalize_family("Qwen2")
    ('qwen2', 'qwen2', 'qwen2')
    """
    if not name or not isinstance(name, str):
        return None
    key = _squash(name)
    if key in _LOOKUP:
        return _LOOKUP[key]
    for suffix in _HF_SUFFIXES:
        if key.endswith(suffix) and len(key) > len(suffix):
            base = key[: -len(suffix)]
            if base in _LOOKUP:
                return _LOOKUP[base]
    return None


def get_family(name: str | None) -> FamilySpec | Family | None:
    slug = normalize_family(name)
    return FAMILIES.get(slug) if slug else None


def get_spec(name: str | None) -> FamilySpec | None:
    """The spec of a supported family (any spelling), or None."""
    slug = normalize_family(name)
    return SPECS.get(slug) if slug else None


def spec_for(family: str) -> FamilySpec:
    """The spec of a supported family slug; FamilyError for anything else."""
    if family not in SPECS:
        raise FamilyError(f"family '{family}' is not a supported decoder family",
                          fix=f"use one of: {supported_list()}")
    return SPECS[family]


def identity(family: str) -> dict[str, str]:
    """The three names a checkpoint's metadata gives a family (what `warmstart stamp` writes)."""
    fam = FAMILIES[family]
    return {"architecture": fam.name, "hf_architecture": fam.hf_architecture or "", "model_type": fam.model_type or ""}


def is_supported(name: str | None) -> bool:
    return get_spec(name) is not None


def supported_list() -> str:
    return ", ".join(SUPPORTED)


__all__ = [
    "ENCODER", "ENCODER_DECODER", "FAMILIES", "FOREIGN_NAMES", "Family", "FamilySpec", "NON_TRANSFORMER",
    "NameFeature", "O_BIAS", "QKV_BIAS", "QK_NORM", "SPECS", "SUPPORTED", "SUPPORTED_DECODER", "Signature", "UNSUPPORTED_DECODER", "get_family",
    "get_spec", "identity", "is_supported", "normalize_family", "spec_for", "supported_list",
]
