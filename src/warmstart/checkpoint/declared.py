"""Declared values: one check of what a checkpoint says about itself, before any tensor is allocated.

A checkpoint declares its shape and identity in config.json (or the safetensors metadata ``config``),
its provenance in warmstart.json (or safetensors metadata / ``warmstart.*`` GGUF keys) and, in a GGUF,
in llama.cpp's ``{arch}.*`` and ``tokenizer.ggml.*`` keys. Each value is checked here for its type and
range, related values for agreement (heads divisible by kv heads, hidden size by heads, a RoPE head
dimension even, one layer type per layer), and the declared shape against the bytes the files hold:
a model needs at least one bit per parameter in any format, so a shape that needs more than the
tensor data could hold (``num_hidden_layers = 2**40``) is refused before anything is built from it.

Every finding is a ``Defect`` raised as DeclaredValueError (WS111) or DeclaredSizeError (WS112),
naming the key, its value and what was expected; ``structure.structure_at`` adds them, so the loader
refuses them and ``validate`` lists them. A key that is absent is not a defect here (the family's
config mapping says which keys it needs); a key present with the wrong value is.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Callable

from warmstart.checkpoint.defects import Defect
from warmstart.errors import DeclaredSizeError, DeclaredValueError

MIN_BITS_PER_PARAMETER = 1  # below every stored format (llama.cpp's smallest quant, IQ1_S, takes 1.56)


def _int(v: Any) -> bool:
    return (isinstance(v, int) and not isinstance(v, bool)) or (isinstance(v, float) and v.is_integer())


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _strings(v: Any) -> bool:
    from warmstart.checkpoint.gguf.parse import SkippedStrings  # a GGUF string array, bounds-checked only

    return isinstance(v, SkippedStrings) or (isinstance(v, list) and all(isinstance(x, str) for x in v))


# kind -> (test, what was expected)
KINDS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "count": (lambda v: _int(v) and v >= 1, "an integer >= 1"),
    "index": (lambda v: _int(v) and v >= 0, "an integer >= 0"),
    "counts": (lambda v: (_int(v) and v >= 1) or (isinstance(v, list) and bool(v) and all(_int(x) and x >= 1
                                                                                          for x in v)),
               "an integer >= 1 or a list of them (one per layer)"),
    "positive": (lambda v: _number(v) and v > 0, "a finite number > 0"),
    "nonneg": (lambda v: _number(v) and v >= 0, "a finite number >= 0"),
    "bool": (lambda v: isinstance(v, bool), "true or false"),
    "str": (lambda v: isinstance(v, str), "a string"),
    "ids": (lambda v: (_int(v) and v >= 0) or (isinstance(v, list) and bool(v) and all(_int(x) and x >= 0
                                                                                       for x in v)),
            "a token id (an integer >= 0) or a list of them"),
    "object": (lambda v: isinstance(v, dict), "an object (a mapping of keys to values)"),
    "strings": (_strings, "a list of strings"),
    "names": (lambda v: isinstance(v, str) or (isinstance(v, list) and all(isinstance(x, str) for x in v)),
              "a string or a list of strings"),
    "numbers": (lambda v: isinstance(v, list) and all(_number(x) for x in v), "a list of finite numbers"),
    "ints": (lambda v: isinstance(v, list) and all(_int(x) for x in v), "a list of integers"),
    "flags": (lambda v: (_int(v) and v >= 1) or (isinstance(v, list) and all(isinstance(x, (bool, int)) for x in v)),
              "an integer >= 1 or a list of per-layer flags"),
    "optional-nonneg": (lambda v: v is None or (_number(v) and v >= 0), "a finite number >= 0 or null"),
}

# config.json key -> (kind, null allowed)
HF_KEYS: dict[str, tuple[str, bool]] = {
    "vocab_size": ("count", False), "hidden_size": ("count", False), "num_hidden_layers": ("count", False),
    "num_attention_heads": ("count", False), "intermediate_size": ("count", False),
    "num_key_value_heads": ("count", True), "head_dim": ("count", True),
    "max_position_embeddings": ("count", False), "rms_norm_eps": ("positive", False),
    "rope_theta": ("positive", False), "rope_local_base_freq": ("positive", False),
    "initializer_range": ("nonneg", False), "query_pre_attn_scalar": ("positive", True),
    "tie_word_embeddings": ("bool", False), "attention_bias": ("bool", False), "mlp_bias": ("bool", False),
    "use_sliding_window": ("bool", False), "sliding_window": ("count", True),
    "sliding_window_pattern": ("count", True), "bos_token_id": ("ids", True), "eos_token_id": ("ids", True),
    "pad_token_id": ("ids", True), "hidden_act": ("str", False), "hidden_activation": ("str", True),
    "model_type": ("str", False), "architectures": ("names", False), "rope_scaling": ("object", True),
    "rope_parameters": ("object", True), "layer_types": ("strings", True),
}
ROPE_KEYS: dict[str, tuple[str, bool]] = {
    "rope_type": ("str", False), "type": ("str", False), "rope_theta": ("positive", False),
    "factor": ("positive", False), "low_freq_factor": ("positive", False), "high_freq_factor": ("positive", False),
    "original_max_position_embeddings": ("count", False),
}
PROVENANCE_KEYS: dict[str, tuple[str, bool]] = {
    "step": ("index", True), "tokens_seen": ("index", True), "val_loss": ("nonneg", True),
    "val_windows": ("count", True), "parent": ("object", True), "data_sources": ("names", True),
    "architecture": ("str", True), "hf_architecture": ("str", True), "model_type": ("str", True),
    "data_fingerprint": ("str", True), "license": ("str", True), "data_license": ("str", True),
    "eval_sets": ("object", True),
}
# GGUF ``{arch}.<key>`` -> kind, and the tokenizer keys.
GGUF_ARCH_KEYS = {
    "block_count": "count", "context_length": "count", "embedding_length": "count", "feed_forward_length": "counts",
    "attention.head_count": "counts", "attention.head_count_kv": "counts", "attention.key_length": "count",
    "attention.value_length": "count", "attention.layer_norm_rms_epsilon": "positive", "rope.freq_base": "positive",
    "rope.freq_base_swa": "positive", "rope.dimension_count": "count", "rope.scaling.factor": "positive",
    "rope.scaling.type": "str", "attention.sliding_window": "count", "attention.sliding_window_pattern": "flags",
    "vocab_size": "count",
}
GGUF_KEYS = {
    "general.architecture": "str", "general.name": "str", "tokenizer.ggml.model": "str", "tokenizer.ggml.pre": "str",
    "tokenizer.ggml.bos_token_id": "index", "tokenizer.ggml.eos_token_id": "index",
    "tokenizer.ggml.unknown_token_id": "index", "tokenizer.ggml.padding_token_id": "index",
    "tokenizer.ggml.add_bos_token": "bool", "tokenizer.ggml.add_eos_token": "bool",
    "tokenizer.ggml.add_space_prefix": "bool", "tokenizer.ggml.tokens": "strings", "tokenizer.ggml.merges": "strings",
    "tokenizer.ggml.scores": "numbers", "tokenizer.ggml.token_type": "ints",
}


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


class Declared:
    """Collects the defects of one source of declared values (``where``: "config.json", a GGUF file, ...)."""

    def __init__(self, where: str, path: Path | None, names: dict[str, str] | None = None) -> None:
        self.where, self.path, self.names = where, path, names or {}
        self.defects: list[Defect] = []

    def name(self, key: str) -> str:
        return self.names.get(key, key)

    def bad(self, key: str, value: Any, expected: str) -> None:
        self.defects.append(Defect(
            f"{self.where} declares {self.name(key)} = {_shown(value)}; expected {expected}",
            why="a checkpoint's declared shape decides what is built from it; this value cannot describe a model",
            fix=f"correct {self.name(key)} in {self.where} (compare `warmstart inspect CKPT --tensors`), or "
                "re-export the checkpoint", path=self.path, error=DeclaredValueError))

    def check(self, values: dict, rules: dict[str, tuple[str, bool]]) -> set[str]:
        """Type and range of every ruled key present; returns the keys that passed."""
        good = set()
        for key, (kind, nullable) in rules.items():
            if key not in values or (values[key] is None and nullable):
                continue
            test, expected = KINDS[kind]
            if test(values[key]):
                good.add(key)
            else:
                self.bad(key, values[key], expected + (" or null" if nullable else ""))
        return good


# ------------------------------------------------------------------ HF config


def config_defects(cfg: dict, *, where: str, path: Path | None, data_bytes: int | None,
                   names: dict[str, str] | None = None) -> list[Defect]:
    """Every defect of a HF config dict: types and ranges, agreement, the size bound (``data_bytes``)."""
    d = Declared(where, path, names)
    good = d.check(cfg, HF_KEYS)
    for key in ("rope_scaling", "rope_parameters"):
        if key in good:
            _rope_defects(d, key, cfg[key])
    if d.defects:
        return d.defects
    _relations(d, cfg, good)
    if not d.defects and data_bytes is not None and _supported(cfg):
        _size(d, cfg, data_bytes)
    return d.defects


def _rope_defects(d: Declared, key: str, rope: dict) -> None:
    """rope_scaling, or rope_parameters (flat, or one entry per layer type as Gemma 3 writes it)."""
    parts = rope.items() if rope and all(isinstance(v, dict) for v in rope.values()) else [("", rope)]
    for sub, values in parts:
        inner = Declared(d.where, d.path, {k: f"{key}.{sub + '.' if sub else ''}{k}" for k in ROPE_KEYS})
        good = inner.check(values, ROPE_KEYS)
        kind = values.get("rope_type", values.get("type"))
        if kind in ("linear", "llama3") and "factor" not in good and "factor" not in values:
            inner.bad("factor", None, f"a finite number > 0 (rope type {kind} needs one)")
        if kind == "llama3" and "original_max_position_embeddings" not in values:
            inner.bad("original_max_position_embeddings", None, "an integer >= 1 (rope type llama3 needs one)")
        if kind == "llama3" and {"low_freq_factor", "high_freq_factor"} <= good and \
                values["high_freq_factor"] <= values["low_freq_factor"]:
            inner.bad("high_freq_factor", values["high_freq_factor"],
                      f"a number above low_freq_factor = {values['low_freq_factor']}")
        d.defects += inner.defects


def _supported(cfg: dict) -> bool:
    from warmstart.arch.config import declared_architecture
    from warmstart.arch.families import SUPPORTED_DECODER, get_family

    fam = get_family(declared_architecture(cfg))
    return fam is not None and fam.kind == SUPPORTED_DECODER


def _relations(d: Declared, cfg: dict, good: set[str]) -> None:
    """Values that must agree with each other (each checked only when its keys passed on their own)."""
    heads, kv = cfg.get("num_attention_heads"), cfg.get("num_key_value_heads")
    if {"num_attention_heads", "num_key_value_heads"} <= good and heads % kv:
        d.bad("num_key_value_heads", kv, f"a divisor of num_attention_heads = {heads} (grouped-query attention "
              "shares each kv head between an equal number of query heads)")
    if "head_dim" not in good and {"hidden_size", "num_attention_heads"} <= good and cfg["hidden_size"] % heads:
        d.bad("hidden_size", cfg["hidden_size"], f"a multiple of num_attention_heads = {heads} when no head_dim "
              "is given")
    head_dim = cfg["head_dim"] if "head_dim" in good else (
        cfg["hidden_size"] // heads if {"hidden_size", "num_attention_heads"} <= good else None)
    if head_dim is not None and head_dim % 2 and _supported(cfg):
        d.bad("head_dim", head_dim, "an even number (rotary embeddings rotate pairs of dimensions)")
    layers = cfg.get("num_hidden_layers")
    if "layer_types" in good and "num_hidden_layers" in good and len(cfg["layer_types"]) != layers:
        d.bad("layer_types", cfg["layer_types"], f"one entry per layer ({layers} layers)")


def parameters_at_least(cfg: dict) -> int:
    """The parameters a decoder of this shape has at the least: embedding plus attention and MLP weights."""
    hidden, heads, layers = int(cfg["hidden_size"]), int(cfg["num_attention_heads"]), int(cfg["num_hidden_layers"])
    head_dim = int(cfg.get("head_dim") or hidden // heads)
    kv = int(cfg.get("num_key_value_heads") or heads)
    attention = hidden * head_dim * (2 * heads + 2 * kv)
    return int(cfg["vocab_size"]) * hidden + layers * (attention + 3 * hidden * int(cfg["intermediate_size"]))


SHAPE_KEYS = (  # the keys a model shape needs (gate 1 of --init requires them too)
    "vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size")


def _size(d: Declared, cfg: dict, data_bytes: int) -> None:
    if not all(k in cfg for k in SHAPE_KEYS):
        return
    params = parameters_at_least(cfg)
    need = params * MIN_BITS_PER_PARAMETER // 8
    if need <= data_bytes:
        return
    declared = ", ".join(f"{d.name(k)} = {cfg[k]}" for k in SHAPE_KEYS)
    d.defects.append(Defect(
        f"{d.where} declares {declared}: a model of that shape has at least {params:.3g} parameters, "
        f"{need:.3g} bytes even at {MIN_BITS_PER_PARAMETER} bit each, but the checkpoint's tensors hold "
        f"{data_bytes:,} bytes", why="the declared shape cannot be the shape of these weights; building it would "
        "allocate memory the tensors cannot fill", fix=f"correct the sizes in {d.where} (compare `warmstart "
        "inspect CKPT --tensors`), or re-export the checkpoint", path=d.path, error=DeclaredSizeError))


# ---------------------------------------------------------------- provenance


def provenance_defects(prov: dict, *, where: str, path: Path | None) -> list[Defect]:
    """warmstart.json (or its fields in safetensors metadata / GGUF keys): the fields commands read."""
    d = Declared(where, path)
    d.check(prov, PROVENANCE_KEYS)
    parent = prov.get("parent")
    if isinstance(parent, dict):
        inner = Declared(where, path, {k: f"parent.{k}" for k in ("path", "sha256", "step", "val_loss")})
        inner.check(parent, {"path": ("str", True), "sha256": ("str", True), "step": ("index", True),
                             "val_loss": ("optional-nonneg", True)})
        d.defects += inner.defects
    return d.defects


# ---------------------------------------------------------------------- GGUF


def gguf_defects(metadata: dict, tensor_shapes: dict[str, tuple[int, ...]], *, path: Path,
                 data_bytes: int) -> list[Defect]:
    """The GGUF's own keys (types, ranges), then its shape as a HF config (agreement, the size bound)."""
    from warmstart.checkpoint.gguf.hf import gguf_shape

    d = Declared(path.name, path)
    d.check(metadata, {k: (kind, False) for k, kind in GGUF_KEYS.items()})
    arch = metadata.get("general.architecture")
    if not isinstance(arch, str):
        return d.defects
    d.check(metadata, {f"{arch}.{k}": (kind, False) for k, kind in GGUF_ARCH_KEYS.items()})
    if d.defects:
        return d.defects
    shape, names = gguf_shape(lambda k, default=None: metadata.get(f"{arch}.{k}", default), tensor_shapes, metadata)
    cfg = {k: v for k, v in shape.items() if v is not None}
    cfg["architectures"] = [arch]  # a supported family (llama, qwen2, ...) is held to the size bound
    return config_defects(cfg, where=path.name, path=path, data_bytes=data_bytes, names=names)


__all__ = ["MIN_BITS_PER_PARAMETER", "SHAPE_KEYS", "config_defects", "gguf_defects", "parameters_at_least", "provenance_defects"]
