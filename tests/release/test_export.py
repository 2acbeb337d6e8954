"""Export round trips HF <-> safetensors <-> GGUF per family, read back through warmstart's loader."""

from __future__ import annotations

import pytest
import torch

from warmstart.checkpoint import load_checkpoint
from warmstart.errors import UsageError
from warmstart.checkpoint import read_structure
from warmstart.init.gates import inference_model
from warmstart.release._report import probe_ids
from warmstart.release.export import export_checkpoint

FAMILIES = ["llama", "qwen2", "qwen3"]
# max |logit diff| relative to the logit scale, exported vs fp32 source
TOL = {"f32": 1e-5, "f16": 5e-3, "bf16": 3e-2, "q8_0": 5e-2}


def _logits(path, ids):
    ck = load_checkpoint(path)
    try:
        return inference_model(ck, allow_unused=True)(ids).detach()
    finally:
        ck.close()


@pytest.mark.parametrize("family", FAMILIES)
def test_round_trip_chain(family, ckpt_factory, tokenizer, tmp_path):
    src = ckpt_factory(family)
    ids = probe_ids(tokenizer, tokenizer.get_vocab_size())
    ref = _logits(src, ids)
    scale = max(1.0, float(ref.abs().max()))
    chain = [
        (src, "safetensors", "f32", tmp_path / "m.safetensors"),
        (tmp_path / "m.safetensors", "gguf", "f16", tmp_path / "m-f16.gguf"),
        (tmp_path / "m.safetensors", "gguf", "q8_0", tmp_path / "m-q8_0.gguf"),
        (tmp_path / "m-f16.gguf", "hf", "f32", tmp_path / "from-gguf"),
        (tmp_path / "from-gguf", "safetensors", "bf16", tmp_path / "m-bf16.safetensors"),
    ]
    for inp, to, dtype, out in chain:
        r = export_checkpoint(inp, to, out, dtype=dtype)
        assert r["verify"]["max_rel_diff_vs_rounded_source"] <= 1e-4
        assert r["verify"]["tokenizer_ids_equal"]
        got = _logits(out, ids)
        rel = float((got - ref).abs().max()) / scale
        # the chain accumulates rounding only through its lossy links
        tol = max(TOL[dtype], TOL["f16"] if "f16" in str(inp) else 0.0)
        assert rel <= tol, (to, dtype, rel)
        assert load_checkpoint(out).model_config().family == family


def test_gguf_layout_llama(ckpt_factory, tmp_path):
    """llama.cpp names, metadata keys, embedded tokenizer; 1-D tensors stay F32."""
    out = tmp_path / "m.gguf"
    export_checkpoint(ckpt_factory("llama"), "gguf", out, dtype="q8_0")
    rf = read_structure(out).files[0]
    kv = rf.metadata
    assert kv["general.architecture"] == "llama"
    for key in ("context_length", "embedding_length", "block_count", "feed_forward_length",
                "attention.head_count", "attention.head_count_kv", "attention.key_length",
                "attention.value_length", "rope.freq_base", "attention.layer_norm_rms_epsilon", "vocab_size"):
        assert f"llama.{key}" in kv, key
    assert kv["tokenizer.ggml.model"] == "gpt2"
    for key in ("tokenizer.ggml.tokens", "tokenizer.ggml.token_type", "tokenizer.ggml.merges",
                "tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id", "tokenizer.ggml.padding_token_id",
                "tokenizer.ggml.pre"):
        assert key in kv, key
    types = {t.name: t.dtype for t in rf.tensors}
    assert types["token_embd.weight"] == "Q8_0"
    assert types["output.weight"] == "Q8_0"  # untied llama head
    assert types["blk.0.attn_norm.weight"] == "F32"
    assert "blk.1.ffn_down.weight" in types and "output_norm.weight" in types


def test_llama_qk_permutation_applied(ckpt_factory, tmp_path):
    """attn_q in the GGUF is llama.cpp's permuted layout, not the HF rows."""
    import gguf

    from warmstart.checkpoint.gguf.names import permute_rows

    src = ckpt_factory("llama")
    out = tmp_path / "m.gguf"
    export_checkpoint(src, "gguf", out, dtype="f32")
    hf_q = load_checkpoint(src).tensor("model.layers.0.self_attn.q_proj.weight")
    r = gguf.GGUFReader(str(out))
    q = next(t for t in r.tensors if t.name == "blk.0.attn_q.weight")
    stored = torch.from_numpy(q.data.copy()).reshape(hf_q.shape)
    assert not torch.equal(stored, hf_q)
    assert torch.equal(stored, permute_rows(hf_q, 4))


def test_single_safetensors_metadata(ckpt_factory, tmp_path):
    import json

    out = tmp_path / "m.safetensors"
    export_checkpoint(ckpt_factory("qwen2"), "safetensors", out)
    meta = read_structure(out).files[0].metadata
    cfg = json.loads(meta["config"])
    assert cfg["architectures"] == ["Qwen2ForCausalLM"] and cfg["model_type"] == "qwen2"
    assert meta["architecture"] == "qwen2" and meta["hf_architecture"] == "Qwen2ForCausalLM"
    assert "tokenizer" in meta and "data_fingerprint" in meta


def test_export_refusals(ckpt_factory, tmp_path):
    src = ckpt_factory("llama")
    with pytest.raises(UsageError):
        export_checkpoint(src, "safetensors", tmp_path / "x.safetensors", dtype="q8_0")
    with pytest.raises(UsageError):
        export_checkpoint(src, "onnx", tmp_path / "x.onnx")
    with pytest.raises(UsageError):
        export_checkpoint(src, "hf", src)  # never onto its input
    (tmp_path / "exists.gguf").write_bytes(b"x")
    with pytest.raises(UsageError):
        export_checkpoint(src, "gguf", tmp_path / "exists.gguf")
    assert (tmp_path / "exists.gguf").read_bytes() == b"x"


def test_export_never_writes_into_its_input(ckpt_factory, tmp_path):
    import shutil

    src = tmp_path / "src"
    shutil.copytree(ckpt_factory("llama"), src)
    before = (src / "model.safetensors").read_bytes()
    with pytest.raises(UsageError):
        export_checkpoint(src, "safetensors", src / "model.safetensors", overwrite=True)
    assert (src / "model.safetensors").read_bytes() == before
