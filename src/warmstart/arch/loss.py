"""Next-token cross-entropy fused with the LM head, without the [N, V] logits.

``linear_cross_entropy(hidden, weight, targets)`` equals
``F.cross_entropy((hidden @ weight.T).float(), targets)`` (the logits rounded to the matmul's dtype,
bf16 under autocast, then the softmax in fp32), forward and backward, but holds the logits of one
chunk of rows at a time. The gradients are computed in the forward, chunk by chunk (the logits'
gradient is ``softmax - one_hot`` divided by the number of counted targets), and kept until
backward: three matmuls of the head per step, as without fusion, and no fp32 copy of B x T x V.
With a large vocabulary (Qwen's 152k) that copy is the largest activation.

On CUDA the per-chunk softmax arithmetic is one Triton kernel (``_ce_triton.py``: the logits read
twice, their gradient written over them); elsewhere it runs eagerly, in place. The weight's
gradient is accumulated in fp32 by the matmul itself (cuBLAS with an fp32 output), not by a
separate pass over V x d per chunk.
"""

from __future__ import annotations

import threading
from functools import lru_cache

import torch

# Rows per chunk: about this many logits at a time (CUDA: 2^28 bf16 logits, their gradient written over
# them; CPU: 2^25 fp32 logits, since smaller chunks make the head's matmuls too thin: the comparison is
# `python bench/cpu_loss_chunks.py`).
CHUNK_ELEMENTS = {"cuda": 2**28, "cpu": 2**25}
# The per-chunk arithmetic by device type: "triton" (CUDA only: the kernel), "inductor" (torch.compile of
# _chunk_math), "eager".
KERNEL = {"cuda": "triton", "cpu": "eager"}


