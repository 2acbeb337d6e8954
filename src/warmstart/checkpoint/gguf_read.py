"""Read GGUF (v2/v3) files: metadata, tensors (dequantised), HF config, tokenizer.

The header is parsed here, with a bounds check on every read, so that a truncated
or corrupt file becomes an ``UnreadableError`` naming what is wrong. (``gguf.GGUFReader``
also turns every element of every metadata array into numpy views, which takes
~4 s for a 49k-token vocabulary; this parser takes ~0.1 s.) Tensor data is memory-mapped
and dequantised with ``gguf.quants.dequantize``; the constants (type ids, block sizes)
come from the ``gguf`` package.
"""

from __future__ import annotations

import contextlib
import json
import math
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from warmstart.arch.families import get_family, normalize_family
from warmstart.checkpoint.gguf_names import gguf_to_hf, permutation_heads, unpermute_rows
from warmstart.errors import UnreadableError

GGUF_MAGIC = b"GGUF"
SUPPORTED_VERSIONS = (2, 3)
DEFAULT_ALIGNMENT = 32

# GGUF metadata value types (gguf.GGUFValueType), with struct formats for scalars.
_SCALAR = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
_NP_SCALAR = {0: "<u1", 1: "<i1", 2: "<u2", 3: "<i2", 4: "<u4", 5: "<i4", 6: "<f4", 7: "<u1", 10: "<u8",
              11: "<i8", 12: "<f8"}
_STRING, _ARRAY = 8, 9
_INT_TYPES = {"I8": np.int8, "I16": np.int16, "I32": np.int32, "I64": np.int64}

# Types warmstart dequantises (SPEC §2 asks for at least these).
DEQUANTISABLE = ("F32", "F16", "BF16", "Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q4_K", "Q5_K", "Q6_K",
                 "Q2_K", "Q3_K", "Q8_K")


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

    def value(self, vtype: int, what: str) -> Any:
        if vtype in _SCALAR:
            return self.scalar(_SCALAR[vtype], what)
        if vtype == _STRING:
            return self.string(what)
        if vtype == _ARRAY:
            etype = self.scalar("<I", what + " element type")
            count = self.scalar("<Q", what + " element count")
            if count > MAX_ARRAY:
                raise self.corrupt(f"{what} declares {count} elements")
            if etype in _NP_SCALAR:
                dt = np.dtype(_NP_SCALAR[etype])
                self.need(count * dt.itemsize, what)
                arr = np.frombuffer(self.buf, dtype=dt, count=count, offset=self.pos)
                self.pos += count * dt.itemsize
                return [bool(x) for x in arr] if etype == 7 else arr.tolist()
            if etype == _STRING and self.skip_string_arrays:  # vocabularies, merges: bounds-checked only
                for i in range(count):
                    n = self.scalar("<Q", f"{what}[{i}] length")
                    self.need(n, f"{what}[{i}]")
                    self.pos += n
                return SkippedStrings(count)
            if etype == _STRING:
                return [self.string(f"{what}[{i}]", strict=False) for i in range(count)]
            if etype == _ARRAY:
                return [self.value(_ARRAY, f"{what}[{i}]") for i in range(count)]
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
    for i in range(n_kv):
        key = cur.string(f"metadata key #{i}")
        vtype = cur.scalar("<I", f"type of metadata '{key}'")
        metadata[key] = cur.value(vtype, f"metadata '{key}'")
    infos: list[tuple[str, tuple[int, ...], int, int]] = []
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
    alignment = int(metadata.get("general.alignment", DEFAULT_ALIGNMENT) or DEFAULT_ALIGNMENT)
    data_start = cur.pos + (-cur.pos % alignment)
    return GGUFHeader(version, metadata, infos, alignment, data_start, file_size)


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

    # ------------------------------------------------------------- tensors
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
        if t.type_name == "F32":
            arr = rows.view(np.float32).reshape(t.shape)
            return torch.from_numpy(arr)
        if t.type_name == "F16":
            return torch.from_numpy(rows.view(np.float16).reshape(t.shape))
        if t.type_name == "BF16":
            return torch.from_numpy(rows.view(np.int16).reshape(t.shape)).view(torch.bfloat16)
        if t.type_name in ("F64",):
            return torch.from_numpy(rows.view(np.float64).reshape(t.shape))
        if t.type_name in _INT_TYPES:
            return torch.from_numpy(rows.view(_INT_TYPES[t.type_name]).reshape(t.shape))
        if t.type_name in _FAST_DEQUANT:
            with _one_thread():
                return _FAST_DEQUANT[t.type_name](rows, t.shape)
        from gguf import quants

        qtypes, _ = _quant_types()
        try:
            out = quants.dequantize(np.ascontiguousarray(rows), qtypes(t.type_id))
        except NotImplementedError:
            raise UnreadableError(
                f"GGUF tensor '{t.name}' uses quantisation {t.type_name}, which cannot be dequantised "
                f"(supported: {', '.join(DEQUANTISABLE)})",
                fix="re-quantise the model to one of the supported types, or use the safetensors original",
                path=self.path,
            ) from None
        return torch.from_numpy(np.ascontiguousarray(out, dtype=np.float32).reshape(t.shape))

    # -------------------------------------------------------------- config
    def hf_config(self) -> dict:
        return gguf_hf_config(self)

    def close(self) -> None:
        mm = getattr(self, "_mm", None)
        if mm is not None and getattr(mm, "_mmap", None) is not None:
            try:
                mm._mmap.close()
            except (BufferError, ValueError):  # views still alive: the GC closes it later
                pass
        self._mm = None


