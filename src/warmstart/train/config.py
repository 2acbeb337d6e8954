"""``TrainConfig``: every setting of ``warmstart pretrain``, declared once; YAML loading and precedence.

Each field is declared with ``option(default, help=...)``: its default, its help text, its
command-line spellings where they differ from ``--field-name`` and the extra keys a YAML file
may use. ``option_specs()`` hands those declarations to the command line, which builds the
``pretrain`` (and ``prepare``) options from them, so no default or help is written twice.

Precedence, lowest first: the dataclass defaults < the saved ``config.yaml`` of the run being
resumed (``--resume``) < ``--config run.yaml`` < flags the user actually typed.
"""

from __future__ import annotations

import dataclasses
import math
import re
import typing
from dataclasses import MISSING, dataclass, field, fields
from typing import Any, Iterable, List, Optional

import yaml

from warmstart.arch.attention import ATTENTIONS, POSITIONS
from warmstart.checkpoint.run import RunDir, read_yaml
from warmstart.choices import DEVICES, Choices
from warmstart.data.settings import DataSettings
from warmstart.errors import ResumeError, UsageError

SCHEDULES = Choices(("cosine", "wsd", "constant"))  # optim.lr_at implements each
FP8_RECIPES = Choices(("none", "tensorwise", "rowwise"))  # train/fp8.py
OPTIMIZERS = Choices(("adamw", "adamw-bf16", "adamw-8bit"))  # optim.build_optimizer, train/lowbit.py
EVAL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
SCRATCH_LR = 2e-3  # default peak learning rate from scratch
INIT_LR = 5e-5  # default peak learning rate with --init: continued pretraining wants a far smaller step
DATA = DataSettings()  # the defaults of the data options (data/settings.py declares them once)


def _sci(x: float) -> str:
    return f"{x:.0e}".replace("e-0", "e-")


def option(default: Any = MISSING, *, help: str, flags: tuple[str, ...] = (), aliases: tuple[str, ...] = (),
           cli_type: Any = None, default_factory: Any = MISSING, choices: tuple[str, ...] | Choices = ()) -> Any:
    """A ``TrainConfig`` field with its help; ``flags``: command-line spellings when not ``--field-name``
    (a bool without ``flags`` is a plain on-switch); ``aliases``: extra YAML keys; ``cli_type``: the type
    the command line parses when it differs from the field's (a duration string for ``max_time``);
    ``choices``: the values it takes (``validate`` checks them, ``--help`` lists them)."""
    meta = {"help": help, "flags": tuple(flags), "aliases": tuple(aliases), "cli_type": cli_type,
            "choices": choices if isinstance(choices, Choices) or not choices else Choices(tuple(choices))}
    return field(default=default, default_factory=default_factory, metadata=meta)


