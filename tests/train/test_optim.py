"""Learning-rate schedule, weight-decay groups, the fused-AdamW skip used by the CUDA divergence guard."""

from __future__ import annotations

import math

import pytest
import torch

from warmstart.arch import CausalLM, get_preset
from warmstart.train.config import TrainConfig, parse_duration, resolve_config
from warmstart.train.optim import build_optimizer, lr_at, param_groups
from warmstart.errors import ResumeError, UsageError


def test_warmup_then_cosine_to_floor():
    kw = dict(lr=1e-3, warmup=10, decay_steps=110, min_ratio=0.1)
    lrs = [lr_at(s, **kw) for s in range(130)]
    assert lrs[0] == pytest.approx(1e-4) and lrs[9] == pytest.approx(1e-3)
    assert all(a < b for a, b in zip(lrs[:10], lrs[1:10]))  # linear warmup increases
    assert lrs[10] == pytest.approx(1e-3)
    assert all(a >= b for a, b in zip(lrs[10:110], lrs[11:111]))  # cosine decreases
    assert lrs[60] == pytest.approx(1e-4 + 0.5 * 9e-4)  # half way
    assert lrs[110] == pytest.approx(1e-4) and lrs[129] == pytest.approx(1e-4)  # floor
    assert lr_at(0, lr=1.0, warmup=0, decay_steps=10, min_ratio=0.0) == 1.0


def test_no_decay_on_norms_biases_embeddings():
    model = CausalLM(get_preset("qwen2-tiny"))  # has q/k/v biases, tied embeddings
    decay, no_decay = param_groups(model, 0.1)
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert "model.embed_tokens.weight" in no_decay["names"]
    assert "lm_head.weight" not in decay["names"]  # tied: the embedding's own Parameter
    assert all(n.endswith(("norm.weight", ".bias")) or "embed_tokens" in n for n in no_decay["names"])
    assert any(n.endswith("q_proj.bias") for n in no_decay["names"])
    assert any(n.endswith("input_layernorm.weight") for n in no_decay["names"])
    assert all(n.endswith("_proj.weight") for n in decay["names"])
    n_all = len(list(model.parameters()))
    assert len(decay["params"]) + len(no_decay["params"]) == n_all
    untied = CausalLM(get_preset("llama-tiny").replace(tie_word_embeddings=False))
    decay, no_decay = param_groups(untied, 0.1)
    assert "lm_head.weight" in decay["names"] and "model.embed_tokens.weight" in no_decay["names"]


def test_fused_adamw_found_inf_skips_the_update():
    """The CUDA guard sets ``optimizer.found_inf``; the fused kernel must then change nothing."""
    model = CausalLM(get_preset("llama-tiny"))
    model.reset_parameters(0)
    try:
        opt = torch.optim.AdamW([{**g} for g in param_groups(model, 0.1)], lr=1e-2, fused=True)
    except RuntimeError as err:  # pragma: no cover - fused CPU kernel missing in this build
        pytest.skip(f"fused AdamW unavailable on CPU: {err}")
    x = torch.randint(0, 512, (2, 17))
    model.loss(x[:, :-1], x[:, 1:]).backward()
    opt.found_inf = torch.zeros(())
    opt.step()  # a good step
    before = {k: v.clone() for k, v in model.state_dict().items()}
    st_before = {k: {n: t.clone() for n, t in s.items()} for k, s in opt.state.items()}
    model.loss(x[:, :-1], x[:, 1:]).backward()
    opt.found_inf = torch.ones(())
    opt.step()  # skipped
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
    for p, s in opt.state.items():
        for n, t in s.items():
            assert torch.equal(t, st_before[p][n]), n


def test_build_optimizer_cpu_is_not_fused():
    model = CausalLM(get_preset("llama-tiny"))
    opt = build_optimizer(model, lr=1e-3, weight_decay=0.1, betas=(0.9, 0.95))
    assert not opt.defaults.get("fused")
    assert [g["weight_decay"] for g in opt.param_groups] == [0.1, 0.0]


def test_config_precedence_and_validation(tmp_path):
    y = tmp_path / "run.yaml"
    y.write_text("lr: 0.001\nmax-steps: 40\nbetas: [0.8, 0.9]\ninclude: '*.py'\nmax_time: 15m\n")
    cfg = resolve_config({"max_steps": 7}, str(y))
    assert cfg.lr == 0.001 and cfg.max_steps == 7 and cfg.beta1 == 0.8 and cfg.include == ["*.py"]
    assert cfg.max_time == 900.0
    cfg = resolve_config({}, str(y))
    assert cfg.max_steps == 40
    cfg = resolve_config({"max_time": "1h30m"})
    assert cfg.max_steps is None and cfg.max_time == 5400.0  # a time budget replaces the default step budget
    y.write_text("learning_rate: 1\n")
    with pytest.raises(UsageError, match="unknown setting 'learning_rate'"):
        resolve_config({}, str(y))
    with pytest.raises(UsageError):
        resolve_config({"dtype": "fp8"})
    with pytest.raises(UsageError):
        parse_duration("soon")
    with pytest.raises(ResumeError):
        resolve_config({"resume": str(tmp_path / "nope")})
    assert TrainConfig().max_steps and math.isclose(TrainConfig().init_loss_tolerance, 0.10)
