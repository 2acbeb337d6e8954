"""Where the model comes from, resolved once: scratch, ``--init`` (a gated warm start) or ``--resume``.

``resolve_source`` runs before the data is read (the tokenizer comes from the source, except for
scratch without ``--tokenizer``, where the data step trains a BPE); ``model_config`` and
``build_model`` finish the job once the data is known. Every trained weight reaches the model
through ``init.population.populate_model`` (strict: nothing random-initialised): for ``--init``
inside the warm-start gates, for ``--resume`` from the run checkpoint opened here, once.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from warmstart.arch import CausalLM, ModelConfig, get_preset
from warmstart.arch.context import context_change, describe_change, extend_context
from warmstart.checkpoint import Checkpoint, load_checkpoint
from warmstart.data import load_tokenizer
from warmstart.errors import ResumeError
from warmstart.init.population import materialize, populate_model, populate_shards
from warmstart.train import checkpoints as ck
from warmstart.train.config import TrainConfig
from warmstart.train.distributed import Dist, decide_on_main

SCRATCH, INIT, RESUME = "scratch", "init", "resume"


@dataclass
class ModelSource:
    kind: str  # SCRATCH | INIT | RESUME
    tokenizer: Any  # tokenizers.Tokenizer, or None: scratch without --tokenizer (the data step trains one)
    config: ModelConfig | None  # None for scratch: the preset is sized to the data's vocabulary
    parent: dict | None  # the lineage record every checkpoint of this run carries in warmstart.json
    warm: Any = None  # --init: the WarmStart (gates 1-6 passed, model populated)
    checkpoint: Checkpoint | None = None  # --resume: the run's latest checkpoint, opened once
    resume_dir: Path | None = None  # --resume: that checkpoint's directory (holds trainer_state/)
    state: dict | None = None  # --resume: its trainer_state/state.json, read and checked once
    context: dict | None = None  # the context extension of this run (arch/context.py context_change), if any

    def portable(self) -> "ModelSource":
        """What another rank needs to rebuild this source (no open checkpoint, no model)."""
        warm = self.warm.portable() if self.warm is not None else None
        return dataclasses.replace(self, warm=warm, checkpoint=None)

    def reopen(self, trust_pickle: bool = False) -> "ModelSource":
        """A portable source with its checkpoint opened again (headers only)."""
        if self.warm is not None:
            self.warm.reopen(trust_pickle)
        if self.resume_dir is not None and self.checkpoint is None:
            self.checkpoint = load_checkpoint(self.resume_dir)
        return self

    def model_config(self, cfg: TrainConfig, ds) -> ModelConfig:
        if self.config is not None:
            return self.config
        base = get_preset(cfg.preset)
        sized = base.replace(vocab_size=ds.vocab_size, bos_token_id=ds.eos_id, eos_token_id=ds.eos_id,
                             pad_token_id=ds.eos_id,
                             max_position_embeddings=max(base.max_position_embeddings, cfg.seq_len))
        self.config = _extended(sized, cfg, source=None)
        self.context = context_change(sized, self.config)
        return self.config


def resolve_source(cfg: TrainConfig, run_dir: Path, *, device: torch.device,
                   say: Callable[[str], None], dist: Dist | None = None) -> ModelSource:
    """The model source of ``cfg``; for ``--init`` this runs warm-start gates 1-6 and prints their lines.

    Under a process group rank 0 resolves it (gates 5 and 6 without building a model) and every
    rank gets its verdict: the same source, or the same refusal."""
    if dist is None or not dist.group:
        return _resolve(cfg, run_dir, device, say, populate=True)
    return decide_on_main(dist, lambda: _resolve(cfg, run_dir, device, say, populate=False),
                          share=ModelSource.portable, adopt=lambda src: src.reopen(cfg.trust_pickle))


def _resolve(cfg: TrainConfig, run_dir: Path, device: torch.device, say: Callable[[str], None], *,
             populate: bool) -> ModelSource:
    if cfg.resume:
        return _resume_source(run_dir, say)
    if cfg.init:
        return _init_source(cfg, device, say, populate=populate)
    tokenizer = load_tokenizer(cfg.tokenizer) if cfg.tokenizer else None
    return ModelSource(SCRATCH, tokenizer=tokenizer, config=None, parent=None)


def _resume_source(run_dir: Path, say: Callable[[str], None]) -> ModelSource:
    ckpt_dir = ck.find_resume_checkpoint(run_dir)
    state = ck.read_state_json(ckpt_dir)  # every field checked before anything is built
    ckpt = load_checkpoint(ckpt_dir)
    if ckpt.tokenizer is None:
        raise ResumeError(f"checkpoint {ckpt_dir.name} has no tokenizer.json", path=ckpt_dir,
                          fix="resume from a checkpoint written by `warmstart pretrain`")
    say(f"resuming {run_dir} from {ckpt_dir.name}")
    return ModelSource(RESUME, tokenizer=ckpt.tokenizer, config=ckpt.model_config(), parent=ckpt.parent,
                       checkpoint=ckpt, resume_dir=ckpt_dir, state=state, context=ckpt.metadata.get("context_extension"))


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
    return ModelSource(INIT, tokenizer=warm.tokenizer, config=warm.config, parent=warm.provenance_parent, warm=warm,
                       context=change)


def _extended(mcfg: ModelConfig, cfg: TrainConfig, *, source: str | None) -> ModelConfig:
    """``mcfg`` with ``--context-length`` / ``--rope-theta`` / ``--rope-scaling`` applied (those given)."""
    return extend_context(mcfg, context_length=cfg.context_length, rope_theta=cfg.rope_theta,
                          rope_scaling=cfg.rope_scaling, source=source)


def build_model(source: ModelSource, mcfg: ModelConfig, cfg: TrainConfig, device: torch.device, *,
                shard: Callable[[CausalLM], CausalLM] | None = None) -> CausalLM:
    """The model in fp32 on ``device``, in training mode: the warm start's, the resumed checkpoint's
    (populated strictly, as for ``--init``) or a fresh one seeded with ``--seed``.

    With ``shard`` (FSDP's ``fully_shard``) the model is sharded while still on the meta device, then
    each rank allocates and fills only its own shards (``_build_sharded``)."""
    ckpt = source.warm.checkpoint if source.warm is not None else source.checkpoint
    if shard is not None:
        model = _build_sharded(ckpt, source, mcfg, cfg, device, shard)
    elif source.warm is not None and source.warm.model is not None:
        model = source.warm.model
    elif ckpt is not None:
        with ckpt:
            model = populate_model(ckpt, mcfg, allow_unused=source.warm is not None and cfg.allow_unused_tensors)
    else:
        model = CausalLM(mcfg)
        model.reset_parameters(cfg.seed)
    model = model.to(device=device, dtype=torch.float32) if shard is None else model
    model.activation_checkpointing = bool(cfg.activation_checkpointing)
    model.train()
    return model


def _build_sharded(ckpt: Checkpoint | None, source: ModelSource, mcfg: ModelConfig, cfg: TrainConfig,
                   device: torch.device, shard: Callable[[CausalLM], CausalLM]) -> CausalLM:
    """Meta-device model -> ``shard`` -> local shards allocated -> filled from the checkpoint's rows
    (or, from scratch, the single-process init's values: each rank draws every full tensor from the
    seeded generator and keeps its rows, one tensor at a time)."""
    from torch.distributed.tensor.experimental import implicit_replication

    with torch.device("meta"):
        model = CausalLM(mcfg)
    shard(model)
    home = torch.device("cpu") if cfg.cpu_offload else device
    if ckpt is not None:
        materialize(model, device=home, buffer_device=device)
        with ckpt:
            populate_shards(model, ckpt, mcfg, allow_unused=source.warm is not None and cfg.allow_unused_tensors)
        return model
    materialize(model, device="cpu", buffer_device=device)  # the generator draws on the host
    with implicit_replication():
        model.reset_parameters(cfg.seed)
    return model.to(home) if home.type != "cpu" else model
