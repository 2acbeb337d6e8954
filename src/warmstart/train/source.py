"""Where the model comes from, resolved once: scratch, ``--init`` (a gated warm start) or ``--resume``.

``resolve_source`` runs before the data is read (the tokenizer comes from the source, except for
scratch without ``--tokenizer``, where the data step trains a BPE); ``model_config`` and
``build_model`` finish the job once the data is known. Every trained weight reaches the model
through ``init.population.populate_model`` (strict: nothing random-initialised): for ``--init``
inside the warm-start gates, for ``--resume`` from the run checkpoint opened here, once.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from warmstart.arch import CausalLM, ModelConfig, get_preset
from warmstart.checkpoint import Checkpoint, load_checkpoint
from warmstart.data import load_tokenizer
from warmstart.errors import ResumeError
from warmstart.init.population import populate_model
from warmstart.train import checkpoints as ck
from warmstart.train.config import TrainConfig

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

    def model_config(self, cfg: TrainConfig, ds) -> ModelConfig:
        if self.config is not None:
            return self.config
        base = get_preset(cfg.preset)
        return base.replace(vocab_size=ds.vocab_size, bos_token_id=ds.eos_id, eos_token_id=ds.eos_id,
                            pad_token_id=ds.eos_id,
                            max_position_embeddings=max(base.max_position_embeddings, cfg.seq_len))


def resolve_source(cfg: TrainConfig, run_dir: Path, *, device: torch.device,
                   say: Callable[[str], None]) -> ModelSource:
    """The model source of ``cfg``; for ``--init`` this runs warm-start gates 1-6 and prints their lines."""
    if cfg.resume:
        return _resume_source(run_dir, say)
    if cfg.init:
        return _init_source(cfg, device, say)
    tokenizer = load_tokenizer(cfg.tokenizer) if cfg.tokenizer else None
    return ModelSource(SCRATCH, tokenizer=tokenizer, config=None, parent=None)


def _resume_source(run_dir: Path, say: Callable[[str], None]) -> ModelSource:
    ckpt_dir = ck.find_resume_checkpoint(run_dir)
    ckpt = load_checkpoint(ckpt_dir)
    if ckpt.tokenizer is None:
        raise ResumeError(f"checkpoint {ckpt_dir.name} has no tokenizer.json", path=ckpt_dir,
                          fix="resume from a checkpoint written by `warmstart pretrain`")
    say(f"resuming {run_dir} from {ckpt_dir.name}")
    return ModelSource(RESUME, tokenizer=ckpt.tokenizer, config=ckpt.model_config(), parent=ckpt.parent,
                       checkpoint=ckpt, resume_dir=ckpt_dir)


def _init_source(cfg: TrainConfig, device: torch.device, say: Callable[[str], None]) -> ModelSource:
    from warmstart.init import prepare_warm_start

    warm = prepare_warm_start(cfg.init, tokenizer_path=cfg.tokenizer, allow_unused_tensors=cfg.allow_unused_tensors,
                              trust_pickle=cfg.trust_pickle, device=device)
    for gate in warm.report:
        say(gate.line())
    return ModelSource(INIT, tokenizer=warm.tokenizer, config=warm.config, parent=warm.provenance_parent, warm=warm)


def build_model(source: ModelSource, mcfg: ModelConfig, cfg: TrainConfig, device: torch.device) -> CausalLM:
    """The model in fp32 on ``device``, in training mode: the warm start's, the resumed checkpoint's
    (populated strictly, as for ``--init``) or a fresh one seeded with ``--seed``."""
    if source.warm is not None:
        model = source.warm.model
    elif source.checkpoint is not None:
        with source.checkpoint as ckpt:
            model = populate_model(ckpt, mcfg)
    else:
        model = CausalLM(mcfg)
        model.reset_parameters(cfg.seed)
    model = model.to(device=device, dtype=torch.float32)
    model.activation_checkpointing = bool(cfg.activation_checkpointing)
    model.train()
    return model
