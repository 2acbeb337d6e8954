"""The training loop: exact resume, divergence guard, checkpoint layout, rotation, budgets."""

from __future__ import annotations

import json
import math

import pytest
import torch
from safetensors.torch import load_file

from warmstart.errors import DivergenceError, ResumeError, UsageError
from warmstart.train import TrainConfig, pretrain, resolve_config
from warmstart.checkpoint.run import read_metrics


def tiny(corpus, cache, out, **kw) -> TrainConfig:
    base = dict(preset="llama-tiny", data=[str(corpus)], vocab_size=400, seq_len=32, batch_size=4,
                eval_tokens=128, eval_every=0, log_every=1, lr=3e-3, warmup_steps=2, out=str(out),
                cache_dir=str(cache))
    base.update(kw)
    return TrainConfig(**base)


def losses(run) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in read_metrics(run / "metrics.jsonl") if "loss" in r}


def test_resumed_run_equals_uninterrupted_run(corpus, cache, tmp_path):
    full = tmp_path / "full"
    pretrain(tiny(corpus, cache, full, max_steps=6, save_every=3), quiet=True)
    part = tmp_path / "part"
    # Same schedule (cosine horizon 6), stopped after 3 steps: an interruption at a checkpoint.
    pretrain(tiny(corpus, cache, part, max_steps=3, lr_decay_steps=6, save_every=3), quiet=True)
    # Pretend the process died after logging steps 4-5 (they must be dropped on resume).
    with open(part / "metrics.jsonl", "a") as fh:
        fh.write(json.dumps({"step": 4, "loss": 123.0}) + "\n" + '{"step": 5, "lo')
    s = pretrain(resolve_config({"resume": str(part), "max_steps": 6}), quiet=True)
    assert s.steps == 6 and s.resumed_from.endswith("step-000003")
    a, b = losses(full), losses(part)
    assert sorted(a) == sorted(b) == [1, 2, 3, 4, 5, 6]
    for step in a:
        assert a[step] == b[step], (step, a[step], b[step])  # bit-exact, not approx
    wa = load_file(str(full / "checkpoints/step-000006/model.safetensors"))
    wb = load_file(str(part / "checkpoints/step-000006/model.safetensors"))
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    oa = load_file(str(full / "checkpoints/step-000006/trainer_state/optimizer.safetensors"))
    ob = load_file(str(part / "checkpoints/step-000006/trainer_state/optimizer.safetensors"))
    assert all(torch.equal(oa[k], ob[k]) for k in oa)


def test_bf16_autocast_on_cpu_trains_and_resumes_exactly(corpus, cache, tmp_path):
    """``--dtype bf16`` on CPU (the faster option on CPUs with native bf16): fp32 master weights saved, the loss
    falls, and a resumed run's losses equal the uninterrupted run's, as in fp32."""
    full, part = tmp_path / "full", tmp_path / "part"
    pretrain(tiny(corpus, cache, full, max_steps=6, save_every=3, dtype="bf16"), quiet=True)
    pretrain(tiny(corpus, cache, part, max_steps=3, lr_decay_steps=6, save_every=3, dtype="bf16"), quiet=True)
    pretrain(resolve_config({"resume": str(part), "max_steps": 6}), quiet=True)
    a, b = losses(full), losses(part)
    assert sorted(a) == sorted(b) == [1, 2, 3, 4, 5, 6] and a == b
    assert a[6] < a[1]
    fp32 = tiny(corpus, cache, tmp_path / "fp32", max_steps=1)
    pretrain(fp32, quiet=True)
    assert losses(tmp_path / "fp32")[1] != a[1]  # bf16 logits: not the fp32 run's loss
    weights = load_file(str(full / "checkpoints/step-000006/model.safetensors"))
    assert all(t.dtype == torch.float32 for t in weights.values())


