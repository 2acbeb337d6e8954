"""Learning-rate schedules: warmup-stable-decay (step by step and across a resume) and constant; the options."""

from __future__ import annotations

import json
import math

import pytest

from warmstart.errors import UsageError
from warmstart.train import pretrain, resolve_config
from warmstart.train.config import TrainConfig
from warmstart.train.optim import Schedule, lr_at
from warmstart.checkpoint.run import read_metrics


def wsd_by_definition(step: int, *, lr: float, warmup: int, horizon: int, fraction: float, floor: float) -> float:
    """Warmup-stable-decay as docs/continued-pretraining.md defines it, written out independently."""
    if step < warmup:
        return lr * (step + 1) / warmup
    decay_start = max(warmup, horizon - max(1, round(fraction * horizon)))
    if step < decay_start:
        return lr
    if step >= horizon:
        return floor
    return floor + (lr - floor) * (1 - math.sqrt((step - decay_start) / (horizon - decay_start)))


def test_wsd_follows_its_definition_step_by_step():
    sched = Schedule(lr=1e-3, warmup=10, decay_steps=100, min_ratio=0.1, kind="wsd", decay_fraction=0.2)
    lrs = [sched.at(s) for s in range(120)]
    for s, got in enumerate(lrs):
        assert got == pytest.approx(wsd_by_definition(s, lr=1e-3, warmup=10, horizon=100, fraction=0.2, floor=1e-4))
    assert lrs[0] == pytest.approx(1e-4) and lrs[9] == pytest.approx(1e-3)  # warmup
    assert all(x == 1e-3 for x in lrs[10:81])  # stable through the first update of the decay
    assert lrs[90] == pytest.approx(1e-4 + 9e-4 * (1 - math.sqrt(0.5)))  # 1-sqrt cooldown
    assert all(a > b for a, b in zip(lrs[80:100], lrs[81:100]))  # strictly decreasing to the floor
    assert all(x == pytest.approx(1e-4) for x in lrs[100:])
    assert sched.record(85) == {"step": 85, "lr_next": lrs[85], "decay_steps": 100, "kind": "wsd", "decay_start": 80}
    # A decay fraction longer than what follows the warmup starts the decay right after it.
    assert lr_at(5, lr=1.0, warmup=5, decay_steps=10, min_ratio=0.0, kind="wsd", decay_fraction=1.0) == 1.0
    assert lr_at(6, lr=1.0, warmup=5, decay_steps=10, min_ratio=0.0, kind="wsd", decay_fraction=1.0) == \
        pytest.approx(1 - math.sqrt(1 / 5))


def test_constant_and_cosine_schedules():
    const = [lr_at(s, lr=2.0, warmup=4, decay_steps=10, min_ratio=0.1, kind="constant") for s in range(30)]
    assert const[:4] == [0.5, 1.0, 1.5, 2.0] and set(const[4:]) == {2.0}
    cos = Schedule(lr=1e-3, warmup=10, decay_steps=110, min_ratio=0.1)
    assert cos.kind == "cosine" and cos.at(60) == pytest.approx(1e-4 + 0.5 * 9e-4)
    assert cos.record(3) == {"step": 3, "lr_next": cos.at(3), "decay_steps": 110}  # as it has always been


def test_wsd_learning_rate_survives_resume(corpus, cache, tmp_path):
    def cfg(out, **kw) -> TrainConfig:
        return TrainConfig(preset="llama-tiny", data=[str(corpus)], vocab_size=400, seq_len=32, batch_size=4,
                           eval_tokens=128, eval_every=0, log_every=1, lr=3e-3, warmup_steps=2, out=str(out),
                           cache_dir=str(cache), schedule="wsd", decay_fraction=0.5, min_lr_ratio=0.1, **kw)

    full, part = tmp_path / "full", tmp_path / "part"
    pretrain(cfg(full, max_steps=8, save_every=4), quiet=True)
    pretrain(cfg(part, max_steps=4, lr_decay_steps=8, save_every=4), quiet=True)  # interrupted in the stable phase
    state = json.loads((part / "checkpoints/step-000004/trainer_state/state.json").read_text())
    assert state["scheduler"] == {"step": 4, "lr_next": 3e-3, "decay_steps": 8, "kind": "wsd", "decay_start": 4}
    pretrain(resolve_config({"resume": str(part), "max_steps": 8}), quiet=True)

    def lrs(run):
        return {r["step"]: r["lr"] for r in read_metrics(run / "metrics.jsonl") if "loss" in r}

    expect = {s + 1: wsd_by_definition(s, lr=3e-3, warmup=2, horizon=8, fraction=0.5, floor=3e-4) for s in range(8)}
    assert lrs(full) == lrs(part) == pytest.approx(expect)
    assert lrs(part)[5] == 3e-3 and lrs(part)[8] < lrs(part)[7] < lrs(part)[6] < 3e-3
    losses = [{r["step"]: r["loss"] for r in read_metrics(run / "metrics.jsonl") if "loss" in r} for run in (full, part)]
    assert losses[0] == losses[1]  # bit-exact


def test_schedule_and_eval_data_options_are_checked():
    assert TrainConfig(schedule="wsd", decay_fraction=0.1).validate() is None
    with pytest.raises(UsageError, match="--schedule 'linear'"):
        TrainConfig(schedule="linear").validate()
    with pytest.raises(UsageError, match="--decay-fraction"):
        TrainConfig(schedule="wsd", decay_fraction=0.0).validate()
    cfg = TrainConfig(eval_data=["retain=old/", "target=new.jsonl", "odd=a=b.txt"])
    assert cfg.eval_sets() == [("retain", "old/"), ("target", "new.jsonl"), ("odd", "a=b.txt")]
    for bad in (["old/"], ["val=old/"], ["loss=x"], ["a b=x"], ["r=x", "r=y"], ["r="]):
        with pytest.raises(UsageError, match="--eval-data"):
            TrainConfig(eval_data=bad).validate()


def test_yaml_spells_mixtures_and_eval_sets(tmp_path):
    y = tmp_path / "run.yaml"
    y.write_text("data:\n  code/: 0.9\n  replay.jsonl: 0.1\neval_data:\n  retain: old/\nschedule: wsd\n"
                 "decay-fraction: 0.1\n")
    cfg = resolve_config({}, str(y))
    assert cfg.data == ["code/:0.9", "replay.jsonl:0.1"] and cfg.eval_data == ["retain=old/"]
    assert cfg.schedule == "wsd" and cfg.decay_fraction == 0.1
    y.write_text("data: [code/:0.9, replay.jsonl:0.1]\neval_data: retain=old/\n")
    cfg = resolve_config({}, str(y))
    assert cfg.data == ["code/:0.9", "replay.jsonl:0.1"] and cfg.eval_data == ["retain=old/"]
