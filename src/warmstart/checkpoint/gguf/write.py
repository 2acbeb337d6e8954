"""Write GGUF files: an export from HF-named tensors the way llama.cpp does, and a copy of a GGUF
with new metadata and its tensor infos and data byte for byte (``warmstart stamp``).

Export: tensor names, metadata keys and the Q/K row permutation follow llama.cpp's
``convert_hf_to_gguf.py`` (the family's spec says its GGUF architecture, extra keys, names and
whether q/k are permuted); 1-D tensors (norms, biases) stay F32 as there; Q8_0 goes through
``gguf.quants.quantize`` and falls back to F16 for a tensor whose row length is not a multiple of
32. The tokenizer is embedded by ``tokenizer.add_tokenizer``.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from warmstart.arch.config import ModelConfig
from warmstart.checkpoint.gguf.hf import rope_scaling_keys
from warmstart.checkpoint.gguf.names import block_map, hf_to_gguf, permute_rows, qk_heads
from warmstart.checkpoint.gguf.parse import (
    ARRAY,
    BOOL,
    FLOAT64,
    GGUF_MAGIC,
    INT64,
    SCALAR_FORMATS,
    STRING,
    UINT32,
    GGUFHeader,
)
from warmstart.checkpoint.gguf.tokenizer import add_tokenizer
from warmstart.checkpoint.write import atomic_path
from warmstart.choices import Choices
from warmstart.errors import UsageError

GGUF_DTYPES = Choices(("f32", "f16", "bf16", "q8_0"), fold_case=True)


def gguf_tensor_type(name: str, shape: tuple[int, ...], dtype: str) -> str:
    """The GGML type a tensor gets for a requested export dtype (llama.cpp's rules)."""
    if len(shape) <= 1:
        return "F32"
    if dtype == "f32":
        return "F32"
    if dtype == "f16":
        return "F16"
    if dtype == "bf16":
        return "BF16"
    if dtype == "q8_0":
        return "Q8_0" if shape[-1] % 32 == 0 else "F16"
    raise UsageError(f"unknown GGUF dtype '{dtype}'", fix=f"use one of: {', '.join(GGUF_DTYPES)}")


def roundtrip_value(t: torch.Tensor, ggml_type: str) -> torch.Tensor:
    """What a float32 tensor becomes after being stored as ``ggml_type`` and read back."""
    import gguf

    t = t.detach().float()
    if ggml_type == "F32":
        return t
    if ggml_type == "F16":
        return t.half().float()
    if ggml_type == "BF16":
        return t.bfloat16().float()
    qt = gguf.GGMLQuantizationType[ggml_type]
    q = gguf.quants.quantize(t.numpy(), qt)
    return torch.from_numpy(np.ascontiguousarray(gguf.quants.dequantize(q, qt))).reshape(t.shape).float()


def _encode(t: torch.Tensor, ggml_type: str):
    """(numpy array, raw_dtype or None) for GGUFWriter.add_tensor."""
    import gguf

    t = t.detach().float().contiguous()
    if ggml_type == "F32":
        return t.numpy(), None
    if ggml_type == "F16":
        return t.numpy().astype(np.float16), None
    if ggml_type == "BF16":
        raw = t.bfloat16().view(torch.int16).numpy().view(np.uint8).reshape(*t.shape[:-1], t.shape[-1] * 2)
        return raw, gguf.GGMLQuantizationType.BF16
    qt = gguf.GGMLQuantizationType[ggml_type]
    return gguf.quants.quantize(t.numpy(), qt), qt


def _file_type(dtype: str) -> int:
    import gguf

    return {
        "f32": gguf.LlamaFileType.ALL_F32, "f16": gguf.LlamaFileType.MOSTLY_F16,
        "bf16": gguf.LlamaFileType.MOSTLY_BF16, "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0,
    }[dtype]


# ------------------------------------------------------------------ metadata

def provenance_kvs(prov: dict) -> list[tuple[str, Any, int]]:
    """``warmstart.<field>`` (key, value, GGUF value type) for a warmstart.json-shaped dict.

    Strings, integers and floats keep their type; lists, dicts and null are JSON strings.
    """
    out: list[tuple[str, Any, int]] = []
    for k, v in prov.items():
        key = f"warmstart.{k}"
        if isinstance(v, bool):
            out.append((key, v, BOOL))
        elif isinstance(v, int):
            out.append((key, v, INT64))
        elif isinstance(v, float):
            out.append((key, v, FLOAT64))
        elif isinstance(v, str):
            out.append((key, v, STRING))
        else:
            out.append((key, json.dumps(v, default=str), STRING))
    return out


def _value_type(v: Any) -> int:
    """The GGUF type a Python value is written as (for spec-given keys)."""
    if isinstance(v, bool):
        return BOOL
    if isinstance(v, int):
        return UINT32
    if isinstance(v, float):
        return 6  # FLOAT32, as llama.cpp writes its float keys
    if isinstance(v, str):
        return STRING
    if isinstance(v, (list, tuple)):
        return ARRAY
    raise UsageError(f"cannot write {v!r} as a GGUF value")


def _add_model_keys(w, cfg: ModelConfig, dtype: str) -> None:
    import gguf

    w.add_context_length(cfg.max_position_embeddings)
    w.add_embedding_length(cfg.hidden_size)
    w.add_block_count(cfg.num_layers)
    w.add_feed_forward_length(cfg.intermediate_size)
    w.add_head_count(cfg.num_heads)
    w.add_head_count_kv(cfg.num_kv_heads)
    w.add_key_length(cfg.head_dim)
    w.add_value_length(cfg.head_dim)
    w.add_rope_dimension_count(cfg.head_dim)
    w.add_rope_freq_base(float(cfg.rope_theta))
    w.add_layer_norm_rms_eps(float(cfg.rms_norm_eps))
    w.add_vocab_size(cfg.vocab_size)
    for key, val in {**cfg.spec.gguf_keys(cfg), **rope_scaling_keys(cfg.rope_scaling)}.items():
        vtype = _value_type(val)
        sub = _value_type(val[0]) if vtype == ARRAY and val else None
        w.add_key_value(f"{cfg.spec.gguf_arch}.{key}", val, gguf.GGUFValueType(vtype),
                        sub_type=gguf.GGUFValueType(sub) if sub is not None else None)
    w.add_file_type(_file_type(dtype))
    if dtype == "q8_0":
        w.add_quantization_version(gguf.GGML_QUANT_VERSION)


def _add_provenance(w, prov: dict) -> None:
    import gguf

    if prov.get("license"):
        w.add_license(str(prov["license"]))
    sources = [s for s in (prov.get("data_sources") or []) if s]
    if sources:
        w.add_dataset_count(len(sources))
        for i, s in enumerate(sources):
            w.add_dataset_name(str(s), i)
    parent = prov.get("parent")
    if isinstance(parent, dict) and (parent.get("name") or parent.get("path")):
        w.add_base_model_count(1)
        w.add_base_model_name(str(parent.get("name") or parent.get("path")), 0)
    for key, val, vtype in provenance_kvs(prov):
        w.add_key_value(key, val, gguf.GGUFValueType(vtype))


# ---------------------------------------------------------------------- export

def _add_tensors(w, cfg: ModelConfig, names: Iterable[str], get_tensor, dtype: str) -> dict[str, str]:
    spec = cfg.spec
    block = block_map(spec)
    written: dict[str, str] = {}
    for hf in names:
        if (hf == "lm_head.weight" and cfg.tie_word_embeddings) or hf.endswith("rotary_emb.inv_freq"):
            continue
        gguf_name = hf_to_gguf(hf, block)
        if gguf_name == hf:
            raise UsageError(f"tensor '{hf}' has no llama.cpp GGUF name",
                             why="the GGUF exporter maps only the tensors of warmstart's decoder families")
        t = get_tensor(hf).detach().float()
        n_head = qk_heads(gguf_name, cfg.num_heads, cfg.num_kv_heads) if spec.gguf_permute_qk else None
        if n_head is not None:
            t = permute_rows(t, n_head)
        if spec.gguf_norm_shift and hf.endswith("norm.weight"):
            t = t + spec.gguf_norm_shift
        gtype = gguf_tensor_type(hf, tuple(t.shape), dtype)
        arr, raw = _encode(t, gtype)
        if raw is None:
            w.add_tensor(gguf_name, arr)
        else:
            w.add_tensor(gguf_name, arr, raw_dtype=raw)
        written[hf] = gtype
        del t
    return written


def write_gguf(
    out_path: str | os.PathLike,
    cfg: ModelConfig,
    names: Iterable[str],
    get_tensor: Callable[[str], torch.Tensor],
    *,
    tokenizer=None,
    dtype: str = "f16",
    provenance: dict | None = None,
    name: str | None = None,
    tokenizer_pre: str | None = None,
    chat_template: str | None = None,
) -> dict[str, str]:
    """Write ``out_path`` atomically. Returns {hf_name: ggml_type} of what was written.

    ``names`` are HF tensor names; ``get_tensor(name)`` returns the float tensor.
    A tied ``lm_head.weight`` is not written (llama.cpp ties when ``output.weight`` is absent).
    """
    import gguf

    if dtype not in GGUF_DTYPES:
        raise UsageError(f"unknown GGUF dtype '{dtype}'", fix=f"use one of: {', '.join(GGUF_DTYPES)}")
    rope_scaling_keys(cfg.rope_scaling)  # WS126 before anything is written
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out_path) as tmp:
        w = gguf.GGUFWriter(str(tmp), cfg.spec.gguf_arch)
        w.add_name(name or (provenance or {}).get("name") or f"warmstart-{cfg.family}")
        _add_model_keys(w, cfg, dtype)
        _add_provenance(w, dict(provenance or {}))
        if chat_template:
            w.add_chat_template(chat_template)
        if tokenizer is not None:
            add_tokenizer(w, tokenizer, cfg, cfg.vocab_size, tokenizer_pre)
        else:
            for key, val in (("bos", cfg.bos_token_id), ("eos", cfg.eos_token_id), ("pad", cfg.pad_token_id)):
                if val is not None:
                    getattr(w, f"add_{key}_token_id")(int(val))
        written = _add_tensors(w, cfg, names, get_tensor, dtype)
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()
    return written