@dataclass
class TrainConfig:
    # model
    preset: str = option("llama-small", help="Model shape for scratch runs (ignored with --init).")
    init: str | None = option(None, help="Checkpoint to continue pretraining from (warm start, gated).")
    tokenizer: str | None = option(None, help="tokenizer.json to use; default: train a BPE on the corpus.")
    vocab_size: int = option(DATA.vocab_size, help="Vocabulary of the byte-level BPE trained on the corpus (scratch).")
    # data
    data: list[str] = option(default_factory=list, help="Text file, directory (files taken by content), JSON "
                             "Lines / JSON / Parquet / Arrow file (also .gz, .zst, .bz2, .xz), datasets folder, or "
                             "prepared cache (repeatable). PATH:WEIGHT on every --data makes a mixture sampled by "
                             "token share, e.g. --data code/:0.9 --data replay.jsonl:0.1 (an existing path is never "
                             "split at ':'). Default: the Python stdlib.")
    eval_data: list[str] = option(default_factory=list, help="NAME=PATH: an extra validation set (repeatable), "
                                  "evaluated beside val at step 0, at every evaluation and in the summary, e.g. "
                                  "--eval-data retain=old_corpus/.")
    include: list[str] = option(default_factory=list, help="Glob for directory sources (repeatable), e.g. '*.py' "
                                "(default: every file, by content).")
    text_field: str = option(DATA.text_field, help="JSON / Parquet / Arrow field holding the text.")
    max_corpus_bytes: int | None = option(DATA.max_corpus_bytes, help="Read at most this many bytes of text.")
    val_fraction: float = option(DATA.val_fraction, help="Share of documents held out for validation.")
    cache_dir: str | None = option(DATA.cache_dir, help="Token cache root (default $WARMSTART_CACHE or "
                                   "~/.cache/warmstart/tokens).")
    workers: int | None = option(DATA.workers, help="Cores tokenizing a raw corpus (default: all).")
    skip_bad_records: bool = option(DATA.skip_bad_records, help="Count and skip corpus records that are not "
                                    "JSON or not text, and damaged compressed files, instead of stopping.")
    seq_len: int = option(DATA.seq_len, help="Tokens per training sequence.")
    batch_size: int = option(8, help="Sequences per micro-batch.")
    grad_accum: int = option(1, help="Micro-batches per optimizer step.", aliases=("accum", "gradient_accumulation"))
    # optimisation
    lr: float = option(SCRATCH_LR, help=f"Peak learning rate (default {_sci(SCRATCH_LR)} from scratch, "
                       f"{_sci(INIT_LR)} with --init).")
    min_lr_ratio: float = option(0.1, help="Floor of the cosine / wsd decay as a fraction of --lr.",
                                 aliases=("min_lr",))
    warmup_steps: int = option(10, help="Linear warmup steps (an --init run warms up afresh).",
                               flags=("--warmup-steps", "--warmup"))
    schedule: str = option("cosine", help="Learning rate after the warmup: cosine (down to the floor at the "
                           "horizon), wsd (warmup-stable-decay: --lr, then a 1-sqrt decay to the floor over the last "
                           "--decay-fraction of the horizon) or constant. --init runs re-warm: a fresh warmup and "
                           "schedule from step 0; --resume continues the run's own.", choices=SCHEDULES)
    decay_fraction: float = option(0.2, help="wsd: the share of the horizon spent decaying.")
    lr_decay_steps: int | None = option(None, help="Schedule horizon (default: the step budget).")
    weight_decay: float = option(0.1, help="AdamW weight decay (not on norms, biases, embeddings).")
    beta1: float = option(0.9, help="AdamW beta1.")
    beta2: float = option(0.95, help="AdamW beta2.")
    eps: float = option(1e-8, help="AdamW epsilon.")
    grad_clip: float = option(1.0, help="Clip the global gradient norm (0 = off).")
    # budget
    max_steps: int | None = option(300, help="Stop after this many optimizer steps.")
    max_tokens: int | None = option(None, help="Stop after this many training tokens.")
    max_time: float | None = option(None, help="Stop after this long, e.g. 600, 15m, 2h.", cli_type=str)  # seconds
    # eval / checkpoints / logging
    eval_every: int = option(25, help="Evaluate every N steps (0 = only at saves and the end).")
    eval_tokens: int = option(8192, help="Validation tokens per evaluation (fixed windows).")
    save_every: int = option(100, help="Checkpoint every N steps (0 = only at the end).", aliases=("ckpt_every",))
    keep_last: int = option(2, help="Keep the newest K checkpoints (plus the best).")
    log_every: int = option(10, help="Log metrics every N steps.")
    # runtime
    device: str = option("auto", help="Where to train (auto: CUDA when present).",
                         choices=DEVICES)
    dtype: str = option("auto", help="auto (bf16 autocast on CUDA, fp32 on CPU) | fp32 | bf16 (bf16 autocast; on a "
                        "CPU it pays off with native bf16, such as AVX512-BF16).", choices=("auto", "fp32", "bf16"))
    compile: bool = option(False, help="torch.compile the model.", flags=("--compile/--no-compile",))
    activation_checkpointing: bool = option(
        False, help="Recompute layer activations in backward.",
        flags=("--activation-checkpointing/--no-activation-checkpointing",))
    fp8: str = option("none", help="Float8 matmuls in the decoder blocks' linear layers (torchao's float8 training; "
                      "the embedding and LM head stay bf16): none | tensorwise (one scale per tensor) | rowwise (one "
                      "per row). A compute choice: checkpoints are as without it and a run resumes with or without "
                      "it. Needs a GPU of compute capability 8.9 or later, torchao (pip install 'warmstart[fp8]') and "
                      "dimensions that are multiples of 16; use it with --compile "
                      "(docs/large-models.md).", choices=FP8_RECIPES)
    optimizer: str = option("adamw", help="adamw (fp32 moments: 16 bytes a parameter with weight and gradient) | "
                            "adamw-bf16 (bf16 moments: 12) | adamw-8bit (torchao's 8-bit block-quantised moments: "
                            "about 10; one process). The low-memory ones need torchao and fit larger models on one "
                            "GPU; a resumed run keeps its optimizer (docs/large-models.md).", choices=OPTIMIZERS)
    parallel: str = option("auto", help="Data parallelism over the ranks torchrun starts: auto (one rank: none; "
                           "on GPUs ddp when 16 bytes a parameter fit an eighth of one GPU, else fsdp; on CPU "
                           "fsdp) | none | ddp | fsdp.", choices=("auto", "none", "ddp", "fsdp"))
    cpu_offload: bool = option(False, help="FSDP: keep parameters, gradients and optimizer state on the host.",
                               flags=("--cpu-offload/--no-cpu-offload",))
    seed: int = option(0, help="Seed for init and data order.")
    out: str | None = option(None, help="Run directory (default runs/<YYYYmmdd-HHMMSS>).")
    resume: str | None = option(None, help="Continue the run in this directory exactly.")
    # warm start
    allow_untrained_init: bool = option(False, help="Accept an --init whose step-0 loss is at random-init level.")
    init_loss_tolerance: float = option(0.10, help="Allowed step-0 loss excess over the recorded one.")
    allow_unused_tensors: bool = option(False, help="Accept checkpoint tensors the model does not use.")
    allow_zero_tensors: bool = option(False, help="Accept an --init checkpoint whose weight matrices hold only "
                                      "zeros (refused by default: WS114).")
    trust_pickle: bool = option(False, help="Load .bin/.pt with torch.load(weights_only=True).")
    # long context (docs/continued-pretraining.md, Long context)
    attention: str = option("causal", help="causal: every token attends to every earlier token of the window; "
                            "document: only to earlier tokens of its own document (the EOS-separated documents "
                            "packed in the window).", choices=ATTENTIONS)
    positions: str = option("window", help="RoPE positions: window (running across the window) or document "
                            "(restarting at each document's first token).", choices=POSITIONS)
    context_length: int | None = option(None, help="The model's max_position_embeddings from now on (default: "
                                        "the checkpoint's or preset's); a longer one extends the context.")
    rope_theta: float | None = option(None, help="RoPE base from now on (default: the checkpoint's or preset's).")
    rope_scaling: str | None = option(None, help="TYPE:FACTOR, TYPE linear, llama3 or yarn over the checkpoint's "
                                      "context, e.g. yarn:4 (default: the checkpoint's, if any).")
    # provenance
    license: str | None = option(None, help="License recorded in warmstart.json.")
    data_license: str | None = option(None, help="Data license recorded in warmstart.json.")

    # ------------------------------------------------------------------ helpers
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def data_settings(self, **changes) -> DataSettings:
        """The data settings this config holds (the one bridge into ``warmstart.data``)."""
        return DataSettings.taken_from(self).replace(**changes)

    @classmethod
    def from_dict(cls, d: dict[str, Any], *, source: str = "config") -> "TrainConfig":
        return cls(**normalize_keys(d, source=source))

    def validate(self) -> None:
        """Every value of its type and in its range (UsageError, WS002, naming the option)."""
        for f in fields(self):
            typed_value(f.name, getattr(self, f.name), "config")
            if f.metadata["choices"]:
                f.metadata["choices"].check(_flag(f), getattr(self, f.name))

        def need(cond: bool, msg: str, fix: str = "") -> None:
            if not cond:
                raise UsageError(msg, fix=fix)

        self._ranges(need)
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
        need(0.0 < self.val_fraction < 0.5, f"--val-fraction {self.val_fraction} must be in (0, 0.5)")
        need(0.0 < self.decay_fraction <= 1.0, f"--decay-fraction {self.decay_fraction} must be in (0, 1]")
        self.eval_sets()

    def _ranges(self, need) -> None:
        """The ranges of the options ``validate`` does not check one by one."""
        at_least_1 = ("max_corpus_bytes", "max_tokens", "lr_decay_steps", "workers")
        for name in at_least_1:
            value = getattr(self, name)
            need(value is None or value >= 1, f"--{name.replace('_', '-')} {value} must be at least 1")
        need(257 <= self.vocab_size <= 1 << 24, f"--vocab-size {self.vocab_size} must be in [257, 16777216]",
             "a byte-level BPE needs the 256 bytes and an end-of-text token")
        need(self.max_time is None or self.max_time >= 0, f"--max-time {self.max_time} must be >= 0")
        need(self.weight_decay >= 0, f"--weight-decay {self.weight_decay} must be >= 0")
        need(0 <= self.beta1 < 1 and 0 <= self.beta2 < 1, f"--beta1 {self.beta1} / --beta2 {self.beta2} must be in [0, 1)")
        need(self.eps > 0, f"--eps {self.eps} must be positive")
        need(self.grad_clip >= 0, f"--grad-clip {self.grad_clip} must be >= 0 (0 = off)")
        need(0 <= self.seed < 1 << 32, f"--seed {self.seed} must be in [0, 2**32)")
        need(self.init_loss_tolerance >= 0, f"--init-loss-tolerance {self.init_loss_tolerance} must be >= 0")
        need(bool(self.text_field), "--text-field must name a field")
        need(self.context_length is None or self.context_length >= 2,
             f"--context-length {self.context_length} must be at least 2")
        need(self.rope_theta is None or self.rope_theta > 1, f"--rope-theta {self.rope_theta} must be above 1")
        if self.rope_scaling is not None:
            from warmstart.arch.context import parse_rope_scaling

            parse_rope_scaling(self.rope_scaling)

    def eval_sets(self) -> list[tuple[str, str]]:
        """``--eval-data`` as ``[(name, path), ...]``: ``NAME=PATH`` split at the first ``=``."""
        out: list[tuple[str, str]] = []
        for spec in self.eval_data:
            name, sep, path = str(spec).partition("=")
            if not sep or not path or not EVAL_NAME.fullmatch(name) or name in ("val", "loss"):
                raise UsageError(f"--eval-data '{spec}' is not NAME=PATH with a NAME of letters, digits, '_', '.' "
                                 "or '-' (not 'val' or 'loss')",
                                 why="'val' is the held-out split of --data and each set is logged as val/NAME",
                                 fix="e.g. --eval-data retain=old_corpus/ --eval-data target=new.jsonl")
            if name in (n for n, _ in out):
                raise UsageError(f"--eval-data names '{name}' twice", fix="give every evaluation set its own name")
            out.append((name, path))
        return out


