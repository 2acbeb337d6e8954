"""The Gemma 3 family (arch/families/gemma3.py) against transformers' Gemma3ForCausalLM, tiny and random:
warmstart -> HF checkpoint -> transformers, transformers' save_pretrained -> warmstart, and GGUF written the
way llama.cpp writes gemma3 (norms stored as 1 + w) -> warmstart and transformers' GGUF loader. The evidence
gate tells gemma3 tensors from llama and qwen3 ones; a Gemma 3 relabelled as llama is refused with the repair."""

from __future__ import annotations

import json

import pytest
import torch
from _gguf_tools import spm_vocab, write_tiny_gguf

from warmstart.arch import CausalLM, ModelConfig, get_preset
from warmstart.arch.families import get_family, identity
from warmstart.arch.families.gemma3 import pattern_types
from warmstart.checkpoint import load_checkpoint, save_hf_checkpoint
from warmstart.errors import EvidenceError, FamilyError, UsageError
from warmstart.init.evidence import infer_family_from_names
from warmstart.init.population import populate_model

transformers = pytest.importorskip("transformers")

IDS = torch.randint(0, 480, (2, 40), generator=torch.Generator().manual_seed(1))  # longer than the window (8)


def _randomise_norms(model, seed: int = 1) -> None:
    torch.manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.add_(0.3 * torch.randn_like(p))


def _tiny(**changes) -> CausalLM:
    cfg = get_preset("gemma3-tiny").replace(bos_token_id=2, eos_token_id=1, pad_token_id=0, **changes)
    model = CausalLM(cfg).eval()
    model.reset_parameters(seed=0)
    _randomise_norms(model)
    return model


def _max_diff(a, b) -> float:
    with torch.no_grad():
        return (a(IDS) - b(IDS)).abs().max().item()


def _hf_logits(hf):
    return lambda ids: hf(ids).logits


def test_gemma3_is_a_supported_family_by_every_name():
    for name in ("gemma3", "Gemma3ForCausalLM", "gemma3_text", "Gemma 3", "Gemma3ForConditionalGeneration"):
        assert get_family(name).name == "gemma3", name
    assert get_family("gemma2").name == "gemma2" and get_family("gemma").name == "gemma"  # still refused by name
    assert identity("gemma3") == {"architecture": "gemma3", "hf_architecture": "Gemma3ForCausalLM",
                                  "model_type": "gemma3_text"}
    assert pattern_types(7) == ["sliding_attention"] * 5 + ["full_attention", "sliding_attention"]


def test_warmstart_to_hf_checkpoint_to_transformers(tmp_path):
    ours = _tiny()
    save_hf_checkpoint(tmp_path / "ws", ours.cfg, ours.canonical_state_dict())
    hf = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "ws", dtype=torch.float32).eval()
    assert type(hf).__name__ == "Gemma3ForCausalLM"
    assert hf.config.layer_types == list(ours.cfg.layer_types) and hf.config.sliding_window == 8
    assert hf.config.rope_parameters["sliding_attention"]["rope_theta"] == 10_000.0
    assert _max_diff(ours, _hf_logits(hf)) <= 1e-4


def test_transformers_to_warmstart(tmp_path):
    cfg = transformers.Gemma3TextConfig(
        vocab_size=480, hidden_size=64, intermediate_size=96, num_hidden_layers=7, num_attention_heads=4,
        num_key_value_heads=1, head_dim=32, query_pre_attn_scalar=48, sliding_window=5,
        rope_parameters={"full_attention": {"rope_type": "default", "rope_theta": 5e5},
                         "sliding_attention": {"rope_type": "default", "rope_theta": 2e4}},
        max_position_embeddings=128)
    torch.manual_seed(0)
    hf = transformers.Gemma3ForCausalLM(cfg).eval()
    _randomise_norms(hf)
    hf.save_pretrained(tmp_path / "hf")
    ckpt = load_checkpoint(tmp_path / "hf")
    mc = ckpt.model_config()
    assert (mc.family, mc.sliding_window, mc.rope_theta, mc.rope_local_theta, mc.query_pre_attn_scalar) == (
        "gemma3", 5, 5e5, 2e4, 48.0)
    assert mc.layer_types == tuple(pattern_types(7))
    assert _max_diff(populate_model(ckpt).eval(), _hf_logits(hf)) <= 1e-4


def test_older_config_keys_and_linear_rope_scaling(tmp_path):
    """transformers 4's keys (rope_theta, rope_local_base_freq, sliding_window_pattern, rope_scaling) read the
    same; linear scaling applies to the global layers only, as in transformers."""
    ours = _tiny(rope_scaling={"rope_type": "linear", "factor": 8.0})
    hf_cfg = ours.cfg.to_hf_config()
    for key in ("rope_parameters", "layer_types"):
        hf_cfg.pop(key)
    legacy = {**hf_cfg, "sliding_window_pattern": 6, "rope_scaling": {"rope_type": "linear", "factor": 8.0}}
    assert ModelConfig.from_hf_config(legacy) == ours.cfg
    save_hf_checkpoint(tmp_path / "ws", ours.cfg, ours.canonical_state_dict())
    hf = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "ws", dtype=torch.float32).eval()
    assert hf.config.rope_parameters["full_attention"]["rope_type"] == "linear"
    assert _max_diff(ours, _hf_logits(hf)) <= 1e-4
    assert _max_diff(ours, _tiny()) > 1e-3  # the scaling is what makes it equal


