"""How the model runs: data parallelism (none, DDP or FSDP2) and ``torch.compile``.

``--parallel auto`` means none on one rank. On several CUDA ranks it means DDP when the replicated
training state (fp32 weights, gradients and the two AdamW moments: 16 bytes a parameter) takes at most
an eighth of a GPU's memory, else FSDP2: small models train faster replicated, larger ones sharded, and
the cut lies between the shapes measured in bench/results/h100x2/. On CPU ranks (gloo) it means FSDP2,
whose sharded loading keeps each process's host memory smaller. The three modes:

- ``none``: one process, one device, the model as built.
- ``fsdp``: ``fully_shard`` per decoder layer, then the root (``shard_model``), applied by
  ``build_model`` to the model while it is still on the meta device, so each rank allocates and
  loads only its own shards. On CUDA with bf16 the parameters are cast to bf16 for compute and
  gradients reduced in fp32 (``MixedPrecisionPolicy``); fp32 master weights and optimizer state stay
  sharded. ``--cpu-offload`` keeps parameters, gradients and optimizer state on the host.
  ``CausalLM.loss`` is registered as a forward method, so it gathers the parameters as ``forward``
  does.
- ``ddp``: ``DistributedDataParallel`` around the loss (the whole model on each rank), for models
  that fit one device. Gradients are all-reduced once per optimizer step (``no_sync`` for the
  other micro-batches).

``parallelize`` returns a ``Parallel``: the model (its parameter names are Hugging Face's: the
optimizer, evaluation and checkpoints use it), the training loss function and the per-step hooks
``train_step`` needs. ``compile_loss`` compiles the decoder blocks with ``--compile`` (regional compilation).
"""

from __future__ import annotations

import contextlib
import warnings
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import nn

from warmstart.arch import CausalLM
from warmstart.errors import UsageError
from warmstart.train import fp8
from warmstart.train.compile import compile_blocks
from warmstart.train.config import TrainConfig
from warmstart.train.distributed import Dist

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


REPLICA_BYTES_PER_PARAM = 16  # fp32 weight + gradient + AdamW's two moments, on every DDP rank
REPLICA_SHARE = 1 / 8  # of one GPU's memory, the most DDP's replicated state may take under auto


def parallel_mode(cfg: TrainConfig, world_size: int, *, params: int | None = None,
                  device: torch.device | None = None) -> str:
    """``none`` | ``ddp`` | ``fsdp`` for ``--parallel`` on ``world_size`` ranks. ``auto`` above one rank:
    ddp when ``params`` (the model's count) replicated fit ``REPLICA_SHARE`` of the CUDA ``device``, else fsdp."""
    mode = cfg.parallel if cfg.parallel != "auto" else _auto_mode(cfg, world_size, params, device)
    if mode == "none" and world_size > 1:
        raise UsageError(f"--parallel none cannot train on {world_size} ranks",
                         fix="use --parallel fsdp, ddp or auto, or start one process")
    if cfg.cpu_offload and mode != "fsdp":
        raise UsageError("--cpu-offload needs FSDP", fix="add --parallel fsdp (or drop --cpu-offload)")
    return mode


def _auto_mode(cfg: TrainConfig, world_size: int, params: int | None, device: torch.device | None) -> str:
    memory = None  # asked of the GPU only where the answer matters: several ranks
    if world_size > 1 and device is not None and device.type == "cuda" and not cfg.cpu_offload:
        memory = torch.cuda.get_device_properties(device).total_memory
    return auto_mode(world_size, params, memory)


def auto_mode(world_size: int, params: int | None, device_memory: int | None) -> str:
    """What ``--parallel auto`` means: none on one rank; ddp when ``params`` replicated (16 bytes each)
    take at most ``REPLICA_SHARE`` of ``device_memory`` (one GPU's bytes; None: not a GPU), else fsdp."""
    if world_size == 1:
        return "none"
    if params is None or device_memory is None:
        return "fsdp"
    return "ddp" if params * REPLICA_BYTES_PER_PARAM <= REPLICA_SHARE * device_memory else "fsdp"


