"""Data-quality signals of stored weights: what ``validate`` reports beside NaN/Inf, and the all-zero
weight matrix gate 5 refuses (``pretrain --init`` without ``--allow-zero-tensors``).

In the spirit of aprender's F-DATA-QUALITY checks (a validated tensor is finite, dense and not
degenerate): a tensor that is all zero; a weight matrix whose values are all one constant, whose
norm is next to nothing, or that is nearly all zeros (density at most 5.5 %); embedding rows that
are all zero (tokens with no vector, "dead" rows). A fresh model's norms (all 1, or all 0 for
Gemma's 1 + w) and biases (all 0) are constant by design, so only matrices are judged for
constancy, norm and density; every signal is a warning, the caller decides what refuses.
"""

from __future__ import annotations

import torch

NEAR_ZERO_RMS = 1e-8  # root-mean-square below this: a matrix that carries no signal
MIN_DENSITY = 0.055  # a weight matrix with at most 5.5 % non-zero values is degenerate
EMBEDDING = "model.embed_tokens.weight"


def tensor_signals(name: str, t: torch.Tensor) -> list[str]:
    """The data-quality warnings of one finite floating-point tensor (empty when it looks healthy)."""
    if not t.numel():
        return []
    nonzero = int(torch.count_nonzero(t))
    if nonzero == 0:
        return [f"{name}: all {t.numel()} values are zero"]
    if t.dim() < 2:
        return []
    f = t.float()
    out = []
    if bool((f == f.reshape(-1)[0]).all()):
        out.append(f"{name}: every value is {float(f.reshape(-1)[0]):g} (a constant matrix)")
    elif float(f.pow(2).mean().sqrt()) < NEAR_ZERO_RMS:
        out.append(f"{name}: near-zero norm (root mean square {float(f.pow(2).mean().sqrt()):.2e})")
    elif nonzero / t.numel() <= MIN_DENSITY:
        out.append(f"{name}: {t.numel() - nonzero} of its {t.numel()} values are zero (density "
                   f"{nonzero / t.numel():.4f})")
    if name == EMBEDDING:
        dead = int((f.abs().sum(dim=1) == 0).sum())
        if dead:
            out.append(f"{name}: {dead} of {t.shape[0]} embedding rows are all zero (tokens without a vector)")
    return out


def is_zero_matrix(t: torch.Tensor) -> bool:
    """A weight matrix (two or more dimensions) holding only zeros: what ``pretrain --init`` refuses."""
    return t.is_floating_point() and t.dim() >= 2 and t.numel() > 0 and not bool(t.any())


__all__ = ["EMBEDDING", "MIN_DENSITY", "NEAR_ZERO_RMS", "is_zero_matrix", "tensor_signals"]
