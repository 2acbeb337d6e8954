"""Write a GGUF file from HF-named tensors + ModelConfig + tokenizer, the way llama.cpp does.

Tensor names, metadata keys and the Q/K row permutation for llama-family attention
follow llama.cpp's ``convert_hf_to_gguf.py``; 1-D tensors (norms, biases) stay F32 as
there; Q8_0 goes through ``gguf.quants.quantize`` and falls back to F16 for a tensor
whose row length is not a multiple of 32. The tokenizer (byte-level BPE) is embedded
as ``tokenizer.ggml.model = "gpt2"`` with tokens, token types, merges and special ids.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import torch

from warmstart.arch.config import ModelConfig
from warmstart.checkpoint.gguf_names import hf_to_gguf, permutation_heads, permute_rows
from warmstart.checkpoint.write import atomic_path
from warmstart.errors import UsageError

GGUF_DTYPES = ("f32", "f16", "bf16", "q8_0")

def hf_to_gguf_name(name: str) -> str:
    gguf_name = hf_to_gguf(name)
    if gguf_name == name:
        raise UsageError(f"tensor '{name}' has no llama.cpp GGUF name",
                         why="the GGUF exporter maps only the tensors of warmstart's decoder families")
    return gguf_name


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


# ------------------------------------------------------------------ tokenizer

def _pre_name(tok_json: dict) -> str:
    """tokenizer.ggml.pre: llama.cpp's name for the pre-tokenizer regex."""
    text = json.dumps(tok_json.get("pre_tokenizer") or {})
    if "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\\\r\\\\n\\\\p{L}\\\\p{N}]?\\\\p{L}+" in text:
        return "qwen2"
    if "\\\\p{N}" in text and "Digits" in text:
        return "smollm"
    return "gpt2"


def add_tokenizer(writer, tokenizer, cfg: ModelConfig, vocab_rows: int, pre: str | None = None) -> None:
    """Embed a byte-level BPE ``tokenizers.Tokenizer`` as llama.cpp's "gpt2" tokenizer."""
    import gguf

    tok_json = json.loads(tokenizer.to_str())
    model = tok_json.get("model") or {}
    if model.get("type") != "BPE":
        raise UsageError(f"the tokenizer is a {model.get('type')} model; the GGUF exporter embeds "
                         "byte-level BPE tokenizers only")
    vocab = tokenizer.get_vocab(with_added_tokens=True)
    rev = {i: t for t, i in vocab.items()}
    added = {int(i): a for i, a in tokenizer.get_added_tokens_decoder().items()}
    n = max(vocab_rows, max(rev) + 1 if rev else 0)
    tokens, types = [], []
    for i in range(n):
        if i in rev:
            tokens.append(rev[i])
            if i in added:
                types.append(gguf.TokenType.CONTROL if added[i].special else gguf.TokenType.USER_DEFINED)
            else:
                types.append(gguf.TokenType.NORMAL)
        else:
            tokens.append(f"[PAD{i}]")
            types.append(gguf.TokenType.UNUSED)
    merges = model.get("merges") or []
    merges = [m if isinstance(m, str) else " ".join(m) for m in merges]
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(pre or _pre_name(tok_json))
    writer.add_token_list(tokens)
    writer.add_token_types([int(t) for t in types])
    writer.add_token_merges(merges)
    if cfg.bos_token_id is not None:
        writer.add_bos_token_id(int(cfg.bos_token_id))
    if cfg.eos_token_id is not None:
        writer.add_eos_token_id(int(cfg.eos_token_id))
    if cfg.pad_token_id is not None:
        writer.add_pad_token_id(int(cfg.pad_token_id))
    writer.add_add_bos_token(False)


# ---------------------------------------------------------------------- writer

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
    if cfg.rope_scaling:
        raise UsageError("GGUF export of a model with rope scaling (llama3) is not implemented",
                         fix="export to --to hf or --to safetensors instead")
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    arch = {"llama": "llama", "qwen2": "qwen2", "qwen3": "qwen3"}[cfg.family]
    written: dict[str, str] = {}
    with atomic_path(out_path) as tmp:
        w = gguf.GGUFWriter(str(tmp), arch)
        w.add_name(name or (provenance or {}).get("name") or f"warmstart-{cfg.family}")
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
        w.add_file_type(_file_type(dtype))
        if dtype == "q8_0":
            w.add_quantization_version(gguf.GGML_QUANT_VERSION)
        prov = dict(provenance or {})
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
        from warmstart.release._meta import gguf_provenance_kvs

        for key, val, vtype in gguf_provenance_kvs(prov):
            w.add_key_value(key, val, vtype)
        if chat_template:
            w.add_chat_template(chat_template)
        if tokenizer is not None:
            add_tokenizer(w, tokenizer, cfg, cfg.vocab_size, tokenizer_pre)
        else:
            for key, val in (("bos", cfg.bos_token_id), ("eos", cfg.eos_token_id), ("pad", cfg.pad_token_id)):
                if val is not None:
                    getattr(w, f"add_{key}_token_id")(int(val))
        for hf in names:
            if hf == "lm_head.weight" and cfg.tie_word_embeddings:
                continue
            if hf.endswith("rotary_emb.inv_freq"):
                continue
            t = get_tensor(hf).detach().float()
            if cfg.family == "llama":
                n_head = permutation_heads(hf_to_gguf_name(hf), "llama", cfg.num_heads, cfg.num_kv_heads)
                if n_head is not None:
                    t = permute_rows(t, n_head)
            gtype = gguf_tensor_type(hf, tuple(t.shape), dtype)
            arr, raw = _encode(t, gtype)
            if raw is None:
                w.add_tensor(hf_to_gguf_name(hf), arr)
            else:
                w.add_tensor(hf_to_gguf_name(hf), arr, raw_dtype=raw)
            written[hf] = gtype
            del t
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()
    return written


__all__ = ["GGUF_DTYPES", "add_tokenizer", "gguf_tensor_type", "hf_to_gguf_name",
           "roundtrip_value", "write_gguf"]
