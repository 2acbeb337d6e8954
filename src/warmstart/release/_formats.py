"""Raw, loader-independent views of checkpoint files for the release tools.

``validate`` needs to see a file's structure *before* trusting it (header sizes,
offsets, overlaps, out-of-bounds data), and ``stamp`` needs the exact byte ranges of
every tensor to copy and hash them. Both are done here by parsing the safetensors
header and the GGUF header/KV/tensor-info sections directly. Numbers are read
through ``warmstart.checkpoint.load_checkpoint``; this module never dequantises.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from warmstart.checkpoint.aliases import sha256_file  # noqa: F401  (re-exported for release modules)
from warmstart.checkpoint.formats import (
    FORMAT_GGUF,
    FORMAT_PICKLE,
    FORMAT_SAFETENSORS,
    SAFETENSORS_DTYPE_SIZES,  # noqa: F401 - re-exported
    check_safetensors,
    sniff_file,
)
from warmstart.errors import UnreadableError


class Unreadable(Exception):
    """The file cannot be parsed as any checkpoint format (exit 2)."""


@dataclass
class RawTensor:
    name: str
    dtype: str
    shape: tuple[int, ...]
    start: int  # absolute byte offset in ``file``
    end: int
    file: Path


@dataclass
class RawFile:
    path: Path
    kind: str  # "safetensors" | "gguf"
    size: int
    data_start: int
    tensors: list[RawTensor] = field(default_factory=list)
    metadata: dict[str, Any] = field(default_factory=dict)  # safetensors __metadata__ / GGUF KVs
    problems: list[str] = field(default_factory=list)  # structural failures (exit 1)
    warnings: list[str] = field(default_factory=list)
    version: int | None = None
    alignment: int | None = None


# ------------------------------------------------------------------ detection

def detect_format(path: str | Path) -> str | None:
    """"hf-dir" | "safetensors" | "gguf" | "pickle" | None, by content (files: ``checkpoint.formats.sniff_file``)."""
    p = Path(path)
    if p.is_dir():
        if (p / "config.json").exists() or list(p.glob("*.safetensors")):
            return "hf-dir"
        return None
    if not p.is_file():
        return None
    try:
        fmt = sniff_file(p)
    except UnreadableError:
        return None
    return {FORMAT_GGUF: "gguf", FORMAT_PICKLE: "pickle", FORMAT_SAFETENSORS: "safetensors"}[fmt]


# ---------------------------------------------------------------- safetensors

def _checked_safetensors(p: Path):
    """``checkpoint.formats.check_safetensors``; a header that cannot be parsed at all raises ``Unreadable``."""
    res = check_safetensors(p)
    if res.fatal is not None:
        raise Unreadable(f"{p}: the safetensors header does not parse: {res.fatal.message}; {res.fatal.why}")
    return res


def read_safetensors_header(path: str | Path) -> tuple[dict, int]:
    """(header dict as stored, ``__metadata__`` included; header length). Raises ``Unreadable``."""
    res = _checked_safetensors(Path(path))
    return res.header, res.header_len


def parse_safetensors(path: str | Path) -> RawFile:
    """Every tensor whose entry is usable, with all of the header's problems and warnings listed."""
    p = Path(path)
    res = _checked_safetensors(p)
    rf = RawFile(path=p, kind="safetensors", size=res.size, data_start=res.data_start, metadata=res.metadata,
                 problems=res.problems, warnings=res.warnings)
    for name, info in res.tensors.items():
        begin, end = info["data_offsets"]
        rf.tensors.append(RawTensor(name, info["dtype"], tuple(info["shape"]), rf.data_start + begin,
                                    rf.data_start + end, p))
    return rf


# ----------------------------------------------------------------------- GGUF

def parse_gguf(path: str | Path) -> RawFile:
    """The header through ``checkpoint.gguf.parse``'s parser (string arrays bounds-checked, not decoded);
    every tensor defect listed, plus overlaps."""
    import mmap

    from warmstart.checkpoint.gguf.parse import gguf_tensor_table, parse_gguf_header

    p = Path(path)
    size = p.stat().st_size
    if not size:
        raise Unreadable(f"{p}: empty file")
    with open(p, "rb") as fh:
        mm = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
    failed = None
    try:
        header = parse_gguf_header(memoryview(mm), p, skip_string_arrays=True)
    except UnreadableError as err:
        failed = f"{p}: {err.found}"
    try:
        mm.close()
    except BufferError:  # pragma: no cover - a view still alive: the GC closes it later
        pass
    if failed:
        raise Unreadable(failed)
    tensors, defects = gguf_tensor_table(header)
    rf = RawFile(path=p, kind="gguf", size=size, data_start=header.data_start, metadata=header.metadata,
                 version=header.version, alignment=header.alignment, problems=[d[0] for d in defects])
    rf.tensors = [RawTensor(t.name, t.type_name, t.shape, t.offset, t.offset + t.nbytes, p) for t in tensors]
    _check_overlaps(rf)
    return rf


def _check_overlaps(rf: RawFile) -> None:
    spans = sorted(rf.tensors, key=lambda t: (t.start, t.end))
    for a, b in zip(spans, spans[1:]):
        if b.start < a.end and b.end > b.start:
            rf.problems.append(f"tensors '{a.name}' and '{b.name}' overlap in the file "
                               f"(bytes {b.start}..{min(a.end, b.end)})")


# ------------------------------------------------------------------- HF dirs

