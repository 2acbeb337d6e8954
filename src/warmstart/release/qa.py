"""`warmstart qa`: the release gates on one checkpoint, verdict GO / NO-GO.

Gates (each PASS / FAIL with its reason; GO only when none fails):
  validate        structure, shapes, family (warmstart validate)
  finite          every tensor finite
  tokenizer       decode(encode(probe)) == probe
  probe-loss      loss on the built-in probe (English paragraph + Python snippet) < ln V
  generation      greedy continuation non-empty and not one token repeated
  export          safetensors export reads back to equal logits
  metadata        identity (architecture, hf_architecture, model_type) agrees with the tensors;
                  license, data sources, data license present
  hf-schema       the config loads in transformers' schema (SKIP without transformers)

Exit 0 GO, 1 NO-GO, 2 when the input is not a readable checkpoint.
"""

from __future__ import annotations

import math
import tempfile
from pathlib import Path
from typing import Any

import torch

from warmstart.checks import FAIL, PASS, SKIP, Check
from warmstart.errors import WarmstartError
from warmstart.init.gates import inference_model
from warmstart.release._report import PROBE_TEXT, PROMPT_TEXT, render_gates, verdict
from warmstart.release.validate import public, validate


class QAContext:
    """Shared, lazily built state for qa and publish-check (one load, one model)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.validation = validate(self.path)
        self.ckpt = self.validation.get("ckpt")
        self.cfg = self.validation.get("config")
        self._model = None
        self._model_error: str | None = None
        self._quality = None
        self.generation: dict | None = None

    @property
    def readable(self) -> bool:
        return self.validation["verdict"] != "UNREADABLE" and self.ckpt is not None

    def model(self):
        if self._model is None and self._model_error is None:
            if self.ckpt is None or self.cfg is None:
                self._model_error = "the checkpoint has no usable model config"
            else:
                try:
                    self._model = inference_model(self.ckpt, self.cfg, allow_unused=True)
                except WarmstartError as err:
                    self._model_error = err.paragraph()
        return self._model

    @property
    def model_error(self) -> str:
        return self._model_error or ""

    def quality(self) -> dict:
        if self._quality is None:
            from warmstart.release.quality import quality_report

            self._quality = quality_report(self.ckpt, validation=self.validation)
        return self._quality

    @torch.no_grad()
    def generate(self, max_new_tokens: int = 24) -> dict:
        if self.generation is None:
            tok = self.ckpt.tokenizer
            model = self.model()
            prompt = tok.encode(PROMPT_TEXT, add_special_tokens=False).ids if tok is not None else [0]
            prompt = [i for i in prompt if i < self.cfg.vocab_size] or [0]
            out = model.generate(torch.tensor([prompt]), max_new_tokens)[0, len(prompt):].tolist()
            eos = self.cfg.eos_token_id
            if eos is not None and eos in out:
                out = out[: out.index(eos)]
            text = tok.decode(out) if tok is not None else ""
            self.generation = {"prompt": PROMPT_TEXT, "new_tokens": out, "text": text}
        return self.generation


def _gate_tokenizer(ctx: QAContext) -> Check:
    tok = ctx.ckpt.tokenizer
    if tok is None:
        return Check("tokenizer", FAIL, "the checkpoint has no tokenizer",
                     fix="save tokenizer.json beside the weights (or embed it when exporting)")
    ids = tok.encode(PROBE_TEXT, add_special_tokens=False).ids
    back = tok.decode(ids, skip_special_tokens=False)
    if back != PROBE_TEXT:
        first = next((i for i, (a, b) in enumerate(zip(back, PROBE_TEXT)) if a != b), min(len(back), len(PROBE_TEXT)))
        return Check("tokenizer", FAIL, f"decode(encode(probe)) differs from the probe at character {first}: "
                     f"{back[first:first + 20]!r} vs {PROBE_TEXT[first:first + 20]!r}",
                     fix="use a lossless (byte-level) tokenizer, or the one the model was trained with")
    if ctx.cfg is not None and max(ids) >= ctx.cfg.vocab_size:
        return Check("tokenizer", FAIL, f"token id {max(ids)} >= the {ctx.cfg.vocab_size} embedding rows",
                     fix="use the tokenizer the model was trained with")
    return Check("tokenizer", PASS, f"round-trips the probe text ({len(ids)} tokens)")


@torch.no_grad()
def _gate_probe_loss(ctx: QAContext) -> Check:
    tok = ctx.ckpt.tokenizer
    model = ctx.model()
    if model is None:
        return Check("probe-loss", FAIL, f"the model cannot be built: {ctx.model_error}")
    if tok is None:
        return Check("probe-loss", FAIL, "no tokenizer to encode the probe text")
    ids = [i for i in tok.encode(PROBE_TEXT, add_special_tokens=False).ids if i < ctx.cfg.vocab_size]
    x = torch.tensor([ids[:-1]])
    y = torch.tensor([ids[1:]])
    loss = float(model.loss(x, y))
    lnv = math.log(ctx.cfg.vocab_size)
    data = {"loss": loss, "ln_v": lnv, "tokens": len(ids)}
    if not math.isfinite(loss) or loss >= lnv:
        return Check("probe-loss", FAIL, f"loss {loss:.3f} on the probe text is not below ln V = {lnv:.3f} "
                     "(random-init level)", fix="the weights are untrained or damaged; train longer or use "
                     "another checkpoint", data=data)
    return Check("probe-loss", PASS, f"loss {loss:.3f} < ln V = {lnv:.3f} (ppl {math.exp(loss):.1f})", data=data)


def _gate_generation(ctx: QAContext) -> Check:
    if ctx.model() is None:
        return Check("generation", FAIL, f"the model cannot be built: {ctx.model_error}")
    g = ctx.generate()
    new = g["new_tokens"]
    if not new:
        return Check("generation", FAIL, "greedy generation produced no tokens before EOS",
                     fix="the model is untrained or its eos id is wrong", data=g)
    if len(set(new)) == 1:
        return Check("generation", FAIL, f"greedy generation repeats one token ({new[0]}) {len(new)} times",
                     fix="the model is degenerate; train longer or use another checkpoint", data=g)
    return Check("generation", PASS, f"{len(new)} tokens, {len(set(new))} distinct: {g['text'][:60]!r}", data=g)


def export_gate(ctx: QAContext, to: str, dtype: str) -> Check:
    from warmstart.release.export import export_checkpoint

    name = f"export-{to}"
    model = ctx.model()
    if model is None:
        return Check(name, FAIL, f"the model cannot be built: {ctx.model_error}")
    with tempfile.TemporaryDirectory(prefix="warmstart-qa-") as tmp:
        out = Path(tmp) / ("model.gguf" if to == "gguf" else "model.safetensors")
        try:
            r = export_checkpoint(ctx.path, to, out, dtype=dtype, ckpt=ctx.ckpt, model=model)
        except WarmstartError as err:
            return Check(name, FAIL, err.found, fix=err.fix or "report this as a bug")
    v = r["verify"]
    return Check(name, PASS, f"{to} {dtype} reads back equal (max rel diff {v['max_rel_diff_vs_rounded_source']:.1e}"
                 f", vs fp32 {v['max_rel_diff_vs_fp32_source']:.1e})", data=v)


def _gate_metadata(ctx: QAContext) -> Check:
    q = ctx.quality()
    idn, pv = q["dimensions"]["hf_identity"], q["dimensions"]["provenance"]
    missing = list(idn["missing"]) + [m for m in pv["missing"] if not m.startswith("parent")]
    if missing:
        return Check("metadata", FAIL, f"{len(missing)} item(s) missing or wrong", items=missing,
                     fix=q.get("stamp_recipe") or "warmstart stamp CKPT … -o FIXED")
    return Check("metadata", PASS, "identity agrees with the tensors; license, data sources, data license present")


def validate_gate(v: dict[str, Any], fix: str) -> Check:
    """The release gate that says whether ``validate`` passed; a failure lists validate's findings (with codes)."""
    if v["verdict"] == "PASS":
        return Check("validate", PASS, "validate passes" + (f" ({len(v['warnings'])} warning(s))"
                                                            if v.get("warnings") else ""))
    return Check("validate", FAIL, "; ".join(v["errors"])[:500], fix=fix,
                 items=[i for c in v["checks"] if c.status == FAIL for i in c.items])


