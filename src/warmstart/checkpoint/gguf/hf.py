"""A GGUF file as Hugging Face sees it: config.json from the ``{arch}.*`` keys, HF tensor names.

What is shared by every llama.cpp architecture is mapped here; a family's own keys, block names and
whether llama.cpp permuted its q/k rows come from its spec (``arch/families/``), found by the
file's ``general.architecture``.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from warmstart.arch.families import SPECS, FamilySpec, get_family, get_spec
from warmstart.checkpoint.gguf.names import block_map, gguf_to_hf, qk_heads
from warmstart.checkpoint.gguf.parse import GGUFFile, GGUFTensor
from warmstart.errors import RopeExportError, UnreadableError


def spec_for_gguf(arch: str | None) -> FamilySpec | None:
    """The supported family whose GGUF architecture is ``arch`` (any spelling of the family also counts)."""
    return next((s for s in SPECS.values() if s.gguf_arch == arch), None) or get_spec(arch)


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

    def key(k: str, default=None):
        return md.get(f"{arch}.{k}", default)

    cfg: dict[str, Any] = {
        "architectures": [fam.hf_architecture] if fam and fam.hf_architecture else [arch],
        "model_type": fam.model_type if fam and fam.model_type else arch,
        **_shape(g, key),
        "hidden_act": "silu",
        "max_position_embeddings": key("context_length") or 2048,
        "rms_norm_eps": _nice_float(key("attention.layer_norm_rms_epsilon", 1e-6)),
        "rope_theta": _nice_float(key("rope.freq_base", 10000.0)),
        "tie_word_embeddings": "output.weight" not in g.tensors,
        "torch_dtype": "float32",
        "bos_token_id": md.get("tokenizer.ggml.bos_token_id"),
        "eos_token_id": md.get("tokenizer.ggml.eos_token_id"),
        "pad_token_id": md.get("tokenizer.ggml.padding_token_id"),
    }
    rope_scaling = _rope_scaling(g, key, cfg["rope_theta"], cfg["head_dim"])
    if rope_scaling:
        cfg["rope_scaling"] = rope_scaling
    spec = spec_for_gguf(arch)
    if spec is not None:
        cfg.update(spec.gguf_config(key, g.tensors))
    return cfg


def _shape(g: GGUFFile, key) -> dict:
    return gguf_shape(key, {n: t.shape for n, t in g.tensors.items()}, g.metadata)[0]


def _first(value: Any, default: Any = None) -> Any:
    """A per-layer list's first value (some archs store head counts per layer)."""
    return (value[0] if value else default) if isinstance(value, list) else value


def gguf_shape(key, tensor_shapes: dict[str, tuple[int, ...]], metadata: dict) -> tuple[dict, dict[str, str]]:
    """The HF shape keys a GGUF's ``{arch}.*`` keys give, and for each the GGUF key it came from."""
    arch = metadata.get("general.architecture")
    hidden, heads = key("embedding_length"), _first(key("attention.head_count"))
    kv = _first(key("attention.head_count_kv", heads), heads)
    emb = tensor_shapes.get("token_embd.weight")
    vocab, vocab_from = (emb[0], "token_embd.weight rows") if emb else (key("vocab_size"), f"{arch}.vocab_size")
    if vocab is None and isinstance(metadata.get("tokenizer.ggml.tokens"), list):
        vocab, vocab_from = len(metadata["tokenizer.ggml.tokens"]), "tokenizer.ggml.tokens"
    derived = hidden // heads if isinstance(hidden, int) and isinstance(heads, int) and heads > 0 else None
    shape = {
        "vocab_size": vocab,
        "hidden_size": hidden,
        "intermediate_size": _first(key("feed_forward_length")),
        "num_hidden_layers": key("block_count"),
        "num_attention_heads": heads,
        "num_key_value_heads": kv,
        "head_dim": key("attention.key_length") or derived,
        "max_position_embeddings": key("context_length"),
    }
    names = {"vocab_size": vocab_from, "hidden_size": "embedding_length", "intermediate_size": "feed_forward_length",
             "num_hidden_layers": "block_count", "num_attention_heads": "attention.head_count",
             "num_key_value_heads": "attention.head_count_kv", "head_dim": "attention.key_length",
             "max_position_embeddings": "context_length"}
    return shape, {k: v if k == "vocab_size" else f"{arch}.{v}" for k, v in names.items()}


YARN_KEYS = {"original_max_position_embeddings": "rope.scaling.original_context_length",
             "beta_fast": "rope.scaling.yarn_beta_fast", "beta_slow": "rope.scaling.yarn_beta_slow"}


