"""`warmstart export`: convert a checkpoint to a HF directory, a single safetensors file or GGUF.

Every export is read back through warmstart's own loader before success is declared:
the re-read model's logits on a probe must equal the logits of the source weights
rounded to the export dtype (max abs diff <= 1e-4 relative to the logit scale, fp32
compute), its config must give the same model, and its tokenizer must give the same ids
on the probe text. A failed check removes the output.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from pathlib import Path
from typing import Any

import torch

from warmstart.arch.config import VARIATIONS
from warmstart.choices import Choices
from warmstart.checkpoint import load_checkpoint, provenance, read_structure
from warmstart.checkpoint.formats import FORMAT_GGUF
from warmstart.checkpoint.locate import FORMAT_HF_DIR
from warmstart.checkpoint.structure import json_object
from warmstart.checkpoint.write import clean_stale, owner_tag
from warmstart.errors import CheckFailedError, UsageError
from warmstart.files import check_output
from warmstart.checkpoint.gguf.write import GGUF_DTYPES, gguf_tensor_type, roundtrip_value, write_gguf
from warmstart.init.gates import inference_model
from warmstart.release._report import PROBE_TEXT, probe_ids

TARGETS = Choices(("hf", "safetensors", "gguf"), fold_case=True)
TORCH_DTYPES = {"f32": torch.float32, "f16": torch.float16, "bf16": torch.bfloat16}
STRICT_TOL = 1e-4
# Expected distance from the fp32 source (reported, not gated): the dtype's own rounding.
DTYPE_TOL = {"f32": 1e-4, "f16": 2e-2, "bf16": 8e-2, "q8_0": 8e-2}


def _tensor_type(target: str, dtype: str, name: str, shape: tuple[int, ...]) -> str:
    if target == "gguf":
        return gguf_tensor_type(name, shape, dtype)
    return {"f32": "F32", "f16": "F16", "bf16": "BF16"}[dtype]


def export_checkpoint(
    src: str | Path,
    to: str,
    out: str | Path,
    *,
    dtype: str | None = None,
    overwrite: bool = False,
    verify: bool = True,
    ckpt=None,
    model=None,
) -> dict[str, Any]:
    to, dtype = _target(to, dtype)
    out = Path(out)
    clean_stale(out)  # what a killed export to the same place left
    _refuse_existing(out, Path(src), overwrite, directory=to == "hf")
    if ckpt is None:
        ckpt = load_checkpoint(src)
    _refuse_own_input(ckpt, Path(src), out)
    cfg = ckpt.model_config()
    if model is None:
        model = inference_model(ckpt, cfg, allow_unused=True, check_finite=True)  # NaN/Inf: the values refusal
    sd = model.canonical_state_dict()
    prov = provenance(ckpt)
    prov.update({"architecture": cfg.family, "hf_architecture": cfg.hf_architecture, "model_type": cfg.model_type})
    prov.setdefault("exported_from", str(ckpt.path))
    types = {n: _tensor_type(to, dtype, n, tuple(t.shape)) for n, t in sd.items()}
    replaced = _set_aside(out) if out.exists() and overwrite else None
    try:
        _WRITERS[to](ckpt, cfg, sd, out, dtype, prov)
        report: dict[str, Any] = {"input": str(ckpt.path), "output": str(out), "to": to, "dtype": dtype,
                                  "family": cfg.family, "tensors": len(sd),
                                  "tensor_types": sorted(set(types.values()))}
        if verify:
            report["verify"] = verify_roundtrip(model, cfg, out, types, ckpt.tokenizer)
    except BaseException:
        _remove(out)
        if replaced is not None:
            replaced.rename(out)
        raise
    if replaced is not None:
        _remove(replaced)
    return report


def render_export(r: dict[str, Any]) -> str:
    v = r["verify"]
    return (f"exported {r['input']} -> {r['output']} ({r['to']}, {r['dtype']}: {', '.join(r['tensor_types'])}; "
            f"{r['tensors']} tensors)\n"
            f"  read back through warmstart: logits equal (max rel diff {v['max_rel_diff_vs_rounded_source']:.1e} vs "
            f"the source rounded to {r['dtype']}; {v['max_rel_diff_vs_fp32_source']:.1e} vs fp32 source)"
            + ("; tokenizer ids equal" if v.get("tokenizer_ids_equal") else ""))


def _target(to: str, dtype: str | None) -> tuple[str, str]:
    to = TARGETS.check("--to", to)
    dtype = GGUF_DTYPES.check("--dtype", dtype or ("f16" if to == "gguf" else "f32"))
    if dtype == "q8_0" and to != "gguf":
        raise UsageError("q8_0 is a GGUF quantisation", fix="use --to gguf with --dtype q8_0, or f32/f16/bf16")
    return to, dtype


def _refuse_existing(out: Path, src: Path, overwrite: bool, directory: bool) -> None:
    check_output(out, replace=True, directory=directory)  # never a FIFO, a device, a loop or the wrong kind
    if not os.path.lexists(out):
        return
    try:
        same = out.resolve() == src.resolve()
    except OSError:
        same = False
    if same or not overwrite:
        raise UsageError(f"the output {out} already exists" + (" (it is the input)" if same else ""),
                         fix="choose a new path with -o" + ("" if same else ", or pass --overwrite"))


def _set_aside(out: Path) -> Path:
    """Move an existing output out of the way (``--overwrite``); it comes back if the export fails (or,
    when this process is killed, at the next write to ``out``: ``clean_stale``)."""
    aside = out.with_name(f".{out.name}.replaced-{owner_tag()}-{uuid.uuid4().hex[:8]}")
    out.rename(aside)
    return aside


def _write_gguf(ckpt, cfg, sd: dict, out: Path, dtype: str, prov: dict) -> None:
    tok = ckpt.tokenizer
    kv = read_structure(ckpt.path).files[0].metadata if ckpt.format == FORMAT_GGUF else {}
    pre = kv.get("tokenizer.ggml.pre")  # kept when the tokenizer splits as it says (checkpoint.gguf.pretok)
    write_gguf(out, cfg, list(sd), lambda n: sd[n], tokenizer=tok, dtype=dtype, provenance=prov,
               tokenizer_pre=pre, chat_template=_chat_template(ckpt, kv))


def _write_safetensors(ckpt, cfg, sd: dict, out: Path, dtype: str, prov: dict) -> None:
    from warmstart.checkpoint.write import save_safetensors

    tdt = TORCH_DTYPES[dtype]
    tensors = {n: t.detach().to(tdt).contiguous() for n, t in sd.items()}
    meta = {"config": json.dumps(cfg.to_hf_config(str(tdt).removeprefix("torch.")))}
    for k, v in prov.items():
        meta[k] = v if isinstance(v, str) else json.dumps(v, default=str)
    if ckpt.tokenizer is not None:
        meta["tokenizer"] = ckpt.tokenizer.to_str()
    save_safetensors(out, tensors, meta)


def _write_hf(ckpt, cfg, sd: dict, out: Path, dtype: str, prov: dict) -> None:
    from warmstart.checkpoint.write import save_hf_checkpoint

    tdt = TORCH_DTYPES[dtype]
    tensors = {n: t.detach().to(tdt).contiguous() for n, t in sd.items()}
    gen = _side_json(ckpt.root / "generation_config.json") if ckpt.format == FORMAT_HF_DIR else None
    save_hf_checkpoint(out, cfg, tensors, tokenizer=ckpt.tokenizer, provenance=prov, generation_config=gen)


_WRITERS = {"gguf": _write_gguf, "safetensors": _write_safetensors, "hf": _write_hf}


def _refuse_own_input(ckpt, src: Path, out: Path) -> None:
    """Never write onto or into the checkpoint being read (its files, its directory), --overwrite or not."""
    try:
        o = out.resolve()
        inputs = {Path(f).resolve() for f in getattr(ckpt, "files", [])}
        roots = {src.resolve(), Path(getattr(ckpt, "root", src)).resolve()}
    except OSError:
        return
    if o in inputs or any(o == r or (r.is_dir() and o.is_relative_to(r)) for r in roots):
        raise UsageError(f"the output {out} is (inside) the input checkpoint",
                         why="export never writes into what it reads",
                         fix="choose a path outside the input checkpoint with -o")


def _remove(p: Path) -> None:
    if p.is_dir():
        shutil.rmtree(p, ignore_errors=True)
    elif p.exists():
        p.unlink()


def _chat_template(ckpt, gguf_kv: dict) -> str | None:
    """The source's chat template (GGUF key or tokenizer_config.json), carried into a GGUF."""
    if ckpt.format == FORMAT_GGUF:
        t = gguf_kv.get("tokenizer.chat_template")
        return t if isinstance(t, str) else None
    root = Path(ckpt.root)
    cfg_path = (root if ckpt.format == FORMAT_HF_DIR else root.parent) / "tokenizer_config.json"
    t = (_side_json(cfg_path) or {}).get("chat_template")
    return t if isinstance(t, str) else None