# Keys that define what is being trained; a resumed run must keep them.
RESUME_FIXED = ("preset", "init", "tokenizer", "vocab_size", "data", "include", "text_field", "max_corpus_bytes",
                "val_fraction", "seq_len", "seed", "eval_data", "attention", "positions", "context_length",
                "rope_theta", "rope_scaling")


# ------------------------------------------------------------------ the declarations, for the command line


@dataclass(frozen=True)
class OptionSpec:
    """One ``TrainConfig`` field as a command-line option."""

    name: str  # the field (and the command function's parameter)
    type: Any  # what the command line parses: Optional[...] when the default is None
    default: Any  # None for a list field (typer's "not given")
    flags: tuple[str, ...]  # e.g. ("--warmup-steps", "--warmup") or ("--compile/--no-compile",)
    help: str
    metavar: str | None = None  # the choices, a|b|c, when the option declares them


def _flag(f: dataclasses.Field) -> str:
    """The option's first command-line spelling (``--field-name`` unless declared)."""
    return (f.metadata["flags"] or ("--" + f.name.replace("_", "-"),))[0].split("/")[0]


def _field_default(f: dataclasses.Field) -> Any:
    return f.default_factory() if f.default_factory is not MISSING else f.default


def _cli_type(hint: Any, cli_type: Any) -> Any:
    """The field's type as typer reads it: ``X | None`` -> ``Optional[X]``, ``list[X]`` -> ``Optional[List[X]]``."""
    if cli_type is not None:
        return Optional[cli_type]
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if typing.get_origin(hint) is list:
        return Optional[List[args[0]]]
    if len(args) == 1 and type(None) in typing.get_args(hint):
        return Optional[args[0]]
    return hint


