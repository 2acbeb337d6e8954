"""`warmstart stamp`: a copy of a checkpoint with corrected identity/provenance metadata.

The output has the input's format; tensor bytes are copied, never re-encoded:

* HF directory: every file copied byte-for-byte; ``config.json`` (architectures,
  model_type) and ``warmstart.json`` rewritten.
* single safetensors: only the JSON header's ``__metadata__`` is rewritten; the data
  section is copied as is (offsets are relative to it, so they stay valid).
* GGUF: metadata KVs rewritten through ``checkpoint/gguf`` (``{arch}.*`` keys renamed when
  the architecture changes); tensor infos and data copied raw.

Success is declared only after the sha256 of every tensor's data bytes in the output
equals the input's. The input is never overwritten; a claim that contradicts the
tensor-name evidence is refused unless ``force``.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from warmstart.arch.families import FAMILIES, SUPPORTED, get_family, normalize_family, supported_list
from warmstart.checkpoint import (
    load_checkpoint, locate_checkpoint, parent_record, provenance, read_structure, tensor_hashes,
)
from warmstart.checkpoint.structure import CheckpointStructure
from warmstart.checkpoint.write import atomic_dir, atomic_path, fsync_file
from warmstart.errors import CheckFailedError, EvidenceError, UnreadableError, UsageError
from warmstart.files import check_output
from warmstart.init.gates import tensor_evidence
from warmstart.release._meta import declared_identity, gguf_arch_name

_IDENTITY_KEYS = ("architecture", "hf_architecture", "model_type")


@dataclass
class StampSource(CheckpointStructure):
    """What stamp reads of its input, all through ``checkpoint/``: the structure (files, byte ranges,
    headers, config) and the loaded checkpoint (provenance, tensor names)."""

    checkpoint: Any = None  # warmstart.checkpoint.Checkpoint

    def provenance(self) -> dict:
        return provenance(self.checkpoint)


def resolve_identity(architecture: str | None, hf_architecture: str | None,
                     model_type: str | None) -> dict[str, str]:
    """Normalise the identity flags; fill the rest from the family registry. {} when none given."""
    given = {"--architecture": architecture, "--hf-architecture": hf_architecture, "--model-type": model_type}
    fams = {}
    for flag, value in given.items():
        if value:
            fam = normalize_family(value)
            if fam is None:
                raise UsageError(f"{flag} '{value}' is not a known architecture",
                                 fix=f"use one of the supported families: {supported_list()} "
                                 "(any spelling: qwen2, Qwen2, Qwen2ForCausalLM)")
            fams[flag] = fam
    if not fams:
        return {}
    if len(set(fams.values())) > 1:
        raise UsageError("the identity flags name different families: "
                         + ", ".join(f"{k} {given[k]} ({v})" for k, v in fams.items()),
                         fix="give one family, e.g. --architecture qwen2 alone")
    fam = FAMILIES[next(iter(fams.values()))]
    return {
        "architecture": fam.name,
        "hf_architecture": hf_architecture if hf_architecture and fam.hf_architecture is None else
        (fam.hf_architecture or hf_architecture or ""),
        "model_type": fam.model_type or model_type or fam.name,
    }


def _same_path(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve() or (b.exists() and os.path.samefile(a, b))
    except OSError:
        return False


def _parent_record(parent: str) -> dict:
    """The lineage record of ``--parent``: a checkpoint on disk as ``pretrain --init`` records it
    (``checkpoint.parent_record``), plus its name; anything else is a name (a hub id)."""
    p = Path(parent)
    if not p.exists():
        return {"path": parent, "name": parent, "sha256": None, "family": None}
    with load_checkpoint(p) as ckpt:
        return {**parent_record(ckpt, family=tensor_evidence(ckpt)[0]), "name": p.name}


def _refuse_output(src: Path, out: Path) -> None:
    check_output(out, replace=True, directory=src.is_dir())  # a FIFO, device, loop, the wrong kind, its parent
    if _same_path(src, out) or (src.is_dir() and out.resolve().is_relative_to(src.resolve())):
        raise UsageError(f"the output {out} is the input checkpoint (or inside it)",
                         why="stamp never overwrites its input; a failed write would destroy the only copy",
                         fix="pass a new path with -o, e.g. -o " + str(src.with_name(src.stem + "-fixed" + src.suffix)))
    check_output(out, directory=src.is_dir(), flag=None)  # stamp never replaces an output


def _read_source(src: str | Path) -> StampSource:
    """The input through ``checkpoint/``; a structurally broken one is refused (stamp would copy the damage)."""
    st = read_structure(src)
    first = st.first_refused()
    if first is not None:  # damaged bytes: WS300; a defect with a code of its own (WS111, ...): that code
        cls = CheckFailedError if first.error is UnreadableError else first.error
        raise cls(f"{st.path} is structurally broken ({first.message})",
                  why="stamp copies tensor bytes as they are and would copy the damage",
                  fix="run `warmstart validate` and repair or re-export the checkpoint first", path=first.path)
    return StampSource(**{f.name: getattr(st, f.name) for f in fields(st)}, checkpoint=load_checkpoint(src))


def _check_claim(ident: dict, evidence: tuple[str | None, str], force: bool, path: Path) -> None:
    ev, why = evidence
    if ident and ev and ident["architecture"] != ev and not force:
        raise EvidenceError(
            f"the claim '{ident['architecture']}' contradicts the tensors, which are {ev} ({why})",
            why="a wrong architecture claim makes trainers and loaders build the wrong model and silently "
            "drop or random-init weights",
            fix=f"stamp --architecture {ev}, or pass --force if you know better than the tensor names",
            path=path,
        )
    if ident and ident["architecture"] not in SUPPORTED and not force:
        fam = get_family(ident["architecture"])
        raise UsageError(f"'{ident['architecture']}' ({fam.display if fam else '?'}) is not a supported decoder "
                         "family", fix=f"use one of: {supported_list()}, or --force")


def _updates(ident: dict, license: str | None, data_sources: list[str] | None,  # noqa: A002
             data_license: str | None, parent: str | None) -> dict[str, Any]:
    updates: dict[str, Any] = dict(ident)
    if license:
        updates["license"] = license
    if data_sources:
        updates["data_sources"] = list(data_sources)
    if data_license:
        updates["data_license"] = data_license
    if parent:
        updates["parent"] = _parent_record(parent)
    if not updates:
        raise UsageError("nothing to stamp", fix="pass at least one of --architecture, --hf-architecture, "
                         "--model-type, --license, --data-source, --data-license, --parent")
    return updates


def stamp_checkpoint(
    src: str | Path,
    out: str | Path,
    *,
    architecture: str | None = None,
    hf_architecture: str | None = None,
    model_type: str | None = None,
    license: str | None = None,  # noqa: A002 - the flag's name
    data_sources: list[str] | None = None,
    data_license: str | None = None,
    parent: str | None = None,
    force: bool = False,
) -> dict[str, Any]:
    out = Path(out)
    _refuse_output(locate_checkpoint(src).root, out)
    source = _read_source(src)
    with source.checkpoint:
        ident = resolve_identity(architecture, hf_architecture, model_type)
        evidence = tensor_evidence(source.checkpoint)
        _check_claim(ident, evidence, force, source.path)
        updates = _updates(ident, license, data_sources, data_license, parent)
        before_ident = declared_identity(source.checkpoint)
        before = tensor_hashes(source)
        {"hf-dir": _stamp_hf_dir, "safetensors": _stamp_safetensors, "gguf": _stamp_gguf}[source.format](
            source, out, ident, updates)
    after, after_ident = _verify_copy(out, before)
    ev, why = evidence
    return {
        "input": str(source.path), "output": str(out), "format": source.format, "tensors": len(after),
        "tensor_hashes_equal": True,
        "identity_before": {k: v[0] for k, v in before_ident.items()},
        "identity_after": {k: v[0] for k, v in after_ident.items()},
        "provenance_set": updates,
        "evidence": {"family": ev, "reason": why},
        "forced": bool(force and ident and ev and ident["architecture"] != ev),
    }


def render_stamp(r: dict[str, Any]) -> str:
    lines = [f"stamped {r['input']} -> {r['output']} ({r['format']}, {r['tensors']} tensors byte-identical, "
             "sha256 verified)"]
    for k in _IDENTITY_KEYS:
        a, b = r["identity_before"].get(k), r["identity_after"].get(k)
        if a != b:
            lines.append(f"  {k}: {a} -> {b}")
    lines += [f"  {k}: {v}" for k, v in r["provenance_set"].items() if k not in _IDENTITY_KEYS]
    if r.get("forced"):
        lines.append(f"  warning: --force: the claim contradicts the tensor names ({r['evidence']['reason']})")
    return "\n".join(lines)


def _verify_copy(out: Path, before: dict[str, str]) -> tuple[dict[str, str], dict]:
    """The output's tensor hashes (equal to ``before``) and declared identity; the output is removed otherwise."""
    try:
        after = tensor_hashes(read_structure(out))
        with load_checkpoint(out) as back:
            after_ident = declared_identity(back)
    except Exception as err:  # noqa: BLE001 - whatever went wrong, the copy is not trustworthy
        _remove(out)
        raise CheckFailedError(f"the stamped copy does not read back ({err})",
                               why="the output was removed", fix="report this as a bug") from None
    if before != after:
        diff = sorted(set(before) ^ set(after)) + sorted(n for n in before if n in after and before[n] != after[n])
        _remove(out)
        raise CheckFailedError(f"tensor data changed while stamping ({len(diff)} tensor(s), e.g. {diff[:3]})",
                               why="stamp must leave every tensor byte-identical; the output "
                               "was removed", fix="report this as a bug")
    return after, after_ident


