"""One optimizer step (``train_step``), its micro-batches and the divergence guard.

The hot path makes no host-device synchronisation. On CUDA the guard runs on the device: a step
whose loss or gradient norm is not finite sets a sticky flag that the fused AdamW kernel reads as
``found_inf``, so neither that update nor any later one is applied; ``check()`` reads the flag at
the next log / eval / save point and raises ``DivergenceError`` before anything is written. On
CPU the check runs every step, before the optimizer step.

Under several ranks the step's loss is averaged over the ranks (one scalar all-reduce, no host
sync) and the gradient norm is the global one (FSDP's is a replicated DTensor, read locally), so
every rank's flag agrees; ``check`` all-reduces it anyway, so that every rank stops at the same step.
"""

from __future__ import annotations

import contextlib
import math
from pathlib import Path
from typing import Callable

import torch

from warmstart.errors import DivergenceError
from warmstart.train.distributed import Dist, announce
from warmstart.train.faults import mark_shared
from warmstart.train.evaluate import AmpFactory, to_device
from warmstart.train.state import TrainState

Batch = tuple[torch.Tensor, torch.Tensor]


class TrainBatches:
    """Micro-batches of training windows in the sampler's global order, on the device.

    Each optimizer step draws ``batch_size x grad_accum x world_size`` windows in one block of the
    global order; rank r takes its ``batch_size x grad_accum`` slice of it. The order of windows
    therefore does not depend on the world size: 2 ranks x batch B train on the windows 1 rank x
    batch 2B (or x 2 micro-batches of B) does, and the sampler's cursor, identical on every rank,
    resumes at any world size.
    """

    def __init__(self, ds, sampler, batch_size: int, device: torch.device, *, grad_accum: int = 1,
                 rank: int = 0, world_size: int = 1) -> None:
        self.ds, self.sampler, self.batch_size, self.device = ds, sampler, batch_size, device
        self.grad_accum, self.rank, self.world_size = grad_accum, rank, world_size
        self.pending: list = []

    def __call__(self) -> Batch:
        if not self.pending:
            per_rank = self.batch_size * self.grad_accum
            block = self.sampler.next_indices(per_rank * self.world_size)
            mine = block[self.rank * per_rank:(self.rank + 1) * per_rank]
            self.pending = [mine[i:i + self.batch_size] for i in range(0, per_rank, self.batch_size)]
        return to_device(self.ds.train_windows(self.pending.pop(0)), self.device)


class DivergenceGuard:
    """Refuses to apply or write anything from a step whose loss, gradient norm or val loss is not finite."""

    def __init__(self, device: torch.device, state: TrainState, *, run_dir: Path | str, lr: float,
                 warmup_steps: int, on_device: bool | None = None, dist: Dist | None = None) -> None:
        # on_device (default: on CUDA) needs a fused AdamW, whose kernel honours optimizer.found_inf
        self.on_device = device.type == "cuda" if on_device is None else on_device
        self.dist = dist if dist is not None and dist.several else None
        self.state = state
        self.run_dir, self.lr, self.warmup_steps = run_dir, lr, warmup_steps
        zero = torch.zeros((), dtype=torch.float32, device=device)
        self.bad_any, self.bad_steps, self.bad_loss, self.bad_gnorm = (zero.clone() for _ in range(4))

    def error(self, step: int, what: str) -> DivergenceError:
        """The one divergence message. Under several ranks every rank raises it at the same step:
        rank 0 prints it first, then they leave together."""
        err = self._error(step, what)
        if self.dist is not None:
            if self.dist.is_main:
                announce(err)
            self.dist.barrier()
            mark_shared(err)
        return err

    def _error(self, step: int, what: str) -> DivergenceError:
        last = self.state.last_checkpoint or "none (no checkpoint yet)"
        return DivergenceError(
            f"training diverged at step {step}: {what}",
            why=f"nothing from that step was written and the last good checkpoint is {last}",
            fix=f"lower --lr (now {self.lr:g}), lengthen --warmup-steps (now {self.warmup_steps}) or keep "
                f"--grad-clip on, then start again or --resume {self.run_dir}", path=self.run_dir)

    def observe(self, loss: torch.Tensor, gnorm: torch.Tensor, optimizer: torch.optim.Optimizer) -> None:
        """Called between clipping and ``optimizer.step()`` of update number ``state.step + 1``."""
        ok = torch.isfinite(loss) & torch.isfinite(gnorm)
        if self.on_device:
            first = (self.bad_any == 0) & ~ok
            self.bad_loss = torch.where(first, loss, self.bad_loss)
            self.bad_gnorm = torch.where(first, gnorm.float(), self.bad_gnorm)
            self.bad_any = torch.maximum(self.bad_any, (~ok).float())
            self.bad_steps += self.bad_any
            optimizer.found_inf = self.bad_any  # fused AdamW skips the update (and its step count) when > 0
        elif not bool(ok):
            raise self.error(self.state.step + 1, _not_finite(loss.item(), gnorm.item()))

    def check(self) -> None:
        """At a log / eval / save point: raise if any step since the last check diverged (a host sync)."""
        if self.on_device and self.dist is not None:
            self.dist.all_reduce_(self.bad_any, "max")
        if self.on_device and self.bad_any.item() > 0:
            first_bad = self.state.step - int(self.bad_steps.item()) + 1
            raise self.error(first_bad, _not_finite(self.bad_loss.item(), self.bad_gnorm.item()))

    def check_val(self, val_loss: float) -> None:
        if not math.isfinite(val_loss):
            raise self.error(self.state.step, f"the validation loss is {val_loss}")


