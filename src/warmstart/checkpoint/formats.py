"""Content-based format detection and safetensors header validation.

Formats are recognised by their bytes, never by file extension:

- GGUF: magic ``b"GGUF"`` then a uint32 version (2 or 3);
- torch zip (``torch.save`` >= 1.6): a ZIP local-file header ``PK\\x03\\x04``;
- legacy torch / raw pickle: pickle protocol opcode ``\\x80`` + protocol 2..5;
- safetensors: 8-byte little-endian header length, then a JSON object (``{``).

The safetensors header is validated here, completely, before the file is handed to
the safetensors library: ``check_safetensors`` lists every ``Defect`` (``validate`` shows them
all), ``read_safetensors_header`` raises the first as an ``UnreadableError`` naming the file.
"""

from __future__ import annotations

import json
import math
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path

from warmstart.checkpoint.defects import FATAL, PROBLEM, REEXPORT, Defect, raise_first
from warmstart.errors import UnreadableError
from warmstart.files import refuse_special

SAFETENSORS_MAX_HEADER = 100 * 1024 * 1024  # the safetensors library's own limit

# safetensors dtype -> bytes per element
SAFETENSORS_DTYPE_SIZES = {
    "BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "F8_E8M0": 1,
    "I16": 2, "U16": 2, "F16": 2, "BF16": 2,
    "I32": 4, "U32": 4, "F32": 4,
    "I64": 8, "U64": 8, "F64": 8,
}

FORMAT_SAFETENSORS = "safetensors"
FORMAT_GGUF = "gguf"
FORMAT_PICKLE = "pickle"


def sniff_file(path: Path) -> str:
    """Return "safetensors" | "gguf" | "pickle" from the file's first bytes, or raise UnreadableError
    (NotRegularFileError for a FIFO or a device: refused by name, never opened)."""
    refuse_special(path, "checkpoint file")
    size = path.stat().st_size
    with open(path, "rb") as fh:
        head = fh.read(16)
    if head[:4] == b"GGUF":
        return FORMAT_GGUF
    looks_safetensors = len(head) >= 9 and head[8:9] == b"{"
    # A safetensors header length can itself begin with pickle-like bytes (640 = 0x280 is
    # b"\x80\x02..."), so a plausible safetensors prefix wins over the pickle opcodes.
    if looks_safetensors and struct.unpack("<Q", head[:8])[0] <= size - 8:
        return FORMAT_SAFETENSORS
    if head[:4] == b"PK\x03\x04":
        return FORMAT_PICKLE
    if len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5:
        return FORMAT_PICKLE
    if looks_safetensors:
        return FORMAT_SAFETENSORS  # implausible header length: read_safetensors_header says so
    if size == 0:
        raise UnreadableError("the file is empty (0 bytes)", why="an interrupted download or write leaves this",
                              fix="re-download or re-export the checkpoint", path=path)
    if path.suffix == ".safetensors" and size >= 8:
        # Named like safetensors: validate as such, for a precise message.
        read_safetensors_header(path)
        return FORMAT_SAFETENSORS  # pragma: no cover - the header check above always raises here
    raise UnreadableError(
        f"not a recognised checkpoint format: the file starts with {head[:8].hex(' ')} "
        f"({size} bytes), which is neither a safetensors header, the GGUF magic b'GGUF', nor a "
        "torch zip/pickle",
        why="warmstart detects formats by content, not by file extension",
        fix="point at a safetensors file, a GGUF file or a Hugging Face checkpoint directory",
        path=path,
    )


@dataclass
class SafetensorsHeader:
    path: Path
    tensors: dict[str, dict]  # name -> {"dtype", "shape", "data_offsets"}
    metadata: dict[str, str]
    data_start: int  # 8 + header length


@dataclass
class SafetensorsCheck:
    """Everything found in a safetensors header; ``defects`` in the order they are detected."""

    path: Path
    size: int
    header_len: int = 0
    header: dict = field(default_factory=dict)  # the JSON header as stored, ``__metadata__`` included
    metadata: dict = field(default_factory=dict)
    tensors: dict[str, dict] = field(default_factory=dict)  # entries whose dtype, shape and offsets are usable
    defects: list[Defect] = field(default_factory=list)

    @property
    def data_start(self) -> int:
        return 8 + self.header_len


def check_safetensors(path: str | os.PathLike) -> SafetensorsCheck:
    """Validate a safetensors header completely, collecting every defect instead of stopping at the first.

    A "fatal" defect (the header cannot be located or parsed) ends the check; otherwise every
    tensor entry, the byte coverage of the data section and the trailing bytes are checked.
    """
    path = Path(path)
    res = SafetensorsCheck(path, path.stat().st_size)
    header = _read_header(res)
    if header is None:
        return res
    res.header = header
    metadata = header.get("__metadata__") or {}
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        _add(res, "safetensors __metadata__ must map strings to strings")
    res.metadata = metadata if isinstance(metadata, dict) else {}
    spans = []
    for name, info in header.items():
        if name != "__metadata__" and (span := _check_entry(res, name, info)) is not None:
            spans.append(span)
    _check_coverage(res, spans)
    return res


