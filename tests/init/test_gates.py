"""Each warm-start gate: it refuses what it must (message checked) and accepts what is valid."""

from __future__ import annotations

import json
import math

import pytest
import torch
from _ckpt_tools import FAMILY_PRESETS, rewrite_config, rewrite_tensors

from warmstart.errors import (
    EvidenceError,
    FamilyError,
    InitLossRegressionError,
    MissingTensorsError,
    ShapeMismatchError,
    TokenizerError,
    UnreadableError,
    UntrainedInitError,
    UnusedTensorsError,
    ValuesError,
)
from warmstart.checks import PASS, SKIP
from warmstart.checkpoint import load_checkpoint
from warmstart.init import prepare_warm_start, step0_gate
from warmstart.init.population import verify_tensors

FAMILIES = list(FAMILY_PRESETS)


# ----------------------------------------------------------------- acceptance
@pytest.mark.parametrize("family", FAMILIES)
def test_valid_transformers_checkpoint_passes_every_gate(hf_family_dirs, family):
    from safetensors.torch import load_file

    warm = prepare_warm_start(hf_family_dirs[family])
    assert warm.config.family == family
    assert [r.name for r in warm.report] == ["readable", "family", "evidence", "tokenizer", "values", "population"]
    assert all(r.status == PASS for r in warm.report), [r.line() for r in warm.report]
    # Population is exact: every parameter equals its source tensor bit for bit.
    src = load_file(str(hf_family_dirs[family] / "model.safetensors"))
    params = dict(warm.model.named_parameters())
    for name, p in params.items():
        assert torch.equal(p.detach(), src[name].float()), name
    assert set(params) <= set(src) | {"lm_head.weight"}
    assert warm.provenance_parent["family"] == family
    assert len(warm.provenance_parent["sha256"]) == 64


def test_bf16_source_upcasts_exactly(tmp_path, tiny_tokenizer):
    from _ckpt_tools import save_transformers_model
    from safetensors.torch import load_file

    ckpt = save_transformers_model(tmp_path / "bf16", "qwen2", tiny_tokenizer, dtype=torch.bfloat16)
    src = load_file(str(ckpt / "model.safetensors"))
    assert src["model.embed_tokens.weight"].dtype == torch.bfloat16
    warm = prepare_warm_start(ckpt)
    for name, p in warm.model.named_parameters():
        assert p.dtype == torch.float32
        assert torch.equal(p.detach(), src[name].to(torch.float32)), name


# ----------------------------------------------------------------- 1 readable
def test_unreadable_file_refused(tmp_path):
    bad = tmp_path / "model.safetensors"
    bad.write_bytes(b"\x00" * 64)
    with pytest.raises(UnreadableError) as e:
        prepare_warm_start(bad)
    assert e.value.exit_code == 2 and str(bad) in str(e.value)


# ------------------------------------------------------------------- 2 family
def test_encoder_refused_naming_family_and_class(tmp_path):
    from transformers import BertConfig, BertModel

    cfg = BertConfig(vocab_size=128, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=64)
    BertModel(cfg).save_pretrained(tmp_path / "bert")
    with pytest.raises(FamilyError) as e:
        prepare_warm_start(tmp_path / "bert")
    msg = str(e.value)
    assert e.value.code == "WS102"
    assert "BertModel" in msg and "BERT" in msg and "encoder" in msg
    assert "llama, qwen2, qwen3" in msg  # lists the supported ones


def test_unsupported_decoder_refused(hf_family_dirs, copy_ckpt):
    ckpt = copy_ckpt(hf_family_dirs["llama"])
    rewrite_config(ckpt, architectures=["GPT2LMHeadModel"], model_type="gpt2")
    with pytest.raises(FamilyError) as e:
        prepare_warm_start(ckpt)
    assert "GPT-2" in str(e.value) and "unsupported-decoder" in str(e.value)


def test_self_contradicting_metadata_refused(hf_family_dirs, copy_ckpt):
    ckpt = copy_ckpt(hf_family_dirs["qwen2"])
    (ckpt / "warmstart.json").write_text(json.dumps({"architecture": "llama"}))
    with pytest.raises(FamilyError) as e:
        prepare_warm_start(ckpt)
    assert "contradicts itself" in str(e.value)


# ----------------------------------------------------------------- 3 evidence
@pytest.mark.parametrize(
    "family, claim",
    [("qwen2", ("LlamaForCausalLM", "llama")), ("qwen3", ("Qwen2ForCausalLM", "qwen2")),
     ("llama", ("Qwen3ForCausalLM", "qwen3"))],
)
def test_claim_contradicting_tensors_refused_with_stamp_recipe(hf_family_dirs, copy_ckpt, family, claim):
    ckpt = copy_ckpt(hf_family_dirs[family], "mislabelled")
    rewrite_config(ckpt, architectures=[claim[0]], model_type=claim[1])
    with pytest.raises(EvidenceError) as e:
        prepare_warm_start(ckpt)
    msg = str(e.value)
    assert e.value.code == "WS103" and e.value.exit_code == 1
    assert claim[0] in msg and f"tensors are {family}" in msg
    from warmstart.arch.families import FAMILIES as REG

    fam = REG[family]
    assert (f"warmstart stamp {ckpt} --architecture {family} --hf-architecture {fam.hf_architecture} "
            f"--model-type {fam.model_type} -o {ckpt}-fixed") in msg