def _not_finite(loss: float, gnorm: float) -> str:
    return f"loss {loss}, gradient norm {gnorm} (not finite), so its update was not applied"


def clip_value(grad_clip: float | None) -> float:
    """``--grad-clip`` as the max norm to clip to (0 or none: no clipping, the norm is still measured)."""
    return grad_clip if grad_clip and grad_clip > 0 else float("inf")


def train_step(loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], optimizer: torch.optim.Optimizer,
               next_batch: Callable[[], Batch], *, grad_accum: int, clip: float, amp: AmpFactory,
               guard: DivergenceGuard, par=None) -> tuple[torch.Tensor, torch.Tensor]:
    """``grad_accum`` micro-batches under autocast (gradients averaged), global-norm clip, the guard, the update.

    ``par`` (a ``train.parallel.Parallel``) adds what several ranks need: DDP's ``no_sync`` on all
    but the last micro-batch and the loss averaged over the ranks. Returns ``(mean loss, gradient
    norm)`` as device tensors; reading them is the caller's sync.
    """
    params = [p for g in optimizer.param_groups for p in g["params"]]
    step_loss = None
    for i in range(grad_accum):
        x, y = next_batch()
        with par.micro_batch(i == grad_accum - 1) if par is not None else contextlib.nullcontext():
            with amp():
                loss = loss_fn(x, y)
            (loss / grad_accum).backward()
        step_loss = loss.detach().float() if step_loss is None else step_loss + loss.detach().float()
    if grad_accum > 1:
        step_loss /= grad_accum
    if par is not None:
        step_loss = par.global_mean(step_loss)
    gnorm = clip_gradients(params, clip, optimizer)
    guard.observe(step_loss, gnorm, optimizer)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    if par is not None and par.after_step is not None:
        par.after_step()
    return step_loss, gnorm


def clip_gradients(params: list[torch.Tensor], clip: float, optimizer: torch.optim.Optimizer) -> torch.Tensor:
    """The global gradient norm, and the gradients clipped to ``clip`` (``clip_grad_norm_``'s rule).

    Under a fused AdamW whose gradients are plain tensors (one GPU, DDP) the scaling is not a pass of
    its own over every gradient: the optimizer kernel divides each gradient by ``grad_scale`` as it
    reads it (the hook ``GradScaler`` uses), set here to ``max(1, (norm + 1e-6) / clip)``. Elsewhere
    (CPU, FSDP2's sharded gradients) ``clip_grad_norm_`` scales them in place.
    """
    grads = [p.grad for p in params if p.grad is not None]
    if not optimizer.defaults.get("fused") or not grads or _any_dtensor(grads):
        optimizer.grad_scale = None
        return _local(torch.nn.utils.clip_grad_norm_(params, clip, foreach=True))
    norm = torch.nn.utils.get_total_norm(grads, foreach=True)
    optimizer.grad_scale = torch.clamp((norm + 1e-6) / clip, min=1.0)
    return norm


def _any_dtensor(tensors: list[torch.Tensor]) -> bool:
    from torch.distributed.tensor import DTensor

    return any(isinstance(t, DTensor) for t in tensors)


def _local(t: torch.Tensor) -> torch.Tensor:
    """A DTensor (FSDP's global gradient norm, replicated) as the plain tensor every rank holds."""
    from torch.distributed.tensor import DTensor

    return t.full_tensor() if isinstance(t, DTensor) else t