def _add(res: SafetensorsCheck, found: str, why: str = "the file is not a valid safetensors file",
         level: str = PROBLEM) -> None:
    res.defects.append(Defect(found, why, REEXPORT, level, res.path))


def _read_header(res: SafetensorsCheck) -> dict | None:
    """The JSON header, or None with a fatal defect recorded."""
    size = res.size
    if size < 8:
        _add(res, f"safetensors file is truncated: {size} bytes, shorter than the 8-byte header length", level=FATAL)
        return None
    with open(res.path, "rb") as fh:
        (n,) = struct.unpack("<Q", fh.read(8))
        if n > size - 8:
            _add(res, f"safetensors header length is {n} bytes, larger than the file ({size} bytes)",
                 "the file is truncated or its first 8 bytes are corrupt", FATAL)
            return None
        if n > SAFETENSORS_MAX_HEADER:
            _add(res, f"safetensors header length is {n} bytes, above the {SAFETENSORS_MAX_HEADER}-byte limit",
                 level=FATAL)
            return None
        raw = fh.read(n)
    res.header_len = n
    if not raw.lstrip(b" ").startswith(b"{"):
        _add(res, f"safetensors header is not a JSON object (starts with {raw[:16]!r})", level=FATAL)
        return None
    twice: list[str] = []
    try:
        header = json.loads(raw.decode("utf-8"), object_pairs_hook=lambda pairs: _no_twice(pairs, twice))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as err:
        _add(res, f"safetensors header is not valid JSON ({type(err).__name__}: {str(err)[:200]})", level=FATAL)
        return None
    if not isinstance(header, dict):
        _add(res, "safetensors header is not a JSON object", level=FATAL)
        return None
    for name in twice:
        _add(res, f"safetensors header names '{name}' twice", "a reader keeps one of the two entries and "
             "ignores the other's bytes")
    return header


def _no_twice(pairs: list[tuple[str, object]], twice: list[str]) -> dict:
    """A JSON object's pairs as a dict, each key that appears twice recorded in ``twice``."""
    out: dict = {}
    for k, v in pairs:
        if k in out:
            twice.append(k)
        out[k] = v
    return out


def _check_entry(res: SafetensorsCheck, name: str, info) -> tuple[int, int, str] | None:
    """One tensor entry; its data span when dtype, shape and offsets are usable (it is then in ``res.tensors``)."""
    if not isinstance(info, dict):
        _add(res, f"safetensors entry '{name}' is not an object")
        return None
    dtype, shape, offsets = info.get("dtype"), info.get("shape"), info.get("data_offsets")
    if dtype not in SAFETENSORS_DTYPE_SIZES:
        _add(res, f"tensor '{name}' has unknown dtype {dtype!r}")
        return None
    if not (isinstance(shape, list) and all(isinstance(d, int) and d >= 0 for d in shape)):
        _add(res, f"tensor '{name}' has an invalid shape {shape!r}")
        return None
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(isinstance(o, int) for o in offsets)):
        _add(res, f"tensor '{name}' has invalid data_offsets {offsets!r}")
        return None
    begin, end = offsets
    if not 0 <= begin <= end:
        _add(res, f"tensor '{name}' has data_offsets [{begin}, {end}] out of order")
        return None
    expected = math.prod(shape) * SAFETENSORS_DTYPE_SIZES[dtype]
    if end - begin != expected:
        _add(res, f"tensor '{name}' ({dtype}, shape {shape}) needs {expected} bytes but its data_offsets "
             f"[{begin}, {end}] span {end - begin} bytes")
    data_len = res.size - res.data_start
    if end > data_len:
        _add(res, f"safetensors file is truncated: tensor '{name}' ends at data byte {end} but the data "
             f"section has only {data_len} bytes", "part of the weights is missing")
    res.tensors[name] = info
    return begin, end, name


def _check_coverage(res: SafetensorsCheck, spans: list[tuple[int, int, str]]) -> None:
    """The tensors' data must tile the data section: no overlap, no gap, nothing after the last."""
    gap_why = "the safetensors library reads only data sections that its tensors cover exactly"
    data_len = res.size - res.data_start
    pos, prev = 0, None
    for begin, end, name in sorted(spans):
        if begin < pos:
            _add(res, f"tensors '{prev}' and '{name}' overlap (data bytes {begin}..{pos})")
        if begin > pos:
            _add(res, f"data bytes {pos}..{begin} (before tensor '{name}') belong to no tensor", gap_why)
        pos, prev = end, name
    if pos < data_len:
        _add(res, f"{data_len - pos} trailing bytes after the last tensor belong to no tensor", gap_why)


def read_safetensors_header(path: str | os.PathLike) -> SafetensorsHeader:
    """Parse and fully validate a safetensors header; raise UnreadableError naming the first defect."""
    res = check_safetensors(path)
    raise_first(res.defects)
    return SafetensorsHeader(res.path, res.tensors, res.metadata, res.data_start)


__all__ = [
    "FORMAT_GGUF", "FORMAT_PICKLE", "FORMAT_SAFETENSORS", "SAFETENSORS_DTYPE_SIZES", "SAFETENSORS_MAX_HEADER",
    "SafetensorsCheck", "SafetensorsHeader", "check_safetensors", "read_safetensors_header",
    "sniff_file",
]
