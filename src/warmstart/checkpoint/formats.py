"""Content-based format detection and safetensors header validation.

Formats are recognised by their bytes, never by file extension:

- GGUF: magic ``b"GGUF"`` then a uint32 version (2 or 3);
- torch zip (``torch.save`` >= 1.6): a ZIP local-file header ``PK\\x03\\x04``;
- legacy torch / raw pickle: pickle protocol opcode ``\\x80`` + protocol 2..5;
- safetensors: 8-byte little-endian header length, then a JSON object (``{``).

The safetensors header is validated here, completely, before the file is handed to
the safetensors library, so that every defect is reported as an ``UnreadableError``
naming the file and the exact problem.
"""

from __future__ import annotations

import json
import math
import os
import struct
from dataclasses import dataclass
from pathlib import Path

from warmstart.errors import UnreadableError

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
    """Return "safetensors" | "gguf" | "pickle" from the file's first bytes, or raise UnreadableError."""
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


def read_safetensors_header(path: str | os.PathLike) -> SafetensorsHeader:
    """Parse and fully validate a safetensors header; raise UnreadableError naming the defect."""
    path = Path(path)
    size = path.stat().st_size

    def bad(found: str, why: str = "the file is not a valid safetensors file") -> UnreadableError:
        return UnreadableError(found, why=why, fix="re-download or re-export the checkpoint", path=path)

    if size < 8:
        raise bad(f"safetensors file is truncated: {size} bytes, shorter than the 8-byte header length")
    with open(path, "rb") as fh:
        (n,) = struct.unpack("<Q", fh.read(8))
        if n > size - 8:
            raise bad(f"safetensors header length is {n} bytes, larger than the file ({size} bytes)",
                      why="the file is truncated or its first 8 bytes are corrupt")
        if n > SAFETENSORS_MAX_HEADER:
            raise bad(f"safetensors header length is {n} bytes, above the {SAFETENSORS_MAX_HEADER}-byte limit")
        raw = fh.read(n)
    if not raw.lstrip(b" ").startswith(b"{"):
        raise bad(f"safetensors header is not a JSON object (starts with {raw[:16]!r})")
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise bad(f"safetensors header is not valid JSON ({err})") from None
    if not isinstance(header, dict):
        raise bad("safetensors header is not a JSON object")
    metadata = header.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise bad("safetensors __metadata__ must map strings to strings")
    data_len = size - 8 - n
    spans: list[tuple[int, int, str]] = []
    for name, info in header.items():
        if not isinstance(info, dict):
            raise bad(f"safetensors entry '{name}' is not an object")
        dtype, shape, offsets = info.get("dtype"), info.get("shape"), info.get("data_offsets")
        if dtype not in SAFETENSORS_DTYPE_SIZES:
            raise bad(f"tensor '{name}' has unknown dtype {dtype!r}")
        if not (isinstance(shape, list) and all(isinstance(d, int) and d >= 0 for d in shape)):
            raise bad(f"tensor '{name}' has an invalid shape {shape!r}")
        if not (isinstance(offsets, list) and len(offsets) == 2 and all(isinstance(o, int) for o in offsets)):
            raise bad(f"tensor '{name}' has invalid data_offsets {offsets!r}")
        begin, end = offsets
        if not 0 <= begin <= end:
            raise bad(f"tensor '{name}' has data_offsets [{begin}, {end}] out of order")
        expected = math.prod(shape) * SAFETENSORS_DTYPE_SIZES[dtype]
        if end - begin != expected:
            raise bad(f"tensor '{name}' ({dtype}, shape {shape}) needs {expected} bytes but its data_offsets "
                      f"[{begin}, {end}] span {end - begin} bytes")
        if end > data_len:
            raise bad(f"safetensors file is truncated: tensor '{name}' ends at data byte {end} but the data "
                      f"section has only {data_len} bytes", why="part of the weights is missing")
        spans.append((begin, end, name))
    spans.sort()
    pos, prev = 0, None
    for begin, end, name in spans:
        if begin < pos:
            raise bad(f"tensors '{prev}' and '{name}' overlap (data bytes {begin}..{pos})")
        if begin > pos:
            raise bad(f"data bytes {pos}..{begin} (before tensor '{name}') belong to no tensor")
        pos, prev = end, name
    if pos != data_len:
        raise bad(f"{data_len - pos} trailing bytes after the last tensor belong to no tensor")
    return SafetensorsHeader(path, header, metadata, 8 + n)


__all__ = [
    "FORMAT_GGUF", "FORMAT_PICKLE", "FORMAT_SAFETENSORS", "SAFETENSORS_DTYPE_SIZES", "SafetensorsHeader",
    "read_safetensors_header", "sniff_file",
]
