"""A GGUF written by warmstart loads in transformers' GGUF loader with equal logits and tokenizer ids."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("transformers")

from warmstart.checkpoint import load_checkpoint  # noqa: E402
from warmstart.init.gates import inference_model  # noqa: E402
from warmstart.release._report import PROBE_TEXT  # noqa: E402
from warmstart.release.export import export_checkpoint  # noqa: E402


# qwen3 is left out: transformers' GGUF config mapping for qwen3 ignores attention.key_length, so a
# qwen3 whose head_dim != hidden/heads (as Qwen3 ships) gets wrong shapes there; llama.cpp reads it.
@pytest.mark.parametrize("family,dtype,tol", [("llama", "f32", 1e-4), ("llama", "q8_0", 1e-4),
                                              ("qwen2", "f16", 1e-4)])
def test_transformers_gguf_loader(family, dtype, tol, ckpt_factory, tokenizer, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    src = ckpt_factory(family)
    out = tmp_path / "model.gguf"
    export_checkpoint(src, "gguf", out, dtype=dtype)
    ids = torch.tensor([tokenizer.encode(PROBE_TEXT).ids[:40]])
    # reference: what warmstart reads back from the same file (the source rounded to dtype)
    ours = inference_model(load_checkpoint(out), allow_unused=True)(ids).detach()
    hf = AutoModelForCausalLM.from_pretrained(str(tmp_path), gguf_file="model.gguf", dtype=torch.float32)
    theirs = hf(ids).logits.detach()
    assert float((theirs - ours).abs().max()) <= tol
    # and close to the fp32 source
    src_logits = inference_model(load_checkpoint(src), allow_unused=True)(ids).detach()
    assert float((theirs - src_logits).abs().max()) <= (1e-4 if dtype == "f32" else 5e-2)
    hf_tok = AutoTokenizer.from_pretrained(str(tmp_path), gguf_file="model.gguf")
    assert hf_tok(PROBE_TEXT, add_special_tokens=False)["input_ids"] == tokenizer.encode(PROBE_TEXT).ids
