"""Speed bookkeeping (train/perf.py): model FLOPs, peaks, MFU, CPU threads, time to the first step."""

from __future__ import annotations

import time

import pytest
import torch
from torch import nn

from warmstart.arch import CausalLM, get_preset
from warmstart.train.perf import FirstStepClock, flops_per_token, matmul_parameters, mfu, peak_flops


@pytest.mark.parametrize("preset", ["llama-tiny", "qwen2-tiny", "qwen3-tiny", "smollm2-135m", "qwen2.5-0.5b"])
def test_matmul_parameters_are_the_linear_weights_of_the_model(preset):
    """Every nn.Linear weight (the LM head once, even when tied), nothing else."""
    cfg = get_preset(preset)
    with torch.device("meta"):
        model = CausalLM(cfg)
    linear = sum(m.weight.numel() for m in model.modules() if isinstance(m, nn.Linear))
    assert matmul_parameters(cfg) == linear


def test_flops_per_token_counts_attention_over_the_span():
    cfg = get_preset("llama-tiny")  # 2 layers, 4 heads of 16
    base = 6 * matmul_parameters(cfg)
    assert flops_per_token(cfg, 100) == base + 12 * 2 * 100 * 4 * 16
    windowed = cfg.replace(sliding_window=30)  # every layer sliding: the span is the window
    assert flops_per_token(windowed, 100) == base + 12 * 2 * 30 * 4 * 16
    # the published count for SmolLM2-135M at 2048: 6 x 134.5M + 12 x 30 x 2048 x 576
    assert flops_per_token(get_preset("smollm2-135m"), 2048) == pytest.approx(1.2316e9, rel=1e-3)


def test_peak_and_mfu():
    assert peak_flops("cpu") is None
    assert mfu(1000.0, 1e9, None) is None
    assert mfu(300_000.0, 1.2e9, 989e12) == pytest.approx(0.364, abs=1e-3)


def test_first_step_clock_records_once():
    clock = FirstStepClock(time.time() - 2.0)
    assert clock.seconds is None
    clock.done(torch.device("cpu"))
    first = clock.seconds
    assert first is not None and 2.0 <= first < 60
    time.sleep(0.01)
    clock.done(torch.device("cpu"))
    assert clock.seconds == first


def test_meter_reports_mfu_when_the_peak_is_known(capsys):
    from warmstart.train.report import IntervalMeter, Reporter

    plain = IntervalMeter(torch.device("cpu"))
    plain.add(torch.tensor(2.0), torch.tensor(1.0), 1000)
    assert "mfu" not in plain.read(1e-3, 1000)
    meter = IntervalMeter(torch.device("cpu"), flops=(1e9, 1e12))
    meter.t0 -= 1.0  # one second ago
    meter.add(torch.tensor(2.0), torch.tensor(1.0), 100)
    rec = meter.read(1e-3, 100)
    assert 0.05 < rec["mfu"] <= 0.1  # 100 tokens in ~1 s at 1 GFLOP each, against 1 TFLOP/s
    Reporter(10, tty=False).update(1, rec, None)
    assert f"MFU {100 * rec['mfu']:.1f}%" in capsys.readouterr().out
