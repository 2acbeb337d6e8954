"""Evaluation: mean next-token loss, over a dataset's fixed validation windows or over a token list;
the extra validation sets of a run (``--eval-data NAME=PATH``) and the change of their loss since step 0.

Both losses sum per-token cross-entropy in float64 and divide once, so the result does not depend
on how the windows are batched.
"""

from __future__ import annotations

import contextlib
import math
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from warmstart.errors import UntrainedInitError, UsageError

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


def load_eval_sets(cfg, tokenizer, say: Callable[[str], None]) -> dict[str, Any]:
    """``--eval-data``: ``{name: TokenDataset}``, each set tokenized whole with the run's tokenizer and cached."""
    from warmstart.data import build_eval_set

    sets = {}
    for name, path in cfg.eval_sets():
        ds = build_eval_set(path, tokenizer=tokenizer, settings=cfg.data_settings(), log=say)
        n = len(ds.val_window_indices(cfg.eval_tokens))
        say(f"eval set {name}: {ds.meta.get('val_docs', '?')} documents, {len(ds.val):,} tokens; "
            f"evaluated on {n} windows of {ds.seq_len}")
        sets[name] = ds
    return sets


def evaluate_sets(evaluate_fn: Callable[..., float], sets: dict[str, Any], eval_tokens: int, batch_size: int,
                  device: torch.device, amp: AmpFactory = contextlib.nullcontext) -> dict[str, float]:
    """``{name: loss}`` of every extra validation set, each on its fixed windows, through ``evaluate_fn(ds,
    eval_tokens, batch_size, device, amp)`` (the run's ``Parallel.evaluate``: every rank, all-reduced)."""
    return {name: evaluate_fn(ds, eval_tokens, batch_size, device, amp) for name, ds in sets.items()}


def eval_metrics(losses: dict[str, float]) -> dict[str, float]:
    """The ``metrics.jsonl`` / TensorBoard keys of the extra sets' losses: ``val/NAME``."""
    return {f"val/{name}": loss for name, loss in losses.items()}


def step0_eval_lines(losses: dict[str, float], *, random_init_loss: float, warm=None,
                     allow_untrained_init: bool = False) -> list[str]:
    """The step-0 line of each extra set; for a warm start gate 7's random-init refusal applies to each
    (the comparison with the checkpoint's recorded loss is the held-out split's alone)."""
    lines = []
    for name, loss in losses.items():
        if warm is not None:
            from warmstart.init import step0_gate

            try:
                step0_gate(warm, val_loss=loss, data_fingerprint=None, allow_untrained_init=allow_untrained_init)
            except UntrainedInitError as err:
                raise UntrainedInitError(f"--eval-data {name}: {err.found}", why=err.why, fix=err.fix,
                                         path=err.path) from None
        lines.append(f"step 0 val/{name} loss {loss:.4f} (random init ≈ ln V = {random_init_loss:.4f})")
    return lines


def forgetting(first: dict[str, float], latest: dict[str, float]) -> dict[str, dict]:
    """``{name: {"step0", "final", "change"}}``; ``change = final - step0``: a rise on a retain set is
    forgetting, a fall on a target set is learning (None when step 0 was not evaluated)."""
    out = {}
    for name, final in latest.items():
        step0 = first.get(name)
        out[name] = {"step0": step0, "final": final, "change": None if step0 is None else final - step0}
    return out


def forgetting_lines(report: dict[str, dict] | None) -> list[str]:
    """One summary line per extra validation set."""
    def f(x: float | None) -> str:
        return "n/a" if x is None or not math.isfinite(x) else f"{x:.4f}"

    lines = []
    for name, r in (report or {}).items():
        change = r["change"]
        word = "higher" if change and change > 0 else "lower" if change and change < 0 else "unchanged"
        trend = "" if change is None else f" ({change:+.4f}, {word})"
        lines.append(f"val/{name}: step 0 {f(r['step0'])} -> final {f(r['final'])}{trend}")
    return lines


__all__ = ["eval_metrics", "evaluate", "evaluate_sets", "evaluate_tokens", "forgetting", "forgetting_lines", "load_eval_sets",
           "step0_eval_lines", "to_device"]
