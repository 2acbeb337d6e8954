"""Context extension (``--context-length``, ``--rope-theta``, ``--rope-scaling``): for every family of the
registry each override is either written into a config.json that transformers loads as the same model
(equal fp32 logits, 1e-4, on a window longer than the original context) or refused with WS125."""

from __future__ import annotations

import pytest
import torch

from warmstart.arch import CausalLM, ModelConfig, get_preset
from warmstart.arch.context import check_within_positions, context_change, describe_change, extend_context, \
    parse_rope_scaling
from warmstart.arch.families import SPECS
from warmstart.errors import ContextExtensionError, UsageError

transformers = pytest.importorskip("transformers")


def _smallest(spec) -> ModelConfig:
    name = min(spec.presets, key=lambda n: get_preset(n).num_parameters())
    return get_preset(name).replace(max_position_embeddings=64, bos_token_id=0, eos_token_id=0)


BASES = {spec.name: _smallest(spec) for spec in SPECS.values()}
OVERRIDES = {
    "theta": dict(context_length=256, rope_theta=4e6),
    "linear": dict(context_length=256, rope_scaling="linear:4"),
    "llama3": dict(context_length=256, rope_scaling="llama3:4"),
    "yarn": dict(context_length=256, rope_scaling="yarn:4"),
}


def _weights(cfg: ModelConfig) -> CausalLM:
    torch.manual_seed(0)
    model = CausalLM(cfg)
    model.reset_parameters(seed=2)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name or name.endswith(".bias"):
                p.add_(0.1 * torch.randn(p.shape))
    return model.eval()


@pytest.mark.parametrize("override", list(OVERRIDES))
@pytest.mark.parametrize("family", list(BASES))
def test_extended_checkpoint_loads_in_transformers_with_equal_logits(family, override, tmp_path):
    from warmstart.checkpoint.write import save_hf_checkpoint

    base = BASES[family]
    try:
        cfg = extend_context(base, **OVERRIDES[override])
    except ContextExtensionError as err:
        raise AssertionError(f"{family} {override}: {err.found}")
        return
    change = context_change(base, cfg)
    assert change["from"]["max_position_embeddings"] == 64 and change["to"]["max_position_embeddings"] == 256
    model = _weights(cfg)
    save_hf_checkpoint(tmp_path / "ckpt", cfg, model.canonical_state_dict(), provenance={"architecture": family})
    hf = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "ckpt", attn_implementation="eager").eval()
    ids = torch.randint(1, cfg.vocab_size, (1, 200), generator=torch.Generator().manual_seed(4))  # > 64
    with torch.no_grad():
        assert (hf(ids).logits - model(ids)).abs().max().item() <= 1e-4
        if override != "theta":  # the scaling is real: the unscaled model differs
            assert (_weights(base)(ids) - model(ids)).abs().max().item() > 1e-3


def test_only_given_values_change_and_the_change_is_described():
    base = BASES["llama"]
    assert extend_context(base) is base
    same = extend_context(base, context_length=64)
    assert context_change(base, same) is None and describe_change(None) == "no context change"
    cfg = extend_context(base, context_length=512, rope_scaling="yarn:8")
    assert cfg.rope_theta == base.rope_theta
    assert cfg.rope_scaling == {"rope_type": "yarn", "factor": 8.0, "original_max_position_embeddings": 64}
    assert describe_change(context_change(base, cfg)) == "context 64 -> 512, rope_scaling None -> yarn x8"


def test_refusals():
    with pytest.raises(UsageError, match="TYPE:FACTOR"):
        parse_rope_scaling("dynamic:2")
    with pytest.raises(UsageError, match="TYPE:FACTOR"):
        parse_rope_scaling("yarn:0.5")
    scaled = extend_context(BASES["llama"], rope_scaling="linear:2")
    with pytest.raises(ContextExtensionError, match="already scales RoPE") as err:
        extend_context(scaled, rope_scaling="yarn:4")
    assert err.value.code == "WS125" and err.value.exit_code == 2
    with pytest.raises(UsageError, match="beyond the model's max_position_embeddings = 64"):
        check_within_positions(64, 65, "the window", fix="shorter")
    check_within_positions(64, 64, "the window", fix="shorter")


@pytest.mark.parametrize("override", ["theta", "linear", "yarn", "llama3"])
def test_extended_checkpoint_exports_to_gguf_or_is_refused(override, tmp_path):
    """linear and YaRN go into llama.cpp's rope.scaling.* keys and read back as the same model (export's own
    round trip: config and logits); llama3 (a rope_freqs tensor in llama.cpp) is refused with WS126."""
    from warmstart.checkpoint import load_checkpoint
    from warmstart.checkpoint.write import save_hf_checkpoint
    from warmstart.errors import RopeExportError
    from warmstart.release.export import export_checkpoint

    cfg = extend_context(BASES["llama"], **OVERRIDES[override])
    src = save_hf_checkpoint(tmp_path / "ckpt", cfg, _weights(cfg).canonical_state_dict(),
                             provenance={"architecture": "llama"})
    out = tmp_path / "m.gguf"
    if override == "llama3":
        with pytest.raises(RopeExportError, match="rope_freqs"):
            export_checkpoint(src or tmp_path / "ckpt", "gguf", out, dtype="f32")
        assert not out.exists()
        return
    export_checkpoint(src or tmp_path / "ckpt", "gguf", out, dtype="f32")
    back = load_checkpoint(out).model_config()
    assert (back.max_position_embeddings, back.rope_theta, back.rope_scaling) == \
        (cfg.max_position_embeddings, cfg.rope_theta, cfg.rope_scaling)
