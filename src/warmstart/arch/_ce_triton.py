"""The CUDA kernel of the fused loss: one row of logits per program, its loss and, in place, its gradient.

Two passes over the row: an online max / sum of exponentials (the log-sum-exp), then
``(softmax - one_hot) * scale`` written over the logits. The logits are read twice and written once
(6 bytes an element in bf16); ``torch.compile`` of the same arithmetic reads them three times.
Imported only on CUDA (Triton comes with PyTorch's CUDA wheels).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

BLOCK = 32768  # elements of a row per iteration: 32 warps x 32 lanes x 32 values
NUM_WARPS = 32


@triton.jit
def _ce_rows(logits_ptr, stride, targets_ptr, loss_ptr, scale_ptr, V, ignore_index,
             BLOCK: tl.constexpr, GRAD: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    base = logits_ptr + row * stride
    target = tl.load(targets_ptr + row)
    valid = target != ignore_index
    # The target's logit is read before pass 1, whose block reductions separate it from pass 2's stores.
    picked = tl.load(base + tl.where(valid, target, 0)).to(tl.float32)
    cols = tl.arange(0, BLOCK)
    m = float("-inf")
    s = 0.0
    for off in range(0, V, BLOCK):
        x = tl.load(base + off + cols, mask=off + cols < V, other=float("-inf")).to(tl.float32)
        m_new = tl.maximum(m, tl.max(x, 0))
        s = s * tl.exp(m - m_new) + tl.sum(tl.exp(x - m_new), 0)
        m = m_new
    lse = m + tl.log(s)
    tl.store(loss_ptr + row, tl.where(valid, lse - picked, 0.0))
    if GRAD:
        coef = tl.where(valid, tl.load(scale_ptr), 0.0)
        for off in range(0, V, BLOCK):
            idx = off + cols
            mask = idx < V
            x = tl.load(base + idx, mask=mask, other=0.0).to(tl.float32)
            p = tl.exp(x - lse)
            g = tl.where(idx == target, p - 1.0, p) * coef
            tl.store(base + idx, g.to(logits_ptr.dtype.element_ty), mask=mask)


def ce_chunk(logits: torch.Tensor, targets: torch.Tensor, ignore_index: int, scale: torch.Tensor,
             grad: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``_chunk_math`` of ``arch/loss.py`` on CUDA; the gradient overwrites ``logits`` (returned as it)."""
    rows, vocab = logits.shape
    assert logits.stride(1) == 1 and targets.is_contiguous()
    losses = torch.empty(rows, dtype=torch.float32, device=logits.device)
    block = min(BLOCK, triton.next_power_of_2(vocab))
    _ce_rows[(rows,)](logits, logits.stride(0), targets, losses, scale.float().reshape(1), vocab, ignore_index,
                      BLOCK=block, GRAD=grad, num_warps=min(NUM_WARPS, max(1, block // 1024)))
    return losses.sum(), (logits if grad else None)
