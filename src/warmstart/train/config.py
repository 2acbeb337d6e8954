"""``TrainConfig``: every flag of ``warmstart pretrain``, YAML loading and precedence.

Precedence, lowest first: the dataclass defaults < the saved ``config.yaml`` of the run being
resumed (``--resume``) < ``--config run.yaml`` < flags the user actually typed.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from warmstart.errors import ResumeError, UsageError


@dataclass
class TrainConfig:
    # model
    preset: str = "llama-small"
    init: str | None = None
    tokenizer: str | None = None
    vocab_size: int = 8192
    # data
    data: list[str] = field(default_factory=list)
    include: list[str] = field(default_factory=list)
    text_field: str = "text"
    max_corpus_bytes: int | None = None
    val_fraction: float = 0.02
    cache_dir: str | None = None
    seq_len: int = 128
    batch_size: int = 8
    grad_accum: int = 1
    # optimisation
    lr: float = 2e-3
    min_lr_ratio: float = 0.1
    warmup_steps: int = 10
    lr_decay_steps: int | None = None  # cosine horizon; default = the step budget
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.95
    eps: float = 1e-8
    grad_clip: float = 1.0
    # budget
    max_steps: int | None = 300
    max_tokens: int | None = None
    max_time: float | None = None  # seconds
    # eval / checkpoints / logging
    eval_every: int = 25
    eval_tokens: int = 8192
    save_every: int = 100
    keep_last: int = 2
    log_every: int = 10
    # runtime
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    dtype: str = "auto"  # auto (bf16 autocast on CUDA, fp32 on CPU) | fp32 | bf16
    compile: bool = False
    activation_checkpointing: bool = False
    seed: int = 0
    out: str | None = None
    resume: str | None = None
    # warm start
    allow_untrained_init: bool = False
    init_loss_tolerance: float = 0.10
    allow_unused_tensors: bool = False
    trust_pickle: bool = False
    # provenance
    license: str | None = None
    data_license: str | None = None

    # ------------------------------------------------------------------ helpers
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any], *, source: str = "config") -> "TrainConfig":
        return cls(**normalize_keys(d, source=source))

    def validate(self) -> None:
        def need(cond: bool, msg: str, fix: str = "") -> None:
            if not cond:
                raise UsageError(msg, fix=fix)

        need(self.seq_len >= 2, f"--seq-len {self.seq_len} must be at least 2")
        need(self.batch_size >= 1, f"--batch-size {self.batch_size} must be at least 1")
        need(self.grad_accum >= 1, f"--grad-accum {self.grad_accum} must be at least 1")
        need(self.lr > 0, f"--lr {self.lr} must be positive")
        need(0.0 <= self.min_lr_ratio <= 1.0, f"--min-lr-ratio {self.min_lr_ratio} must be in [0, 1]")
        need(self.warmup_steps >= 0, "--warmup-steps must be >= 0")
        need(self.max_steps is not None or self.max_tokens is not None or self.max_time is not None,
             "no stopping condition", "pass --max-steps, --max-tokens or --max-time")
        need(self.max_steps is None or self.max_steps >= 1, "--max-steps must be at least 1")
        need(self.eval_every >= 0 and self.save_every >= 0 and self.log_every >= 1,
             "--eval-every/--save-every must be >= 0 and --log-every >= 1")
        need(self.keep_last >= 1, "--keep-last must be at least 1")
        need(self.eval_tokens >= 1, "--eval-tokens must be at least 1")
        need(self.dtype in ("auto", "fp32", "bf16"), f"--dtype '{self.dtype}' is not one of auto, fp32, bf16")
        need(self.device == "auto" or self.device == "cpu" or re.fullmatch(r"cuda(:\d+)?", self.device) is not None,
             f"--device '{self.device}' is not one of auto, cpu, cuda, cuda:N")
        need(0.0 < self.val_fraction < 0.5, f"--val-fraction {self.val_fraction} must be in (0, 0.5)")


# Default peak learning rate with --init (the dataclass default, 2e-3, is for scratch runs).
INIT_LR = 5e-5

# Keys that define what is being trained; a resumed run must keep them.
RESUME_FIXED = ("preset", "init", "tokenizer", "vocab_size", "data", "include", "text_field", "max_corpus_bytes",
                "val_fraction", "seq_len", "seed")

_FIELD_NAMES = {f.name for f in fields(TrainConfig)}
_ALIASES = {"warmup": "warmup_steps", "min_lr": "min_lr_ratio", "accum": "grad_accum",
            "gradient_accumulation": "grad_accum", "ckpt_every": "save_every"}


def normalize_keys(d: dict[str, Any], *, source: str = "config") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in (d or {}).items():
        key = str(k).replace("-", "_").lstrip("_")
        key = _ALIASES.get(key, key)
        if key == "betas" and isinstance(v, (list, tuple)) and len(v) == 2:
            out["beta1"], out["beta2"] = float(v[0]), float(v[1])
            continue
        if key not in _FIELD_NAMES:
            raise UsageError(f"{source}: unknown setting '{k}'",
                             fix="use one of: " + ", ".join(sorted(_FIELD_NAMES)))
        if key in ("data", "include") and isinstance(v, str):
            v = [v]
        if key == "max_time" and isinstance(v, str):
            v = parse_duration(v)
        out[key] = v
    return out


def parse_duration(text: str | float | int | None) -> float | None:
    """'90', '90s', '15m', '2h', '1h30m' -> seconds."""
    if text is None:
        return None
    if isinstance(text, (int, float)):
        return float(text)
    s = str(text).strip().lower()
    try:
        return float(s)
    except ValueError:
        pass
    total, matched = 0.0, False
    for num, unit in re.findall(r"(\d+(?:\.\d+)?)\s*([smhd])", s):
        total += float(num) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[unit]
        matched = True
    if not matched or re.sub(r"(\d+(?:\.\d+)?)\s*([smhd])", "", s).strip():
        raise UsageError(f"'{text}' is not a duration", fix="use seconds or e.g. 30s, 15m, 2h, 1h30m")
    return total


def load_yaml(path: str | Path) -> dict[str, Any]:
    p = Path(path).expanduser()
    if not p.is_file():
        raise UsageError(f"config file '{path}' does not exist", path=path)
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise UsageError(f"'{path}' is not valid YAML: {err}".replace("\n", " "), path=path) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UsageError(f"'{path}' must hold a mapping of setting: value", path=path)
    return data


def resolve_config(flags: dict[str, Any] | None = None, config_path: str | None = None) -> TrainConfig:
    """Merge defaults, a resumed run's saved config, ``--config`` and explicit flags."""
    flags = normalize_keys(flags or {}, source="command line")
    merged: dict[str, Any] = {}
    resume = flags.get("resume")
    file_cfg = normalize_keys(load_yaml(config_path), source=str(config_path)) if config_path else {}
    resume = resume or file_cfg.get("resume")
    if resume:
        saved = Path(resume) / "config.yaml"
        if not saved.is_file():
            raise ResumeError(f"'{resume}' is not a warmstart run directory (no config.yaml)",
                              fix="pass the --out directory of an earlier `warmstart pretrain` run", path=resume)
        base = normalize_keys(load_yaml(saved), source=str(saved))
        merged.update(base)
    merged.update(file_cfg)
    merged.update(flags)
    # A time or token budget given without a step budget replaces the default step budget.
    given = {**file_cfg, **flags}
    if ("max_time" in given or "max_tokens" in given) and "max_steps" not in given:
        merged["max_steps"] = None
    if resume:
        merged["resume"] = str(resume)
        merged["out"] = str(resume)
        changed = [k for k in RESUME_FIXED if k in base and merged.get(k) != base.get(k)]
        if changed:
            raise ResumeError(
                "cannot change " + ", ".join(f"{k} ({base.get(k)!r} -> {merged.get(k)!r})" for k in changed)
                + " when resuming",
                why="they define the model and data the run was training on",
                fix="leave them out (they are read from the run's config.yaml), or start a new run with --out",
                path=resume)
    if "lr" not in merged and merged.get("init"):
        # Continued pretraining of trained weights wants a far smaller step than scratch.
        merged["lr"] = INIT_LR
    cfg = TrainConfig.from_dict(merged)
    cfg.validate()
    return cfg


def dump_yaml(cfg: TrainConfig) -> str:
    return yaml.safe_dump(cfg.to_dict(), sort_keys=False)