# ------------------------------------------------------- fast dequantisers
# Torch versions of gguf.quants' Q8_0 / Q4_0 / Q4_1 (the types of most small GGUFs): the same
# float32 operations in the same order, so results are bit-identical, but multi-threaded and with
# one float32 allocation per tensor instead of numpy's several temporaries.


@contextlib.contextmanager
def _one_thread():
    """Elementwise dequantisation is memory-bound: intra-op threads buy little and, on a busy
    machine, OpenMP barriers make it several times slower. Run it on one thread."""
    n = torch.get_num_threads()
    if n > 1:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        if n > 1:
            torch.set_num_threads(n)


def _blocks(rows: np.ndarray, block_bytes: int) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(rows).reshape(-1, block_bytes))


def _f16_column(blocks: torch.Tensor, start: int) -> torch.Tensor:
    return blocks[:, start:start + 2].contiguous().view(torch.float16).float()  # [n_blocks, 1]


def _nibbles(qs: torch.Tensor) -> torch.Tensor:
    """[n_blocks, 16] bytes -> [n_blocks, 32] float32: low nibbles first, then high (ggml order)."""
    out = torch.empty(qs.shape[0], 32, dtype=torch.float32)
    out[:, :16] = qs & 0x0F
    out[:, 16:] = qs >> 4
    return out


def _dequant_q8_0(rows: np.ndarray, shape: tuple[int, ...]) -> torch.Tensor:
    b = _blocks(rows, 34)
    out = b[:, 2:].view(torch.int8).float()
    return out.mul_(_f16_column(b, 0)).reshape(shape)


def _dequant_q4_0(rows: np.ndarray, shape: tuple[int, ...]) -> torch.Tensor:
    b = _blocks(rows, 18)
    out = _nibbles(b[:, 2:])
    return out.sub_(8.0).mul_(_f16_column(b, 0)).reshape(shape)


def _dequant_q4_1(rows: np.ndarray, shape: tuple[int, ...]) -> torch.Tensor:
    b = _blocks(rows, 20)
    out = _nibbles(b[:, 4:])
    return out.mul_(_f16_column(b, 0)).add_(_f16_column(b, 2)).reshape(shape)


