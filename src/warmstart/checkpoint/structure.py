"""The structural view of a checkpoint: its files, every tensor's byte range, every defect.

``read_structure(path)`` looks at a checkpoint the way the loader does (``locate_checkpoint``
picks the files) and with the loader's own checkers: ``formats.check_safetensors`` for each
safetensors file, the GGUF header parser and tensor table for GGUF (plus overlapping data), and
the checks here of the shard index and of the JSON files beside the weights. ``load_checkpoint``
gets the same view from ``structure_at`` and raises its first defect before it reads anything
else, so ``validate``, which lists them all, names every defect the loader refuses. Nothing here
reads tensor data, except ``tensor_hashes``, which hashes the stored bytes.
"""

from __future__ import annotations

import hashlib
import json
import mmap
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from warmstart.checkpoint.declared import config_defects, gguf_defects, provenance_defects
from warmstart.checkpoint.defects import FATAL, WARNING, Defect
from warmstart.checkpoint.formats import FORMAT_GGUF, FORMAT_PICKLE, FORMAT_SAFETENSORS, check_safetensors, sniff_file
from warmstart.checkpoint.locate import FORMAT_HF_DIR, Location, locate_checkpoint
from warmstart.checkpoint.metadata import metadata_value, safetensors_metadata
from warmstart.errors import OutsidePathError, PickleRefusedError, UnreadableError
from warmstart.files import inside, is_regular, refuse_special


@dataclass(frozen=True)
class TensorSpan:
    name: str  # as stored (GGUF: the llama.cpp name)
    dtype: str  # safetensors dtype or GGML type name
    shape: tuple[int, ...]
    start: int  # absolute byte offsets in ``file``
    end: int
    file: Path


@dataclass
class FileStructure:
    path: Path
    kind: str  # "safetensors" | "gguf"
    size: int
    data_start: int = 0
    tensors: list[TensorSpan] = field(default_factory=list)
    metadata: dict[str, Any] = field(default_factory=dict)  # safetensors __metadata__ / GGUF key-values
    header: dict = field(default_factory=dict)  # safetensors: the JSON header as stored
    defects: list[Defect] = field(default_factory=list)
    version: int | None = None  # GGUF
    alignment: int | None = None  # GGUF

    @property
    def fatal(self) -> Defect | None:
        return next((d for d in self.defects if d.level == FATAL), None)


@dataclass
class CheckpointStructure:
    location: Location
    files: list[FileStructure] = field(default_factory=list)
    defects: list[Defect] = field(default_factory=list)  # of the checkpoint: JSON files, shard index
    config: dict | None = None  # the HF config as found (safetensors formats), and where
    config_source: str | None = None  # "config.json" | "safetensors metadata config"
    provenance_file: dict | None = None  # warmstart.json, when the loader reads one
    weight_map: dict[str, str] = field(default_factory=dict)  # the shard index's

    @property
    def path(self) -> Path:
        return self.location.root

    @property
    def format(self) -> str:
        return self.location.format

    @property
    def tensors(self) -> dict[str, TensorSpan]:
        return {t.name: t for f in self.files for t in f.tensors}

    @property
    def data_bytes(self) -> int:
        """The bytes of tensor data the files hold (every tensor's span)."""
        return sum(t.end - t.start for f in self.files for t in f.tensors)

    def all_defects(self) -> list[tuple[str, Defect]]:
        """``(description, defect)`` in the order found; a file's own defects are prefixed with its name."""
        out = [(d.message, d) for d in self.defects]
        out += [(f"{f.path.name}: {d.message}", d) for f in self.files for d in f.defects]
        return out

    @property
    def fatal(self) -> tuple[FileStructure, Defect] | None:
        """The first file whose header could not be read at all, with its defect."""
        return next(((f, f.fatal) for f in self.files if f.fatal is not None), None)

    @property
    def problems(self) -> list[str]:
        """Every defect the loader refuses, as ``[CODE] description``."""
        return [f"[{d.error.code}] {text}" for text, d in self.all_defects() if d.refused]

    @property
    def warnings(self) -> list[str]:
        return [text for text, d in self.all_defects() if d.level == WARNING]

    def first_refused(self) -> Defect | None:
        """The first defect the loader refuses (file header defects before the index's), or None."""
        return next((d for d in [d for f in self.files for d in f.defects] + self.defects if d.refused), None)

    def raise_first(self) -> None:
        """Raise the first defect the loader refuses."""
        if (first := self.first_refused()) is not None:
            first.raise_()


