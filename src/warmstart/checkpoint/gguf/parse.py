"""Parse GGUF (v2/v3) files: header, metadata, tensor table; ``GGUFFile`` reads tensors.

The header is parsed here, with a bounds check on every read, so that a truncated
or corrupt file becomes an ``UnreadableError`` naming what is wrong. (``gguf.GGUFReader``
also turns every element of every metadata array into a numpy view of its own, which is slow
for a large vocabulary; this parser reads a numeric array in one call, strings as strings.) The header also records where each
metadata entry and the tensor-info section lie, so a writer can copy them byte for byte.
Tensor data is memory-mapped; the constants (type ids, block sizes) come from the ``gguf`` package.
"""

from __future__ import annotations

import math
import mmap
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from warmstart.checkpoint.gguf.dequant import dequantize
from warmstart.checkpoint.gguf.names import unpermute_rows
from warmstart.errors import DeclaredValueError, UnreadableError

GGUF_MAGIC = b"GGUF"
SUPPORTED_VERSIONS = (2, 3)
DEFAULT_ALIGNMENT = 32

# GGUF metadata value types (gguf.GGUFValueType), with struct formats for scalars.
UINT8, INT8, UINT16, INT16, UINT32, INT32, FLOAT32, BOOL, STRING, ARRAY, UINT64, INT64, FLOAT64 = range(13)
SCALAR_FORMATS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q",
                  12: "<d"}
_NP_SCALAR = {0: "<u1", 1: "<i1", 2: "<u2", 3: "<i2", 4: "<u4", 5: "<i4", 6: "<f4", 7: "<u1", 10: "<u8",
              11: "<i8", 12: "<f8"}


def _quant_types():
    from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType

    return GGMLQuantizationType, GGML_QUANT_SIZES


@dataclass
class GGUFTensor:
    name: str  # llama.cpp name
    shape: tuple[int, ...]  # numpy/HF order (outermost first) -- ggml dims reversed
    type_name: str  # GGML type name, e.g. "Q4_1"
    type_id: int
    offset: int  # absolute byte offset in the file
    nbytes: int


# Sanity limits on header counts: larger values mean a corrupt header (checked before any loop).
MAX_COUNT = 1 << 20  # tensors, metadata entries
MAX_STRING = 1 << 30  # bytes in one string
MAX_ARRAY = 1 << 28  # elements in one metadata array
MAX_NESTING = 8  # arrays inside arrays (llama.cpp writes none; a deeper file is refused, not recursed into)


class SkippedStrings(int):
    """Stands for a GGUF string array that was bounds-checked but not decoded (its length)."""

    def __repr__(self) -> str:
        return f"<{int(self)} strings>"


class _Cursor:
    """Bounds-checked little-endian reads from a memory-mapped file."""

    def __init__(self, buf: memoryview | bytes, path: Path, *, skip_string_arrays: bool = False) -> None:
        self.buf = buf
        self.pos = 0
        self.path = path
        self.size = len(buf)
        self.skip_string_arrays = skip_string_arrays

    def corrupt(self, found: str) -> UnreadableError:
        return UnreadableError(f"GGUF file is corrupt: {found}", fix="re-download or re-export the file",
                               path=self.path)

    def need(self, n: int, what: str) -> None:
        if n < 0 or self.pos + n > self.size:
            raise UnreadableError(
                f"GGUF file is truncated or corrupt: reading {what} needs {n} bytes at offset {self.pos}, "
                f"but the file has {self.size} bytes",
                why="a GGUF header must be complete before any tensor can be located",
                fix="re-download or re-export the file",
                path=self.path,
            )

    def scalar(self, fmt: str, what: str):
        n = struct.calcsize(fmt)
        self.need(n, what)
        (val,) = struct.unpack_from(fmt, self.buf, self.pos)
        self.pos += n
        return val

    def string(self, what: str, *, strict: bool = True) -> str:
        """A string; keys, names and scalar values must be UTF-8 (``strict``), array elements are decoded leniently."""
        n = self.scalar("<Q", what + " length")
        if n > MAX_STRING:
            raise self.corrupt(f"{what} length {n} at offset {self.pos} is absurd")
        self.need(n, what)
        raw = bytes(self.buf[self.pos : self.pos + n])
        self.pos += n
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            if strict:
                raise self.corrupt(f"{what} at offset {self.pos - n} is not UTF-8") from None
            return raw.decode("utf-8", errors="replace")

    def value(self, vtype: int, what: str, depth: int = 0) -> Any:
        if vtype in SCALAR_FORMATS:
            return self.scalar(SCALAR_FORMATS[vtype], what)
        if vtype == STRING:
            return self.string(what)
        if vtype == ARRAY:
            etype = self.scalar("<I", what + " element type")
            count = self.scalar("<Q", what + " element count")
            if count > MAX_ARRAY:
                raise self.corrupt(f"{what} declares {count} elements")
            if etype == ARRAY and depth >= MAX_NESTING:
                raise self.corrupt(f"{what} nests arrays more than {MAX_NESTING} deep")
            if etype in _NP_SCALAR:
                dt = np.dtype(_NP_SCALAR[etype])
                self.need(count * dt.itemsize, what)
                arr = np.frombuffer(self.buf, dtype=dt, count=count, offset=self.pos)
                self.pos += count * dt.itemsize
                return [bool(x) for x in arr] if etype == 7 else arr.tolist()
            if etype == STRING and self.skip_string_arrays:  # vocabularies, merges: bounds-checked only
                for i in range(count):
                    n = self.scalar("<Q", f"{what}[{i}] length")
                    self.need(n, f"{what}[{i}]")
                    self.pos += n
                return SkippedStrings(count)
            if etype == STRING:
                return [self.string(f"{what}[{i}]", strict=False) for i in range(count)]
            if etype == ARRAY:
                return [self.value(ARRAY, f"{what}[{i}]", depth + 1) for i in range(count)]
            raise UnreadableError(f"GGUF metadata {what} has unknown array element type {etype}",
                                  fix="re-export the file with a current llama.cpp", path=self.path)
        raise UnreadableError(f"GGUF metadata {what} has unknown value type {vtype}",
                              fix="re-export the file with a current llama.cpp", path=self.path)


