"""Where the model comes from, resolved once: a closed set of kinds, ``Scratch``, ``WarmStartSource``
(``--init``, gated) or ``Resume``; code dispatches on the type.

``resolve_source`` runs before the data is read (the tokenizer comes from the source, except for
scratch without ``--tokenizer``, where the data step trains a BPE); ``model_config`` and
``training_model`` finish the job once the data is known. Every model is built by
``init.population.build_model`` (strict population: nothing random-initialised from a checkpoint):
for ``--init`` inside the warm-start gates (one process) or here (every rank its shards), for
``--resume`` from the run checkpoint opened here, once, with its trainer state read once.
"""

from __future__ import annotations

import contextlib
import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Union

import torch

from warmstart.arch import CausalLM, ModelConfig, get_preset
from warmstart.arch.context import context_change, describe_change, extend_context
from warmstart.checkpoint import Checkpoint, load_checkpoint
from warmstart.data import load_tokenizer
from warmstart.errors import ResumeError
from warmstart.init.population import build_model
from warmstart.train import checkpoints as ck
from warmstart.train.config import TrainConfig
from warmstart.train.distributed import Dist, decide_on_main

@dataclass(frozen=True)
class Scratch:
    """A run from random weights (``--preset``), seeded with ``--seed``."""

    tokenizer: Any  # --tokenizer, or None: the data step trains a BPE on the corpus
    config = None  # the preset is sized to the data's vocabulary (``model_config``)
    parent = None
    context = None
    checkpoint = None

    def model_config(self, cfg: TrainConfig, ds) -> tuple[ModelConfig, dict | None]:
        """The preset sized to the data (its vocabulary, special ids, ``--seq-len``), context options applied."""
        base = get_preset(cfg.preset)
        sized = base.replace(vocab_size=ds.vocab_size, bos_token_id=ds.eos_id, eos_token_id=ds.eos_id,
                             pad_token_id=ds.eos_id,
                             max_position_embeddings=max(base.max_position_embeddings, cfg.seq_len))
        config = _extended(sized, cfg, source=None)
        return config, context_change(sized, config)

    def portable(self) -> "Scratch":
        return self

    def reopen(self, trust_pickle: bool = False) -> "Scratch":
        return self


@dataclass(frozen=True)
class WarmStartSource:
    """``--init``: a checkpoint that passed warm-start gates 1-6 (gate 7 follows on the data)."""

    warm: Any  # the WarmStart: config, tokenizer, report, parent; its model when the gates built it
    context: dict | None = None  # the context extension of this run (arch/context.py context_change), if any

    @property
    def tokenizer(self) -> Any:
        return self.warm.tokenizer

    @property
    def config(self) -> ModelConfig:
        return self.warm.config

    @property
    def parent(self) -> dict:
        return self.warm.provenance_parent

    @property
    def checkpoint(self) -> Checkpoint | None:
        return self.warm.checkpoint

    def model_config(self, cfg: TrainConfig, ds) -> tuple[ModelConfig, dict | None]:
        return self.config, self.context

    def portable(self) -> "WarmStartSource":
        """What another rank needs (no open checkpoint, no model)."""
        return dataclasses.replace(self, warm=self.warm.portable())

    def reopen(self, trust_pickle: bool = False) -> "WarmStartSource":
        return dataclasses.replace(self, warm=self.warm.reopen(trust_pickle))


@dataclass(frozen=True)
class Resume:
    """``--resume``: the run's latest checkpoint and its trainer state, each read once."""

    step_dir: Path  # the checkpoint's directory (holds trainer_state/)
    state: dict  # its trainer_state/state.json, checked field by field (``checkpoints.read_state_json``)
    tokenizer: Any
    config: ModelConfig
    parent: dict | None  # the lineage record the run's checkpoints carry
    context: dict | None = None
    checkpoint: Checkpoint | None = None  # opened once (headers; tensors stay lazy)

    def model_config(self, cfg: TrainConfig, ds) -> tuple[ModelConfig, dict | None]:
        return self.config, self.context

    def portable(self) -> "Resume":
        return dataclasses.replace(self, checkpoint=None)

    def reopen(self, trust_pickle: bool = False) -> "Resume":
        return self if self.checkpoint is not None else dataclasses.replace(self, checkpoint=load_checkpoint(
            self.step_dir))


ModelSource = Union[Scratch, WarmStartSource, Resume]


