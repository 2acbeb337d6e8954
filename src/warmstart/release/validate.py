"""`warmstart validate`: structural and numeric integrity of a checkpoint.

Checks, in order (later ones are skipped when the structure is broken, since reading
out-of-bounds or overlapping data would be meaningless):

1. structure   headers parse, dtypes known, sizes match shapes, data in bounds, no overlaps,
               index files consistent: every defect ``checkpoint.read_structure`` finds, which
               are the loader's own checks, listed all at once
2. readable    warmstart's loader opens it
3. family      the declared architecture is a supported decoder family
4. shapes      every tensor the config implies is present with the right shape
5. tokenizer   gate 4 of ``pretrain --init``: a tokenizer that reads, whose ids and special ids fit
               the embedding rows
6. identity    the declared family agrees with tensor-name evidence (warning only)
7. values      every tensor finite (NaN/Inf = fail); data-quality signals (``init.values``: all-zero,
               constant or near-zero-norm matrices, nearly all zeros, dead embedding rows) = warnings
8. hf-schema   the config loads in transformers' schema (skipped without transformers)

Every finding names its error code (``[WS1nn]``): the code the loader or the gate refuses it with.

Verdict PASS (exit 0), FAIL (exit 1), UNREADABLE (exit 2).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from warmstart.checkpoint import load_checkpoint, read_structure
from warmstart.checkpoint.formats import FORMAT_GGUF
from warmstart.checks import FAIL, PASS, SKIP, WARN, Check
from warmstart.errors import UnreadableError, WarmstartError

VERDICT_EXIT = {"PASS": 0, "FAIL": 1, "UNREADABLE": 2}


def transformers_schema_check(hf_cfg: dict) -> Check:
    """Does the config load through transformers.AutoConfig (optional dependency)?"""
    try:
        import transformers  # noqa: F401
        from transformers import AutoConfig
    except Exception:  # noqa: BLE001
        return Check("hf-schema", SKIP, "transformers is not installed; schema not checked")
    cfg = {k: v for k, v in (hf_cfg or {}).items() if not k.startswith("_")}
    mt = cfg.pop("model_type", None)
    if not mt:
        return Check("hf-schema", FAIL, "config has no model_type",
                     fix="stamp it: warmstart stamp CKPT --model-type <type> -o OUT")
    try:
        conf = AutoConfig.for_model(mt, **cfg)
    except Exception as err:  # noqa: BLE001
        return Check("hf-schema", FAIL, f"transformers.AutoConfig refuses model_type '{mt}': "
                     f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}",
                     fix="stamp a correct --model-type / --hf-architecture")
    bad = []
    for key in ("hidden_size", "num_hidden_layers", "num_attention_heads", "vocab_size", "intermediate_size"):
        if key in cfg and getattr(conf, key, None) != cfg[key]:
            bad.append(f"{key}: config {cfg[key]} vs transformers {getattr(conf, key, None)}")
    if bad:
        return Check("hf-schema", FAIL, "transformers reads different values", items=bad)
    return Check("hf-schema", PASS, f"loads as transformers {type(conf).__name__}")


def validate(path: str | Path, *, numbers: bool = True, schema: bool = True, ckpt=None) -> dict[str, Any]:
    """Validate a checkpoint; returns a report dict with ``verdict`` and ``exit_code``."""
    path = Path(path)
    checks: list[Check] = []
    report: dict[str, Any] = {"path": str(path), "format": None, "checks": checks}
    st = _structure(path, report)
    if st is None or checks[-1].status == FAIL:
        return _finish(report, "UNREADABLE" if st is None or st.fatal else "FAIL")
    if ckpt is None:
        try:
            ckpt = load_checkpoint(path)
        except WarmstartError as err:
            checks.append(Check("readable", FAIL, err.paragraph()))
            return _finish(report, "FAIL" if err.exit_code == 1 else "UNREADABLE")
    report["ckpt"] = ckpt
    checks.append(Check("readable", PASS, f"loads as {ckpt.format}"))
    cfg = report["config"] = _family(ckpt, checks)
    if cfg is not None:
        checks.append(_shapes(ckpt, cfg))
        checks.append(_tokenizer(ckpt, cfg))
    identity = _identity(ckpt, cfg, path)
    if identity is not None:
        checks.append(identity)
    if numbers:
        checks.append(_values(ckpt, report))
    if schema and cfg is not None:
        hf_cfg = ckpt.config if ckpt.format != FORMAT_GGUF and ckpt.config else cfg.to_hf_config()
        checks.append(transformers_schema_check(hf_cfg))
    return _finish(report, "FAIL" if any(c.status == FAIL for c in checks) else "PASS")


def _finish(report: dict[str, Any], verdict: str) -> dict[str, Any]:
    checks = report["checks"]
    report["verdict"] = verdict
    report["exit_code"] = VERDICT_EXIT[verdict]
    report["errors"] = [f"{c.name}: {c.detail}" for c in checks if c.status == FAIL]
    report["warnings"] = [f"{c.name}: {c.detail}" for c in checks if c.status == WARN]
    return report


def _structure(path: Path, report: dict[str, Any]):
    """Check 1. The structure (None when ``path`` names no readable checkpoint), its check appended."""
    checks = report["checks"]
    try:
        st = read_structure(path)
    except UnreadableError as err:
        checks.append(Check("structure", FAIL, f"[{err.code}] {path}: not a checkpoint warmstart can read: "
                            f"{err.found}", fix=err.fix or "re-download or re-export it"))
        return None
    except OSError as err:
        checks.append(Check("structure", FAIL, f"{path}: {err.strerror or err}", fix="check the path"))
        return None
    report["format"], report["structure"] = st.format, st
    report["tensors"] = n_tensors = sum(len(f.tensors) for f in st.files)
    if st.fatal is not None:
        f, d = st.fatal
        checks.append(Check("structure", FAIL, f"[{d.error.code}] {f.path}: the {f.kind} header does not parse: "
                            f"{d.message}"
                            + (f"; {d.why}" if d.why else ""),
                            fix="the file is not a readable checkpoint; re-download or re-export it"))
    elif st.problems:
        checks.append(Check("structure", FAIL, f"{len(st.problems)} structural problem(s)", items=st.problems,
                            fix="the file is corrupted or truncated; re-download, re-export or use an earlier "
                            "checkpoint"))
    else:
        dtypes = sorted({t.dtype for f in st.files for t in f.tensors})
        checks.append(Check("structure", WARN if st.warnings else PASS,
                            f"{st.format}, {len(st.files)} file(s), {n_tensors} tensors, dtypes {', '.join(dtypes)}",
                            items=st.warnings))
    return st


def _family(ckpt, checks: list[Check]):
    """Check 3. The model config, or None with a failed check."""
    try:
        cfg = ckpt.model_config()
    except WarmstartError as err:
        checks.append(Check("family", FAIL, f"[{err.code}] {err.found}", fix=err.fix))
        return None
    checks.append(Check("family", PASS, f"{cfg.family} ({cfg.num_layers} layers, hidden {cfg.hidden_size}, "
                                        f"vocab {cfg.vocab_size})"))
    return cfg


def _shapes(ckpt, cfg) -> Check:
    """Check 4. Every tensor the config implies, present and of its shape."""
    from warmstart.init.population import plan_checkpoint

    plan = plan_checkpoint(ckpt, cfg)
    items = [f"missing: {n} {plan.expected[n]}" for n in plan.missing]
    items += [f"shape: {n} expected {e} found {f}" for n, e, f in plan.mismatched]
    if items:
        return Check("shapes", FAIL, f"{len(plan.missing)} missing, {len(plan.mismatched)} mis-shaped tensor(s) "
                     "against the config", items=items,
                     fix="the config does not describe these tensors; repair config.json or re-export")
    if plan.unused:
        return Check("shapes", WARN, f"all {len(plan.expected)} expected tensors present; {len(plan.unused)} extra "
                     "tensor(s) the model does not use", items=plan.unused)
    return Check("shapes", PASS, f"all {len(plan.expected)} tensors match the config")


def _identity(ckpt, cfg, path: Path) -> Check | None:
    """Check 5 (advisory). The declared family against the tensor names; None when the names cannot tell."""
    from warmstart.arch.families import normalize_family
    from warmstart.init.gates import tensor_evidence
    from warmstart.checkpoint.aliases import stamp_recipe

    ev, why = tensor_evidence(ckpt)
    claim = normalize_family(cfg.family) if cfg is not None else None
    if ev and claim and ev != claim:
        return Check("identity", WARN, f"metadata declares {claim} but the tensor names say {ev} ({why})",
                     fix=stamp_recipe(path, ev))
    return Check("identity", PASS, f"tensor names agree: {ev}") if ev else None


def _tokenizer(ckpt, cfg) -> Check:
    """Check 5: gate 4 as ``pretrain --init`` runs it (the tokenizer reads; its ids fit the embedding)."""
    from warmstart.init.gates import check_tokenizer, embedding_rows

    try:
        tok = ckpt.tokenizer
        return check_tokenizer(tok, embedding_rows(ckpt, cfg), cfg, path=str(ckpt.path), source="from the checkpoint")
    except WarmstartError as err:
        return Check("tokenizer", FAIL, f"[{err.code}] {err.found}", fix=err.fix)


def _values(ckpt, report: dict[str, Any]) -> Check:
    """Check 7. NaN/Inf in any tensor fails; the data-quality signals are warnings."""
    from warmstart.init.values import tensor_signals

    nonfinite, zeros, signals = [], [], []
    for name in ckpt.tensor_info:
        try:
            t = ckpt.tensor(name)
        except WarmstartError as err:
            nonfinite.append(f"{name}: unreadable ([{err.code}] {err.found})")
            continue
        if t.is_floating_point():
            bad = int((~torch.isfinite(t)).sum())
            if bad:
                nonfinite.append(f"[WS105] {name}: {bad} of {t.numel()} values are NaN/Inf")
            else:
                found = tensor_signals(name, t)
                zeros += [name] if t.numel() and not bool(t.any()) else []
                signals += found
        del t
    report["nonfinite"], report["all_zero"], report["signals"] = nonfinite, zeros, signals
    if nonfinite:
        return Check("values", FAIL, f"{len(nonfinite)} tensor(s) hold NaN/Inf", items=nonfinite,
                     fix="use an earlier, healthy checkpoint (the run's best or previous step)")
    if signals:
        return Check("values", WARN, f"all finite; {len(signals)} data-quality signal(s)"
                     + (f", {len(zeros)} tensor(s) all zero" if zeros else ""), items=signals,
                     fix="an all-zero or constant weight matrix was lost in an export or never trained; "
                     "`pretrain --init` refuses an all-zero weight matrix (WS114) unless --allow-zero-tensors")
    return Check("values", PASS, f"all {len(ckpt.tensor_info)} tensors finite")


def render_validation(report: dict) -> str:
    lines = [f"validate: {report['path']}"] + [c.row(12) for c in report["checks"]]
    lines.append(f"verdict: {report['verdict']}")
    return "\n".join(lines)


def public(report: dict) -> dict:
    """The JSON-able part of a report."""
    return {k: v for k, v in report.items() if k not in ("structure", "ckpt", "config")}


__all__ = ["public", "render_validation", "transformers_schema_check", "validate"]
