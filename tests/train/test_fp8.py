"""``--fp8``: its refusals (CPU, compute capability, dimensions, torchao missing), its option plumbing, and on CPU
through torchao's emulation (``WARMSTART_TEST_FP8_ON_CPU``: the same float8 casts, the matmuls in high precision)
that an fp8 run writes the checkpoint a run without it writes and that each resumes as the other; FSDP2 on two
CPU ranks all-gathers the block weights in float8. The CUDA path: tests/gpu/test_fp8.py."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from _ckpt_tools import ws
from _corpus import make_corpus
from warmstart.arch import CausalLM, get_preset
from warmstart.errors import Fp8DeviceError, Fp8ShapeError, UsageError
from warmstart.train import fp8
from warmstart.checkpoint.run import read_yaml
from warmstart.train.config import TrainConfig, normalize_keys, resolve_config

pytest.importorskip("torchao")
EMULATE = {fp8.CPU_TEST_ENV: "1"}


def cli(cwd: Path, *args, **kw):
    return ws(*map(str, args), cwd=cwd, **kw)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    return make_corpus(tmp_path_factory.mktemp("corpus"))


def tiny(corpus, cache, out, *extra):
    return ["pretrain", "--data", corpus, "--preset", "llama-tiny", "--vocab-size", 400, "--seq-len", 32,
            "--batch-size", 4, "--eval-tokens", 128, "--eval-every", 2, "--save-every", 2, "--log-every", 1,
            "--lr", "3e-3", "--cache-dir", cache, "--out", out, "--quiet", *extra]


def losses(run: Path) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())
            if "loss" in r}


def tensors(path: Path) -> dict[str, tuple[str, list[int]]]:
    with safe_open(str(path), "pt") as f:
        return {k: (str(f.get_slice(k).get_dtype()), f.get_slice(k).get_shape()) for k in f.keys()}


# ------------------------------------------------------------------ the option


def test_fp8_and_optimizer_from_the_command_line_yaml_and_their_refusals(tmp_path):
    assert TrainConfig().fp8 == "none" and TrainConfig().optimizer == "adamw"
    cfg = resolve_config({"fp8": "rowwise", "optimizer": "adamw-8bit"})
    assert (cfg.fp8, cfg.optimizer) == ("rowwise", "adamw-8bit")
    (tmp_path / "run.yaml").write_text("fp8: tensorwise\noptimizer: adamw-bf16\n")
    cfg = resolve_config({}, str(tmp_path / "run.yaml"))
    assert (cfg.fp8, cfg.optimizer) == ("tensorwise", "adamw-bf16")
    assert normalize_keys(read_yaml(tmp_path / "run.yaml")) == {"fp8": "tensorwise", "optimizer": "adamw-bf16"}
    for bad in ({"fp8": "e4m3"}, {"optimizer": "sgd"}, {"fp8": True}):
        with pytest.raises(UsageError) as err:
            resolve_config(bad)
        assert err.value.code == "WS002"
    help_text = cli(tmp_path, "pretrain", "--help").stdout
    assert "--fp8" in help_text and "--optimizer" in help_text


# ------------------------------------------------------------------ refusals


def test_float8_needs_compute_capability_8_9():
    assert fp8.fp8_capable((8, 9)) and fp8.fp8_capable((9, 0)) and fp8.fp8_capable((10, 0))
    assert not fp8.fp8_capable((8, 6)) and not fp8.fp8_capable((8, 0)) and not fp8.fp8_capable(None)
    fp8.check_device("none", torch.device("cpu"))  # nothing asked, nothing refused
    with pytest.raises(Fp8DeviceError) as err:
        fp8.check_device("tensorwise", torch.device("cpu"))
    assert err.value.code == "WS220" and err.value.exit_code == 2 and "compute capability 8.9" in str(err.value)


def test_dimensions_not_multiples_of_16_are_named_from_the_real_modules():
    with torch.device("meta"):
        ok = CausalLM(get_preset("llama-tiny"))
        smol = CausalLM(get_preset("smollm2-135m"))
        odd = CausalLM(get_preset("llama-tiny").replace(hidden_size=72, num_heads=4, num_kv_heads=2,
                                                        head_dim=18, intermediate_size=200))
    assert fp8.misaligned(ok, 32) == [] and fp8.misaligned(smol, 2048) == []
    bad = fp8.misaligned(odd, 2048)
    assert "model.layers.0.self_attn.q_proj (72 -> 72)" in bad
    assert "model.layers.0.self_attn.k_proj (72 -> 36)" in bad and "model.layers.0.mlp.down_proj (200 -> 72)" in bad
    assert not any("layers.1" in b for b in bad)  # one entry per shape
    assert not any("lm_head" in b or "embed" in b for b in bad)  # the head and embedding stay bf16
    assert fp8.misaligned(ok, 100) == ["--seq-len 100"]
    with pytest.raises(Fp8ShapeError) as err:
        fp8.check_shapes("rowwise", odd, 2048)
    assert err.value.code == "WS221" and "multiple of 16" in str(err.value)
    fp8.check_shapes("none", odd, 100)


def test_cpu_is_refused_before_any_data_is_read(tmp_path, corpus):
    p = cli(tmp_path, *tiny(corpus, tmp_path / "cache", tmp_path / "run", "--device", "cpu", "--fp8", "tensorwise"),
            check=False)
    assert p.returncode == 2 and "[WS220]" in p.stderr and "Traceback" not in p.stderr, p.stderr
    assert not (tmp_path / "run").exists() and not (tmp_path / "cache").exists()


_NO_TORCHAO = "import sys; sys.modules['torchao'] = None; from warmstart.cli import main; main()"


@pytest.mark.parametrize("flag", [["--fp8", "tensorwise"], ["--optimizer", "adamw-8bit"]])
def test_torchao_missing_is_named_with_the_install_line(tmp_path, corpus, flag):
    args = tiny(corpus, tmp_path / "cache", tmp_path / "run", *flag)
    e = {**os.environ, **EMULATE}
    e.pop("WARMSTART_DEBUG", None)
    p = subprocess.run([sys.executable, "-c", _NO_TORCHAO, *map(str, args)], capture_output=True, text=True, env=e,
                       timeout=120)
    assert p.returncode == 2 and "[WS002]" in p.stderr and "pip install 'warmstart[fp8]'" in p.stderr, p.stderr
    assert f"{' '.join(flag)} needs torchao" in p.stderr and not (tmp_path / "run").exists()


# ------------------------------------------------------------------ a compute choice, never a storage one


def test_the_conversion_keeps_the_parameters_and_evaluation_runs_in_high_precision():
    torch.manual_seed(0)
    model = CausalLM(get_preset("llama-tiny"))
    model.reset_parameters(0)
    ref = CausalLM(get_preset("llama-tiny"))
    ref.load_state_dict(model.state_dict())
    before = dict(model.named_parameters())
    fp8.convert_blocks(model, "tensorwise", torch.device("cpu"))
    assert {n: p for n, p in model.named_parameters()} == before  # the very Parameters: names, shapes, dtypes
    kinds = {type(m).__name__ for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)}
    assert kinds == {"Float8Linear", "Linear"} and type(model.lm_head).__name__ == "Linear"
    assert all(type(m).__name__ == "Float8Linear" for _, m in fp8.block_linears(model))
    x = torch.randint(0, 512, (2, 32))
    with torch.no_grad():
        want = ref.loss(x[:, :-1], x[:, 1:])
        assert model.loss(x[:, :-1], x[:, 1:]) != want  # float8 casts in the forward
        with fp8.high_precision(model):
            assert torch.equal(model.loss(x[:, :-1], x[:, 1:]), want)
        assert model.loss(x[:, :-1], x[:, 1:]) != want  # and back to float8 after


def test_fp8_writes_the_same_checkpoint_and_resumes_with_and_without_it(tmp_path, corpus):
    cache = tmp_path / "cache"
    cli(tmp_path, *tiny(corpus, cache, tmp_path / "bf", "--max-steps", 4), env=EMULATE)
    cli(tmp_path, *tiny(corpus, cache, tmp_path / "f8", "--max-steps", 4, "--fp8", "tensorwise"), env=EMULATE)
    a, b = tmp_path / "bf" / "checkpoints" / "step-000004", tmp_path / "f8" / "checkpoints" / "step-000004"
    assert tensors(a / "model.safetensors") == tensors(b / "model.safetensors")
    assert {n: v for n, v in tensors(a / "model.safetensors").items() if "proj" in n}  # block weights, fp32
    assert json.loads((a / "config.json").read_text()) == json.loads((b / "config.json").read_text())
    assert tensors(a / "trainer_state" / "optimizer.safetensors") == \
        tensors(b / "trainer_state" / "optimizer.safetensors")
    val = [[r["val_loss"] for r in map(json.loads, (tmp_path / n / "metrics.jsonl").read_text().splitlines())
            if r.get("val_loss") is not None] for n in ("bf", "f8")]
    assert val[0][0] == val[1][0]  # step 0: the same weights, evaluated without float8
    la, lb = losses(tmp_path / "bf"), losses(tmp_path / "f8")
    assert la[1] != lb[1] and abs(la[4] - lb[4]) < 0.02 * la[4], (la, lb)  # float8 casts ran, and stayed close
    for run, flag in ((tmp_path / "f8", "none"), (tmp_path / "bf", "tensorwise")):
        shutil.rmtree(run / "checkpoints" / "step-000004")
        (run / "checkpoints" / "latest").write_text("step-000002\n")
        cli(tmp_path, "pretrain", "--resume", run, "--max-steps", 4, "--fp8", flag, "--quiet", env=EMULATE)
        assert (run / "checkpoints" / "latest").read_text().strip() == "step-000004"
        assert f"fp8: {flag}" in (run / "config.yaml").read_text()
    # bf16 steps 3-4 after an fp8 half (and the reverse) stay within the gap between the two runs
    assert abs(losses(tmp_path / "f8")[4] - la[4]) < 0.02 * la[4]


def test_fsdp2_on_two_ranks_all_gathers_float8_and_checkpoints_plain_tensors(tmp_path, corpus):
    assert fp8.float8_all_gather("tensorwise", "fsdp", 2) and not fp8.float8_all_gather("tensorwise", "fsdp", 1)
    assert not fp8.float8_all_gather("rowwise", "fsdp", 2) and not fp8.float8_all_gather("tensorwise", "ddp", 2)
    run = tmp_path / "fsdp"
    cli(tmp_path, *tiny(corpus, tmp_path / "cache", run, "--max-steps", 2, "--fp8", "tensorwise", "--parallel", "fsdp",
                        "--nproc-per-node", 2, "--batch-size", 2), env=EMULATE, timeout=400)
    ck = run / "checkpoints" / "step-000002"
    assert (ck / "trainer_state" / "optimizer").is_dir()
    assert {dt for dt, _ in tensors(ck / "model.safetensors").values()} == {"F32"}
    cli(tmp_path, "pretrain", "--resume", run, "--max-steps", 3, "--fp8", "none", "--parallel", "none", "--quiet",
        env=EMULATE)
    assert sorted(losses(run)) == [1, 2, 3]