_FAST_DEQUANT = {"Q8_0": _dequant_q8_0, "Q4_0": _dequant_q4_0, "Q4_1": _dequant_q4_1}


def dequantize_reference(rows: np.ndarray, type_name: str, shape: tuple[int, ...]) -> torch.Tensor:
    """gguf.quants' numpy dequantisation (the reference the fast paths are tested against)."""
    from gguf import quants
    from gguf.constants import GGMLQuantizationType

    out = quants.dequantize(np.ascontiguousarray(rows), getattr(GGMLQuantizationType, type_name))
    return torch.from_numpy(np.ascontiguousarray(out, dtype=np.float32).reshape(shape))


# ------------------------------------------------------------------ config


def _nice_float(x: float) -> float:
    """float32 metadata (e.g. 9.999999747e-06) back to the decimal it was written from (1e-05)."""
    return float(str(np.float32(x)))


def llama3_rope_factors(theta: float, dim: int, factor: float, low: float, high: float, old_ctx: int) -> np.ndarray:
    """The per-frequency divisors llama.cpp's converter writes as ``rope_freqs.weight``."""
    inv = 1.0 / (theta ** (np.arange(0, dim, 2, dtype=np.float32) / dim))
    wavelen = 2 * math.pi / inv.astype(np.float64)
    smooth = (old_ctx / wavelen - low) / (high - low)
    mid = 1 / ((1 - smooth) / factor + smooth)
    return np.where(wavelen < old_ctx / high, 1.0, np.where(wavelen > old_ctx / low, factor, mid))


def llama3_rope_from_factors(factors: np.ndarray, theta: float, dim: int) -> dict | None:
    """Recover HF's llama3 ``rope_scaling`` from ``rope_freqs.weight``; None if it does not fit.

    The factors are 1 at high frequencies, ``factor`` at low ones and smoothly in between; with
    Llama 3's low/high frequency factors (1, 4) one in-between value fixes
    ``original_max_position_embeddings``. The recovered parameters are accepted only if they
    reproduce every stored factor.
    """
    if dim <= 0 or factors.shape[0] != dim // 2:
        return None
    factor = float(factors.max())
    if factor <= 1.0 + 1e-6:
        return None
    low, high = 1.0, 4.0
    inv = 1.0 / (theta ** (np.arange(0, dim, 2, dtype=np.float32) / dim))
    wavelen = 2 * math.pi / inv.astype(np.float64)
    mid = np.nonzero((factors > 1 + 1e-6) & (factors < factor * (1 - 1e-6)))[0]
    if mid.size:
        smooth = (1 / factors[mid[0]] - 1 / factor) / (1 - 1 / factor)
        candidates = [int(round(wavelen[mid[0]] * (smooth * (high - low) + low)))]
    else:
        candidates = [2 ** k for k in range(8, 18)]
    for old_ctx in candidates:
        params = {"rope_type": "llama3", "factor": factor, "low_freq_factor": low, "high_freq_factor": high,
                  "original_max_position_embeddings": old_ctx}
        if np.allclose(llama3_rope_factors(theta, dim, factor, low, high, old_ctx), factors, rtol=1e-4, atol=0):
            return params
    return None