def _side_json(path: Path) -> dict | None:
    """A JSON object beside the weights (generation_config.json, tokenizer_config.json), read through the
    checkpoint's checks (``structure.json_object``: a FIFO or a loop is never opened); None when it is missing,
    unreadable or not a JSON object: the export goes on without it, as transformers' loaders do."""
    if not os.path.lexists(path):
        return None
    try:
        return json_object(path)[0]
    except OSError:
        return None


def _same_numbers(a: dict | None, b: dict | None) -> bool:
    """Two rope_scaling dicts alike, numbers to float32 precision (a GGUF stores them as float32)."""
    if not a or not b:
        return not a and not b
    return a.keys() == b.keys() and all(
        abs(a[k] - b[k]) <= 1e-6 * max(1.0, abs(a[k])) if isinstance(a[k], (int, float)) else a[k] == b[k] for k in a)


@torch.no_grad()
def verify_roundtrip(model, cfg, out: Path, types: dict[str, str], tok=None) -> dict[str, Any]:
    """Read ``out`` back through warmstart's loader; compare config, logits and tokenizer ids."""
    back = load_checkpoint(out)
    try:
        cfg2 = back.model_config()
        diffs = [k for k in ("family", "vocab_size", "hidden_size", "num_layers", "num_heads", "num_kv_heads",
                             "head_dim", "intermediate_size", "max_position_embeddings", *VARIATIONS)
                 if getattr(cfg, k) != getattr(cfg2, k)]
        diffs += [] if _same_numbers(cfg.rope_scaling, cfg2.rope_scaling) else ["rope_scaling"]
        for k in ("rope_theta", "rms_norm_eps"):
            if abs(getattr(cfg, k) - getattr(cfg2, k)) > 1e-6 * max(1.0, abs(getattr(cfg, k))):
                diffs.append(k)
        if diffs:
            raise CheckFailedError(
                "the exported config reads back differently: "
                + ", ".join(f"{k} {getattr(cfg, k)} -> {getattr(cfg2, k)}" for k in diffs),
                why="the export was removed", path=out, fix="report this as a bug")
        m2 = inference_model(back, cfg2, allow_unused=True)
        ids = probe_ids(tok, cfg.vocab_size)
        ref_model = _rounded_copy(model, cfg, types)
        ref = ref_model(ids).float()
        src_logits = model(ids).float()
        got = m2(ids).float()
        scale = max(1.0, float(ref.abs().max()))
        strict = float((got - ref).abs().max()) / scale
        vs_src = float((got - src_logits).abs().max()) / max(1.0, float(src_logits.abs().max()))
        result: dict[str, Any] = {"max_rel_diff_vs_rounded_source": strict, "max_rel_diff_vs_fp32_source": vs_src,
                                  "tolerance": STRICT_TOL, "probe_tokens": int(ids.shape[1])}
        if not strict <= STRICT_TOL:
            raise CheckFailedError(
                f"the export's logits differ from the source's: max relative diff {strict:.3g} > {STRICT_TOL}",
                why="the file does not hold the model it was written from; the export was removed",
                path=out, fix="report this as a bug")
        tok2 = back.tokenizer
        if tok is not None:
            if tok2 is None:
                raise CheckFailedError("the export lost the tokenizer", path=out,
                                       fix="report this as a bug")
            a = tok.encode(PROBE_TEXT, add_special_tokens=False).ids
            b = tok2.encode(PROBE_TEXT, add_special_tokens=False).ids
            if a != b:
                first = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
                raise CheckFailedError(
                    f"the export's tokenizer gives different ids on the probe text (first difference at token "
                    f"{first}: {a[first:first + 3]} vs {b[first:first + 3]})", path=out,
                    why="the export was removed", fix="report this as a bug")
            result["tokenizer_ids_equal"] = True
        return result
    finally:
        back.close()


def _rounded_copy(model, cfg, types: dict[str, str]):
    """The source model with every tensor rounded to the type it is stored as."""
    import copy

    ref = copy.deepcopy(model)
    params = dict(ref.named_parameters(remove_duplicate=False))
    with torch.no_grad():
        for name, gtype in types.items():
            if name in params and gtype != "F32":
                params[name].copy_(roundtrip_value(params[name], gtype))
        if cfg.tie_word_embeddings:
            ref.lm_head.weight = ref.model.embed_tokens.weight
    return ref


__all__ = ["DTYPE_TOL", "STRICT_TOL", "TARGETS", "export_checkpoint", "render_export", "verify_roundtrip"]