def run_qa(path: str | Path, *, ctx: QAContext | None = None) -> dict[str, Any]:
    ctx = ctx or QAContext(path)
    gates: list[Check] = []
    v = ctx.validation
    gates.append(validate_gate(v, "run `warmstart validate CKPT` for details"))
    if not ctx.readable:
        for name in ("finite", "tokenizer", "probe-loss", "generation", "export-safetensors", "metadata", "hf-schema"):
            gates.append(Check(name, SKIP, "the checkpoint is not readable"))
        return _finish(ctx, gates, exit_code=2 if v["verdict"] == "UNREADABLE" else 1)
    by = {c.name: c for c in v["checks"]}
    values = by.get("values")
    if values is None:
        gates.append(Check("finite", FAIL, "values not checked (structure failed)"))
    elif values.status == FAIL:
        gates.append(Check("finite", FAIL, values.detail, items=values.items, fix=values.fix))
    else:
        gates.append(Check("finite", PASS, values.detail))
    gates.append(_gate_tokenizer(ctx))
    gates.append(_gate_probe_loss(ctx))
    gates.append(_gate_generation(ctx))
    gates.append(export_gate(ctx, "safetensors", "f32"))
    try:
        gates.append(_gate_metadata(ctx))
    except WarmstartError as err:
        gates.append(Check("metadata", FAIL, err.found))
    schema = by.get("hf-schema")
    gates.append(schema if schema is not None else Check("hf-schema", FAIL, "config not checked (no usable config)"))
    return _finish(ctx, gates)


def _finish(ctx: QAContext, gates: list[Check], exit_code: int | None = None) -> dict[str, Any]:
    return verdict(ctx.path, gates, exit_code, validation=public(ctx.validation))


__all__ = ["QAContext", "export_gate", "render_gates", "run_qa", "validate_gate"]