@dataclass
class GGUFHeader:
    version: int
    metadata: dict[str, Any]
    infos: list[tuple[str, tuple[int, ...], int, int]]  # name, ggml dims (innermost first), type id, offset
    alignment: int
    data_start: int
    file_size: int
    # Where things lie, for writers that copy them: metadata key -> (start of its type field, end of
    # its value), and the tensor-info section's (start, end).
    kv_spans: dict[str, tuple[int, int]] = field(default_factory=dict)
    tensor_info_span: tuple[int, int] = (0, 0)
    duplicate_keys: list[str] = field(default_factory=list)  # metadata keys stored more than once (the last wins)


def parse_gguf_header(buf: memoryview | bytes, path: Path, *, skip_string_arrays: bool = False) -> GGUFHeader:
    """Magic, version, metadata and tensor infos, every read bounds-checked; raises UnreadableError."""
    file_size = len(buf)
    cur = _Cursor(buf, path, skip_string_arrays=skip_string_arrays)
    magic = bytes(buf[:4]) if file_size >= 4 else b""
    if magic != GGUF_MAGIC:
        raise UnreadableError(f"not a GGUF file: magic is {magic!r}, expected b'GGUF'", path=path)
    cur.pos = 4
    version = cur.scalar("<I", "version")
    if version not in SUPPORTED_VERSIONS:
        raise UnreadableError(
            f"GGUF version {version} is not supported (supported: 2, 3)",
            fix="convert the model with a current llama.cpp (convert_hf_to_gguf.py)",
            path=path,
        )
    n_tensors = cur.scalar("<Q", "tensor count")
    n_kv = cur.scalar("<Q", "metadata count")
    # Each entry takes at least a few bytes; absurd counts mean a corrupt header.
    if max(n_tensors, n_kv) > min(file_size, MAX_COUNT):
        raise UnreadableError(
            f"GGUF header is corrupt: {n_tensors} tensors and {n_kv} metadata entries declared in a "
            f"{file_size}-byte file", fix="re-download or re-export the file", path=path)
    metadata: dict[str, Any] = {}
    kv_spans: dict[str, tuple[int, int]] = {}
    duplicates: list[str] = []
    for i in range(n_kv):
        key = cur.string(f"metadata key #{i}")
        if key in metadata:
            duplicates.append(key)
        start = cur.pos
        vtype = cur.scalar("<I", f"type of metadata '{key}'")
        metadata[key] = cur.value(vtype, f"metadata '{key}'")
        kv_spans[key] = (start, cur.pos)
    infos: list[tuple[str, tuple[int, ...], int, int]] = []
    infos_start = cur.pos
    for i in range(n_tensors):
        name = cur.string(f"name of tensor #{i}")
        n_dims = cur.scalar("<I", f"rank of tensor '{name}'")
        if n_dims > 8:
            raise UnreadableError(f"GGUF tensor '{name}' declares {n_dims} dimensions (at most 4 exist)",
                                  fix="re-export the file", path=path)
        dims = tuple(cur.scalar("<Q", f"shape of tensor '{name}'") for _ in range(n_dims))
        type_id = cur.scalar("<I", f"type of tensor '{name}'")
        offset = cur.scalar("<Q", f"offset of tensor '{name}'")
        infos.append((name, dims, type_id, offset))
    alignment = _alignment(metadata, path)
    data_start = cur.pos + (-cur.pos % alignment)
    return GGUFHeader(version, metadata, infos, alignment, data_start, file_size, kv_spans, (infos_start, cur.pos),
                      duplicates)


def _alignment(metadata: dict[str, Any], path: Path) -> int:
    """``general.alignment``: a power of two (llama.cpp's rule), 32 when absent."""
    value = metadata.get("general.alignment", DEFAULT_ALIGNMENT)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1 or value & (value - 1):
        raise DeclaredValueError(
            f"GGUF metadata general.alignment = {value!r}; expected a power of two (an integer such as 32)",
            why="the start of the tensor data, and so every tensor's bytes, depends on it",
            fix="re-export the file with a current llama.cpp", path=path)
    return value