def resolve_source(cfg: TrainConfig, run_dir: Path, *, device: torch.device,
                   say: Callable[[str], None], dist: Dist | None = None) -> ModelSource:
    """The model source of ``cfg``; for ``--init`` this runs warm-start gates 1-6 and prints their lines.

    Under a process group rank 0 resolves it (gates 5 and 6 without building a model) and every
    rank gets its verdict: the same source, or the same refusal."""
    if dist is None or not dist.group:
        return _resolve(cfg, run_dir, device, say, populate=True)
    return decide_on_main(dist, lambda: _resolve(cfg, run_dir, device, say, populate=False),
                          share=lambda src: src.portable(), adopt=lambda src: src.reopen(cfg.trust_pickle))


def _resolve(cfg: TrainConfig, run_dir: Path, device: torch.device, say: Callable[[str], None], *,
             populate: bool) -> ModelSource:
    if cfg.resume:
        return _resume_source(run_dir, say)
    if cfg.init:
        return _init_source(cfg, device, say, populate=populate)
    return Scratch(tokenizer=load_tokenizer(cfg.tokenizer) if cfg.tokenizer else None)


def _resume_source(run_dir: Path, say: Callable[[str], None]) -> ModelSource:
    ckpt_dir = ck.find_resume_checkpoint(run_dir)
    state = ck.read_state_json(ckpt_dir)  # every field checked before anything is built
    ckpt = load_checkpoint(ckpt_dir)
    if ckpt.tokenizer is None:
        raise ResumeError(f"checkpoint {ckpt_dir.name} has no tokenizer.json", path=ckpt_dir,
                          fix="resume from a checkpoint written by `warmstart pretrain`")
    say(f"resuming {run_dir} from {ckpt_dir.name}")
    return Resume(step_dir=ckpt_dir, state=state, tokenizer=ckpt.tokenizer, config=ckpt.model_config(),
                  parent=ckpt.parent, context=ckpt.metadata.get("context_extension"), checkpoint=ckpt)


def _init_source(cfg: TrainConfig, device: torch.device, say: Callable[[str], None], *,
                 populate: bool) -> ModelSource:
    from warmstart.init import prepare_warm_start

    warm = prepare_warm_start(cfg.init, tokenizer_path=cfg.tokenizer, allow_unused_tensors=cfg.allow_unused_tensors,
                              allow_zero_tensors=cfg.allow_zero_tensors,
                              trust_pickle=cfg.trust_pickle, device=device, populate=populate)
    for gate in warm.report:
        say(gate.line())
    extended = _extended(warm.config, cfg, source=str(warm.checkpoint.path))
    change = context_change(warm.config, extended)
    if change:
        say(f"context extended at the warm start: {describe_change(change)}")
        warm.config = extended
        if warm.model is not None:  # the populated model takes the new RoPE (its buffers only)
            warm.model.cfg = extended
            warm.model.reset_rope(device=warm.model.inv_freq.device)
    return WarmStartSource(warm=warm, context=change)


def _extended(mcfg: ModelConfig, cfg: TrainConfig, *, source: str | None) -> ModelConfig:
    """``mcfg`` with ``--context-length`` / ``--rope-theta`` / ``--rope-scaling`` applied (those given)."""
    return extend_context(mcfg, context_length=cfg.context_length, rope_theta=cfg.rope_theta,
                          rope_scaling=cfg.rope_scaling, source=source)


def training_model(source: ModelSource, mcfg: ModelConfig, cfg: TrainConfig, device: torch.device, *,
                   shard: Callable[[CausalLM], CausalLM] | None = None) -> CausalLM:
    """The model the run trains, fp32 on ``device``, in training mode: the one the warm-start gates built, or
    ``init.population.build_model``'s from the source's checkpoint (the warm start's or the resumed one,
    populated strictly) or, from scratch, seeded with ``--seed``. With ``shard`` (FSDP's ``fully_shard``)
    every rank allocates and fills only its own shards."""
    if isinstance(source, WarmStartSource) and source.warm.model is not None and shard is None:
        model = source.warm.model
    else:
        ckpt = source.checkpoint
        allow_unused = isinstance(source, WarmStartSource) and cfg.allow_unused_tensors
        with ckpt if ckpt is not None else contextlib.nullcontext():
            model = build_model(ckpt, mcfg, device=device, seed=cfg.seed, shard=shard, allow_unused=allow_unused,
                                home=torch.device("cpu") if cfg.cpu_offload else device)
    model.activation_checkpointing = bool(cfg.activation_checkpointing)
    model.train()
    return model