def _chunk_math(logits: torch.Tensor, targets: torch.Tensor, ignore_index: int, scale: torch.Tensor,
                grad: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(summed loss of the counted rows, d loss / d logits * scale in the logits' dtype, or None).

    ``logits`` is a temporary of the caller's: fp32 logits are overwritten by their gradient.
    """
    x = logits.float()
    valid = targets != ignore_index
    target = torch.where(valid, targets, 0)[:, None]
    picked = x.gather(1, target).squeeze(1)
    top = x.amax(dim=-1, keepdim=True)
    e = x.sub_(top).exp_() if x is logits else (x - top).exp_()  # exp(x - max), in place when fp32
    total = e.sum(dim=-1)
    lse = top.squeeze(1) + total.log()
    loss = torch.where(valid, lse - picked, 0.0).sum()
    if not grad:
        return loss, None
    g = e.mul_((torch.where(valid, scale, 0.0) / total)[:, None])  # softmax * scale
    g.scatter_add_(1, target, -torch.where(valid, scale, 0.0)[:, None].expand_as(target))
    return loss, g.to(logits.dtype)


@lru_cache(maxsize=None)
def _compiled_chunk_math():
    return torch.compile(_chunk_math, dynamic=True)


def _chunk_fn(device: torch.device):
    kernel = KERNEL.get(device.type, "eager")
    if kernel == "eager":
        return _chunk_math
    if kernel == "inductor":
        return _compiled_chunk_math()
    from warmstart.arch._ce_triton import ce_chunk

    return ce_chunk


_workspace = threading.local()


def _logits(hc: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """``hc @ w.T``. On CPU into a buffer this thread keeps between calls (at most ``CHUNK_ELEMENTS``
    logits): a fresh allocation that large is mapped from the OS and its pages faulted in on first
    touch on every call. CUDA's allocator caches."""
    if hc.is_cuda:
        return hc @ w.t()
    n = hc.shape[0] * w.shape[0]
    buf = getattr(_workspace, "buf", None)
    if buf is None or buf.numel() < n or buf.dtype != hc.dtype or buf.device != hc.device:
        buf = _workspace.buf = torch.empty(n, dtype=hc.dtype, device=hc.device)
    return torch.mm(hc, w.t(), out=buf[:n].view(hc.shape[0], w.shape[0]))


@lru_cache(maxsize=None)
def _fp32_output_matmul(device: torch.device) -> bool:
    """Can this build write a bf16 x bf16 matmul straight into fp32 (``addmm(..., out_dtype=)``)?"""
    acc = torch.zeros(1, 1, device=device)
    one = torch.ones(1, 1, device=device, dtype=torch.bfloat16)
    try:
        torch.addmm(acc, one, one, out_dtype=torch.float32, out=acc)
    except (RuntimeError, TypeError, NotImplementedError):
        return False
    return acc.item() == 1.0


def _accumulate(acc: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> None:
    """``acc += a @ b`` in ``acc``'s dtype, inside the matmul where it can be."""
    if a.dtype == acc.dtype:
        acc.addmm_(a, b)
    elif acc.is_cuda and _fp32_output_matmul(acc.device):
        torch.addmm(acc, a, b, out_dtype=acc.dtype, out=acc)
    else:
        acc += a @ b


def chunk_rows(n_rows: int, vocab: int, device: torch.device) -> int:
    """Rows per chunk: about ``CHUNK_ELEMENTS`` logits, a multiple of 128 when that large."""
    rows = max(1, CHUNK_ELEMENTS.get(device.type, CHUNK_ELEMENTS["cpu"]) // vocab)
    if rows >= 256:
        rows -= rows % 128
    return min(rows, n_rows)


class _LinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, weight, targets, ignore_index: int, dtype: torch.dtype, mean: bool, grad_on: bool):
        h, w = hidden.to(dtype), weight.to(dtype)
        # needs_input_grad follows requires_grad alone: under no_grad (evaluation) no gradient is computed
        need_h, need_w = grad_on and ctx.needs_input_grad[0], grad_on and ctx.needs_input_grad[1]
        grad = need_h or need_w
        count = (targets != ignore_index).sum()
        scale = 1.0 / count if mean else torch.ones((), device=h.device)
        grad_h = torch.empty_like(hidden) if need_h else None
        grad_w = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device) if need_w else None
        total = torch.zeros((), dtype=torch.float32, device=h.device)
        fn, rows = _chunk_fn(h.device), chunk_rows(h.shape[0], w.shape[0], h.device)
        for start in range(0, h.shape[0], rows):
            hc = h[start : start + rows]
            loss, g = fn(_logits(hc, w), targets[start : start + rows], ignore_index, scale, grad)
            total += loss
            if need_h:
                grad_h[start : start + rows] = g @ w
            if need_w:
                _accumulate(grad_w, g.t(), hc)
        ctx.save_for_backward(grad_h, grad_w)
        ctx.weight_dtype = weight.dtype
        return total * scale

    @staticmethod
    def backward(ctx, grad_out):
        grad_h, grad_w = ctx.saved_tensors
        gh = None if grad_h is None else grad_h * grad_out.to(grad_h.dtype)
        gw = None if grad_w is None else (grad_w * grad_out).to(ctx.weight_dtype)
        return gh, gw, None, None, None, None, None


def linear_cross_entropy(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor,
                         ignore_index: int = -100, reduction: str = "mean") -> torch.Tensor:
    """Cross-entropy of ``hidden @ weight.T`` ([N, d] x [V, d]) against ``targets`` [N].

    ``reduction`` "mean" (over targets other than ``ignore_index``; NaN when there are none, as
    ``F.cross_entropy``) or "sum". Under autocast the matmul runs in the autocast dtype, as
    ``nn.Linear`` would. Always eager (a graph break under ``torch.compile``): the chunk loop
    stays a loop and the CUDA chunk arithmetic is compiled on its own.
    """
    if torch.compiler.is_compiling():
        # Traced by dynamo: out of the graph. Not a decorator: that would import torch._dynamo (slow to import)
        # with this module, so with every warmstart command.
        return torch.compiler.disable(_linear_cross_entropy)(hidden, weight, targets, ignore_index, reduction)
    return _linear_cross_entropy(hidden, weight, targets, ignore_index, reduction)


def _linear_cross_entropy(hidden, weight, targets, ignore_index: int, reduction: str) -> torch.Tensor:
    if reduction not in ("mean", "sum"):
        raise ValueError(f"reduction must be 'mean' or 'sum', not {reduction!r}")
    dev = hidden.device.type
    dtype = torch.get_autocast_dtype(dev) if torch.is_autocast_enabled(dev) else weight.dtype
    with torch.autocast(dev, enabled=False):
        return _LinearCrossEntropy.apply(hidden, weight, targets.contiguous(), ignore_index, dtype,
                                         reduction == "mean", torch.is_grad_enabled())


__all__ = ["CHUNK_ELEMENTS", "chunk_rows", "linear_cross_entropy"]
