"""``warmstart validate | stamp | export | qa | card | publish-check``."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import List, Optional

import typer

from warmstart.checkpoint.gguf.write import GGUF_DTYPES
from warmstart.checks import dumps
from warmstart.cli._app import app
from warmstart.errors import UnreadableError
from warmstart.files import refuse_special
from warmstart.release.export import TARGETS


def _resolve(spec: str) -> Path:
    """CLI path or alias (``smollm2-135m-instruct``) -> Path; missing -> exit 2 paragraph."""
    from warmstart.checkpoint import resolve_checkpoint_path

    p = resolve_checkpoint_path(spec)
    if refuse_special(p, "checkpoint path") is None:  # a loop (WS004), a FIFO or a device (WS003) is refused
        raise UnreadableError("no such file or directory", fix="check the path (or use a known alias such as "
                              "smollm2-135m-instruct)", path=p)
    return p


def _emit(text: str) -> None:
    sys.stdout.write(text.rstrip("\n") + "\n")
    sys.stdout.flush()


def _report(r: dict, as_json: bool, render, *, public=None) -> None:
    """Print a report (JSON or text) and exit with its exit code (0 pass/GO, 1 fail/NO-GO, 2 unreadable)."""
    _emit(dumps(public(r) if public else r) if as_json else render(r))
    raise typer.Exit(r["exit_code"])


# ---------------------------------------------------------------- validate

_VALIDATE_HELP = """Check the structural and numeric integrity of a checkpoint.

Structure (headers, offsets, dtypes, sizes, overlaps, truncation, shard index), shapes against
the config, family, NaN/Inf in any tensor (all-zero tensors are a warning), and whether the
config loads in transformers' schema. Exit 0 pass, 1 fail, 2 unreadable.

Examples:

  warmstart validate runs/a/checkpoints/step-000200

  warmstart validate model.gguf --json

  warmstart validate smollm2-135m-instruct
"""


@app.command("validate", help=_VALIDATE_HELP)
def validate_cmd(
    ckpt: str = typer.Argument(..., help="Checkpoint: HF directory, .safetensors, .gguf, run directory or alias."),
    json_: bool = typer.Option(False, "--json", help="Print the report as JSON."),
) -> None:
    from warmstart.release.validate import public, render_validation, validate

    _report(validate(_resolve(ckpt)), json_, render_validation, public=public)


# ------------------------------------------------------------------- stamp

_STAMP_HELP = """Write a copy of a checkpoint with corrected identity / provenance metadata.

The copy has the input's format (HF directory, single safetensors, GGUF); tensor bytes are
copied, never re-encoded, and verified by sha256 before success is declared. --architecture
takes any spelling (qwen2, Qwen2, Qwen2ForCausalLM); given alone, hf_architecture and
model_type follow from it. A claim that contradicts the tensor names is refused unless --force.
The input is never overwritten.

Examples:

  warmstart stamp ckpt --architecture qwen2 --hf-architecture Qwen2ForCausalLM --model-type qwen2 -o ckpt-fixed

  warmstart stamp model.gguf --license apache-2.0 --data-source HuggingFaceTB/smollm-corpus \\
      --data-license odc-by --parent HuggingFaceTB/SmolLM2-135M -o model-stamped.gguf
"""


@app.command("stamp", help=_STAMP_HELP)
def stamp_cmd(
    ckpt: str = typer.Argument(..., help="Checkpoint to copy (never modified)."),
    out: Path = typer.Option(..., "-o", "--out", help="Output path (must not exist)."),
    architecture: Optional[str] = typer.Option(None, help="Family, any spelling (qwen2, Qwen2ForCausalLM, …)."),
    hf_architecture: Optional[str] = typer.Option(None, help="HF class, e.g. Qwen2ForCausalLM."),
    model_type: Optional[str] = typer.Option(None, help="HF config model_type, e.g. qwen2."),
    license_: Optional[str] = typer.Option(None, "--license", help="Model license (SPDX id, e.g. apache-2.0)."),
    data_source: Optional[List[str]] = typer.Option(None, "--data-source", help="Training data source (repeatable)."),
    data_license: Optional[str] = typer.Option(None, help="License of the training data."),
    parent: Optional[str] = typer.Option(None, help="Parent checkpoint (path or hub id) this model was trained from."),
    force: bool = typer.Option(False, help="Accept an architecture claim that contradicts the tensor names."),
    json_: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    from warmstart.release.stamp import render_stamp, stamp_checkpoint

    r = stamp_checkpoint(_resolve(ckpt), out, architecture=architecture, hf_architecture=hf_architecture,
                         model_type=model_type, license=license_, data_sources=data_source,
                         data_license=data_license, parent=parent, force=force)
    _emit(dumps(r) if json_ else render_stamp(r))


# ------------------------------------------------------------------ export

_EXPORT_HELP = """Convert a checkpoint: HF directory, single safetensors, or GGUF (F32/F16/BF16/Q8_0).