def shard_model(model: CausalLM, cfg: TrainConfig, dist: Dist) -> CausalLM:
    """FSDP2: ``fully_shard`` each decoder layer, then the root (embedding, final norm, head)."""
    from torch.distributed.fsdp import CPUOffloadPolicy, MixedPrecisionPolicy, fully_shard, \
        register_fsdp_forward_method

    fp8.convert_blocks(model, cfg.fp8, dist.device,
                       fsdp_float8_all_gather=fp8.float8_all_gather(cfg.fp8, "fsdp", dist.world_size))
    kw: dict = {}
    if dist.device.type == "cuda" and cfg.dtype != "fp32":
        kw["mp_policy"] = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
    if cfg.cpu_offload:
        kw["offload_policy"] = CPUOffloadPolicy(pin_memory=dist.device.type == "cuda")
    # Resharding after forward frees a layer's gathered parameters until its backward gathers them again.
    # With one rank the shard is the whole parameter, so it saves only the bf16 copy and costs an
    # all-gather per layer in backward (the cost: bench/fsdp_overhead.py);
    # the last layer's backward comes right after its forward, so it never reshards (as torchtitan does).
    reshard = dist.world_size > 1 or bool(cfg.cpu_offload)  # offload: the host holds them between
    layers = list(model.model.layers)
    for i, layer in enumerate(layers):
        fully_shard(layer, reshard_after_forward=reshard and i < len(layers) - 1, **kw)
    fully_shard(model, **kw)
    register_fsdp_forward_method(model, "loss")  # model.loss gathers parameters as forward does
    return model


class _Loss(nn.Module):
    """``model.loss`` as a module's forward, so that DDP's hooks run around it."""

    def __init__(self, model: CausalLM) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.model.loss(x, y)


@dataclass
class Parallel:
    """The parallelised model and what a training step needs from the parallel mode."""

    mode: str  # none | ddp | fsdp
    model: CausalLM  # Hugging Face parameter names; FSDP: sharded in place
    loss_fn: LossFn  # the training loss: model.loss, or the DDP module around it
    dist: Dist = field(default_factory=Dist)
    offload: bool = False  # FSDP --cpu-offload: parameters and optimizer state on the host
    after_step: Callable[[], None] | None = None  # after each optimizer step (FSDP2 float8 all-gather: the scales)

    def micro_batch(self, last: bool) -> contextlib.AbstractContextManager:
        """Around one micro-batch's forward and backward: DDP syncs gradients only on the last."""
        if self.mode == "ddp" and not last:
            return self.loss_fn.no_sync()  # type: ignore[attr-defined]
        return contextlib.nullcontext()

    def global_mean(self, loss: torch.Tensor) -> torch.Tensor:
        """The step's loss averaged over the ranks (every rank sees the same value; no host sync)."""
        return self.dist.all_reduce_(loss, "avg") if self.dist.several else loss

    def evaluate(self, *args, **kwargs) -> float:
        """``evaluate(model, ...)`` on this model and ranks; FSDP then reshards the root, whose
        parameters a forward without backward leaves gathered (the optimizer and checkpoints need
        the sharded ones). With ``--fp8`` the blocks' matmuls run in high precision here (``fp8.high_precision``)."""
        from warmstart.train.evaluate import evaluate

        with fp8.high_precision(self.model):
            val = evaluate(self.model, *args, dist=self.dist, **kwargs)
        if self.mode == "fsdp":
            from torch.distributed.fsdp import FSDPModule

            for m in self.model.modules():
                if isinstance(m, FSDPModule):
                    m.reshard()
        return val

    @property
    def optimizer_device(self) -> torch.device:
        """Where the optimizer state lives (the host with ``--cpu-offload``)."""
        return torch.device("cpu") if self.offload else self.dist.device


def parallelize(model: CausalLM, cfg: TrainConfig, dist: Dist | None = None, mode: str | None = None) -> Parallel:
    """The ``Parallel`` for ``model`` (built by ``build_model``; for FSDP already sharded by it) in
    ``mode`` (default: ``parallel_mode`` of the config, ``auto`` deciding without the model's size)."""
    dist = dist or Dist()
    mode = mode or parallel_mode(cfg, dist.world_size)
    if mode != "fsdp":  # (FSDP: shard_model converted the blocks before sharding them)
        fp8.convert_blocks(model, cfg.fp8, dist.device)
    if mode == "ddp":
        from torch.nn.parallel import DistributedDataParallel as DDP

        ids = [dist.device.index] if dist.device.type == "cuda" else None
        with warnings.catch_warnings():  # newer torch prefers forward_sync_buffers, absent from older ones
            warnings.simplefilter("ignore", FutureWarning)
            ddp = DDP(_Loss(model), device_ids=ids, broadcast_buffers=False)  # the rotary buffers are not state
        return Parallel("ddp", model, ddp, dist)
    scales = (lambda: fp8.precompute_scales(model)) if fp8.float8_all_gather(cfg.fp8, mode, dist.world_size) else None
    return Parallel(mode, model, model.loss, dist, offload=bool(cfg.cpu_offload), after_step=scales)


def compile_loss(par: Parallel, cfg: TrainConfig) -> LossFn:
    """The training loss function; with ``--compile`` the decoder blocks are compiled first, each on
    its own (``train/compile.py``), and the fused LM head + loss stays eager. FSDP's and DDP's hooks
    run around a block's or the model's ``forward``, outside the compiled graphs."""
    if cfg.compile:
        compile_blocks(par.model)
    return par.loss_fn