@pytest.mark.parametrize("bad, match", [({"final_logit_softcapping": 30.0}, "final_logit_softcapping"),
                                        ({"use_bidirectional_attention": True}, "use_bidirectional_attention"),
                                        ({"text_config": {}}, "multimodal")])
def test_features_not_implemented_are_refused(bad, match):
    with pytest.raises(FamilyError, match=match):
        ModelConfig.from_hf_config({**get_preset("gemma3-tiny").to_hf_config(), **bad})


def test_gguf_as_llama_cpp_writes_it(tmp_path):
    """llama.cpp's gemma3 names and (1 + w) norms, read by warmstart and by transformers' GGUF loader (which
    takes query_pre_attn_scalar 256 whatever the file says: the tiny model uses head_dim 256 to match)."""
    ours = _tiny(head_dim=256, query_pre_attn_scalar=256.0)
    vocab = spm_vocab([json.__doc__ * 20], gemma=True)
    (tmp_path / "g").mkdir()
    write_tiny_gguf(tmp_path / "g" / "g.gguf", ours, spm=vocab, weight_type="F32", embed_type="F32",
                    spm_flags=dict(add_bos=True, add_eos=False, add_space_prefix=False))
    ckpt = load_checkpoint(tmp_path / "g" / "g.gguf")
    assert ckpt.tensor_info["model.layers.0.pre_feedforward_layernorm.weight"].source_name == "blk.0.ffn_norm.weight"
    assert ckpt.tensor_info["model.layers.0.post_attention_layernorm.weight"].source_name == \
        "blk.0.post_attention_norm.weight"
    assert ckpt.model_config() == ours.cfg
    read = populate_model(ckpt).eval()
    assert _max_diff(read, ours) == 0.0
    hf = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "g", gguf_file="g.gguf",
                                                          dtype=torch.float32).eval()
    assert _max_diff(read, _hf_logits(hf)) <= 1e-4


def test_gguf_refuses_what_llama_cpp_cannot_read(tmp_path):
    from warmstart.checkpoint.gguf.write import write_gguf

    for change, lost in (({"layer_types": ["full_attention"] * 6}, "layer_types"),
                         ({"rope_local_theta": 5e4}, "rope_local_theta"),
                         ({"query_pre_attn_scalar": 20.0}, "query_pre_attn_scalar")):
        model = _tiny(**change)
        sd = model.canonical_state_dict()
        with pytest.raises(UsageError, match=f"gemma3 GGUF cannot express {lost}"):
            write_gguf(tmp_path / "x.gguf", model.cfg, list(sd), lambda n: sd[n])
        assert not (tmp_path / "x.gguf").exists()


def test_evidence_tells_gemma3_from_llama_and_qwen3():
    with torch.device("meta"):
        names = {p: list(CausalLM(get_preset(p)).state_dict()) for p in ("gemma3-tiny", "qwen3-tiny", "llama-tiny")}
    assert infer_family_from_names(names["gemma3-tiny"])[0] == "gemma3"
    assert infer_family_from_names(names["qwen3-tiny"])[0] == "qwen3"
    assert infer_family_from_names(names["llama-tiny"])[0] == "llama"
    no_qk = [n for n in names["gemma3-tiny"] if "q_norm" not in n and "k_norm" not in n]
    assert infer_family_from_names(no_qk)[0] != "gemma3"  # Gemma 2's layout is not Gemma 3


@pytest.mark.parametrize("fmt", ["hf", "gguf"])
def test_gemma3_relabelled_as_llama_is_refused_with_the_repair(tmp_path, fmt):
    from warmstart.init.gates import prepare_warm_start, repair_command

    model = _tiny()
    if fmt == "hf":
        path = tmp_path / "relabelled"
        save_hf_checkpoint(path, model.cfg, model.canonical_state_dict())
        cfg = json.loads((path / "config.json").read_text())
        (path / "config.json").write_text(json.dumps({**cfg, "architectures": ["LlamaForCausalLM"],
                                                      "model_type": "llama"}))
    else:
        path = tmp_path / "relabelled.gguf"
        write_tiny_gguf(path, model, spm=spm_vocab([json.__doc__ * 20], gemma=True), arch="llama")
    with pytest.raises(EvidenceError) as err:
        prepare_warm_start(path)
    msg = str(err.value)
    assert err.value.code == "WS103" and "declares llama" in msg and "tensors are gemma3" in msg
    assert repair_command(path, "gemma3") in msg
    assert "--architecture gemma3 --hf-architecture Gemma3ForCausalLM --model-type gemma3_text" in msg