# ------------------------------------------------- new metadata, same tensors

def _pack_string(s: str) -> bytes:
    raw = s.encode("utf-8")
    return struct.pack("<Q", len(raw)) + raw


def _pack_value(value: Any, vtype: int) -> bytes:
    if vtype in SCALAR_FORMATS:
        return struct.pack(SCALAR_FORMATS[vtype], value)
    if vtype == STRING:
        return _pack_string(value)
    if vtype == ARRAY:
        etype = _value_type(value[0]) if value else STRING
        items = b"".join(_pack_value(v, etype) for v in value)
        return struct.pack("<IQ", etype, len(value)) + items
    raise UsageError(f"cannot write GGUF value type {vtype}")


def encode_kv(key: str, value: Any, vtype: int) -> bytes:
    """One metadata entry as GGUF stores it: key, value type, value."""
    return _pack_string(key) + struct.pack("<I", int(vtype)) + _pack_value(value, int(vtype))


def copied_kv(header: GGUFHeader, raw: bytes, key: str, new_key: str | None = None) -> bytes:
    """An entry of the parsed file, its type and value copied byte for byte (under ``new_key`` if given)."""
    start, end = header.kv_spans[key]
    return _pack_string(new_key or key) + raw[start:end]


def write_gguf_with_metadata(src: Path, header: GGUFHeader, raw: bytes, entries: list[bytes], out: Path) -> None:
    """``out`` (atomically) = ``src`` with these metadata ``entries`` (from ``encode_kv`` / ``copied_kv``),
    and its tensor infos and tensor data copied byte for byte.

    Tensor offsets are relative to the aligned start of the data section, so they stay valid.
    ``raw`` is the source's header bytes (``read_gguf_header``).
    """
    ti_start, ti_end = header.tensor_info_span
    blob = b"".join([GGUF_MAGIC, struct.pack("<IQQ", header.version, len(header.infos), len(entries)), *entries,
                     raw[ti_start:ti_end]])
    blob += b"\0" * (-len(blob) % header.alignment)
    with atomic_path(out) as tmp, open(tmp, "wb") as fo, open(src, "rb") as fi:
        fo.write(blob)
        fi.seek(header.data_start)
        shutil.copyfileobj(fi, fo, 1 << 24)


__all__ = ["GGUF_DTYPES", "copied_kv", "encode_kv", "gguf_tensor_type", "provenance_kvs", "roundtrip_value",
           "write_gguf", "write_gguf_with_metadata"]
