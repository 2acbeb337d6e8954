"""``--optimizer adamw-bf16 | adamw-8bit`` on CPU: the moments are held small (bf16 / 8-bit codes), saved as held
and restored exactly (the next update is bit-identical), a run with each optimizer writes the same HF directory,
an 8-bit run resumes exactly from its checkpoint files, and a resume with another optimizer or an 8-bit state
under FSDP2 is refused. torchao's per-parameter update runs eagerly here (``torch.compiler.set_stance
("force_eager")``, ``TORCHDYNAMO_DISABLE=1`` for the subprocesses): the same function, not compiled by inductor's C++
backend, which takes a minute on two cores. The compiled CUDA path: tests/gpu/test_fp8.py."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from _ckpt_tools import ws
from _corpus import make_corpus
from warmstart.arch import CausalLM, get_preset
from warmstart.errors import OptimizerPlacementError
from warmstart.train import lowbit
from warmstart.train.checkpoints import load_optimizer, optimizer_tensors
from warmstart.train.optim import build_optimizer, set_lr

pytest.importorskip("torchao")
EAGER = {"TORCHDYNAMO_DISABLE": "1"}


def cli(cwd: Path, *args, **kw):
    return ws(*map(str, args), cwd=cwd, env=EAGER, **kw)


CUDA = pytest.param("cuda", marks=[pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(),
                                                                        reason="needs a CUDA device")])


def _steps(model, opt, batches) -> None:
    eager = next(model.parameters()).device.type == "cpu"  # CUDA: torchao's update compiled, as pretrain runs it
    with torch.compiler.set_stance("force_eager" if eager else "default"):
        for x in batches:
            x = x.to(next(model.parameters()).device)
            model.loss(x[:, :-1], x[:, 1:]).backward()
            opt.step()
            opt.zero_grad(set_to_none=True)


@pytest.mark.parametrize("device", ["cpu", CUDA])
@pytest.mark.parametrize("kind", ["adamw-bf16", "adamw-8bit"])
def test_the_state_is_held_small_saved_as_held_and_the_next_update_is_identical(tmp_path, kind, device):
    torch.manual_seed(0)
    batches = [torch.randint(0, 512, (2, 33)) for _ in range(3)]
    model = CausalLM(get_preset("llama-tiny"))
    model.reset_parameters(0)
    model.to(device)
    twin = CausalLM(get_preset("llama-tiny")).to(device)
    twin.load_state_dict(model.state_dict())
    opt = build_optimizer(model, lr=1e-2, weight_decay=0.1, betas=(0.9, 0.95), kind=kind)
    _steps(model, opt, batches[:2])
    up = opt.state[model.model.layers[0].mlp.up_proj.weight]  # 10240 values: a small-state tensor
    norm = opt.state[model.model.layers[0].input_layernorm.weight]  # 64 values: fp32 moments (torchao's rule)
    if kind == "adamw-bf16":
        assert up["exp_avg"].dtype == up["exp_avg_sq"].dtype == torch.bfloat16
    else:
        assert up["exp_avg"].codes.dtype == torch.uint8 and up["exp_avg"].scale.numel() == 10240 // 256
    assert norm["exp_avg"].dtype == torch.float32 and type(norm["exp_avg"]) is torch.Tensor

    tensors, index = optimizer_tensors(opt)
    save_file(tensors, str(tmp_path / "opt.safetensors"))
    assert index["class"] == lowbit.CLASS_NAMES[kind]
    json.dumps(index)  # the learning rate (a tensor in torchao's groups) is a number in optimizer.json
    restored = build_optimizer(twin, lr=1e-2, weight_decay=0.1, betas=(0.9, 0.95), kind=kind)
    twin.load_state_dict(model.state_dict())
    load_optimizer(restored, load_file(str(tmp_path / "opt.safetensors")), json.loads(json.dumps(index)))
    back = restored.state[twin.model.layers[0].mlp.up_proj.weight]
    for k in ("exp_avg", "exp_avg_sq"):
        assert type(back[k]) is type(up[k]) and back[k].dtype == up[k].dtype  # not cast to fp32 by the load
        assert back[k].device.type == device
        a, b = (up[k], back[k]) if kind == "adamw-bf16" else (up[k].codes, back[k].codes)
        assert torch.equal(a, b)
    assert torch.is_tensor(restored.param_groups[0]["lr"])  # torchao's update takes the rate as a tensor
    set_lr(opt, 5e-3)
    set_lr(restored, 5e-3)
    x = batches[2].to(device)
    model.loss(x[:, :-1], x[:, 1:]).backward()  # one backward: the same gradients for both, on any device
    for p, q in zip(model.parameters(), twin.parameters()):
        q.grad = p.grad.clone()
    with torch.compiler.set_stance("force_eager" if device == "cpu" else "default"):
        opt.step()
        restored.step()
    for (name, a), b in zip(model.state_dict().items(), twin.state_dict().values()):
        assert torch.equal(a, b), name


def test_placement_of_the_8bit_state():
    lowbit.check_placement("adamw-8bit", "none", False)
    lowbit.check_placement("adamw-bf16", "fsdp", True)
    for mode, offload in (("fsdp", False), ("ddp", False), ("fsdp", True)):
        with pytest.raises(OptimizerPlacementError) as err:
            lowbit.check_placement("adamw-8bit", mode, offload)
        assert err.value.code == "WS222" and "adamw-bf16" in err.value.fix


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("lowbit")
    corpus = make_corpus(root / "corpus")
    out = {}
    for kind, steps in (("adamw", 2), ("adamw-bf16", 2), ("adamw-8bit", 4)):
        out[kind] = root / kind
        cli(root, "pretrain", "--data", corpus, "--preset", "llama-tiny", "--vocab-size", 400, "--seq-len", 32,
           "--batch-size", 4, "--eval-tokens", 128, "--eval-every", 2, "--save-every", 2, "--log-every", 1,
           "--lr", "3e-3", "--cache-dir", root / "cache", "--out", out[kind], "--quiet", "--max-steps", steps,
           "--optimizer", kind)
    return out


def _header(path: Path) -> dict:
    with safe_open(str(path), "pt") as f:
        return {k: (str(f.get_slice(k).get_dtype()), f.get_slice(k).get_shape()) for k in f.keys()}


def test_each_optimizer_writes_the_same_hf_directory(runs):
    dirs = [runs[k] / "checkpoints" / "step-000002" for k in ("adamw", "adamw-bf16", "adamw-8bit")]
    hf = [sorted(p.name for p in d.iterdir() if p.is_file()) for d in dirs]
    assert hf[0] == hf[1] == hf[2] and "model.safetensors" in hf[0]
    assert _header(dirs[0] / "model.safetensors") == _header(dirs[1] / "model.safetensors") == \
        _header(dirs[2] / "model.safetensors")
    for name in ("config.json", "tokenizer.json"):
        assert (dirs[0] / name).read_text() == (dirs[1] / name).read_text() == (dirs[2] / name).read_text()
    opt = [_header(d / "trainer_state" / "optimizer.safetensors") for d in dirs]
    big = "model.layers.0.mlp.up_proj.weight::exp_avg"
    assert (opt[0][big][0], opt[1][big][0], opt[2][big + ".codes"][0]) == ("F32", "BF16", "U8")


def test_an_8bit_run_resumes_exactly_and_another_optimizer_is_refused(runs, tmp_path):
    run = tmp_path / "again"
    shutil.copytree(runs["adamw-8bit"], run)
    shutil.rmtree(run / "checkpoints" / "step-000004")
    (run / "checkpoints" / "latest").write_text("step-000002\n")
    cli(tmp_path, "pretrain", "--resume", run, "--max-steps", 4, "--quiet")
    read = lambda r: {x["step"]: x["loss"] for x in map(json.loads, (r / "metrics.jsonl").read_text().splitlines())
                      if "loss" in x}
    assert read(run) == read(runs["adamw-8bit"])  # bit-identical losses after the resume
    other = tmp_path / "other"
    shutil.copytree(runs["adamw"], other)
    p = cli(tmp_path, "pretrain", "--resume", other, "--max-steps", 3, "--optimizer", "adamw-8bit", "--quiet",
            check=False)
    assert p.returncode == 2 and "[WS203]" in p.stderr and "--optimizer adamw)" in p.stderr, p.stderr
    p = cli(tmp_path, "pretrain", "--resume", other, "--max-steps", 3, "--optimizer", "adamw-8bit", "--parallel",
            "fsdp", "--quiet", check=False)
    assert p.returncode == 2 and "[WS222]" in p.stderr, p.stderr