def test_checkpoint_layout_provenance_rotation_best(corpus, cache, tmp_path):
    run = tmp_path / "run"
    s = pretrain(tiny(corpus, cache, run, max_steps=8, save_every=2, keep_last=2, eval_every=2,
                      license="apache-2.0", data_license="psf-2.0"), quiet=True)
    ck = run / "checkpoints"
    steps = sorted(p.name for p in ck.iterdir() if p.name.startswith("step-"))
    best = (ck / "best").read_text().strip()
    assert (ck / "latest").read_text().strip() == "step-000008"
    assert set(steps) == {"step-000006", "step-000008"} | {best}
    assert not [p for p in ck.iterdir() if p.name.startswith(".")]
    d = ck / "step-000008"
    for f in ["config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
              "generation_config.json", "warmstart.json", "trainer_state/optimizer.safetensors",
              "trainer_state/optimizer.json", "trainer_state/rng.safetensors", "trainer_state/state.json"]:
        assert (d / f).is_file(), f
    assert not list(d.rglob("*.pt")) and not list(d.rglob("*.bin")) and not list(d.rglob("*.pkl"))
    prov = json.loads((d / "warmstart.json").read_text())
    for k in ["architecture", "hf_architecture", "model_type", "license", "data_sources", "data_license", "parent",
              "step", "tokens_seen", "val_loss", "data_fingerprint", "warmstart_version", "created"]:
        assert k in prov, k
    assert prov["architecture"] == "llama" and prov["hf_architecture"] == "LlamaForCausalLM"
    assert prov["step"] == 8 and prov["tokens_seen"] == 8 * 4 * 32 and prov["parent"] is None
    assert prov["license"] == "apache-2.0" and prov["data_license"] == "psf-2.0"
    assert math.isfinite(prov["val_loss"]) and prov["val_loss"] == s.final_val_loss
    state = json.loads((d / "trainer_state/state.json").read_text())
    assert state["sampler"]["pos"] == (8 * 4) % state["sampler"]["n_windows"] or state["sampler"]["epoch"] > 0
    assert state["scheduler"]["step"] == 8 and "python" in state["rng"] and "numpy" in state["rng"]
    rng = load_file(str(d / "trainer_state/rng.safetensors"))
    assert rng["torch_cpu"].dtype == torch.uint8
    m = read_metrics(run / "metrics.jsonl")
    assert m[0]["step"] == 0 and m[0]["val_loss"] > 0
    for key in ["loss", "lr", "grad_norm", "tokens_seen", "tokens_per_s", "elapsed"]:
        assert key in m[1]
    assert s.first_val_loss > s.final_val_loss  # it learns
    assert (run / "config.yaml").is_file() and (run / "summary.json").is_file()
    assert s.best_checkpoint.endswith(best)


def test_divergence_guard(corpus, cache, tmp_path):
    """A genuinely too-high learning rate (no clipping, no warmup) blows the weights up."""
    run = tmp_path / "run"
    cfg = tiny(corpus, cache, run, max_steps=60, lr=100.0, warmup_steps=0, grad_clip=0.0, save_every=2,
               eval_every=2, keep_last=100)
    with pytest.raises(DivergenceError) as ei:
        pretrain(cfg, quiet=True)
    err = ei.value
    assert err.code == "WS201" and "diverged" in str(err) and "--lr" in str(err)
    latest = (run / "checkpoints" / "latest").read_text().strip()
    last_good = int(latest.split("-")[1])
    steps = sorted(int(p.name.split("-")[1]) for p in (run / "checkpoints").glob("step-*"))
    assert steps[-1] == last_good  # nothing written after the last good checkpoint
    assert not [p for p in (run / "checkpoints").iterdir() if p.name.startswith(".")]
    recorded = [r for r in read_metrics(run / "metrics.jsonl")]
    assert all(math.isfinite(r.get("loss", 0.0)) and math.isfinite(r.get("val_loss", 0.0) or 0.0) for r in recorded)
    assert max(r["step"] for r in recorded) <= last_good + 1
    prov = json.loads((run / "checkpoints" / latest / "warmstart.json").read_text())
    assert math.isfinite(prov["val_loss"])
    w = load_file(str(run / "checkpoints" / latest / "model.safetensors"))
    assert all(torch.isfinite(t).all() for t in w.values())


def test_budgets_and_refusals(corpus, cache, tmp_path):
    s = pretrain(tiny(corpus, cache, tmp_path / "tok", max_steps=None, max_tokens=3 * 4 * 32 - 1), quiet=True)
    assert s.steps == 3 and s.stopped_by == "max-tokens"
    s = pretrain(tiny(corpus, cache, tmp_path / "time", max_steps=None, max_time=0.0), quiet=True)
    assert s.steps == 0 and s.stopped_by == "max-time" and s.last_checkpoint  # still leaves a checkpoint
    with pytest.raises(UsageError, match="already holds a run"):
        pretrain(tiny(corpus, cache, tmp_path / "tok", max_steps=2), quiet=True)
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "config.yaml").write_text("preset: llama-tiny\n")
    with pytest.raises(ResumeError, match="no complete checkpoint"):
        pretrain(resolve_config({"resume": str(tmp_path / "empty")}), quiet=True)
    with pytest.raises(ResumeError, match="cannot change seq_len"):
        resolve_config({"resume": str(tmp_path / "tok"), "seq_len": 64})
