"""The trainer's parts on their own: TrainState, the divergence guard, train_step, the stop condition,
the parallelize hook and the model source."""

from __future__ import annotations

import contextlib
import json
import random
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from warmstart.arch import CausalLM, get_preset
from warmstart.data import BatchSampler
from warmstart.errors import DivergenceError
from warmstart.train import TrainConfig, TrainState, pretrain, resolve_config
from warmstart.train import loop as loop_mod
from warmstart.train.budget import Budget
from warmstart.train.optim import Schedule, build_optimizer, param_groups
from warmstart.train.parallel import auto_mode, parallel_mode, parallelize
from warmstart.train.source import Resume, resolve_source
from warmstart.train.step import DivergenceGuard, clip_gradients, train_step

STATE_KEYS = {"step", "tokens_seen", "scheduler", "sampler", "data_fingerprint", "val_loss", "first_val_loss",
              "best", "elapsed", "created", "rng", "world_size", "global_batch"}


def new_state(**kw) -> TrainState:
    base = dict(sampler=BatchSampler(50, seed=3), data_fingerprint="fp",
                schedule=Schedule(lr=1e-3, warmup=2, decay_steps=10, min_ratio=0.1))
    base.update(kw)
    return TrainState(**base)


def draws() -> tuple:
    return torch.rand(4), random.random(), np.random.rand(3)


# ------------------------------------------------------------------ TrainState


def test_train_state_round_trip_restores_counters_cursor_and_rng():
    a = new_state(first_val_loss=6.0, val_loss=5.5, best={"step": 4, "val_loss": 5.5, "dir": "step-000004"})
    a.sampler.next_indices(7)
    a.sampler.next_indices(60)  # into the second epoch
    a.advance(128)
    a.advance(128)
    a.elapsed_before = 10.0
    sd = a.state_dict()
    assert set(sd) == STATE_KEYS  # the keys state.json has always held (world_size, global_batch: on one rank too)
    assert sd["step"] == 2 and sd["tokens_seen"] == 256 and sd["elapsed"] >= 10.0
    assert sd["scheduler"] == {"step": 2, "lr_next": Schedule(1e-3, 2, 10, 0.1).at(2), "decay_steps": 10}
    json.dumps({k: v for k, v in sd.items() if k != "rng"})  # the JSON part is JSON
    expect_idx = a.sampler.next_indices(9)
    expect_rng = draws()

    torch.manual_seed(123), random.seed(123), np.random.seed(123)  # scramble every RNG
    b = new_state()
    b.load_state_dict(sd)
    assert (b.step, b.start_step, b.tokens_seen, b.steps_this_run) == (2, 2, 256, 0)
    assert (b.first_val_loss, b.val_loss, b.best) == (6.0, 5.5, {"step": 4, "val_loss": 5.5, "dir": "step-000004"})
    assert b.elapsed_before == sd["elapsed"] and b.data_fingerprint == "fp"
    assert np.array_equal(b.sampler.next_indices(9), expect_idx)
    got = draws()
    assert torch.equal(got[0], expect_rng[0]) and got[1] == expect_rng[1] and np.array_equal(got[2], expect_rng[2])
    b.advance(128)
    assert b.steps_this_run == 1


def test_train_state_best_tracking():
    s = new_state()
    assert not s.improves(None) and s.improves(5.0)
    s.best = {"step": 2, "val_loss": 5.0, "dir": "step-000002"}
    assert s.improves(4.9) and not s.improves(5.0) and not s.improves(float("nan"))


# ------------------------------------------------------------------ train_step and the divergence guard


def tiny_setup(fused: bool = False):
    torch.manual_seed(0)
    model = CausalLM(get_preset("llama-tiny"))
    model.reset_parameters(0)
    if fused:  # the kernel the CUDA path uses; on CPU it honours found_inf the same way
        opt = torch.optim.AdamW(param_groups(model, 0.1), lr=1e-3, betas=(0.9, 0.95), fused=True)
    else:
        opt = build_optimizer(model, lr=1e-3, weight_decay=0.1, betas=(0.9, 0.95))
    g = torch.Generator().manual_seed(0)
    v = model.cfg.vocab_size

    def batch():
        t = torch.randint(0, v, (2, 17), generator=g)
        return t[:, :-1], t[:, 1:]

    return model, opt, batch