def option_specs(names: Iterable[str] | None = None) -> list[OptionSpec]:
    """The declarations of ``names`` in that order (default: every field, in declaration order)."""
    hints = typing.get_type_hints(TrainConfig)
    by_name = {f.name: f for f in fields(TrainConfig)}
    specs = []
    for f in (by_name[n] for n in names) if names is not None else by_name.values():
        default = _field_default(f)
        flags = f.metadata["flags"] or ("--" + f.name.replace("_", "-"),)
        choices = f.metadata["choices"]
        specs.append(OptionSpec(name=f.name, type=_cli_type(hints[f.name], f.metadata["cli_type"]),
                                default=None if isinstance(default, list) else default, flags=flags,
                                help=f.metadata["help"], metavar=choices.metavar if choices else None))
    return specs


def _key_aliases() -> dict[str, str]:
    """Other keys a YAML file or flags dict may use: every extra flag spelling and each declared alias."""
    out = {}
    for f in fields(TrainConfig):
        spellings = [s.lstrip("-").replace("-", "_") for s in f.metadata["flags"] if "/" not in s]
        for alias in [*spellings, *f.metadata["aliases"]]:
            if alias != f.name:
                out[alias] = f.name
    return out


_FIELD_NAMES = {f.name for f in fields(TrainConfig)}
_ALIASES = _key_aliases()
_HINTS = typing.get_type_hints(TrainConfig)


