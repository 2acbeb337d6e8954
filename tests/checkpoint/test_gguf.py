"""GGUF reading on tiny files written here: name mapping, llama q/k un-permutation, dequantisation,
config, tokenizer; and parity with transformers' own GGUF loader."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from warmstart.checkpoint import load_checkpoint
from warmstart.checkpoint.gguf.names import gguf_to_hf, hf_to_gguf, permute_rows, unpermute_rows
from warmstart.errors import UnreadableError
from warmstart.init.population import populate_model

from _gguf_tools import write_tiny_gguf


def test_name_mapping_roundtrip():
    pairs = {
        "token_embd.weight": "model.embed_tokens.weight",
        "output_norm.weight": "model.norm.weight",
        "output.weight": "lm_head.weight",
        "blk.3.attn_q.weight": "model.layers.3.self_attn.q_proj.weight",
        "blk.3.attn_k.bias": "model.layers.3.self_attn.k_proj.bias",
        "blk.0.attn_output.weight": "model.layers.0.self_attn.o_proj.weight",
        "blk.1.attn_q_norm.weight": "model.layers.1.self_attn.q_norm.weight",
        "blk.1.attn_k_norm.weight": "model.layers.1.self_attn.k_norm.weight",
        "blk.2.ffn_gate.weight": "model.layers.2.mlp.gate_proj.weight",
        "blk.2.ffn_up.weight": "model.layers.2.mlp.up_proj.weight",
        "blk.2.ffn_down.weight": "model.layers.2.mlp.down_proj.weight",
        "blk.2.attn_norm.weight": "model.layers.2.input_layernorm.weight",
        "blk.2.ffn_norm.weight": "model.layers.2.post_attention_layernorm.weight",
    }
    for g, h in pairs.items():
        assert gguf_to_hf(g) == h
        assert hf_to_gguf(h) == g
    assert gguf_to_hf("rope_freqs.weight") == "rope_freqs.weight"  # unknown names pass through


def test_unpermute_inverts_permute():
    w = np.arange(8 * 4 * 3, dtype=np.float32).reshape(32, 3)
    for heads in (1, 2, 4):
        p = permute_rows(w, heads)
        assert not np.array_equal(p, w)
        assert np.array_equal(unpermute_rows(p, heads), w)


@pytest.mark.parametrize("preset, weight_type, embed_type", [
    ("llama-tiny", "Q8_0", "F16"),
    ("llama-tiny", "Q4_0", "Q8_0"),
    ("llama-tiny", "Q4_1", "F32"),
    ("qwen2-tiny", "Q8_0", "F16"),
    ("qwen3-tiny", "F16", "Q8_0"),
    ("qwen2-tiny", "BF16", "BF16"),
])
def test_tiny_gguf_tensors_config_model(tmp_path, tiny_model_factory, tiny_tokenizer, preset, weight_type,
                                        embed_type):
    model = tiny_model_factory(preset)
    path = tmp_path / "tiny.gguf"
    expected = write_tiny_gguf(path, model, tiny_tokenizer, weight_type=weight_type, embed_type=embed_type)
    ckpt = load_checkpoint(path)
    assert ckpt.format == "gguf"
    assert ckpt.declared_claims() == [("GGUF general.architecture", model.cfg.family)]
    assert set(ckpt.tensor_info) == set(expected)
    q = ckpt.tensor_info["model.layers.0.self_attn.q_proj.weight"]
    assert q.dtype == weight_type and q.source_name == "blk.0.attn_q.weight"
    keeps = {"F16": torch.float16, "BF16": torch.bfloat16}
    assert ckpt.tensor(q.name).dtype == keeps.get(weight_type, torch.float32)  # half types kept, exact
    for name, ref in expected.items():
        got = ckpt.tensor(name)
        assert tuple(got.shape) == ref.shape, name
        assert torch.equal(got.float(), torch.from_numpy(ref)), name  # exact: un-permuted, dequantised
    cfg = ckpt.model_config()
    for field in ("family", "vocab_size", "hidden_size", "num_layers", "num_heads", "num_kv_heads", "head_dim",
                  "intermediate_size", "rope_theta", "rms_norm_eps", "tie_word_embeddings", "attention_bias",
                  "qk_norm"):
        assert getattr(cfg, field) == getattr(model.cfg, field), field
    populated = populate_model(ckpt)
    ref_model = tiny_model_factory(preset)
    ref_model.load_state_dict({k: torch.from_numpy(v) for k, v in expected.items()}, strict=False)
    ids = torch.randint(0, cfg.vocab_size, (1, 24), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.allclose(populated(ids), ref_model(ids), atol=1e-5)


@pytest.mark.parametrize("preset", ["llama-tiny", "qwen2-tiny", "qwen3-tiny"])
def test_tiny_gguf_matches_transformers(tmp_path, tiny_model_factory, tiny_tokenizer, preset):
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("accelerate")  # transformers' GGUF loader needs it
    model = tiny_model_factory(preset)
    if preset == "qwen3-tiny":
        # transformers' GGUF loader ignores qwen3.attention.key_length and uses Qwen3Config's
        # default head_dim (128); give the tiny model that head_dim so both sides agree.
        from warmstart.arch import CausalLM

        torch.manual_seed(0)
        model = CausalLM(model.cfg.replace(head_dim=128)).eval()
        model.reset_parameters(seed=0)
    write_tiny_gguf(tmp_path / "tiny.gguf", model, tiny_tokenizer, weight_type="Q8_0", embed_type="F16")
    ckpt = load_checkpoint(tmp_path / "tiny.gguf")
    ours = populate_model(ckpt)
    hf = transformers.AutoModelForCausalLM.from_pretrained(tmp_path, gguf_file="tiny.gguf",
                                                          dtype=torch.float32).eval()
    ids = torch.randint(0, 512, (2, 20), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        diff = (ours(ids) - hf(ids).logits).abs().max().item()
    assert diff <= 1e-4
    tok = transformers.AutoTokenizer.from_pretrained(tmp_path, gguf_file="tiny.gguf")
    for text in ["def f(x):\n    return x  # é", "<|endoftext|>import os", "  indented\n\n\ttab"]:
        assert ckpt.tokenizer.encode(text).ids == tok(text)["input_ids"], text


def test_truncated_gguf(tmp_path, tiny_model_factory):
    model = tiny_model_factory("llama-tiny")
    path = tmp_path / "tiny.gguf"
    write_tiny_gguf(path, model)
    data = path.read_bytes()
    for cut in (len(data) - 100, 200, 10):
        bad = tmp_path / f"cut{cut}.gguf"
        bad.write_bytes(data[:cut])
        with pytest.raises(UnreadableError, match="truncated|corrupt") as err:
            load_checkpoint(bad)
        assert str(bad) in str(err.value)


def test_unsupported_gguf_version(tmp_path, tiny_model_factory):
    model = tiny_model_factory("llama-tiny")
    path = tmp_path / "tiny.gguf"
    write_tiny_gguf(path, model)
    data = bytearray(path.read_bytes())
    data[4:8] = (7).to_bytes(4, "little")
    path.write_bytes(bytes(data))
    with pytest.raises(UnreadableError, match="GGUF version 7"):
        load_checkpoint(path)


@pytest.mark.parametrize("qtype", ["Q8_0", "Q4_0", "Q4_1"])
def test_fast_dequant_bit_identical_to_gguf(qtype):
    from gguf import GGMLQuantizationType, quants

    from warmstart.checkpoint.gguf.dequant import _FAST_DEQUANT, dequantize_reference

    w = np.random.default_rng(0).standard_normal((48, 256)).astype(np.float32) * 3
    rows = quants.quantize(w, getattr(GGMLQuantizationType, qtype))
    assert torch.equal(_FAST_DEQUANT[qtype](rows, w.shape), dequantize_reference(rows, qtype, w.shape))


def test_llama3_rope_freqs_become_rope_scaling(tmp_path, tiny_model_factory):
    """Llama 3.1+ GGUFs carry llama3 rope scaling as rope_freqs.weight: it must become the config's
    rope_scaling (not be dropped as a cache), and the model must match HF-style llama3 rope."""
    from warmstart.arch import CausalLM
    from warmstart.checkpoint.gguf.hf import llama3_rope_factors

    base = tiny_model_factory("llama-tiny")
    scaling = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
               "original_max_position_embeddings": 256}
    ref = CausalLM(base.cfg.replace(rope_scaling=scaling)).eval()
    ref.load_state_dict(base.state_dict())
    freqs = llama3_rope_factors(base.cfg.rope_theta, base.cfg.head_dim, 8.0, 1.0, 4.0, 256).astype(np.float32)
    assert 1.0 < freqs[3] < 8.0  # one in-between frequency
    expected = write_tiny_gguf(tmp_path / "l3.gguf", ref, weight_type="F16", embed_type="F32",
                               extra_tensors={"rope_freqs.weight": freqs})
    ckpt = load_checkpoint(tmp_path / "l3.gguf")
    assert ckpt.model_config().rope_scaling == scaling
    model = populate_model(ckpt)
    ref.load_state_dict({k: torch.from_numpy(v) for k, v in expected.items()}, strict=False)
    ids = torch.arange(40)[None]
    with torch.no_grad():
        assert torch.allclose(model(ids), ref(ids), atol=1e-5)

    # factors that are not the llama3 schedule are refused by name, never ignored
    from warmstart.errors import FamilyError

    write_tiny_gguf(tmp_path / "odd.gguf", base, extra_tensors={"rope_freqs.weight": np.linspace(1, 3, 8)})
    with pytest.raises(FamilyError, match="rope_freqs"):
        load_checkpoint(tmp_path / "odd.gguf").model_config()


@pytest.mark.parametrize("pre, add_bos", [("qwen2", False), ("llama-bpe", False), ("smollm", True)])
def test_tiny_gguf_tokenizer_variants_match_transformers(tmp_path, tiny_model_factory, tiny_tokenizer, pre,
                                                          add_bos):
    transformers = pytest.importorskip("transformers")
    model = tiny_model_factory("llama-tiny")
    write_tiny_gguf(tmp_path / "t.gguf", model, tiny_tokenizer, pre=pre, add_bos=add_bos)
    ours = load_checkpoint(tmp_path / "t.gguf").tokenizer
    theirs = transformers.AutoTokenizer.from_pretrained(tmp_path, gguf_file="t.gguf")
    for text in ["def f(x):\n    return x  # é 中文", "it's 12345 apples!!\n\n  ok", "<|endoftext|>x 🚀"]:
        assert ours.encode(text).ids == theirs(text)["input_ids"], text


# K-quant block layouts: (bytes per 256 values, offsets of the fp16 scale fields)
_K_BLOCKS = {"Q4_K": (144, (0, 2)), "Q5_K": (176, (0, 2)), "Q6_K": (210, (208,))}


@pytest.mark.parametrize("qtype", sorted(_K_BLOCKS))
def test_k_quants_dequantise_like_transformers(tmp_path, qtype):
    """gguf-py cannot quantise K types, so the blocks are random bytes with sane fp16 scales; the
    GGUF read back must equal transformers' own (independent, torch) dequantiser."""
    from gguf import GGMLQuantizationType, GGUFWriter

    dequant = pytest.importorskip("transformers.integrations.gguf.dequant")
    nbytes, scale_offsets = _K_BLOCKS[qtype]
    rows, cols = 6, 512
    rng = np.random.default_rng(1)
    raw = rng.integers(0, 256, size=(rows * cols // 256, nbytes), dtype=np.uint8)
    for off in scale_offsets:
        raw[:, off:off + 2] = rng.uniform(0.001, 0.05, size=(raw.shape[0], 1)).astype(np.float16).view(np.uint8)
    raw = raw.reshape(rows, -1)
    w = GGUFWriter(str(tmp_path / "k.gguf"), "llama")
    w.add_tensor("blk.0.ffn_up.weight", raw, raw_dtype=getattr(GGMLQuantizationType, qtype))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    ckpt = load_checkpoint(tmp_path / "k.gguf")
    info = ckpt.tensor_info["model.layers.0.mlp.up_proj.weight"]
    assert info.shape == (rows, cols) and info.dtype == qtype
    ours = ckpt.tensor(info.name)
    ref = dequant.dequantize(torch.from_numpy(raw.reshape(-1)), int(getattr(GGMLQuantizationType, qtype)))
    assert torch.isfinite(ours).all()
    assert torch.allclose(ours, ref.reshape(rows, cols), rtol=1e-6, atol=1e-6)