def snapshot(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def same(a, b) -> bool:
    return all(torch.equal(a[k], b[k]) for k in a)


def step(model, opt, batch, guard, scale=None):
    loss_fn = model.loss if scale is None else (lambda x, y: model.loss(x, y) * scale)
    return train_step(loss_fn, opt, batch, grad_accum=2, clip=1.0, amp=contextlib.nullcontext, guard=guard)


def test_train_step_updates_and_averages_micro_batches():
    model, opt, batch = tiny_setup()
    state = new_state()
    guard = DivergenceGuard(torch.device("cpu"), state, run_dir="runs/x", lr=1e-3, warmup_steps=2)
    before = snapshot(model)
    loss, gnorm = step(model, opt, batch, guard)
    assert loss.ndim == 0 and torch.isfinite(loss) and 0 < gnorm.item()
    assert not same(before, snapshot(model))
    assert all(p.grad is None for p in model.parameters())  # zeroed for the next step


def test_cpu_guard_raises_before_the_update_naming_step_and_last_checkpoint():
    model, opt, batch = tiny_setup()
    state = new_state(step=4, last_checkpoint=Path("runs/x/checkpoints/step-000004"))
    guard = DivergenceGuard(torch.device("cpu"), state, run_dir="runs/x", lr=1e-3, warmup_steps=2)
    before = snapshot(model)
    with pytest.raises(DivergenceError) as ei:
        step(model, opt, batch, guard, scale=torch.tensor(float("nan")))
    err = ei.value
    msg = str(err)
    assert err.code == "WS201" and "diverged at step 5" in msg and "loss nan" in msg
    assert "runs/x/checkpoints/step-000004" in msg and "--lr" in msg and "--resume runs/x" in msg
    assert same(before, snapshot(model))  # nothing applied
    with pytest.raises(DivergenceError, match="diverged at step 4: the validation loss is inf"):
        guard.check_val(float("inf"))
    fresh = DivergenceGuard(torch.device("cpu"), new_state(), run_dir="r", lr=1e-3, warmup_steps=2)
    with pytest.raises(DivergenceError, match=r"none \(no checkpoint yet\)"):
        fresh.check_val(float("nan"))


def test_device_side_guard_is_sticky_and_reports_the_first_bad_step():
    """The CUDA path (flag on the device, read by fused AdamW as found_inf), run with CPU fused AdamW."""
    model, opt, batch = tiny_setup(fused=True)
    state = new_state()
    guard = DivergenceGuard(torch.device("cpu"), state, run_dir="runs/x", lr=1e-3, warmup_steps=2, on_device=True)
    step(model, opt, batch, guard)
    state.advance(32)
    guard.check()  # step 1 was fine
    good = snapshot(model)
    step(model, opt, batch, guard, scale=torch.tensor(float("inf")))  # no raise: no host sync in the hot path
    state.advance(32)
    step(model, opt, batch, guard)  # a finite step after the bad one is not applied either
    state.advance(32)
    assert same(good, snapshot(model))
    with pytest.raises(DivergenceError, match="diverged at step 2: loss inf"):
        guard.check()


@pytest.mark.parametrize("clip", [1e-3, 1e9])  # clipping every gradient; not clipping
def test_fused_clip_through_grad_scale_equals_clip_grad_norm(clip):
    """Under fused AdamW the clip's scale is the kernel's grad_scale: the same norm and the same update
    as clip_grad_norm_ scaling the gradients first (within fp32 rounding of g * c against g / (1 / c))."""
    results = []
    for through_kernel in (True, False):
        model, opt, batch = tiny_setup(fused=True)
        x, y = batch()
        model.loss(x, y).backward()
        params = [p for g in opt.param_groups for p in g["params"]]
        if through_kernel:
            norm = clip_gradients(params, clip, opt)
            assert opt.grad_scale.item() == pytest.approx(max(1.0, (norm.item() + 1e-6) / clip), rel=1e-6)
        else:
            norm = torch.nn.utils.clip_grad_norm_(params, clip, foreach=True)
        opt.step()
        results.append((norm, snapshot(model)))
    (n1, after1), (n2, after2) = results
    assert torch.equal(n1, n2)
    for k in after1:
        torch.testing.assert_close(after1[k], after2[k], rtol=1e-6, atol=1e-7)


def test_unfused_clip_scales_the_gradients_in_place():
    model, opt, batch = tiny_setup()
    x, y = batch()
    model.loss(x, y).backward()
    params = [p for g in opt.param_groups for p in g["params"]]
    norm = clip_gradients(params, 1e-3, opt)
    after = torch.nn.utils.get_total_norm([p.grad for p in params])
    assert opt.grad_scale is None and norm.item() > 1e-3 and abs(after.item() - 1e-3) < 1e-8


# ------------------------------------------------------------------ the stop condition


def test_stop_reason_steps_tokens_time():
    def reason(cfg_kw, step_, tokens=None, started=None):
        cfg = TrainConfig(**cfg_kw)
        b = Budget(cfg, tokens_per_step=10)
        s = new_state(step=step_, tokens_seen=10 * step_ if tokens is None else tokens)
        if started is not None:
            s.started = started
        return b.stop_reason(s)

    assert reason({"max_steps": 5}, 4) is None and reason({"max_steps": 5}, 5) == "max-steps"
    assert Budget(TrainConfig(max_steps=None, max_tokens=25), 10).total_steps == 3
    assert reason({"max_steps": None, "max_tokens": 25}, 2) is None
    assert reason({"max_steps": None, "max_tokens": 25}, 3) == "max-tokens"
    assert reason({"max_steps": 10, "max_tokens": 25}, 3) == "max-tokens"
    assert reason({"max_steps": 2, "max_tokens": 1000}, 2) == "max-steps"
    assert reason({"max_steps": None, "max_time": 50.0}, 7, started=time.time() - 100) == "max-time"
    assert reason({"max_steps": None, "max_time": 50.0}, 7, started=time.time()) is None
    assert reason({"max_steps": 3, "max_time": 50.0}, 3, started=time.time() - 100) == "max-steps"
    assert Budget(TrainConfig(max_steps=None, max_time=1.0), 10).decay_steps == 10**12
    assert Budget(TrainConfig(max_steps=8), 10).decay_steps == 8
    assert Budget(TrainConfig(max_steps=8, lr_decay_steps=20), 10).decay_steps == 20


# ------------------------------------------------------------------ parallelize and the model source


def test_auto_parallel_mode_replicates_small_models_and_shards_the_rest():
    h100 = 80 * 2**30
    assert auto_mode(1, get_preset("qwen2.5-0.5b").num_parameters(), h100) == "none"
    assert auto_mode(2, get_preset("qwen2.5-0.5b").num_parameters(), h100) == "ddp"  # 7.9 GB of state
    assert auto_mode(8, get_preset("smollm2-135m").num_parameters(), 24 * 2**30) == "ddp"
    assert auto_mode(2, get_preset("qwen2.5-0.5b").num_parameters(), 24 * 2**30) == "fsdp"
    assert auto_mode(8, get_preset("qwen2.5-1.5b").num_parameters(), h100) == "fsdp"  # measured faster on 2 H100s
    assert auto_mode(2, get_preset("qwen2.5-3b").num_parameters(), h100) == "fsdp"  # 49 GB
    assert auto_mode(2, get_preset("llama3-8b").num_parameters(), h100) == "fsdp"
    assert auto_mode(2, get_preset("llama-tiny").num_parameters(), None) == "fsdp"  # CPU ranks shard
    assert auto_mode(2, None, h100) == "fsdp"
    # Without the model's size (the CLI's early check) or on the CPU, auto stays FSDP2 above one rank.
    cfg = TrainConfig(preset="llama-tiny")
    assert parallel_mode(cfg, 2) == "fsdp" and parallel_mode(cfg, 1) == "none"
    assert parallel_mode(cfg, 2, params=10**6, device=torch.device("cpu")) == "fsdp"
    assert parallel_mode(TrainConfig(preset="llama-tiny", parallel="ddp"), 2, params=10**12) == "ddp"


def test_parallelize_is_called_once_and_is_the_identity(corpus, cache, tmp_path, monkeypatch):
    calls = []

    def spy(model, cfg, dist, mode):
        out = parallelize(model, cfg, dist, mode)
        calls.append((model, cfg, out))
        return out

    monkeypatch.setattr(loop_mod, "parallelize", spy)
    run = tmp_path / "run"
    cfg = TrainConfig(preset="llama-tiny", data=[str(corpus)], vocab_size=400, seq_len=32, batch_size=4,
                      eval_tokens=128, max_steps=2, out=str(run), cache_dir=str(cache))
    pretrain(cfg, quiet=True, print_summary=False)
    assert len(calls) == 1
    model, got_cfg, out = calls[0]
    # One process: no process group, the model as built and its own loss.
    assert isinstance(model, CausalLM) and got_cfg is cfg and model.training
    assert out.mode == "none" and out.model is model and out.loss_fn == model.loss and not out.dist.group

    # The resumed run's source comes from its latest checkpoint, read once.
    rcfg = resolve_config({"resume": str(run), "max_steps": 3})
    src = resolve_source(rcfg, run, device=torch.device("cpu"), say=lambda s: None)
    assert isinstance(src, Resume) and src.step_dir == run / "checkpoints" / "step-000002"
    assert src.config.vocab_size == src.tokenizer.get_vocab_size() and src.parent is None
    assert src.checkpoint is not None and src.checkpoint.metadata["step"] == 2