def test_unknown_claim_skips_evidence_and_uses_tensor_family(hf_family_dirs, copy_ckpt):
    ckpt = copy_ckpt(hf_family_dirs["qwen2"])
    rewrite_config(ckpt, architectures=["MyHomegrownForCausalLM"], model_type="homegrown")
    warm = prepare_warm_start(ckpt)
    by = {r.name: r for r in warm.report}
    assert by["family"].status == SKIP and "maps to no known family" in by["family"].detail
    assert by["evidence"].status == SKIP and "qwen2" in by["evidence"].detail
    assert warm.config.family == "qwen2"


# ---------------------------------------------------------------- 4 tokenizer
def test_tokenizer_larger_than_embedding_refused(hf_family_dirs, tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    big = Tokenizer(models.BPE())
    big.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(vocab_size=1024, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    import inspect

    big.train_from_iterator([inspect.getsource(inspect)], trainer=trainer)
    assert big.get_vocab_size() > 512
    path = tmp_path / "big.json"
    big.save(str(path))
    with pytest.raises(TokenizerError) as e:
        prepare_warm_start(hf_family_dirs["llama"], tokenizer_path=path)
    msg = str(e.value)
    assert e.value.code == "WS104"
    assert f"{big.get_vocab_size()} tokens" in msg and "rows" in msg and "truncat" in msg


def test_special_id_out_of_range_refused(hf_family_dirs, copy_ckpt):
    ckpt = copy_ckpt(hf_family_dirs["llama"])
    rewrite_config(ckpt, eos_token_id=100_000)
    with pytest.raises(TokenizerError) as e:
        prepare_warm_start(ckpt)
    assert "eos_token_id" in str(e.value)


def test_missing_tokenizer_refused(hf_family_dirs, copy_ckpt):
    ckpt = copy_ckpt(hf_family_dirs["llama"])
    (ckpt / "tokenizer.json").unlink()
    with pytest.raises(TokenizerError) as e:
        prepare_warm_start(ckpt)
    assert "--tokenizer" in str(e.value)


# ------------------------------------------------------------------- 5 values
@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_nonfinite_tensor_refused(hf_family_dirs, copy_ckpt, bad):
    ckpt = copy_ckpt(hf_family_dirs["qwen3"])

    def plant(t):
        t["model.layers.1.mlp.up_proj.weight"][3, 5] = bad

    rewrite_tensors(ckpt, plant)
    with pytest.raises(ValuesError) as e:
        prepare_warm_start(ckpt)
    assert e.value.code == "WS105"
    assert "model.layers.1.mlp.up_proj.weight (1 of" in str(e.value)


# --------------------------------------------------------------- 6 population
def test_missing_attention_weight_refused(hf_family_dirs, copy_ckpt):
    ckpt = copy_ckpt(hf_family_dirs["llama"])
    rewrite_tensors(ckpt, lambda t: t.pop("model.layers.0.self_attn.k_proj.weight"))
    with pytest.raises(MissingTensorsError) as e:
        prepare_warm_start(ckpt)
    assert e.value.code == "WS106"
    assert "model.layers.0.self_attn.k_proj.weight" in str(e.value)
    assert "never random-initialises" in str(e.value)


def test_wrong_shape_refused_naming_expected_and_found(hf_family_dirs, copy_ckpt):
    ckpt = copy_ckpt(hf_family_dirs["qwen2"])

    def shrink(t):
        t["model.layers.1.mlp.down_proj.weight"] = t["model.layers.1.mlp.down_proj.weight"][:, :100].contiguous()

    rewrite_tensors(ckpt, shrink)
    with pytest.raises(ShapeMismatchError) as e:
        prepare_warm_start(ckpt)
    assert "model.layers.1.mlp.down_proj.weight: expected [64, 160], found [64, 100]" in str(e.value)


def test_unused_tensor_refused_unless_allowed(hf_family_dirs, copy_ckpt):
    ckpt = copy_ckpt(hf_family_dirs["llama"])
    rewrite_tensors(ckpt, lambda t: t.update({"model.layers.0.extra_adapter.weight": torch.ones(4, 4)}))
    with pytest.raises(UnusedTensorsError) as e:
        prepare_warm_start(ckpt)
    assert "model.layers.0.extra_adapter.weight" in str(e.value) and "--allow-unused-tensors" in str(e.value)
    warm = prepare_warm_start(ckpt, allow_unused_tensors=True)
    assert warm.report[-1].status == PASS


def test_tied_head_copy_and_rotary_cache_accepted(hf_family_dirs, copy_ckpt):
    ckpt = copy_ckpt(hf_family_dirs["qwen2"])  # tied

    def add(t):
        t["lm_head.weight"] = t["model.embed_tokens.weight"].clone()
        t["model.layers.0.self_attn.rotary_emb.inv_freq"] = torch.ones(8)

    rewrite_tensors(ckpt, add)
    prepare_warm_start(ckpt)
    verify_tensors(load_checkpoint(ckpt), load_checkpoint(ckpt).model_config())  # rank 0's check for every rank


def test_tied_head_that_differs_refused(hf_family_dirs, copy_ckpt):
    ckpt = copy_ckpt(hf_family_dirs["qwen2"])
    rewrite_tensors(ckpt, lambda t: t.update({"lm_head.weight": torch.randn_like(t["model.embed_tokens.weight"])}))
    with pytest.raises(UnusedTensorsError) as e:
        prepare_warm_start(ckpt)
    assert "tie_word_embeddings" in str(e.value)
    with pytest.raises(UnusedTensorsError) as e:  # the same refusal from the check a distributed run makes
        verify_tensors(load_checkpoint(ckpt), load_checkpoint(ckpt).model_config())
    assert "tie_word_embeddings" in str(e.value)


def test_untied_head_missing_refused(hf_family_dirs, copy_ckpt):
    ckpt = copy_ckpt(hf_family_dirs["llama"])
    rewrite_config(ckpt, tie_word_embeddings=False)
    with pytest.raises(MissingTensorsError) as e:
        prepare_warm_start(ckpt)
    assert "lm_head.weight" in str(e.value)


# ------------------------------------------------------------------- 7 step-0
def test_step0_gate(hf_family_dirs):
    warm = prepare_warm_start(hf_family_dirs["llama"])
    lnv = math.log(warm.config.vocab_size)
    with pytest.raises(UntrainedInitError) as e:
        step0_gate(warm, val_loss=0.95 * lnv, data_fingerprint="abc")
    assert f"ln V = {lnv:.4f}" in str(e.value) and "--allow-untrained-init" in str(e.value)
    line = step0_gate(warm, val_loss=0.95 * lnv, data_fingerprint="abc", allow_untrained_init=True).detail
    assert line.startswith("step 0 val_loss ") and "random init ≈ ln V" in line
    assert step0_gate(warm, val_loss=0.5 * lnv, data_fingerprint="abc").detail.startswith("step 0 val_loss")

    warm.recorded_val_loss, warm.recorded_data_fingerprint = 2.0, "abc"
    with pytest.raises(InitLossRegressionError) as e:
        step0_gate(warm, val_loss=2.3, data_fingerprint="abc")
    assert "2.3000" in str(e.value) and "2.0000" in str(e.value)
    step0_gate(warm, val_loss=2.15, data_fingerprint="abc")  # within 10 %
    step0_gate(warm, val_loss=2.3, data_fingerprint="abc", tolerance=0.2)
    step0_gate(warm, val_loss=2.3, data_fingerprint="other-data")  # not comparable: allowed
    with pytest.raises(UntrainedInitError):
        step0_gate(warm, val_loss=float("nan"), data_fingerprint="abc")
    # A loss recorded over other validation windows is not comparable: reported, not refused.
    warm.recorded_val_windows = 64
    with pytest.raises(InitLossRegressionError):
        step0_gate(warm, val_loss=2.3, data_fingerprint="abc", val_windows=64)
    assert "64 validation windows, here 16" in step0_gate(warm, val_loss=2.3, data_fingerprint="abc",
                                                          val_windows=16).detail
    # After a context extension the recorded loss (the checkpoint's own positions) is not compared, and the
    # printed line says so.
    change = {"from": {"max_position_embeddings": 2048, "rope_theta": 1e5, "rope_scaling": None},
              "to": {"max_position_embeddings": 8192, "rope_theta": 1e6, "rope_scaling": None}}
    line = step0_gate(warm, val_loss=2.3, data_fingerprint="abc", val_windows=64, context=change).detail
    assert line.endswith(
        "recorded 2.0000 before the context extension (context 2048 -> 8192, rope_theta 100000 -> 1e+06), "
        "not compared")


# ------------------------------------------------------------------- GGUF
@pytest.mark.smollm2
def test_real_smollm2_gguf_passes_gates_1_to_6():
    warm = prepare_warm_start("smollm2-135m-instruct")
    assert all(r.status == PASS for r in warm.report), [r.line() for r in warm.report]
    assert warm.config.family == "llama" and warm.config.vocab_size == 49152
    assert warm.tokenizer.get_vocab_size() == 49152
    assert warm.provenance_parent["format"] == "gguf"
    assert sum(p.numel() for p in warm.model.parameters()) == 134_515_008