def gguf_hf_config(g: GGUFFile) -> dict:
    """A HF-style config.json dict built from the GGUF's ``{arch}.*`` keys and tensor shapes."""
    md = g.metadata
    arch = g.architecture or ""
    fam = get_family(arch)
    cfg: dict[str, Any] = {
        "architectures": [fam.hf_architecture] if fam and fam.hf_architecture else [arch],
        "model_type": fam.model_type if fam and fam.model_type else arch,
    }

    def key(k: str, default=None):
        return md.get(f"{arch}.{k}", default)

    hidden = key("embedding_length")
    heads = key("attention.head_count")
    if isinstance(heads, list):  # per-layer head counts (some archs); take the first
        heads = heads[0] if heads else None
    kv = key("attention.head_count_kv", heads)
    if isinstance(kv, list):
        kv = kv[0] if kv else heads
    emb = g.tensors.get("token_embd.weight")
    vocab = emb.shape[0] if emb is not None else key("vocab_size")
    if vocab is None and isinstance(md.get("tokenizer.ggml.tokens"), list):
        vocab = len(md["tokenizer.ggml.tokens"])
    head_dim = key("attention.key_length") or (hidden // heads if hidden and heads else None)
    cfg.update({
        "vocab_size": vocab,
        "hidden_size": hidden,
        "intermediate_size": key("feed_forward_length"),
        "num_hidden_layers": key("block_count"),
        "num_attention_heads": heads,
        "num_key_value_heads": kv,
        "head_dim": head_dim,
        "hidden_act": "silu",
        "max_position_embeddings": key("context_length", 2048),
        "rms_norm_eps": _nice_float(key("attention.layer_norm_rms_epsilon", 1e-6)),
        "rope_theta": _nice_float(key("rope.freq_base", 10000.0)),
        "tie_word_embeddings": "output.weight" not in g.tensors,
        "torch_dtype": "float32",
        "bos_token_id": md.get("tokenizer.ggml.bos_token_id"),
        "eos_token_id": md.get("tokenizer.ggml.eos_token_id"),
        "pad_token_id": md.get("tokenizer.ggml.padding_token_id"),
    })
    scaling = key("rope.scaling.type")
    if scaling and scaling != "none":
        cfg["rope_scaling"] = {"rope_type": scaling, "factor": key("rope.scaling.factor", 1.0)}
    freqs = g.tensors.get("rope_freqs.weight")
    if freqs is not None and "rope_scaling" not in cfg:
        # Llama 3.1+: llama.cpp stores llama3 rope scaling as per-frequency factors, not as keys.
        factors = g.read(freqs).double().numpy().reshape(-1)
        dim = int(key("rope.dimension_count") or head_dim or 0)
        cfg["rope_scaling"] = llama3_rope_from_factors(factors, cfg["rope_theta"], dim) or {
            # not the llama3 schedule: ModelConfig refuses this rope type by name
            "rope_type": "per-frequency factors (GGUF rope_freqs.weight)"}
    if normalize_family(arch) == "llama":
        cfg["attention_bias"] = "blk.0.attn_q.bias" in g.tensors
        cfg["mlp_bias"] = "blk.0.ffn_up.bias" in g.tensors
    return cfg


def hf_tensor_plan(g: GGUFFile, cfg: dict) -> dict[str, tuple[GGUFTensor, int | None]]:
    """HF name -> (GGUF tensor, heads to un-permute or None)."""
    arch = g.architecture or ""
    heads = int(cfg.get("num_attention_heads") or 0)
    kv = int(cfg.get("num_key_value_heads") or heads or 0)
    plan: dict[str, tuple[GGUFTensor, int | None]] = {}
    for name, t in g.tensors.items():
        n_head = permutation_heads(name, arch, heads, kv) if heads else None
        if n_head is not None and (t.shape[0] % (2 * n_head)):
            raise UnreadableError(
                f"GGUF tensor '{name}' has {t.shape[0]} rows, not divisible into {n_head} heads of even size",
                why="llama.cpp's q/k row permutation cannot be undone",
                fix="check the file's attention.head_count / head_count_kv", path=g.path)
        plan[gguf_to_hf(name)] = (t, n_head)
    return plan


def gguf_metadata(g: GGUFFile) -> dict:
    """Provenance view of the GGUF: ``general.*`` keys and warmstart's own ``warmstart.*`` keys."""
    out: dict[str, Any] = {}
    for k, v in g.metadata.items():
        if k.startswith("general."):
            out[k] = v
        elif k.startswith("warmstart."):
            sub = k.removeprefix("warmstart.")
            if isinstance(v, str) and v[:1] in "[{":
                try:
                    v = json.loads(v)
                except json.JSONDecodeError:
                    pass
            out[sub] = v
    return out


# --------------------------------------------------------------- tokenizer

_LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_QWEN2_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_GPT4O_SPLIT = (
    r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?"
    r"|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?"
    r"|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
# ``tokenizer.ggml.pre`` -> the split regex its merges were learned with (same table as
# transformers' GGUF loader). Others ("smollm", "gpt2", "default", ...) use GPT-2's ByteLevel regex.
PRE_TOKENIZER_SPLITS = {
    **{k: _LLAMA3_SPLIT for k in ("llama3", "llama-v3", "llama-bpe", "falcon3", "falcon-h1", "pixtral",
                                  "midm-2.0", "lfm2", "dbrx", "smaug-bpe")},
    **{k: _QWEN2_SPLIT for k in ("qwen2", "deepseek-r1-qwen", "megrez")},
    **{k: _GPT4O_SPLIT for k in ("gpt-4o", "llama4", "minimax-m2")},
}

_TOKEN_CONTROL, _TOKEN_USER_DEFINED = 3, 4


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable character table."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs), strict=True))


def gguf_tokenizer(g: GGUFFile):
    """A ``tokenizers.Tokenizer`` equal (ids, specials) to transformers' tokenizer for the same GGUF.

    Byte-level BPE (``tokenizer.ggml.model == "gpt2"``) only; returns None when the file has no
    tokenizer, raises UnreadableError for a tokenizer model warmstart cannot build.
    """
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers, processors

    md = g.metadata
    kind = md.get("tokenizer.ggml.model")
    tokens = md.get("tokenizer.ggml.tokens")
    if kind is None or not isinstance(tokens, list):
        return None
    if kind != "gpt2":
        raise UnreadableError(
            f"the GGUF tokenizer is of type '{kind}'; warmstart builds byte-level BPE ('gpt2') tokenizers only",
            fix="pass the model's tokenizer.json with --tokenizer", path=g.path)
    spelling = _bytes_to_unicode()
    alphabet = set(spelling.values())
    vocab: dict[str, int] = {}
    for idx, tok in enumerate(tokens):
        if not set(tok) <= alphabet:  # a token stored as raw text: spell it in the byte alphabet
            tok = "".join(spelling[b] for b in tok.encode("utf-8"))
        vocab.setdefault(tok, idx)
    merges = [tuple(m.split(" ", 1)) for m in md.get("tokenizer.ggml.merges", [])]
    bpe = models.BPE(vocab=vocab, merges=merges, dropout=None, unk_token=None, continuing_subword_prefix="",
                     end_of_word_suffix="", fuse_unk=False, byte_fallback=False)
    tk = Tokenizer(bpe)
    split = PRE_TOKENIZER_SPLITS.get(md.get("tokenizer.ggml.pre"))
    if split is not None:
        tk.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(split), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ])
    else:
        tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True)
    tk.decoder = decoders.ByteLevel()
    types = md.get("tokenizer.ggml.token_type") or []
    control = [AddedToken(t, normalized=False, special=True)
               for t, ty in zip(tokens, types, strict=False) if ty == _TOKEN_CONTROL and set(t) <= alphabet]
    if control:
        tk.add_special_tokens(control)
    user = [AddedToken(t, normalized=False, special=False)
            for t, ty in zip(tokens, types, strict=False) if ty == _TOKEN_USER_DEFINED and t in vocab]
    if user:
        tk.add_tokens(user)
    bos_id = md.get("tokenizer.ggml.bos_token_id")
    if md.get("tokenizer.ggml.add_bos_token") and bos_id is not None and bos_id < len(tokens):
        bos = tokens[bos_id]
        tk.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, bos_id)])
    return tk


__all__ = ["GGUFFile", "GGUFTensor", "gguf_hf_config", "gguf_metadata", "gguf_tokenizer", "hf_tensor_plan"]