# ====================================================================== entry


def read_structure(path: str | os.PathLike) -> CheckpointStructure:
    """The structure of a safetensors, HF-directory or GGUF checkpoint (a path, run dir or alias).

    Raises UnreadableError when ``path`` names no checkpoint, PickleRefusedError for a pickle."""
    loc = locate_checkpoint(path)
    if loc.format == FORMAT_PICKLE:
        raise PickleRefusedError(
            "this is a pickle checkpoint (torch.save / .bin / .pt); its structure cannot be checked without "
            "unpickling it", why="unpickling a file can execute arbitrary code",
            fix="convert it to safetensors", path=loc.root)
    return structure_at(loc)


def structure_at(loc: Location) -> CheckpointStructure:
    """The structure of the located safetensors / HF-directory / GGUF checkpoint, every check run.

    The one place the loader and ``validate`` get their defects from: a new structural check of
    any format (declared values, paths that leave the checkpoint, ...) belongs here or below."""
    if loc.format == FORMAT_GGUF:
        return CheckpointStructure(loc, files=[gguf_file_structure(loc.root)])
    return safetensors_structure(loc)


def safetensors_structure(loc: Location) -> CheckpointStructure:
    """A single safetensors file or a HF directory (single file or shards): every header checked,
    the index against the shards, tensors held twice, the config and warmstart.json beside them."""
    st = CheckpointStructure(loc)
    files = _index_shards(st) if loc.index is not None else list(loc.files)
    st.files = [safetensors_file_structure(f) for f in files]
    if loc.index is not None and st.weight_map:
        st.defects += _index_defects(st)
    st.defects += _held_twice(st.files)
    _read_config(st)
    _read_provenance_file(st)
    _sidecar(st.location.config_dir / "tokenizer.json", st, "tokenizer.json")
    _declared(st)
    return st


def _declared(st: CheckpointStructure) -> None:
    """The declared values (``checkpoint.declared``): the config, warmstart.json, the metadata's provenance."""
    if st.fatal is not None:
        return  # the tensor table is unknown: nothing to bound the declared shape by
    if st.config is not None:
        where_path = st.location.config_dir / "config.json" if st.config_source == "config.json" else st.files[0].path
        st.defects += config_defects(st.config, where=st.config_source or "config", path=where_path,
                                     data_bytes=st.data_bytes)
    if st.provenance_file is not None:
        st.defects += provenance_defects(st.provenance_file, where="warmstart.json",
                                         path=st.location.config_dir / "warmstart.json")
    if st.files and st.files[0].metadata:
        st.defects += provenance_defects(safetensors_metadata(st.files[0].metadata), where="safetensors metadata",
                                         path=st.files[0].path)


# ------------------------------------------------------------------- files


def safetensors_file_structure(path: Path) -> FileStructure:
    """``check_safetensors`` as a ``FileStructure`` (absolute byte ranges; a non-safetensors file is fatal)."""
    try:
        kind = sniff_file(path)
    except UnreadableError as err:
        return _unreadable_file(path, Defect(err.found, err.why, err.fix, FATAL, path, type(err)))
    if kind != FORMAT_SAFETENSORS:
        return _unreadable_file(path, Defect(f"{path.name} is not a safetensors file", level=FATAL, path=path))
    res = check_safetensors(path)
    fs = FileStructure(path, "safetensors", res.size, res.data_start, metadata=dict(res.metadata),
                       header=res.header, defects=list(res.defects))
    for name, info in res.tensors.items():
        begin, end = info["data_offsets"]
        fs.tensors.append(TensorSpan(name, info["dtype"], tuple(info["shape"]), fs.data_start + begin,
                                     fs.data_start + end, path))
    return fs


def _unreadable_file(path: Path, defect: Defect) -> FileStructure:
    try:
        size = path.stat().st_size
    except OSError:  # a symlink loop
        size = 0
    return FileStructure(path, "safetensors", size, defects=[defect])


