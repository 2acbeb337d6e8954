"""`inspect --quality`: a 0-100 release-readiness score in named dimensions.

| dimension        | max | items (points)                                                             |
|------------------|-----|----------------------------------------------------------------------------|
| hf_identity      | 20  | architecture 6, hf_architecture 7, model_type 7 — each present, a supported |
|                  |     | family, and agreeing with the family the tensor names point to              |
| provenance       | 25  | license 7, data sources 7, data license 5, parent lineage 6                 |
| integrity        | 20  | structure + readable 8, shapes match config 4, all values finite 8          |
| tokenizer        | 15  | tokenizer present 6, every id < embedding rows 5, special ids in range 4     |
| training_record  | 20  | step 4, tokens seen 4, val_loss 6, data fingerprint 3, warmstart version 3    |

Every dimension lists what is missing and the ``warmstart stamp`` flags that supply it
(identity and provenance can be stamped; integrity, tokenizer and training record come
from re-export or training and name that fix instead).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from warmstart.arch.families import SUPPORTED, normalize_family
from warmstart.checkpoint import provenance
from warmstart.checks import FAIL, PASS
from warmstart.checkpoint.aliases import stamp_recipe
from warmstart.release._meta import declared_identity

DIMENSIONS = {"hf_identity": 20, "provenance": 25, "integrity": 20, "tokenizer": 15, "training_record": 20}
PASS_SCORE = 90


def _dim(name: str) -> dict[str, Any]:
    return {"name": name, "score": 0, "max": DIMENSIONS[name], "present": [], "missing": [], "flags": [],
            "fix": ""}


def _give(d: dict, pts: int, what: str) -> None:
    d["score"] += pts
    d["present"].append(what)


def quality_report(ckpt, *, validation: dict | None = None) -> dict[str, Any]:
    """Score ``ckpt`` (a loaded ``Checkpoint`` or a path). Returns a JSON-able dict."""
    from warmstart.init.gates import tensor_evidence

    if isinstance(ckpt, (str, Path)):
        from warmstart.checkpoint import load_checkpoint

        ckpt = load_checkpoint(ckpt)
    path = Path(ckpt.path)
    prov = provenance(ckpt)
    ident = declared_identity(ckpt, prov)
    evidence = tensor_evidence(ckpt)
    if validation is None:
        from warmstart.release.validate import validate

        validation = validate(path, ckpt=ckpt, schema=False)
    idn, fix_family = _hf_identity(ident, evidence, path)
    pv = _provenance(prov, path)
    dims = [idn, pv, _integrity(validation), _tokenizer(ckpt, validation.get("config")), _training_record(prov)]
    recipe = None
    if idn["missing"] or pv["missing"]:
        recipe = stamp_recipe(path, fix_family if (idn["missing"] and fix_family in SUPPORTED) else None,
                              pv["flags"])
    return {
        "path": str(path),
        "format": ckpt.format,
        "score": sum(d["score"] for d in dims),
        "max": 100,
        "pass_score": PASS_SCORE,
        "dimensions": {d["name"]: d for d in dims},
        "stamp_recipe": recipe,
        "evidence": {"family": evidence[0], "reason": evidence[1]},
        "declared": {k: v[0] for k, v in ident.items()},
    }


def _hf_identity(ident: dict, evidence: tuple[str | None, str], path: Path) -> tuple[dict, str | None]:
    """The hf_identity dimension, and the family a stamp recipe should declare."""
    ev_family, ev_why = evidence
    idn = _dim("hf_identity")
    points = {"architecture": 6, "hf_architecture": 7, "model_type": 7}
    flag = {"architecture": "--architecture", "hf_architecture": "--hf-architecture", "model_type": "--model-type"}
    claimed_families = set()
    for key, pts in points.items():
        value, where = ident[key]
        fam = normalize_family(value) if value else None
        if not value:
            idn["missing"].append(f"{key}: not declared")
            idn["flags"].append(flag[key])
        elif fam not in SUPPORTED:
            idn["missing"].append(f"{key}: '{value}' ({where}) is not a supported family")
            idn["flags"].append(flag[key])
        elif ev_family and fam != ev_family:
            idn["missing"].append(f"{key}: '{value}' ({where}) contradicts the tensors, which say {ev_family} "
                                  f"({ev_why})")
            idn["flags"].append(flag[key])
            claimed_families.add(fam)
        else:
            _give(idn, pts, f"{key}={value}")
            claimed_families.add(fam)
    if ev_family is None:
        idn["present"].append(f"tensor evidence undecided ({ev_why})")
    idn["evidence"] = {"family": ev_family, "reason": ev_why}
    fix_family = ev_family or (next(iter(claimed_families)) if len(claimed_families) == 1 else None)
    if idn["missing"]:
        idn["fix"] = stamp_recipe(path, fix_family if fix_family in SUPPORTED else None)
    return idn, fix_family


def _provenance(prov: dict, path: Path) -> dict:
    pv = _dim("provenance")
    _field(pv, prov.get("license"), 7, "license", "license", "--license LICENSE")
    raw = prov.get("data_sources")
    sources = [s for s in (raw or []) if s] if isinstance(raw, list) else ([raw] if raw else [])
    _field(pv, sources, 7, "data_sources", "data sources", "--data-source SOURCE")
    _field(pv, prov.get("data_license"), 5, "data_license", "data license", "--data-license LICENSE")
    parent = prov.get("parent")
    if isinstance(parent, dict) and (parent.get("path") or parent.get("name")):
        _give(pv, 6, f"parent={parent.get('name') or parent.get('path')}")
        if not parent.get("sha256"):
            pv["present"].append("(parent sha256 not recorded)")
    elif "parent" in prov and parent is None and prov.get("warmstart_version"):
        _give(pv, 6, "trained from scratch by warmstart (no parent)")
    elif isinstance(parent, str) and parent:
        _give(pv, 6, f"parent={parent}")
    else:
        pv["missing"].append("parent lineage (base model, or 'trained from scratch')")
        pv["flags"].append("--parent NAME_OR_PATH")
    if pv["missing"]:
        pv["fix"] = stamp_recipe(path, None, pv["flags"])
    return pv


def _field(d: dict, value, pts: int, key: str, what: str, flag: str) -> None:
    if value:
        _give(d, pts, f"{key}={value}")
    else:
        d["missing"].append(what)
        d["flags"].append(flag)


def _integrity(validation: dict) -> dict:
    it = _dim("integrity")
    by_name = {c.name: c for c in validation["checks"]}
    structure, readable = by_name.get("structure"), by_name.get("readable")
    if structure and structure.status != FAIL and readable and readable.status == PASS:
        _give(it, 8, "structure valid, readable")
    else:
        bad = readable if structure and structure.status != FAIL else structure
        it["missing"].append(f"structure: {bad.detail if bad else 'not checked'}")
    if by_name.get("shapes") and by_name["shapes"].status != FAIL:
        _give(it, 4, "shapes match config")
    else:
        it["missing"].append("shapes do not match the config" if by_name.get("shapes") else "shapes not checked")
    if by_name.get("values") and by_name["values"].status != FAIL:
        _give(it, 8, "all values finite")
    else:
        it["missing"].append("NaN/Inf values" if by_name.get("values") else "values not checked")
    if it["missing"]:
        it["fix"] = "run `warmstart validate CKPT` for the list; use an earlier healthy checkpoint or re-export"
    return it


def _tokenizer(ckpt, cfg) -> dict:
    tk = _dim("tokenizer")
    tok = getattr(ckpt, "tokenizer", None)
    if tok is None:
        tk["missing"].append("no tokenizer in the checkpoint")
        tk["fix"] = "save tokenizer.json beside the weights (or export from a checkpoint that has one)"
        return tk
    _give(tk, 6, f"tokenizer ({tok.get_vocab_size(with_added_tokens=True)} tokens)")
    vocab = tok.get_vocab(with_added_tokens=True)
    max_id = max(vocab.values()) if vocab else -1
    rows = cfg.vocab_size if cfg is not None else None
    if rows is not None and max_id < rows:
        _give(tk, 5, f"all ids < {rows} embedding rows")
    else:
        tk["missing"].append(f"token id {max_id} does not fit the {rows} embedding rows")
    specials = {k: getattr(cfg, k, None) for k in ("bos_token_id", "eos_token_id", "pad_token_id")} \
        if cfg is not None else {}
    bad = [f"{k}={v}" for k, v in specials.items() if v is not None and rows is not None and not 0 <= v < rows]
    if cfg is not None and specials.get("eos_token_id") is not None and not bad:
        _give(tk, 4, "special ids in range (eos " + str(specials["eos_token_id"]) + ")")
    else:
        tk["missing"].append("special ids out of range: " + ", ".join(bad) if bad else "no eos_token_id declared")
    if tk["missing"]:
        tk["fix"] = "use a tokenizer that fits the embedding and declare eos_token_id in config.json"
    return tk


def _training_record(prov: dict) -> dict:
    tr = _dim("training_record")
    for key, pts in (("step", 4), ("tokens_seen", 4), ("val_loss", 6), ("data_fingerprint", 3),
                     ("warmstart_version", 3)):
        if prov.get(key) is not None and prov.get(key) != "":
            _give(tr, pts, f"{key}={prov[key]}")
        else:
            tr["missing"].append(key.replace("_", " "))
    if tr["missing"]:
        tr["fix"] = ("the training record is written by `warmstart pretrain` into warmstart.json; publish a "
                     "checkpoint produced (or continued) by warmstart")
    return tr


def render_quality(q: dict) -> str:
    lines = [f"quality score: {q['score']}/100  ({q['path']})"]
    for d in q["dimensions"].values():
        lines.append(f"  {d['name']:<16} {d['score']:>3}/{d['max']:<3}" + (
            "  missing: " + "; ".join(d["missing"]) if d["missing"] else "  complete"))
        if d["missing"] and d["flags"]:
            lines.append(f"  {'':<16}          stamp flags: {' '.join(d['flags'])}")
        elif d["missing"] and d["fix"]:
            lines.append(f"  {'':<16}          fix: {d['fix']}")
    if q.get("stamp_recipe"):
        lines.append(f"  repair: {q['stamp_recipe']}")
    return "\n".join(lines)


__all__ = ["DIMENSIONS", "PASS_SCORE", "quality_report", "render_quality"]
