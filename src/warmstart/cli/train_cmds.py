"""``warmstart pretrain``, ``warmstart prepare``, ``warmstart plot``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, List, Optional

import typer

from warmstart.cli import app
from warmstart.errors import UsageError

# Corpus options shared by pretrain and prepare.
IncludeOpt = Annotated[Optional[List[str]], typer.Option(help="Glob for directory sources (repeatable), e.g. '*.py'.")]
TextFieldOpt = Annotated[str, typer.Option(help="JSONL / Parquet field holding the text.")]
VocabSizeOpt = Annotated[int, typer.Option(help="Vocabulary of the byte-level BPE trained on the corpus (scratch).")]
ValFractionOpt = Annotated[float, typer.Option(help="Share of documents held out for validation.")]
MaxCorpusBytesOpt = Annotated[Optional[int], typer.Option(help="Read at most this many bytes of text.")]
CacheDirOpt = Annotated[Optional[str], typer.Option(help="Token cache root (default $WARMSTART_CACHE or "
                                                      "~/.cache/warmstart/tokens).")]

_PRETRAIN_HELP = """Train a causal LM from a preset (scratch) or continue from a checkpoint (--init).

With no arguments: the `llama-small` preset on the Python standard library's own source,
a byte-level BPE of 8192 tokens trained on it, on CPU in a few minutes.

Examples:

  warmstart pretrain

  warmstart pretrain --data ./src --include '*.py' --preset llama-tiny --max-steps 200 --out runs/a

  warmstart pretrain --init smollm2-135m-instruct --max-steps 30 --out runs/demo

  warmstart pretrain --config run.yaml --lr 1e-3          # flags override the YAML

  warmstart pretrain --resume runs/a --max-steps 400      # continue exactly where it stopped

  warmstart pretrain --device cuda --compile --preset smollm2-135m --seq-len 2048 --batch-size 8
