"""Context length and RoPE settings: the positions a model takes, and extending them at a warm start.

``extend_context`` gives the checkpoint's ``ModelConfig`` a longer ``max_position_embeddings``, another
RoPE base (``rope_theta``) or a RoPE scaling (``linear``, ``llama3`` or ``yarn`` with a factor), each
only when given. The result must be expressible by the family's Hugging Face config.json, so that
transformers loads the extended checkpoint as the same model: it is written out and read back through
the family spec, and refused (WS125) when anything is lost on the way. ``context_change`` says what
changed, for warmstart.json, the model card and gate 7.

``check_within_positions`` is the one refusal of a sequence longer than the model's positions
(``eval``, ``generate`` and ``pretrain --init``).
"""

from __future__ import annotations

from warmstart.arch.config import ModelConfig
from warmstart.errors import ContextExtensionError, FamilyError, UsageError

SCALINGS = ("linear", "llama3", "yarn")
ROPE_FIELDS = ("max_position_embeddings", "rope_theta", "rope_scaling")


def parse_rope_scaling(text: str) -> tuple[str, float]:
    """``TYPE:FACTOR`` (``yarn:4``) -> ``("yarn", 4.0)``; UsageError (WS002) for anything else."""
    kind, _, factor = str(text).partition(":")
    try:
        value = float(factor)
    except ValueError:
        value = float("nan")
    if kind not in SCALINGS or not value >= 1.0 or value == float("inf"):
        raise UsageError(f"--rope-scaling '{text}' is not TYPE:FACTOR with TYPE one of {', '.join(SCALINGS)} and "
                         "a FACTOR of at least 1", fix="e.g. --rope-scaling yarn:4 or --rope-scaling linear:2")
    return kind, value


def scaling_params(kind: str, factor: float, original: int) -> dict:
    """The config.json ``rope_scaling`` of ``kind`` (HF's defaults for the rest) over ``original`` positions."""
    if kind == "linear":
        return {"rope_type": "linear", "factor": factor}
    if kind == "llama3":
        return {"rope_type": "llama3", "factor": factor, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                "original_max_position_embeddings": original}
    return {"rope_type": "yarn", "factor": factor, "original_max_position_embeddings": original}


def extend_context(cfg: ModelConfig, *, context_length: int | None = None, rope_theta: float | None = None,
                   rope_scaling: str | None = None, source: str | None = None) -> ModelConfig:
    """``cfg`` with the given overrides (the rest kept); ContextExtensionError (WS125) where the family's
    config.json cannot express them or the checkpoint already scales RoPE and another scaling is asked."""
    changes: dict = {}
    if context_length is not None:
        changes["max_position_embeddings"] = int(context_length)
    if rope_theta is not None:
        changes["rope_theta"] = float(rope_theta)
    if rope_scaling is not None:
        kind, factor = parse_rope_scaling(rope_scaling)
        if cfg.rope_scaling:
            raise ContextExtensionError(
                f"the checkpoint already scales RoPE ({cfg.rope_scaling}); --rope-scaling {rope_scaling} would "
                "replace that scaling, which its weights were trained with",
                why="a scaling is defined over the original context; stacking two is not one HF config can say",
                fix="extend with --context-length and --rope-theta only, or start from a checkpoint without "
                    "rope scaling", path=source)
        changes["rope_scaling"] = scaling_params(kind, factor, cfg.max_position_embeddings)
    if not changes:
        return cfg
    return _expressible(cfg.replace(**changes), changes, source)


def _expressible(new: ModelConfig, changes: dict, source: str | None) -> ModelConfig:
    """``new`` if its family's config.json written out and read back keeps every change."""
    asked = ", ".join(f"{k}={v!r}" for k, v in changes.items())
    try:
        again = ModelConfig.from_hf_config(new.to_hf_config())
        lost = [k for k in changes if getattr(again, k) != getattr(new, k)]
    except (FamilyError, UsageError) as err:
        lost, reason = list(changes), err.found
    else:
        reason = f"{', '.join(lost)} would read back as {', '.join(repr(getattr(again, k)) for k in lost)}"
    if lost:
        raise ContextExtensionError(
            f"a {new.family} checkpoint cannot express {asked}: {reason}",
            why="transformers would load the extended checkpoint as a different model than the one trained",
            fix=f"use what a {new.spec.hf_architecture} config.json holds (see docs/continued-pretraining.md, "
                "Long context), e.g. --rope-theta alone", path=source)
    return new


def context_change(old: ModelConfig, new: ModelConfig) -> dict | None:
    """``{"from": {...}, "to": {...}}`` of the RoPE fields that differ (None: none)."""
    changed = [k for k in ROPE_FIELDS if getattr(old, k) != getattr(new, k)]
    if not changed:
        return None
    return {"from": {k: getattr(old, k) for k in ROPE_FIELDS}, "to": {k: getattr(new, k) for k in ROPE_FIELDS}}


def describe_change(change: dict | None) -> str:
    """``context 2048 -> 8192, rope_theta 100000 -> 1000000`` (the fields that changed)."""
    if not change:
        return "no context change"
    parts = []
    for k in ROPE_FIELDS:
        a, b = change["from"].get(k), change["to"].get(k)
        if a != b:
            name = "context" if k == "max_position_embeddings" else k
            parts.append(f"{name} {_short(a)} -> {_short(b)}")
    return ", ".join(parts)


def _short(value) -> str:
    if isinstance(value, dict):
        factor = value.get("factor")
        return f"{value.get('rope_type')} x{factor:g}" if isinstance(factor, (int, float)) else str(value)
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def check_within_positions(limit: int, length: int, what: str, fix: str) -> None:
    """Refuse ``length`` positions beyond ``limit`` (the model's ``max_position_embeddings``), WS002."""
    if length > limit:
        raise UsageError(f"{what} is {length} tokens, beyond the model's max_position_embeddings = {limit}",
                         why="positions past those the model was trained on give unreliable results", fix=fix)


__all__ = ["SCALINGS", "check_within_positions", "context_change", "describe_change", "extend_context",
           "parse_rope_scaling", "scaling_params"]