def gguf_file_structure(path: Path) -> FileStructure:
    """The GGUF header (string arrays bounds-checked, not decoded), every tensor defect, overlaps."""
    from warmstart.checkpoint.gguf.parse import gguf_tensor_table, parse_gguf_header  # the one place

    fs = FileStructure(path, "gguf", path.stat().st_size)
    with open(path, "rb") as fh:
        mm = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
    try:
        header = parse_gguf_header(memoryview(mm), path, skip_string_arrays=True)
    except UnreadableError as err:
        fs.defects.append(Defect(err.found, err.why, err.fix or "re-download or re-export the file", FATAL, path,
                                 type(err)))
        return fs
    finally:
        try:
            mm.close()
        except BufferError:  # pragma: no cover - a view still alive: the GC closes it later
            pass
    tensors, defects = gguf_tensor_table(header)
    fs.data_start, fs.metadata = header.data_start, header.metadata
    fs.version, fs.alignment = header.version, header.alignment
    fs.defects += [Defect(f"GGUF metadata key '{k}' is stored more than once", "readers disagree on which value "
                          "counts", "re-export the file", path=path) for k in header.duplicate_keys]
    fs.defects += [Defect(msg, why or "", fix, path=path) for msg, why, fix in defects]
    fs.tensors = [TensorSpan(t.name, t.type_name, t.shape, t.offset, t.offset + t.nbytes, path) for t in tensors]
    fs.defects += _overlaps(fs.tensors, path)
    fs.defects += gguf_defects(header.metadata, {t.name: t.shape for t in tensors}, path=path,
                               data_bytes=sum(t.nbytes for t in tensors))
    fs.defects += provenance_defects(_gguf_provenance(header.metadata), where=f"{path.name} warmstart.* keys",
                                     path=path)
    return fs


def _gguf_provenance(metadata: dict) -> dict:
    """The ``warmstart.*`` keys of a GGUF as the provenance fields they stand for."""
    return {k.removeprefix("warmstart."): metadata_value(k.removeprefix("warmstart."), v)
            for k, v in metadata.items() if k.startswith("warmstart.")}


def _overlaps(tensors: list[TensorSpan], path: Path) -> list[Defect]:
    spans = sorted((t for t in tensors if t.end > t.start), key=lambda t: (t.start, t.end))
    return [Defect(f"tensors '{a.name}' and '{b.name}' overlap in the file (bytes {b.start}..{min(a.end, b.end)})",
                   "two tensors would share the same bytes", path=path)
            for a, b in zip(spans, spans[1:]) if b.start < a.end]


# ------------------------------------------------------------ directories


def json_object(path: Path, what: str | None = None) -> tuple[dict | None, Defect | None]:
    """The JSON object in ``path``; or None and the defect (not JSON, or not an object)."""
    what, fix = what or path.name, f"repair or regenerate {path.name}"
    try:
        refuse_special(path, what)
        obj = json.loads(path.read_text(encoding="utf-8"))
    except UnreadableError as err:
        return None, Defect(err.found, err.why, err.fix, path=path, error=type(err))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as err:
        return None, Defect(f"{what} is not valid JSON ({type(err).__name__}: {str(err)[:200]})", fix=fix,
                            path=path)
    if not isinstance(obj, dict):
        return None, Defect(f"{what} is not a JSON object", fix=fix, path=path)
    return obj, None


def _json_object(path: Path, st: CheckpointStructure) -> dict | None:
    obj, defect = json_object(path)
    if defect is not None:
        st.defects.append(defect)
    return obj


def _index_shards(st: CheckpointStructure) -> list[Path]:
    """The shard files the index names that exist; a defect for the index itself and each missing shard."""
    index = st.location.index
    data = _json_object(index, st) or {}
    wmap = data.get("weight_map")
    if not isinstance(wmap, dict) or not wmap or not all(isinstance(v, str) for v in wmap.values()):
        st.defects.append(Defect(f"{index.name} has no 'weight_map' mapping tensor names to shard files",
                                 fix="regenerate the index (or re-save the checkpoint)", path=index))
        return []
    st.weight_map = wmap
    found = []
    for shard in sorted(set(wmap.values())):
        if not inside(index.parent, shard):
            st.defects.append(Defect(f"index names shard '{shard}', which lies outside the checkpoint directory",
                                     "a checkpoint reads only its own files; a path that leaves it could name any "
                                     "file on the machine", "regenerate the index with shard names relative to its "
                                     "directory", path=index, error=OutsidePathError))
        elif _sidecar(index.parent / shard, st, f"shard {shard}"):
            found.append(index.parent / shard)
        else:
            st.defects.append(Defect(f"index names shard {shard}, which does not exist",
                                     "part of the weights is absent", "download every shard", path=index))
    return found