"""

# Options whose value must be translated before it reaches TrainConfig.
_RENAMES = {"compile_": "compile", "config_": "config"}


def _explicit(ctx, values: dict) -> dict:
    """Only the parameters the user actually typed (not typer defaults)."""
    out = {}
    for name, value in values.items():
        src = ctx.get_parameter_source(name)
        # typer ships its own copy of click, so compare the enum member by name
        if getattr(src, "name", None) in ("COMMANDLINE", "ENVIRONMENT"):
            if isinstance(value, (list, tuple)):
                value = list(value)
            out[_RENAMES.get(name, name)] = value
    return out


@app.command("pretrain", help=_PRETRAIN_HELP, no_args_is_help=False)
def pretrain_cmd(
    ctx: typer.Context,
    config_: Optional[Path] = typer.Option(None, "--config", help="YAML file supplying any flag; flags override it."),
    preset: str = typer.Option("llama-small", help="Model shape for scratch runs (ignored with --init)."),
    init: Optional[str] = typer.Option(None, help="Checkpoint to continue pretraining from (warm start, gated)."),
    tokenizer: Optional[str] = typer.Option(None, help="tokenizer.json to use; default: train a BPE on the corpus."),
    vocab_size: VocabSizeOpt = 8192,
    data: Optional[List[str]] = typer.Option(None, help="Text file, directory, .jsonl, .parquet or prepared "
                                             "cache (repeatable). Default: the Python stdlib."),
    include: IncludeOpt = None,
    text_field: TextFieldOpt = "text",
    max_corpus_bytes: MaxCorpusBytesOpt = None,
    val_fraction: ValFractionOpt = 0.02,
    cache_dir: CacheDirOpt = None,
    seq_len: int = typer.Option(128, help="Tokens per training sequence."),
    batch_size: int = typer.Option(8, help="Sequences per micro-batch."),
    grad_accum: int = typer.Option(1, help="Micro-batches per optimizer step."),
    lr: float = typer.Option(2e-3, help="Peak learning rate (default 2e-3 from scratch, 5e-5 with --init)."),
    min_lr_ratio: float = typer.Option(0.1, help="Cosine floor as a fraction of --lr."),
    warmup_steps: int = typer.Option(10, "--warmup-steps", "--warmup", help="Linear warmup steps."),
    lr_decay_steps: Optional[int] = typer.Option(None, help="Cosine horizon (default: the step budget)."),
    weight_decay: float = typer.Option(0.1, help="AdamW weight decay (not on norms, biases, embeddings)."),
    beta1: float = typer.Option(0.9, help="AdamW beta1."),
    beta2: float = typer.Option(0.95, help="AdamW beta2."),
    eps: float = typer.Option(1e-8, help="AdamW epsilon."),
    grad_clip: float = typer.Option(1.0, help="Clip the global gradient norm (0 = off)."),
    max_steps: Optional[int] = typer.Option(300, help="Stop after this many optimizer steps."),
    max_tokens: Optional[int] = typer.Option(None, help="Stop after this many training tokens."),
    max_time: Optional[str] = typer.Option(None, help="Stop after this long, e.g. 600, 15m, 2h."),
    eval_every: int = typer.Option(25, help="Evaluate every N steps (0 = only at saves and the end)."),
    eval_tokens: int = typer.Option(8192, help="Validation tokens per evaluation (fixed windows)."),
    save_every: int = typer.Option(100, help="Checkpoint every N steps (0 = only at the end)."),
    keep_last: int = typer.Option(2, help="Keep the newest K checkpoints (plus the best)."),
    log_every: int = typer.Option(10, help="Log metrics every N steps."),
    device: str = typer.Option("auto", help="auto | cpu | cuda | cuda:N."),
    dtype: str = typer.Option("auto", help="auto (bf16 autocast on CUDA, fp32 on CPU) | fp32 | bf16."),
    compile_: bool = typer.Option(False, "--compile/--no-compile", help="torch.compile the model."),
    activation_checkpointing: bool = typer.Option(False, "--activation-checkpointing/--no-activation-checkpointing",
                                                  help="Recompute layer activations in backward."),
    seed: int = typer.Option(0, help="Seed for init and data order."),
    out: Optional[str] = typer.Option(None, help="Run directory (default runs/<YYYYmmdd-HHMMSS>)."),
    resume: Optional[str] = typer.Option(None, help="Continue the run in this directory exactly."),
    allow_untrained_init: bool = typer.Option(False, "--allow-untrained-init",
                                              help="Accept an --init whose step-0 loss is at random-init level."),
    init_loss_tolerance: float = typer.Option(0.10, help="Allowed step-0 loss excess over the recorded one."),
    allow_unused_tensors: bool = typer.Option(False, "--allow-unused-tensors",
                                              help="Accept checkpoint tensors the model does not use."),
    trust_pickle: bool = typer.Option(False, "--trust-pickle", help="Load .bin/.pt with torch.load(weights_only=True)."),
    license: Optional[str] = typer.Option(None, help="License recorded in warmstart.json."),
    data_license: Optional[str] = typer.Option(None, help="Data license recorded in warmstart.json."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress output (summary only)."),
) -> None:
    from warmstart.train import pretrain, resolve_config

    values = dict(locals())
    for k in ("ctx", "quiet", "pretrain", "resolve_config"):
        values.pop(k, None)
    flags = _explicit(ctx, values)
    config_path = flags.pop("config", None)
    cfg = resolve_config(flags, str(config_path) if config_path else None)
    pretrain(cfg, quiet=quiet)


@app.command("prepare")
def prepare_cmd(
    data: Optional[List[str]] = typer.Option(None, help="Text file, directory, .jsonl or .parquet (repeatable). "
                                             "Default: the Python stdlib."),
    include: IncludeOpt = None,
    text_field: TextFieldOpt = "text",
    tokenizer: Optional[str] = typer.Option(None, help="tokenizer.json (default: train a byte-level BPE)."),
    vocab_size: VocabSizeOpt = 8192,
    seq_len: int = typer.Option(128, help="Sequence length the cache is checked against."),
    val_fraction: ValFractionOpt = 0.02,
    max_corpus_bytes: MaxCorpusBytesOpt = None,
    cache_dir: CacheDirOpt = None,
    rebuild: bool = typer.Option(False, "--rebuild", help="Rebuild even if a cache entry exists."),
) -> None:
    """Tokenize a corpus once into a reusable token cache; prints its path.

    Examples:

      warmstart prepare

      warmstart prepare --data ./corpus --include '*.py' --vocab-size 16384

      warmstart prepare --data data.jsonl --text-field content --tokenizer tok.json

    Then train on it with: warmstart pretrain --data <printed path> (--tokenizer is read from it).
    """
    from warmstart.data import build_dataset

    ds = build_dataset(data or None, include=include or None, text_field=text_field, tokenizer_path=tokenizer,
                       vocab_size_=vocab_size, seq_len=seq_len, val_fraction=val_fraction,
                       max_corpus_bytes=max_corpus_bytes, cache_dir=cache_dir, rebuild=rebuild,
                       log=lambda s: print(s, flush=True))
    print(ds.summary())
    print(f"cache: {ds.cache_path}")


@app.command("plot")
def plot_cmd(
    run_dir: Path = typer.Argument(..., help="A run directory (holds metrics.jsonl)."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="PNG path (default RUN_DIR/curves.png)."),
) -> None:
    """Write a PNG of the training loss, validation loss and learning rate of a run.

    Examples:

      warmstart plot runs/20260101-120000

      warmstart plot runs/a -o a.png
    """
    from warmstart.train.plot import plot_run

    if not run_dir.is_dir():
        raise UsageError(f"'{run_dir}' is not a directory", fix="pass the --out directory of a pretrain run",
                         path=run_dir)
    path = plot_run(run_dir, output)
    print(f"wrote {path}")