# ------------------------------------------------------------------ YAML and precedence


def normalize_keys(d: dict[str, Any], *, source: str = "config") -> dict[str, Any]:
    """Settings from a YAML file or flags under their field names, each value of its field's type (WS002
    naming ``source``, the key and the value otherwise)."""
    out: dict[str, Any] = {}
    for k, v in (d or {}).items():
        key = str(k).replace("-", "_").lstrip("_")
        key = _ALIASES.get(key, key)
        if key == "betas" and isinstance(v, (list, tuple)) and len(v) == 2:
            out["beta1"], out["beta2"] = (typed_value("beta1", v[0], source), typed_value("beta2", v[1], source))
            continue
        if key not in _FIELD_NAMES:
            raise UsageError(f"{source}: unknown setting '{k}'",
                             fix="use one of: " + ", ".join(sorted(_FIELD_NAMES)))
        if key in ("data", "include", "eval_data") and isinstance(v, str):
            v = [v]
        if key in ("data", "eval_data") and isinstance(v, dict):  # {path: weight} / {name: path}
            v = [_mapping_entry(key, a, b) for a, b in v.items()]
        if key == "max_time" and isinstance(v, str):
            v = parse_duration(v)
        out[key] = typed_value(key, v, source)
    return out


def _kind(hint: Any) -> tuple[Any, bool]:
    """``(int | float | bool | str | list, optional)`` of a field's type hint."""
    args = typing.get_args(hint)
    optional = type(None) in args
    base = next((a for a in args if a is not type(None)), hint) if args and typing.get_origin(hint) is not list \
        else hint
    return (list if typing.get_origin(base) is list else base), optional


def typed_value(key: str, value: Any, source: str) -> Any:
    """``value`` as field ``key`` holds it: an integer (not a bool), a finite number (YAML's "1e-3", which
    PyYAML reads as a string, included), a bool, a string or a list of strings; UsageError otherwise."""
    kind, optional = _kind(_HINTS[key])
    if value is None and optional:
        return None
    ok, expected = _TYPE_TESTS[kind]
    try:
        converted = float(value) if kind is float and isinstance(value, str) else value
    except ValueError:
        converted = value
    if ok(converted):
        return float(converted) if kind is float else converted
    raise UsageError(f"{source}: {key} = {value!r} is not {expected}" + (" (or null)" if optional else ""),
                     why="every setting is checked before any work starts",
                     fix=f"give {key} {expected}, e.g. in YAML `{key}: {_EXAMPLES.get(kind, '...')}`")


_TYPE_TESTS = {
    int: (lambda v: isinstance(v, int) and not isinstance(v, bool), "an integer"),
    float: (lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v), "a finite number"),
    bool: (lambda v: isinstance(v, bool), "true or false"),
    str: (lambda v: isinstance(v, str), "a string"),
    list: (lambda v: isinstance(v, list) and all(isinstance(x, str) for x in v), "a list of strings"),
}
_EXAMPLES = {int: "100", float: "0.001", bool: "true", str: "name", list: "[a, b]"}


def _mapping_entry(key: str, a: Any, b: Any) -> str:
    """One entry of a YAML mapping as its command-line spelling: ``path: weight`` -> ``path:weight``
    (``path:`` with no weight -> the path alone), ``name: path`` -> ``name=path``."""
    if key == "eval_data":
        return f"{a}={b}"
    return str(a) if b is None else f"{a}:{b}"


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


def resolve_config(flags: dict[str, Any] | None = None, config_path: str | None = None) -> TrainConfig:
    """Merge defaults, a resumed run's saved config, ``--config`` and explicit flags."""
    flags = normalize_keys(flags or {}, source="command line")
    merged: dict[str, Any] = {}
    resume = flags.get("resume")
    file_cfg = normalize_keys(read_yaml(config_path), source=str(config_path)) if config_path else {}
    resume = resume or file_cfg.get("resume")
    if resume:
        run = RunDir(resume)
        base = normalize_keys(run.config(), source=str(run.config_path))
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