def _remove(p: Path) -> None:
    if p.is_dir():
        shutil.rmtree(p, ignore_errors=True)
    else:
        try:
            p.unlink()
        except FileNotFoundError:
            pass


# ------------------------------------------------------------------ HF dir

def _stamp_hf_dir(rc: StampSource, out: Path, ident: dict, updates: dict) -> None:
    src = rc.path
    with atomic_dir(out) as staging:
        for entry in sorted(src.iterdir()):
            if entry.name in ("config.json", "warmstart.json"):
                continue
            if entry.is_dir():
                shutil.copytree(entry, staging / entry.name)
            else:
                shutil.copyfile(entry, staging / entry.name)
                fsync_file(staging / entry.name)
        cfg = dict(rc.config or {})
        if ident:
            cfg["architectures"] = [ident["hf_architecture"]]
            cfg["model_type"] = ident["model_type"]
        (staging / "config.json").write_text(json.dumps(cfg, indent=2) + "\n", encoding="utf-8")
        ws = rc.provenance()
        ws.update(updates)
        (staging / "warmstart.json").write_text(json.dumps(ws, indent=2, default=str) + "\n", encoding="utf-8")
        fsync_file(staging / "config.json")
        fsync_file(staging / "warmstart.json")


# -------------------------------------------------------------- safetensors