def read_gguf_header(path: Path, *, skip_string_arrays: bool = True) -> tuple[GGUFHeader, bytes]:
    """The parsed header of the file at ``path`` and its bytes up to the end of the tensor infos
    (string arrays bounds-checked, not decoded, unless asked); raises UnreadableError."""
    with open(path, "rb") as fh:
        if not path.stat().st_size:
            raise UnreadableError("the file is empty", path=path)
        mm = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
    view = memoryview(mm)
    try:
        header = parse_gguf_header(view, path, skip_string_arrays=skip_string_arrays)
        raw = bytes(view[: header.tensor_info_span[1]])
    finally:
        try:
            view.release()
            mm.close()
        except BufferError:  # pragma: no cover - a view still alive: the GC closes the map later
            pass
    return header, raw


def gguf_tensor_table(header: GGUFHeader) -> tuple[list[GGUFTensor], list[tuple[str, str | None, str]]]:
    """The tensors whose GGML type is known, and every defect found ``(message, why, fix)``, in file order."""
    qtypes, sizes = _quant_types()
    tensors: list[GGUFTensor] = []
    defects: list[tuple[str, str | None, str]] = []
    reexport = "re-export the file"
    seen: set[str] = set()
    for name, dims, type_id, offset in header.infos:
        try:
            qtype = qtypes(type_id)
        except ValueError:
            defects.append((f"GGUF tensor '{name}' has unknown GGML type id {type_id}", None,
                            "re-export the file with a current llama.cpp"))
            continue
        block, type_size = sizes[qtype]
        if 0 in dims:
            defects.append((f"GGUF tensor '{name}' has a zero dimension in its shape {list(reversed(dims))}", None,
                            reexport))
            continue
        n_elem = math.prod(dims) if dims else 1
        if dims and dims[0] % block:
            defects.append(((f"GGUF tensor '{name}': row length {dims[0]} is not a multiple of the "
                             f"{qtype.name} block size {block}"), None, reexport))
        nbytes = n_elem // block * type_size
        if offset % header.alignment:
            defects.append((f"GGUF tensor '{name}': data offset {offset} is not aligned to {header.alignment}",
                            None, reexport))
        start = header.data_start + offset
        if start + nbytes > header.file_size:
            defects.append(((f"GGUF file is truncated: tensor '{name}' ({qtype.name}, shape "
                             f"{list(reversed(dims))}) needs bytes {start}..{start + nbytes} but the file has "
                             f"{header.file_size} bytes"),
                            "part of the weights is missing", "re-download or re-export the file"))
        if name in seen:
            defects.append((f"GGUF tensor name '{name}' appears twice", None, reexport))
        seen.add(name)
        tensors.append(GGUFTensor(name, tuple(reversed(dims)), qtype.name, type_id, start, nbytes))
    return tensors, defects


class GGUFFile:
    """A parsed GGUF file: ``metadata`` (key -> value), ``tensors`` (llama.cpp name -> GGUFTensor)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._mm = np.memmap(self.path, dtype=np.uint8, mode="c")  # copy-on-write: writable views
        header = parse_gguf_header(memoryview(self._mm), self.path)
        self.version = header.version
        self.metadata: dict[str, Any] = header.metadata
        self.data_start = header.data_start
        tensors, defects = gguf_tensor_table(header)
        if defects:
            found, why, fix = defects[0]
            raise UnreadableError(found, why=why, fix=fix, path=self.path)
        self.tensors: dict[str, GGUFTensor] = {t.name: t for t in tensors}

    @property
    def architecture(self) -> str | None:
        arch = self.metadata.get("general.architecture")
        return arch if isinstance(arch, str) else None

    def raw_rows(self, t: GGUFTensor) -> np.ndarray:
        """The stored bytes of ``t`` as ``[outer rows..., bytes_per_row]`` (a memmap view)."""
        buf = self._mm[t.offset : t.offset + t.nbytes]
        rows = math.prod(t.shape[:-1]) if len(t.shape) > 1 else 1
        return buf.reshape(*t.shape[:-1], t.nbytes // rows) if len(t.shape) > 1 else buf

    def read(self, t: GGUFTensor, *, unpermute_heads: int | None = None) -> torch.Tensor:
        """The tensor in HF layout: F32/F16/BF16 keep their dtype, quantised types -> float32.

        The row un-permutation (llama q/k) is applied to the stored rows before
        dequantising (blocks never cross rows), so only one float copy is ever made.
        """
        rows = self.raw_rows(t)
        if unpermute_heads is not None:
            rows = unpermute_rows(rows, unpermute_heads)
        return dequantize(rows, t.type_name, t.shape, what=t.name, path=self.path)

    def close(self) -> None:
        mm = getattr(self, "_mm", None)
        if mm is not None and getattr(mm, "_mmap", None) is not None:
            try:
                mm._mmap.close()
            except (BufferError, ValueError):  # views still alive: the GC closes it later
                pass
        self._mm = None


__all__ = ["GGUFFile", "GGUFHeader", "GGUFTensor", "SkippedStrings", "gguf_tensor_table", "parse_gguf_header",
           "read_gguf_header"]
