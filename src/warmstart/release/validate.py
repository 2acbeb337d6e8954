"""`warmstart validate`: structural and numeric integrity of a checkpoint.

Checks, in order (later ones are skipped when the structure is broken, since reading
out-of-bounds or overlapping data would be meaningless):

1. structure   headers parse, dtypes known, sizes match shapes, data in bounds, no overlaps,
               index files consistent (raw parse, independent of the loader)
2. readable    warmstart's loader opens it
3. family      the declared architecture is a supported decoder family
4. shapes      every tensor the config implies is present with the right shape
5. identity    the declared family agrees with tensor-name evidence (warning only)
6. values      every tensor finite (NaN/Inf = fail); all-zero tensors = warning
7. hf-schema   the config loads in transformers' schema (skipped without transformers)

Verdict PASS (exit 0), FAIL (exit 1), UNREADABLE (exit 2).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from warmstart.errors import WarmstartError
from warmstart.release._formats import Unreadable, parse_checkpoint
from warmstart.release._report import FAIL, PASS, SKIP, WARN, Check


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

    def finish(verdict: str) -> dict[str, Any]:
        report["verdict"] = verdict
        report["exit_code"] = {"PASS": 0, "FAIL": 1, "UNREADABLE": 2}[verdict]
        report["errors"] = [f"{c.name}: {c.detail}" for c in checks if c.status == FAIL]
        report["warnings"] = [f"{c.name}: {c.detail}" for c in checks if c.status == WARN]
        return report

    # 1. structure
    try:
        rc = parse_checkpoint(path)
    except Unreadable as err:
        checks.append(Check("structure", FAIL, str(err),
                            fix="the file is not a readable checkpoint; re-download or re-export it"))
        return finish("UNREADABLE")
    except OSError as err:
        checks.append(Check("structure", FAIL, f"{path}: {err.strerror or err}", fix="check the path"))
        return finish("UNREADABLE")
    report["format"] = rc.format
    report["raw"] = rc
    problems, warnings = rc.all_problems(), rc.all_warnings()
    n_tensors = sum(len(f.tensors) for f in rc.files)
    report["tensors"] = n_tensors
    if problems:
        checks.append(Check("structure", FAIL, f"{len(problems)} structural problem(s)", items=problems,
                            fix="the file is corrupted or truncated; re-download, re-export or use an earlier "
                            "checkpoint"))
        return finish("FAIL")
    dtypes = sorted({t.dtype for f in rc.files for t in f.tensors})
    checks.append(Check("structure", WARN if warnings else PASS,
                        f"{rc.format}, {len(rc.files)} file(s), {n_tensors} tensors, dtypes {', '.join(dtypes)}",
                        items=warnings))

    # 2. readable by the loader
    if ckpt is None:
        try:
            from warmstart.checkpoint import load_checkpoint

            ckpt = load_checkpoint(path)
        except WarmstartError as err:
            checks.append(Check("readable", FAIL, err.paragraph()))
            return finish("FAIL" if err.exit_code == 1 else "UNREADABLE")
    report["ckpt"] = ckpt
    checks.append(Check("readable", PASS, f"loads as {ckpt.format}"))

    # 3. family
    cfg = None
    try:
        cfg = ckpt.model_config()
        checks.append(Check("family", PASS, f"{cfg.family} ({cfg.num_layers} layers, hidden {cfg.hidden_size}, "
                                            f"vocab {cfg.vocab_size})"))
    except WarmstartError as err:
        checks.append(Check("family", FAIL, err.found, fix=err.fix))
    except (KeyError, TypeError, ValueError) as err:
        checks.append(Check("family", FAIL, f"config is incomplete: {type(err).__name__}: {err}",
                            fix="add the missing config keys (stamp or re-export)"))
    report["config"] = cfg

    # 4. shapes vs config
    if cfg is not None:
        from warmstart.init.population import plan_population

        shapes = {n: tuple(i.shape) for n, i in ckpt.tensor_info.items()}
        plan = plan_population(cfg, shapes)
        items = [f"missing: {n} {plan.expected[n]}" for n in plan.missing]
        items += [f"shape: {n} expected {e} found {f}" for n, e, f in plan.mismatched]
        if items:
            checks.append(Check("shapes", FAIL, f"{len(plan.missing)} missing, {len(plan.mismatched)} "
                                f"mis-shaped tensor(s) against the config", items=items,
                                fix="the config does not describe these tensors; repair config.json or re-export"))
        elif plan.unused:
            checks.append(Check("shapes", WARN, f"all {len(plan.expected)} expected tensors present; "
                                f"{len(plan.unused)} extra tensor(s) the model does not use", items=plan.unused))
        else:
            checks.append(Check("shapes", PASS, f"all {len(plan.expected)} tensors match the config"))

    # 5. identity vs evidence (warning)
    try:
        from warmstart.arch.families import normalize_family
        from warmstart.release._meta import evidence_family, stamp_recipe

        ev, why = evidence_family(rc)
        claim = normalize_family(cfg.family) if cfg is not None else None
        if ev and claim and ev != claim:
            checks.append(Check("identity", WARN, f"metadata declares {claim} but the tensor names say {ev} "
                                f"({why})", fix=stamp_recipe(path, ev)))
        elif ev:
            checks.append(Check("identity", PASS, f"tensor names agree: {ev}"))
    except Exception:  # noqa: BLE001 - advisory only
        pass

    # 6. values
    if numbers:
        import torch

        nonfinite, zeros = [], []
        for name in ckpt.tensor_info:
            try:
                t = ckpt.tensor(name)
            except WarmstartError as err:
                nonfinite.append(f"{name}: unreadable ({err.found})")
                continue
            if t.is_floating_point():
                bad = int((~torch.isfinite(t)).sum())
                if bad:
                    nonfinite.append(f"{name}: {bad} of {t.numel()} values are NaN/Inf")
                elif t.numel() and not bool(t.any()):
                    zeros.append(name)
            del t
        report["nonfinite"] = nonfinite
        report["all_zero"] = zeros
        if nonfinite:
            checks.append(Check("values", FAIL, f"{len(nonfinite)} tensor(s) hold NaN/Inf", items=nonfinite,
                                fix="use an earlier, healthy checkpoint (the run's best or previous step)"))
        elif zeros:
            checks.append(Check("values", WARN, f"all finite; {len(zeros)} tensor(s) are all zero", items=zeros))
        else:
            checks.append(Check("values", PASS, f"all {len(ckpt.tensor_info)} tensors finite"))
    # 7. transformers schema
    if schema and cfg is not None:
        hf_cfg = ckpt.config if rc.format in ("hf-dir", "safetensors") and ckpt.config else cfg.to_hf_config()
        checks.append(transformers_schema_check(hf_cfg))

    return finish("FAIL" if any(c.status == FAIL for c in checks) else "PASS")


def public(report: dict) -> dict:
    """The JSON-able part of a report."""
    return {k: v for k, v in report.items() if k not in ("raw", "ckpt", "config")}


__all__ = ["public", "transformers_schema_check", "validate"]
