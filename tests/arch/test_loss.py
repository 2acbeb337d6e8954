"""The fused LM head + cross-entropy against F.cross_entropy on the full logits: values and gradients."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from warmstart.arch import CausalLM, get_preset
from warmstart.arch import loss as loss_mod
from warmstart.arch.loss import chunk_rows, linear_cross_entropy


def _inputs(n=37, d=24, v=101, seed=0, ignore=()):
    g = torch.Generator().manual_seed(seed)
    h = torch.randn(n, d, generator=g, dtype=torch.float64).float().requires_grad_()
    w = (torch.randn(v, d, generator=g) * 0.3).requires_grad_()
    t = torch.randint(0, v, (n,), generator=g)
    for i in ignore:
        t[i] = -100
    return h, w, t


def _reference(h, w, t, reduction="mean"):
    return F.cross_entropy((h @ w.t()).float(), t, ignore_index=-100, reduction=reduction)


def _grads(fn, h, w, t, **kw):
    h.grad = w.grad = None
    out = fn(h, w, t, **kw)
    out.backward()
    return out.detach(), h.grad.clone(), w.grad.clone()


@pytest.fixture(params=[1, 5, 1000], ids=["rows1", "rows5", "one-chunk"])
def chunking(request, monkeypatch):
    """Chunks of 1 row, of 5 rows (the last one shorter) and one chunk for everything."""
    monkeypatch.setitem(loss_mod.CHUNK_ELEMENTS, "cpu", 101 * request.param)
    return request.param


@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("ignore", [(), (0, 3, 4, 36)], ids=["all-counted", "ignore_index"])
def test_values_and_gradients_match_cross_entropy(chunking, reduction, ignore):
    h, w, t = _inputs(ignore=ignore, seed=len(ignore) + chunking)
    ref = _grads(_reference, h, w, t, reduction=reduction)
    out = _grads(linear_cross_entropy, h, w, t, reduction=reduction)
    for a, b, what in zip(out, ref, ("loss", "d hidden", "d weight")):
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-6), (what, (a - b).abs().max())
    assert (h.grad[list(ignore)] == 0).all()


def test_chunks_cover_every_row_once(monkeypatch):
    monkeypatch.setitem(loss_mod.CHUNK_ELEMENTS, "cpu", 7 * 101)
    assert chunk_rows(37, 101, torch.device("cpu")) == 7
    h, w, t = _inputs()
    # poison: every row of d hidden must be written (a skipped chunk would leave garbage or zeros)
    out = _grads(linear_cross_entropy, h, w, t)
    assert torch.isfinite(out[1]).all() and (out[1].abs().sum(1) > 0).all()


def test_every_target_ignored_is_nan_like_cross_entropy():
    h, w, t = _inputs(n=4)
    t[:] = -100
    out = linear_cross_entropy(h, w, t)
    assert torch.isnan(out) and torch.isnan(_reference(h, w, t))
    out.backward()
    assert (h.grad == 0).all() and (w.grad == 0).all()


def test_no_grad_gives_the_value_only():
    h, w, t = _inputs()
    with torch.no_grad():
        out = linear_cross_entropy(h, w, t)
    assert not out.requires_grad and torch.allclose(out, _reference(h, w, t), rtol=1e-6)


def test_no_grad_computes_no_gradient_even_for_parameters_that_require_one(monkeypatch):
    """Evaluation under no_grad (qa's probe loss, the step-0 gate) must not pay for the weight gradient."""
    from warmstart.arch import loss as loss_mod

    calls = []
    real = loss_mod._accumulate
    monkeypatch.setattr(loss_mod, "_accumulate", lambda *a: (calls.append(1), real(*a)))
    h, w, t = _inputs()
    with torch.no_grad():
        quiet = linear_cross_entropy(h, w, t)
    assert calls == [] and h.requires_grad and w.requires_grad
    loud = linear_cross_entropy(h, w, t)
    assert calls and torch.equal(quiet, loud.detach())


def test_upstream_gradient_scales_both_gradients():
    h, w, t = _inputs()
    (3.0 * _reference(h, w, t)).backward()
    ref = h.grad.clone(), w.grad.clone()
    h.grad = w.grad = None
    (3.0 * linear_cross_entropy(h, w, t)).backward()
    assert torch.allclose(h.grad, ref[0], rtol=1e-5, atol=1e-7) and torch.allclose(w.grad, ref[1], rtol=1e-5, atol=1e-7)


def test_bf16_autocast_rounds_logits_like_nn_linear():
    """Under autocast the head runs in bf16 and the softmax in fp32, as lm_head + .float() does."""
    h, w, t = _inputs(n=64, d=32, v=300)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ref = _grads(lambda h, w, t: F.cross_entropy(F.linear(h, w).float(), t), h, w, t)
        out = _grads(linear_cross_entropy, h, w, t)
    assert out[1].dtype == torch.float32 and out[2].dtype == torch.float32
    assert torch.allclose(out[0], ref[0], rtol=1e-5)
    for a, b in zip(out[1:], ref[1:]):
        assert ((a - b).norm() / b.norm()).item() < 1e-2


@pytest.mark.parametrize("preset", ["llama-tiny", "qwen2-tiny"])
@pytest.mark.parametrize("tied", [True, False])
def test_model_loss_matches_logits_cross_entropy(preset, tied):
    """CausalLM.loss (fused) against cross-entropy on forward()'s logits: value and every gradient."""
    cfg = get_preset(preset).replace(tie_word_embeddings=tied)
    model = CausalLM(cfg)
    model.reset_parameters(1)
    ids = torch.randint(0, cfg.vocab_size, (3, 17), generator=torch.Generator().manual_seed(2))
    x, y = ids[:, :-1], ids[:, 1:].clone()
    y[0, :5] = -100

    logits = model(x)
    ref = F.cross_entropy(logits.reshape(-1, logits.size(-1)).float(), y.reshape(-1), ignore_index=-100)
    ref.backward()
    ref_grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad(set_to_none=True)
    out = model.loss(x, y)
    out.backward()
    assert abs(out.item() - ref.item()) <= 1e-5
    assert (model.lm_head.weight is model.model.embed_tokens.weight) == tied
    for n, p in model.named_parameters():
        assert torch.allclose(p.grad, ref_grads[n], rtol=1e-4, atol=1e-6), n


def test_cpu_logits_buffer_is_kept_between_calls_and_grows_when_needed():
    """On CPU every chunk's logits go into one buffer the thread keeps (no fresh allocation per call); values and
    gradients stay the reference's across calls of other sizes that reuse or grow it."""
    sizes = [(37, 101), (16, 101), (64, 300)]  # smaller: same buffer; larger: a new, bigger one
    pointers = []
    for n, v in sizes:
        h, w, t = _inputs(n=n, v=v)
        ref = _grads(_reference, h, w, t)
        out = _grads(linear_cross_entropy, h, w, t)
        for a, b in zip(out, ref):
            assert torch.allclose(a, b, rtol=1e-5, atol=1e-7)
        buf = loss_mod._workspace.buf
        pointers.append((buf.data_ptr(), buf.numel()))
    assert pointers[1] == pointers[0] and pointers[2][1] >= 64 * 300


def test_loss_runs_outside_compiled_graphs_and_importing_it_leaves_dynamo_out():
    """Under torch.compile the fused loss is called out of the graph (as ``torch.compiler.disable`` would), the
    same value and gradients as eager; yet importing warmstart's commands does not import torch._dynamo."""
    import subprocess
    import sys

    code = "import sys; from warmstart.cli import _register; _register(); print('torch._dynamo' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"

    import torch._dynamo

    model = CausalLM(get_preset("llama-tiny"))
    model.reset_parameters(0)
    ids = torch.randint(0, model.cfg.vocab_size, (2, 17), generator=torch.Generator().manual_seed(0))
    x, y = ids[:, :-1], ids[:, 1:]
    ref = model.loss(x, y)
    ref.backward()
    ref_grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad(set_to_none=True)
    torch._dynamo.reset()
    got = torch.compile(model.loss, backend="eager")(x, y)
    got.backward()
    assert torch.equal(got, ref)
    assert all(torch.allclose(p.grad, g, rtol=1e-6, atol=1e-8) for p, g in zip(model.parameters(), ref_grads))
    torch._dynamo.reset()
    with pytest.raises(torch._dynamo.exc.Unsupported, match="skip|Skip"):  # fullgraph: the call stays out
        torch.compile(model.loss, backend="eager", fullgraph=True)(x, y)
