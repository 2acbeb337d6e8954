"""``warmstart pretrain``, ``warmstart prepare``, ``warmstart plot``."""

from __future__ import annotations

import inspect
import sys
from pathlib import Path
from typing import Optional

import typer

from warmstart.cli._app import app, option, with_params
from warmstart.errors import UsageError

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

  warmstart pretrain --nproc-per-node 8 --init ./Qwen2.5-0.5B --max-tokens 10000000000 --out runs/cpt

  torchrun --nnodes 2 --nproc-per-node 8 --rdzv-backend c10d --rdzv-endpoint HOST:29500 -m warmstart pretrain ...
"""

# ---------------------------------------------------------------- options generated from TrainConfig
# Every TrainConfig field is declared once (default, help, spellings) in warmstart.train.config; the
# commands below get their options from those declarations through a generated signature, which typer
# reads with inspect.signature.

_CTX = inspect.Parameter("ctx", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=typer.Context)


def config_params(names=None, help_overrides: dict[str, str] | None = None) -> list[inspect.Parameter]:
    """One typer option per declared ``TrainConfig`` field (``names``: a subset, in that order)."""
    from warmstart.train.config import option_specs

    helps = help_overrides or {}
    return [option(s.name, s.type, s.default, *s.flags, help=helps.get(s.name, s.help),
                   **({"metavar": s.metavar} if s.metavar else {})) for s in option_specs(names)]


def _explicit(ctx, values: dict) -> dict:
    """Only the parameters the user actually typed (not typer defaults)."""
    out = {}
    for name, value in values.items():
        src = ctx.get_parameter_source(name)
        # typer ships its own copy of click, so compare the enum member by name
        if getattr(src, "name", None) in ("COMMANDLINE", "ENVIRONMENT"):
            out[name] = list(value) if isinstance(value, (list, tuple)) else value
    return out


@app.command("pretrain", help=_PRETRAIN_HELP, no_args_is_help=False)
@with_params(
    _CTX,
    option("config", Optional[Path], None, "--config", help="YAML file supplying any flag; flags override it."),
    *config_params(),
    option("quiet", bool, False, "--quiet", "-q", help="No progress output (summary only)."),
    option("nproc_per_node", int, 1, "--nproc-per-node", min=1,
           help="Train on N local processes (GPUs), started through torchrun's API. Several nodes: "
                "torchrun on each (docs/multinode.md)."),
)
def pretrain_cmd(ctx: typer.Context, **values) -> None:
    from warmstart.cli._app import ARGV
    from warmstart.train import pretrain, resolve_config
    from warmstart.train.launch import in_worker, launch_local, without_nproc

    quiet = values.pop("quiet")
    config_path = values.pop("config")
    nproc = values.pop("nproc_per_node")
    cfg = resolve_config(_explicit(ctx, values), str(config_path) if config_path else None)
    if nproc > 1 and not in_worker():  # refuse here, once, what every worker would refuse; then start them
        from warmstart.train.distributed import rank_device
        from warmstart.train.parallel import parallel_mode

        rank_device(cfg.device, nproc)
        parallel_mode(cfg, nproc)
        raise typer.Exit(launch_local(nproc, without_nproc(list(ARGV))))
    pretrain(cfg, quiet=quiet)


_PREPARE_OPTIONS = ("data", "include", "text_field", "tokenizer", "vocab_size", "seq_len", "val_fraction",
                    "max_corpus_bytes", "cache_dir", "workers", "skip_bad_records")
_PREPARE_HELP = {
    "data": "Text file, directory (files taken by content), JSON Lines / JSON / Parquet / Arrow file (also .gz, "
            ".zst, .bz2, .xz) or datasets folder (repeatable; PATH:WEIGHT on each makes a mixture). Default: the "
            "Python stdlib.",
    "tokenizer": "tokenizer.json (default: train a byte-level BPE).",
    "seq_len": "Sequence length the cache is checked against.",
}


@app.command("prepare")
@with_params(
    *config_params(_PREPARE_OPTIONS, _PREPARE_HELP),
    option("rebuild", bool, False, "--rebuild", help="Tokenize every file again."),
    option("list_", bool, False, "--list", help="List the cache directory's entries (sizes, sources) and stop."),
    option("clean", bool, False, "--clean", help="Remove what no entry references (old shards, leftovers of killed "
                                                 "runs, unused tokenizers) and stop."),
    option("quiet", bool, False, "--quiet", "-q", help="No progress bar (the summary only)."),
)
def prepare_cmd(**values) -> None:
    """Tokenize a corpus once into a reusable, sharded token cache; prints its path.

    Streams in bounded memory on every core; a killed run resumes, and only added or changed files are tokenized.

    Examples:

      warmstart prepare

      warmstart prepare --data ./corpus --tokenizer tok.json --workers 8

      warmstart prepare --data data.jsonl.zst --text-field content --tokenizer tok.json

      warmstart prepare --data code/:0.9 --data replay/:0.1 --tokenizer tok.json

      warmstart prepare --list           # entries, sizes, sources

    Then train on it with: warmstart pretrain --data <printed path> (--tokenizer is read from it).
    """
    from warmstart.data import build_dataset
    from warmstart.data.housekeeping import clean, list_lines
    from warmstart.data.mixture import MixtureDataset, write_mixture
    from warmstart.train.config import TrainConfig

    v = values
    cfg = TrainConfig.from_dict({k: v[k] for k in _PREPARE_OPTIONS if v[k] is not None}, source="command line")
    cfg.validate()  # every value in range before any work
    s = cfg.data_settings(rebuild=v["rebuild"])
    if v["list_"] or v["clean"]:
        for line in (clean if v["clean"] else list_lines)(s.cache_root):
            print(line)
        return
    ds = build_dataset(cfg.data or None, s, tokenizer_path=cfg.tokenizer, log=lambda t: print(t, flush=True),
                       quiet=v["quiet"], refuse_busy=True)
    print(ds.summary())
    if isinstance(ds, MixtureDataset) and not Path(ds.cache_path, "mixture.json").is_file():
        out = write_mixture(s.cache_root, [p.cache_path for p in ds.parts], ds.weights, ds.names)
        print(f"cache: {out}")
    else:
        print(f"cache: {ds.cache_path}")


@app.command("plot")
def plot_cmd(
    run_dir: Path = typer.Argument(..., help="A run directory (holds metrics.jsonl)."),
    output: Optional[Path] = typer.Option(None, "--output", "-o",
                                          help="Image path: .png (default RUN_DIR/curves.png), .svg, .pdf, ..."),
    force: bool = typer.Option(False, help="Replace an existing -o file."),
) -> None:
    """Write a PNG of the training loss, validation loss and learning rate of a run.

    An existing -o file is replaced only with --force (the default RUN_DIR/curves.png is rewritten).

    Examples:

      warmstart plot runs/20260101-120000

      warmstart plot runs/a -o a.png

      warmstart plot runs/a -o a.svg --force
    """
    from warmstart.train.plot import plot_run

    if not run_dir.is_dir():
        raise UsageError(f"'{run_dir}' is not a directory", fix="pass the --out directory of a pretrain run",
                         path=run_dir)
    path = plot_run(run_dir, output, warn=lambda text: print(text, file=sys.stderr), force=force)
    print(f"wrote {path}")
