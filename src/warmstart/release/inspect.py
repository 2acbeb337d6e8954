"""`warmstart inspect`: what a checkpoint is, as one JSON-able summary.

Format and files, the architecture claims it declares and where, the family those claims and
the tensor names point to, parameter count, dtypes, vocabulary and tokenizer, the model shape its
config gives, its metadata, and its lineage (each recorded ancestor checked against its lineage
hash, ``checkpoint.lineage``).
"""

from __future__ import annotations

from warmstart.arch.families import get_family, normalize_family
from warmstart.errors import WarmstartError

MODEL_FIELDS = ("family", "vocab_size", "hidden_size", "num_layers", "num_heads", "num_kv_heads", "head_dim",
                "intermediate_size", "rope_theta", "rms_norm_eps", "max_position_embeddings", "tie_word_embeddings",
                "attention_bias", "qk_norm", "sliding_window", "norm_style")


def _family(ckpt, claims: list[tuple[str, str]]) -> dict:
    from warmstart.init.gates import tensor_evidence

    declared = next((fam for fam in (normalize_family(value) for _, value in claims) if fam), None)
    evidence, evidence_why = tensor_evidence(ckpt)
    fam = get_family(declared or evidence)
    return {"declared": declared, "evidence": evidence, "evidence_reason": evidence_why,
            "kind": fam.kind if fam else None, "display": fam.display if fam else None}


def _model(ckpt) -> tuple[dict | None, str | None]:
    """The model shape the config gives, or the paragraph saying why there is none."""
    try:
        cfg = ckpt.model_config()
    except WarmstartError as err:
        return None, err.paragraph()
    return {k: getattr(cfg, k) for k in MODEL_FIELDS}, None


def _tokenizer(ckpt) -> dict:
    """What the checkpoint says about its tokenizer and whether warmstart builds it; a kind it cannot build
    is shown as such (with the refusal), never an error."""
    from warmstart.checkpoint.gguf.tokenizer import TOKENIZER_KINDS, tokenizer_kind

    out = {"present": False, "vocab_size": None, **ckpt.tokenizer_declared}
    try:
        tok = ckpt.tokenizer
    except WarmstartError as err:
        return {**out, "supported": False, "error": err.paragraph()}
    if tok is None:
        return out
    kind = out.get("kind") or tokenizer_kind(tok) or type(tok.model).__name__
    return {**out, "present": True, "supported": True, "vocab_size": tok.get_vocab_size(with_added_tokens=True),
            "kind": kind, "kind_name": TOKENIZER_KINDS.get(kind, kind)}


def inspect_summary(ckpt, *, tensors: bool = False) -> dict:
    """The JSON-able summary ``warmstart inspect`` prints (``tensors``: add the tensor table). Never fails on
    a readable checkpoint: an unsupported family or tokenizer is shown as such, beside what the file declares."""
    from warmstart.checkpoint.lineage import lineage_chain

    claims = ckpt.declared_claims()
    model_summary, config_error = _model(ckpt)
    out = {
        "path": str(ckpt.path),
        "resolved": str(ckpt.root),
        "format": ckpt.format,
        "files": [{"path": str(f), "bytes": f.stat().st_size} for f in ckpt.files],
        "declared_claims": [{"where": w, "value": v} for w, v in claims],
        "family": _family(ckpt, claims),
        "parameters": ckpt.num_parameters(),
        "num_tensors": len(ckpt.tensor_info),
        "dtypes": ckpt.dtype_histogram(),
        "vocab_size": ckpt.config.get("vocab_size"),
        "tokenizer": _tokenizer(ckpt),
        "model": model_summary,
        "config_error": config_error,
        "config": ckpt.config,  # as declared (GGUF: the HF config its llama.cpp keys give)
        "metadata": ckpt.metadata,
        "lineage": {"parent": ckpt.parent, "chain": lineage_chain(ckpt)},
    }
    if tensors:
        out["tensors"] = [{"name": i.name, "shape": list(i.shape), "dtype": i.dtype, "source_name": i.source_name}
                          for i in ckpt.tensor_info.values()]
    return out


__all__ = ["MODEL_FIELDS", "inspect_summary"]