GGUF uses llama.cpp's tensor names, metadata keys and Q/K row permutation, and embeds the
tokenizer, so llama.cpp tools and transformers' GGUF loader read it. Every export is read back
through warmstart's loader and must give the source's logits (rounded to the export dtype)
before success is declared.

Examples:

  warmstart export runs/a --to gguf --dtype q8_0 -o model-q8_0.gguf

  warmstart export smollm2-135m-instruct --to hf -o smollm2-hf

  warmstart export ckpt --to safetensors --dtype bf16 -o model.safetensors
"""


@app.command("export", help=_EXPORT_HELP)
def export_cmd(
    ckpt: str = typer.Argument(..., help="Checkpoint to convert."),
    to: str = typer.Option(..., "--to", help="The format to write.", metavar=TARGETS.metavar),
    out: Path = typer.Option(..., "-o", "--out", help="Output file (safetensors, gguf) or directory (hf)."),
    dtype: Optional[str] = typer.Option(None, help="Tensor dtype (q8_0: GGUF only). Default: f16 for gguf, "
                                        "f32 otherwise.", metavar=GGUF_DTYPES.metavar),
    overwrite: bool = typer.Option(False, help="Replace an existing output (never the input)."),
    json_: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    from warmstart.release.export import export_checkpoint, render_export

    r = export_checkpoint(_resolve(ckpt), to, out, dtype=dtype, overwrite=overwrite)
    _emit(dumps(r) if json_ else render_export(r))


# ---------------------------------------------------------------------- qa

_QA_HELP = """Run the release gates on one checkpoint; verdict GO / NO-GO.

Gates: validate passes; all tensors finite; tokenizer round-trips text; loss on a built-in probe
(English + Python) below ln V; greedy generation non-empty and not one token repeated;
safetensors export round-trip equal; metadata complete; config loads in transformers' schema.
Exit 0 GO, 1 NO-GO, 2 unreadable input.

Examples:

  warmstart qa runs/a/checkpoints/step-000200

  warmstart qa model.gguf --json
"""


@app.command("qa", help=_QA_HELP)
def qa_cmd(
    ckpt: str = typer.Argument(..., help="Checkpoint to check."),
    json_: bool = typer.Option(False, "--json", help="Print the report as JSON."),
) -> None:
    from warmstart.release._report import render_gates
    from warmstart.release.qa import run_qa

    _report(run_qa(_resolve(ckpt)), json_, lambda r: render_gates("qa", r))


# -------------------------------------------------------------------- card

_CARD_HELP = """Write a Hugging Face model card (YAML front matter + sections) for a checkpoint.

Front matter: license, base_model (warm starts), datasets, tags, model-index with val_loss and
perplexity. Sections: intended use and limits, training procedure (the run's config.yaml),
loss trajectory (metrics.jsonl), data, how to use, reproduce. Refuses to replace a file unless --force.

Examples:

  warmstart card runs/a/checkpoints/step-000200 -o runs/a/checkpoints/step-000200/README.md

  warmstart card model.gguf -o README.md --force
"""


@app.command("card", help=_CARD_HELP)
def card_cmd(
    ckpt: str = typer.Argument(..., help="Checkpoint to describe."),
    out: Path = typer.Option(..., "-o", "--out", help="Where to write the card (e.g. CKPT/README.md)."),
    force: bool = typer.Option(False, help="Replace an existing file."),
) -> None:
    from warmstart.release.card import write_card

    write_card(_resolve(ckpt), out, force=force)
    _emit(f"wrote model card {out}")


# ----------------------------------------------------------- publish-check

_PUBLISH_HELP = """The publish pre-flight, fully offline: GO / NO-GO with every blocker and its fix.

Gates in order: 1 validate; 2 inspect --quality >= 90 (prints the `warmstart stamp` recipe when
identity or provenance is short); 3 qa GO; 4 model card with HF YAML front matter (default:
CKPT/README.md, or README.md beside a file); 5 HF_TOKEN set (only the variable is checked);
6 smoke generation produces text; 7 GGUF and safetensors export round-trip. Exit 0 only on GO.

Examples:

  warmstart publish-check runs/a/checkpoints/step-000200

  warmstart publish-check model.gguf --card README.md --json
"""


@app.command("publish-check", help=_PUBLISH_HELP)
def publish_check_cmd(
    ckpt: str = typer.Argument(..., help="Checkpoint to publish."),
    card: Optional[Path] = typer.Option(None, help="Model card path (default: CKPT/README.md or sibling README.md)."),
    json_: bool = typer.Option(False, "--json", help="Print the report as JSON."),
) -> None:
    from warmstart.release.publish_check import publish_check, render_publish

    _report(publish_check(_resolve(ckpt), card=card), json_, render_publish)