def safetensors_metadata_update(meta: dict[str, str], config: dict | None, ident: dict, updates: dict) -> dict:
    meta = dict(meta)
    if config is not None:
        cfg = dict(config)
        if ident:
            cfg["architectures"] = [ident["hf_architecture"]]
            cfg["model_type"] = ident["model_type"]
        meta["config"] = json.dumps(cfg)
    for k, v in updates.items():
        meta[k] = v if isinstance(v, str) else json.dumps(v, default=str)
    meta.setdefault("format", "pt")
    return meta


def _stamp_safetensors(rc: StampSource, out: Path, ident: dict, updates: dict) -> None:
    f = rc.files[0]
    header = dict(f.header)
    meta = header.get("__metadata__") or {}
    header["__metadata__"] = safetensors_metadata_update(meta, rc.config or None, ident, updates)
    write_safetensors_with_header(f.path, f.data_start, header, out)


def write_safetensors_with_header(src: Path, data_start: int, header: dict, out: Path) -> None:
    blob = json.dumps(header, separators=(",", ":")).encode("utf-8")
    blob += b" " * ((8 - len(blob) % 8) % 8)
    with atomic_path(out) as tmp, open(tmp, "wb") as fo, open(src, "rb") as fi:
        fo.write(struct.pack("<Q", len(blob)))
        fo.write(blob)
        fi.seek(data_start)
        shutil.copyfileobj(fi, fo, 1 << 24)


# --------------------------------------------------------------------- GGUF

def _stamp_gguf(rc, out: Path, ident: dict, updates: dict) -> None:
    """Rewrite the metadata with checkpoint/gguf's parser and writer; tensor infos and data are copied
    byte for byte. A new architecture renames the ``{arch}.*`` keys (their values copied as they are)."""
    from warmstart.checkpoint.gguf.parse import STRING, UINT32, read_gguf_header
    from warmstart.checkpoint.gguf.write import copied_kv, encode_kv, provenance_kvs, write_gguf_with_metadata

    header, raw = read_gguf_header(rc.path)
    old_arch = header.metadata.get("general.architecture") or "llama"
    new_arch = gguf_arch_name(ident["architecture"]) if ident else old_arch
    prov = rc.provenance()
    prov.update(updates)
    if ident:
        prov["architecture"] = ident["architecture"]
    drop = ["warmstart."]  # rewritten below from the merged provenance
    new: list[tuple[str, Any, int]] = []
    if updates.get("license"):
        new.append(("general.license", updates["license"], STRING))
    if updates.get("data_sources"):
        drop.append("general.dataset.")
        new.append(("general.dataset.count", len(updates["data_sources"]), UINT32))
        new += [(f"general.dataset.{i}.name", str(s), STRING) for i, s in enumerate(updates["data_sources"])]
    if updates.get("parent"):
        drop.append("general.base_model.")
        par = updates["parent"]
        new += [("general.base_model.count", 1, UINT32),
                ("general.base_model.0.name", str(par.get("name") or par.get("path")), STRING)]
    new += provenance_kvs(prov)
    replaced = {key for key, _, _ in new} | {"general.architecture"}
    entries = [encode_kv("general.architecture", new_arch, STRING)]
    for key in header.kv_spans:
        if key not in replaced and not key.startswith(tuple(drop)):
            renamed = new_arch + key[len(old_arch):] if key.startswith(old_arch + ".") else key
            entries.append(copied_kv(header, raw, key, renamed))
    entries += [encode_kv(key, val, vtype) for key, val, vtype in new]
    write_gguf_with_metadata(rc.path, header, raw, entries, out)


__all__ = ["StampSource", "render_stamp", "resolve_identity", "safetensors_metadata_update", "stamp_checkpoint",
           "write_safetensors_with_header"]