@dataclass
class RawCheckpoint:
    path: Path
    format: str
    files: list[RawFile]
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    config: dict = field(default_factory=dict)

    @property
    def tensors(self) -> dict[str, RawTensor]:
        return {t.name: t for f in self.files for t in f.tensors}

    def all_problems(self) -> list[str]:
        out = list(self.problems)
        for f in self.files:
            out += [f"{f.path.name}: {m}" for m in f.problems]
        return out

    def all_warnings(self) -> list[str]:
        out = list(self.warnings)
        for f in self.files:
            out += [f"{f.path.name}: {m}" for m in f.warnings]
        return out


def resolve_root(path: str | Path) -> Path:
    """A run directory stands for its latest checkpoint (as warmstart's loader does)."""
    p = Path(path)
    if not p.is_dir() or (p / "config.json").exists():
        return p
    try:
        from warmstart.checkpoint.load import _resolve_run_dir
    except ImportError:  # pragma: no cover
        return p
    try:
        return _resolve_run_dir(p)
    except Exception as err:  # noqa: BLE001 - the loader's UnreadableError
        raise Unreadable(str(err)) from None


def parse_checkpoint(path: str | Path) -> RawCheckpoint:
    """Structure of any supported checkpoint. Raises ``Unreadable`` when the format is unknown."""
    p = resolve_root(path)
    if not p.exists():
        raise Unreadable(f"{p}: no such file or directory")
    fmt = detect_format(p)
    if fmt == "gguf":
        return RawCheckpoint(p, fmt, [parse_gguf(p)])
    if fmt == "safetensors":
        rf = parse_safetensors(p)
        rc = RawCheckpoint(p, fmt, [rf])
        cfg = rf.metadata.get("config")
        if isinstance(cfg, str):
            try:
                rc.config = json.loads(cfg)
            except json.JSONDecodeError:
                rc.problems.append("__metadata__['config'] is not valid JSON")
        elif (p.parent / "config.json").exists():
            rc.config = _read_json(p.parent / "config.json", rc)
        return rc
    if fmt == "hf-dir":
        return _parse_hf_dir(p)
    if fmt == "pickle":
        raise Unreadable(f"{p}: a pickle checkpoint; the release tools only handle safetensors and GGUF "
                         "(pickle can execute code)")
    raise Unreadable(f"{p}: not a checkpoint warmstart can read (neither a Hugging Face directory, "
                     "a safetensors file nor GGUF)")


def _read_json(path: Path, rc: RawCheckpoint) -> dict:
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        rc.problems.append(f"{path.name} does not parse as JSON ({err})")
        return {}
    if not isinstance(obj, dict):
        rc.problems.append(f"{path.name} is not a JSON object")
        return {}
    return obj


def _parse_hf_dir(p: Path) -> RawCheckpoint:
    rc = RawCheckpoint(p, "hf-dir", [])
    if (p / "config.json").exists():
        rc.config = _read_json(p / "config.json", rc)
    else:
        rc.problems.append("config.json is missing")
    index_path = p / "model.safetensors.index.json"
    if index_path.exists():
        index = _read_json(index_path, rc)
        wmap = index.get("weight_map") if isinstance(index, dict) else None
        if not isinstance(wmap, dict):
            rc.problems.append("model.safetensors.index.json has no weight_map")
            wmap = {}
        shards = sorted(set(wmap.values()))
        for shard in shards:
            sp = p / shard
            if not sp.exists():
                rc.problems.append(f"index names shard {shard}, which does not exist")
                continue
            rc.files.append(parse_safetensors(sp))
        held = {t.name: f.path.name for f in rc.files for t in f.tensors}
        for name, shard in wmap.items():
            if name not in held and (p / shard).exists():
                rc.problems.append(f"index maps '{name}' to {shard}, which does not hold it")
            elif name in held and held[name] != shard:
                rc.problems.append(f"index maps '{name}' to {shard} but it sits in {held[name]}")
        for name, shard in held.items():
            if name not in wmap:
                rc.problems.append(f"'{name}' in {shard} is missing from the index weight_map")
    else:  # as the loader: model.safetensors when present, else the directory's safetensors files
        files = [p / "model.safetensors"] if (p / "model.safetensors").is_file() else \
            sorted(f for f in p.glob("*.safetensors") if not f.name.startswith("."))
        if not files:
            rc.problems.append("no model.safetensors (and no model.safetensors.index.json)")
        for f in files:
            rc.files.append(parse_safetensors(f))
    seen: dict[str, str] = {}
    for f in rc.files:
        for t in f.tensors:
            if t.name in seen and seen[t.name] != f.path.name:
                rc.problems.append(f"tensor '{t.name}' appears in both {seen[t.name]} and {f.path.name}")
            seen[t.name] = f.path.name
    return rc


# -------------------------------------------------------------------- hashing

def hash_tensor_bytes(raw: RawCheckpoint | str | Path) -> dict[str, str]:
    """sha256 of every tensor's raw data bytes, by stored name."""
    rc = raw if isinstance(raw, RawCheckpoint) else parse_checkpoint(raw)
    out: dict[str, str] = {}
    for f in rc.files:
        with open(f.path, "rb") as fh:
            for t in sorted(f.tensors, key=lambda t: t.start):
                fh.seek(t.start)
                h = hashlib.sha256()
                left = t.end - t.start
                while left > 0:
                    chunk = fh.read(min(left, 1 << 24))
                    if not chunk:
                        break
                    h.update(chunk)
                    left -= len(chunk)
                out[t.name] = h.hexdigest()
    return out


def sha256_checkpoint(path: str | Path) -> str:
    """One digest for a checkpoint: the file's sha256, or for a directory the sha256 of its tensor files."""
    p = Path(path)
    if p.is_file():
        return sha256_file(p)
    h = hashlib.sha256()
    for f in sorted(p.glob("*.safetensors")):
        h.update(f.name.encode())
        h.update(sha256_file(f).encode())
    return h.hexdigest()
