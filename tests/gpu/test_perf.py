"""CUDA: the fused LM head + loss (compiled chunk arithmetic) and the compiled blocks, against the plain paths.

Marked ``gpu``: skipped where CUDA is absent. ``python -m pytest -q -m gpu tests/gpu/test_perf.py``.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from warmstart.arch import CausalLM, get_preset
from warmstart.arch import loss as loss_mod
from warmstart.arch.loss import linear_cross_entropy
from warmstart.train.compile import compile_blocks
from warmstart.train.perf import peak_flops

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


def _grads(fn, h, w, t):
    h.grad = w.grad = None
    out = fn(h, w, t)
    out.backward()
    return out.detach(), h.grad.clone(), w.grad.clone()


@pytest.mark.parametrize("kernel", ["triton", "inductor"])
@pytest.mark.parametrize("autocast", [False, True], ids=["fp32", "bf16-autocast"])
def test_fused_loss_on_cuda_matches_cross_entropy(monkeypatch, autocast, kernel):
    torch.backends.cuda.matmul.allow_tf32 = False
    monkeypatch.setitem(loss_mod.KERNEL, "cuda", kernel)
    monkeypatch.setitem(loss_mod.CHUNK_ELEMENTS, "cuda", 300 * 1000)  # 1000 rows a chunk: 4 chunks, the last short
    g = torch.Generator(device="cuda").manual_seed(0)
    h = (torch.randn(3500, 64, device="cuda", generator=g) * 3).requires_grad_()  # logits of a few units
    w = (torch.randn(300, 64, device="cuda", generator=g) * 0.2).requires_grad_()
    t = torch.randint(0, 300, (3500,), device="cuda", generator=g)
    t[::7] = -100

    def ref(h, w, t):
        return F.cross_entropy(F.linear(h, w).float(), t, ignore_index=-100)

    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=autocast):
        want = _grads(ref, h, w, t)
        got = _grads(linear_cross_entropy, h, w, t)
    # fp32: the same numbers; bf16: the chunked matmuls may round a few logits the other way
    assert abs(got[0].item() - want[0].item()) <= (1e-4 if autocast else 1e-5) * abs(want[0].item())
    tol = 1e-2 if autocast else 1e-5
    for a, b in zip(got[1:], want[1:]):
        assert ((a - b).norm() / b.norm()).item() < tol


@pytest.mark.parametrize("act_ckpt", [False, True], ids=["plain", "activation-checkpointing"])
def test_compiled_blocks_match_eager_on_cuda(act_ckpt):
    torch.backends.cuda.matmul.allow_tf32 = False
    cfg = get_preset("qwen2-tiny").replace(num_layers=3)
    eager = CausalLM(cfg)
    eager.reset_parameters(0)
    eager = eager.cuda()
    compiled = copy.deepcopy(eager)
    compiled.activation_checkpointing = act_ckpt
    compile_blocks(compiled)
    ids = torch.randint(0, cfg.vocab_size, (2, 65), device="cuda")
    a = eager.loss(ids[:, :-1], ids[:, 1:])
    b = compiled.loss(ids[:, :-1], ids[:, 1:])
    a.backward()
    b.backward()
    assert abs(a.item() - b.item()) <= 1e-5
    for (n, p), q in zip(eager.named_parameters(), compiled.parameters()):
        assert torch.allclose(p.grad, q.grad, rtol=1e-3, atol=1e-6), n


def test_the_h100_peak_is_known():
    peak = peak_flops("cuda")
    if "H100" in torch.cuda.get_device_name():
        assert peak is not None and peak[0] >= 756e12