def _sidecar(path: Path, st: CheckpointStructure, what: str) -> bool:
    """Whether ``path`` is a regular file to read; a FIFO, a device or a symlink loop there is a defect."""
    try:
        return is_regular(path, what)
    except UnreadableError as err:
        st.defects.append(Defect(err.found, err.why, err.fix, path=path, error=type(err)))
        return False


def _index_defects(st: CheckpointStructure) -> list[Defect]:
    """The index against the shards' own headers (shards whose header is unreadable are not compared)."""
    readable = {f.path.name for f in st.files if f.fatal is None}
    held = {t.name: f.path.name for f in st.files for t in f.tensors}
    index, fix = st.location.index, "re-download the shard or regenerate the index"
    out = []
    for name, shard in st.weight_map.items():
        if name not in held and shard in readable:
            out.append(Defect(f"index maps '{name}' to {shard}, which does not hold it", fix=fix, path=index))
        elif name in held and held[name] != shard:
            out.append(Defect(f"index maps '{name}' to {shard} but it sits in {held[name]}", fix=fix, path=index))
    out += [Defect(f"'{name}' in {shard} is missing from the index weight_map",
                   "loaders that follow the index never read it", fix, path=index)
            for name, shard in held.items() if name not in st.weight_map]
    return out


def _held_twice(files: list[FileStructure]) -> list[Defect]:
    seen: dict[str, Path] = {}
    out = []
    for f in files:
        for t in f.tensors:
            if t.name in seen and seen[t.name] != f.path:
                out.append(Defect(f"tensor '{t.name}' is stored in two shards ({seen[t.name].name}, {f.path.name})",
                                  fix="re-export the checkpoint", path=f.path))
            seen[t.name] = f.path
    return out


def _read_config(st: CheckpointStructure) -> None:
    """The HF config as the loader takes it: a directory's config.json before the metadata's, a
    single file's metadata before the config.json beside it."""
    config_json = st.location.config_dir / "config.json"
    embedded = st.files[0].metadata.get("config") if st.files else None
    present = _sidecar(config_json, st, "config.json")
    if embedded is not None and (st.format == FORMAT_SAFETENSORS or not present):
        st.config, st.config_source = _metadata_config(embedded, st), "safetensors metadata config"
    elif present:
        st.config, st.config_source = _json_object(config_json, st), "config.json"


def _metadata_config(text: Any, st: CheckpointStructure) -> dict | None:
    path, fix = st.files[0].path, "re-export the file, or remove the key and put config.json beside it"
    try:
        config = json.loads(text)
    except (TypeError, json.JSONDecodeError, RecursionError) as err:
        st.defects.append(Defect(f"safetensors metadata 'config' is not valid JSON ({err})", fix=fix, path=path))
        return None
    if not isinstance(config, dict):
        st.defects.append(Defect("safetensors metadata 'config' is not a JSON object", fix=fix, path=path))
        return None
    return config


def _read_provenance_file(st: CheckpointStructure) -> None:
    """warmstart.json of a directory, or beside a single file named model.safetensors (a HF/run dir's weights)."""
    if st.format == FORMAT_SAFETENSORS and st.path.name != "model.safetensors":
        return  # a loose weights file: a warmstart.json beside it describes something else
    path = st.location.config_dir / "warmstart.json"
    if _sidecar(path, st, "warmstart.json"):
        st.provenance_file = _json_object(path, st)


# ------------------------------------------------------------------ hashing


def tensor_hashes(st: CheckpointStructure) -> dict[str, str]:
    """sha256 of every tensor's stored data bytes, by stored name."""
    out: dict[str, str] = {}
    for f in st.files:
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


__all__ = ["CheckpointStructure", "FORMAT_HF_DIR", "FileStructure", "TensorSpan", "gguf_file_structure",
           "json_object", "read_structure", "structure_at", "safetensors_file_structure", "safetensors_structure", "tensor_hashes"]
