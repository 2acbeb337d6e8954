"""Evaluation: mean next-token loss, over a dataset's fixed validation windows or over a token list.

Both sum per-token cross-entropy in float64 and divide once, so the result does not depend on
how the windows are batched.
"""

from __future__ import annotations

import contextlib
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from warmstart.errors import UsageError

AmpFactory = Callable[[], contextlib.AbstractContextManager]


def to_device(batch: np.ndarray, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """A ``[B, T+1]`` window array -> (inputs ``[B, T]``, targets ``[B, T]``) on ``device``."""
    t = torch.from_numpy(batch)
    if device.type == "cuda":
        t = t.pin_memory().to(device, non_blocking=True)
    return t[:, :-1], t[:, 1:]


def _loss_sum(model, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    logits = model(x)
    return F.cross_entropy(logits.reshape(-1, logits.size(-1)).float(), y.reshape(-1), reduction="sum")


@torch.no_grad()
def evaluate(model, ds, eval_tokens: int, batch_size: int, device: torch.device,
             amp: AmpFactory = contextlib.nullcontext, *, dist=None) -> float:
    """Mean next-token loss over the dataset's fixed validation windows (every window has seq_len targets).

    Under several ranks (``dist``, a ``train.distributed.Dist``) each rank evaluates its own slice of
    the windows and the sums are all-reduced: every rank returns the same loss.
    """
    idx = ds.val_window_indices(eval_tokens)
    was_training = model.training
    model.eval()
    total = torch.zeros((), dtype=torch.float64, device=device)
    count = 0
    for batch in rank_batches(idx, batch_size, dist):
        x, y = to_device(ds.val_windows(idx[:1] if batch is None else batch), device)
        with amp():
            loss_sum = _loss_sum(model, x, y).double()
        if batch is not None:
            total += loss_sum
            count += y.numel()
    model.train(was_training)
    if dist is not None and dist.several:
        sums = dist.all_reduce_(torch.stack([total, torch.tensor(float(count), dtype=torch.float64, device=device)]))
        total, count = sums[0], int(sums[1].item())
    return float(total.item() / count)


def rank_batches(idx: np.ndarray, batch_size: int, dist=None) -> list[np.ndarray | None]:
    """This rank's batches of ``idx``: a contiguous slice of ``ceil(n / world)`` windows. Every rank gets
    the same number of batches (None: a forward whose loss is not counted), since a sharded model's
    forward is a collective."""
    rank, world = (dist.rank, dist.world_size) if dist is not None else (0, 1)
    per = -(-len(idx) // world)
    mine = idx[rank * per:(rank + 1) * per]
    return [mine[i:i + batch_size] if i < len(mine) else None for i in range(0, per, batch_size)]


@torch.no_grad()
def evaluate_tokens(model, token_ids: Sequence[int], *, seq_len: int, batch_size: int,
                    device: torch.device) -> tuple[float, int]:
    """Mean next-token loss over non-overlapping windows of ``seq_len`` predictions, then the remainder.

    Every token after the first is predicted exactly once. Returns ``(loss, predicted tokens)``.
    """
    ids = torch.as_tensor(token_ids, dtype=torch.long)
    n_windows = (len(ids) - 1) // seq_len
    total = torch.zeros((), dtype=torch.float64, device=device)
    count = 0
    full = ids[: n_windows * seq_len + 1]
    for start in range(0, n_windows, batch_size):
        rows = range(start, min(start + batch_size, n_windows))
        x = torch.stack([full[r * seq_len : (r + 1) * seq_len] for r in rows]).to(device)
        y = torch.stack([full[r * seq_len + 1 : (r + 1) * seq_len + 1] for r in rows]).to(device)
        total += _loss_sum(model, x, y).double()
        count += y.numel()
    rest = ids[n_windows * seq_len :]
    if len(rest) >= 2:
        total += _loss_sum(model, rest[None, :-1].to(device), rest[None, 1:].to(device)).double()
        count += len(rest) - 1
    if count == 0:
        raise UsageError("the evaluation text has fewer than 2 tokens", fix="pass more text with --data")
    return float(total.item() / count), count


__all__ = ["evaluate", "evaluate_tokens", "to_device"]