def rope_scaling_keys(scaling: dict | None) -> dict:
    """The ``{arch}.rope.scaling.*`` keys llama.cpp reads for HF's ``rope_scaling`` ({} without one);
    RopeExportError (WS126) for a scaling they cannot carry: llama3 (llama.cpp keeps it as a
    ``rope_freqs.weight`` tensor, not keys) or a YaRN with a non-default attention factor or truncation."""
    if not scaling:
        return {}
    kind = scaling.get("rope_type", scaling.get("type"))
    custom = [k for k in ("attention_factor", "mscale", "mscale_all_dim") if scaling.get(k) is not None]
    if kind == "linear":
        return {"rope.scaling.type": "linear", "rope.scaling.factor": float(scaling["factor"])}
    if kind == "yarn" and not custom and scaling.get("truncate", True):
        keys = {"rope.scaling.type": "yarn", "rope.scaling.factor": float(scaling["factor"]),
                "rope.scaling.original_context_length": int(scaling["original_max_position_embeddings"])}
        keys.update({YARN_KEYS[k]: float(scaling[k]) for k in ("beta_fast", "beta_slow") if scaling.get(k)})
        return keys
    raise RopeExportError(f"a GGUF cannot carry this model's rope scaling {scaling}",
                          why="llama.cpp's GGUF keys hold linear and default YaRN scaling; it keeps llama3 scaling "
                              "as a rope_freqs.weight tensor, which the exporter does not write",
                          fix="export with --to hf or --to safetensors")


def _rope_scaling(g: GGUFFile, key, theta: float, head_dim: int | None) -> dict | None:
    scaling = key("rope.scaling.type")
    if scaling and scaling != "none":
        params = {"rope_type": scaling, "factor": key("rope.scaling.factor", 1.0)}
        if scaling == "yarn":
            params.update({k: key(v) for k, v in YARN_KEYS.items() if key(v) is not None})
            params.setdefault("original_max_position_embeddings", key("context_length"))  # llama.cpp's default
        return params
    freqs = g.tensors.get("rope_freqs.weight")
    if freqs is None:
        return None
    # Llama 3.1+: llama.cpp stores llama3 rope scaling as per-frequency factors, not as keys.
    factors = g.read(freqs).double().numpy().reshape(-1)
    dim = int(key("rope.dimension_count") or head_dim or 0)
    return llama3_rope_from_factors(factors, theta, dim) or {
        # not the llama3 schedule: ModelConfig refuses this rope type by name
        "rope_type": "per-frequency factors (GGUF rope_freqs.weight)"}


@dataclass(frozen=True)
class PlannedTensor:
    """How one HF tensor comes out of the GGUF."""

    source: GGUFTensor
    unpermute_heads: int | None = None  # llama.cpp permuted its rows in this many heads
    shift: float = 0.0  # llama.cpp stored the values plus this (Gemma's norms)


def hf_tensor_plan(g: GGUFFile, cfg: dict) -> dict[str, PlannedTensor]:
    """HF name -> how to read it from the GGUF (the family spec says what llama.cpp changed)."""
    spec = spec_for_gguf(g.architecture)
    permuted = spec is not None and spec.gguf_permute_qk
    shift = spec.gguf_norm_shift if spec is not None else 0.0
    block = block_map(spec)
    heads = int(cfg.get("num_attention_heads") or 0)
    kv = int(cfg.get("num_key_value_heads") or heads or 0)
    plan: dict[str, PlannedTensor] = {}
    for name, t in g.tensors.items():
        n_head = qk_heads(name, heads, kv) if permuted and heads else None
        if n_head is not None and (t.shape[0] % (2 * n_head)):
            raise UnreadableError(
                f"GGUF tensor '{name}' has {t.shape[0]} rows, not divisible into {n_head} heads of even size",
                why="llama.cpp's q/k row permutation cannot be undone",
                fix="check the file's attention.head_count / head_count_kv", path=g.path)
        hf = gguf_to_hf(name, block)
        plan[hf] = PlannedTensor(t, n_head, shift if hf.endswith("norm.weight") else 0.0)
    return plan


def read_planned(g: GGUFFile, p: PlannedTensor) -> torch.Tensor:
    """The HF tensor: dequantised, rows un-permuted, llama.cpp's shift taken off (in float32)."""
    t = g.read(p.source, unpermute_heads=p.unpermute_heads)
    return t.float() - p.shift if p.shift else t


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


__all__ = ["PlannedTensor", "gguf_hf_config", "gguf_metadata", "hf_tensor_plan", "llama3_rope_factors",
           "llama3_rope_from_factors", "read_planned", "spec_for_gguf"]
