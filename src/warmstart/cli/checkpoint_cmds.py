"""``warmstart inspect``, ``warmstart eval``, ``warmstart generate``."""

from __future__ import annotations

import inspect
import json
import math
import time
from pathlib import Path
from typing import List, Optional

import typer

from warmstart.choices import DEVICES
from warmstart.cli._app import app, option, with_params
from warmstart.errors import UsageError
from warmstart.runtime import resolve_device

_CKPT = inspect.Parameter("ckpt", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=str,
                          default=typer.Argument(..., help="Checkpoint: directory, file, run dir or alias."))
# Options of every command that runs a model (eval, generate), declared once.
_MODEL_OPTIONS = (
    option("device", str, "auto", "--device", help="Where to run (auto: CUDA when present).", metavar=DEVICES.metavar),
    option("tokenizer", Optional[Path], None, "--tokenizer", help="tokenizer.json overriding the checkpoint's."),
    option("allow_unused", bool, False, "--allow-unused-tensors", help="Ignore tensors the model does not use."),
    option("trust_pickle", bool, False, "--trust-pickle", help="Allow pickle files (weights_only=True)."),
    option("as_json", bool, False, "--json", help="Print one JSON object."),
    option("allow_long", bool, False, "--allow-long-sequences",
           help="Allow sequences longer than the model's max_position_embeddings (refused by default)."),
)


def _within_positions(model, length: int, what: str, allow_long: bool) -> None:
    """Refuse ``length`` positions beyond the model's ``max_position_embeddings`` unless allowed."""
    from warmstart.arch.context import check_within_positions

    limit = model.cfg.max_position_embeddings
    if not allow_long:
        check_within_positions(limit, length, what, fix=f"stay within {limit} tokens, or pass --allow-long-sequences")


_INSPECT_HELP = """Show what a checkpoint is: format, declared architecture claims, family, parameter
count, dtypes, vocabulary, tokenizer, metadata and lineage. Any format: a Hugging Face directory,
a run directory, a single .safetensors file, a GGUF file, or an alias.

Examples:

  warmstart inspect smollm2-135m-instruct

  warmstart inspect runs/demo --tensors       # + the tensor table

  warmstart inspect model.safetensors --json  # one JSON object

  warmstart inspect runs/demo --quality       # + the 0-100 provenance score
"""

_EVAL_HELP = """Mean next-token loss and perplexity of a checkpoint on a text file or a directory of .py files.

The text is tokenized with the checkpoint's tokenizer (or --tokenizer), documents are joined with
EOS, and the token stream is cut into non-overlapping windows of --seq-len; every token after the
first is predicted exactly once.

Examples:

  warmstart eval smollm2-135m-instruct --data /usr/lib/python3.11/textwrap.py

  warmstart eval runs/demo --data ./src --include '*.py' --max-tokens 20000 --json

  warmstart eval model.gguf --data notes.txt --seq-len 1024 --batch-size 4 --device cuda
"""

_GENERATE_HELP = """Sample text from a checkpoint (KV cache; greedy at --temperature 0, else temperature and
top-p sampling, reproducible with --seed).

Examples:

  warmstart generate smollm2-135m-instruct --prompt "def fibonacci(n):"

  warmstart generate runs/demo --prompt "import os" --max-new-tokens 64 --temperature 0.8 --top-p 0.95 --seed 1

  warmstart generate model.gguf --prompt "Hello" --json
"""


# ---------------------------------------------------------------- shared


def _console():
    from rich.console import Console

    return Console(highlight=False)


def _load(ckpt_arg: str, trust_pickle: bool):
    from warmstart.checkpoint import load_checkpoint, resolve_checkpoint_path

    return load_checkpoint(resolve_checkpoint_path(ckpt_arg), trust_pickle=trust_pickle)


def _human_count(n: int) -> str:
    for unit, div in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= div:
            return f"{n / div:.2f}{unit}"
    return str(n)


# (ancestor present, its lineage hash equals the recorded one) -> note ("\\[": a bracket, not rich markup)
_LINEAGE_STATE = {(False, None): " \\[missing]", (True, None): "", (True, True): " \\[sha256 verified]",
                  (True, False): " \\[changed since recorded: sha256 differs]"}


def _print_inspect(s: dict, quality_text: str | None) -> None:
    from rich.table import Table

    con = _console()
    con.print(f"[bold]{s['path']}[/bold]" + (f"  → {s['resolved']}" if s["resolved"] != s["path"] else ""))
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="cyan", no_wrap=True)
    grid.add_column(overflow="fold")
    grid.add_row("format", s["format"])
    grid.add_row("files", "\n".join(f"{f['path']} ({f['bytes'] / 1e6:.1f} MB)" for f in s["files"]))
    claims = "\n".join(f"{c['value']}  [dim]({c['where']})[/dim]" for c in s["declared_claims"]) or "none"
    grid.add_row("declared", claims)
    fam = s["family"]
    grid.add_row("family", f"{fam['display'] or 'unknown'} [dim]({fam['kind'] or 'unrecognised'})[/dim]; "
                 f"tensor evidence: {fam['evidence'] or 'undecided'}"
                 + (f" [dim]({fam['evidence_reason']})[/dim]" if fam["evidence_reason"] else ""))
    grid.add_row("parameters", f"{_human_count(s['parameters'])} ({s['parameters']:,}) in {s['num_tensors']} tensors")
    grid.add_row("dtypes", ", ".join(f"{k}×{v}" for k, v in s["dtypes"].items()))
    grid.add_row("vocab", f"{s['vocab_size']} (config)")
    grid.add_row("tokenizer", _tokenizer_row(s["tokenizer"]))
    _shape_rows(grid, s)
    chain = s["lineage"]["chain"]
    grid.add_row("lineage", "\n".join(
        f"{'parent' if i == 0 else '← ' + 'grand' * i + 'parent'} {a.get('path')} ({a.get('family')}, "
        f"{a.get('format', '?')}, step {a.get('step')}, sha256 {str(a.get('sha256'))[:16]}…)"
        + _LINEAGE_STATE[(bool(a.get("present")), a.get("sha256_matches"))]
        for i, a in enumerate(chain)) if chain else "no parent recorded")
    meta = {k: v for k, v in s["metadata"].items() if k != "parent"}
    if meta:
        grid.add_row("metadata", "\n".join(f"{k}: {json.dumps(v) if not isinstance(v, str) else v}"
                                           for k, v in meta.items()))
    con.print(grid)
    if "tensors" in s:
        table = Table(show_lines=False, header_style="bold")
        for col in ("name", "shape", "dtype", "stored as"):
            table.add_column(col)
        for t in s["tensors"]:
            table.add_row(t["name"], "×".join(map(str, t["shape"])) or "scalar", t["dtype"],
                          t["source_name"] if t["source_name"] != t["name"] else "")
        con.print(table)
    if quality_text:
        con.print(quality_text, markup=False)


def _tokenizer_row(tok: dict) -> str:
    if "error" in tok:
        from rich.markup import escape

        return f"{tok.get('kind', '?')} [red](not supported: {escape(tok['error'])})[/red]"
    if not tok["present"]:
        return "none"
    flags = [f"{k.removesuffix('_token_id')} {tok[k]}" for k in ("bos_token_id", "eos_token_id") if k in tok]
    flags += [k for k in ("add_bos_token", "add_eos_token", "add_space_prefix") if tok.get(k)]
    return (f"{tok['kind_name']} ({tok['kind']}), {tok['vocab_size']} tokens"
            + (f" [dim]({', '.join(map(str, flags))})[/dim]" if flags else ""))


def _shape_rows(grid, s: dict) -> None:
    """The model shape, or why there is none beside the shape the file declares."""
    m = s["model"] or {}
    if not m:
        c = s["config"] or {}
        m = {"hidden_size": c.get("hidden_size"), "num_layers": c.get("num_hidden_layers"),
             "num_heads": c.get("num_attention_heads"), "num_kv_heads": c.get("num_key_value_heads"),
             "head_dim": c.get("head_dim"), "intermediate_size": c.get("intermediate_size"),
             "rope_theta": c.get("rope_theta") or 0.0, "tie_word_embeddings": c.get("tie_word_embeddings")}
    if s["config_error"]:
        from rich.markup import escape

        grid.add_row("config", f"[red]{escape(s['config_error'])}[/red]")
    grid.add_row("shape" if s["model"] else "declared shape",
                 f"hidden {m['hidden_size']}, layers {m['num_layers']}, heads {m['num_heads']}/"
                 f"{m['num_kv_heads']} kv, head_dim {m['head_dim']}, ffn {m['intermediate_size']}, "
                 f"rope θ {m['rope_theta']:g}, tied {m['tie_word_embeddings']}"
                 + (f", sliding window {m['sliding_window']}" if m.get("sliding_window") else ""))


@app.command("inspect", help=_INSPECT_HELP)
def inspect_cmd(
    ckpt: str = typer.Argument(..., help="Checkpoint: directory, file, run dir or alias (smollm2-135m-instruct)."),
    tensors: bool = typer.Option(False, "--tensors", help="Add the tensor table."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object instead of the human view."),
    quality: bool = typer.Option(False, "--quality", help="Add the 0-100 provenance score (release readiness)."),
    trust_pickle: bool = typer.Option(False, "--trust-pickle",
                                      help="Allow pickle files, loaded with torch.load(weights_only=True)."),
) -> None:
    from warmstart.release.inspect import inspect_summary

    checkpoint = _load(ckpt, trust_pickle)
    summary = inspect_summary(checkpoint, tensors=tensors)
    quality_text = None
    if quality:
        from warmstart.release.quality import quality_report, render_quality

        report = quality_report(checkpoint)
        summary["quality"] = report
        quality_text = render_quality(report)
    if as_json:
        typer.echo(json.dumps(summary, indent=2, default=str))
    else:
        _print_inspect(summary, quality_text)


# ------------------------------------------------------------------- eval


def _load_model(ckpt: str, device: str, tokenizer: Optional[Path], allow_unused: bool, trust_pickle: bool):
    """(checkpoint, model, tokenizer, device) for eval / generate: the tokenizer gate, then strict population."""
    from warmstart.init.gates import load_for_inference

    checkpoint = _load(ckpt, trust_pickle)
    dev = resolve_device(device)
    model, tok = load_for_inference(checkpoint, tokenizer_path=tokenizer, allow_unused=allow_unused, device=dev)
    return checkpoint, model, tok, dev


@app.command("eval", help=_EVAL_HELP)
@with_params(
    _CKPT,
    option("data", Path, ..., "--data", help="A text file, or a directory (files matching --include)."),
    option("include", Optional[List[str]], None, "--include", help="Glob for directories (default '*.py')."),
    option("seq_len", Optional[int], None, "--seq-len", min=1,
           help="Window length in tokens (default: 512, or the model's max_position_embeddings if smaller)."),
    option("max_tokens", Optional[int], None, "--max-tokens", min=2, help="Evaluate at most this many tokens."),
    option("batch_size", int, 4, "--batch-size", min=1, help="Windows per forward pass."),
    *_MODEL_OPTIONS,
)
def eval_cmd(ckpt: str, data: Path, include: Optional[List[str]], seq_len: Optional[int], max_tokens: Optional[int],
             batch_size: int, device: str, tokenizer: Optional[Path], allow_unused: bool, trust_pickle: bool,
             as_json: bool, allow_long: bool) -> None:
    t0 = time.perf_counter()
    from warmstart.data.texts import read_texts, token_stream
    from warmstart.train.evaluate import evaluate_tokens

    checkpoint, model, tok, dev = _load_model(ckpt, device, tokenizer, allow_unused, trust_pickle)
    if seq_len is None:
        seq_len = min(512, model.cfg.max_position_embeddings)
    texts = read_texts(data, include or [])
    ids = token_stream(tok, [t for _, t in texts], eos_id=model.cfg.eos_token_id, max_tokens=max_tokens)
    _within_positions(model, min(seq_len, max(len(ids) - 1, 0)), "the evaluation window (--seq-len)", allow_long)
    loss, count = evaluate_tokens(model, ids, seq_len=seq_len, batch_size=batch_size, device=dev)
    result = {
        "checkpoint": str(checkpoint.path),
        "data": str(data),
        "files": len(texts),
        "tokens": count,
        "seq_len": seq_len,
        "loss": loss,
        "perplexity": math.exp(min(loss, 700.0)),
        "random_init_loss": math.log(model.cfg.vocab_size),
        "device": str(dev),
        "seconds": round(time.perf_counter() - t0, 3),
    }
    if as_json:
        typer.echo(json.dumps(result))
        return
    con = _console()
    con.print(f"[bold]{result['checkpoint']}[/bold] on {result['data']} ({result['files']} file(s), "
              f"{count:,} predicted tokens, seq {seq_len}, {dev})")
    con.print(f"loss [bold]{loss:.4f}[/bold]   perplexity [bold]{result['perplexity']:.2f}[/bold]   "
              f"[dim](random init ≈ ln V = {result['random_init_loss']:.2f})[/dim]")


# --------------------------------------------------------------- generate


@app.command("generate", help=_GENERATE_HELP)
@with_params(
    _CKPT,
    option("prompt", str, ..., "--prompt", help="Text to continue."),
    option("max_new_tokens", int, 64, "--max-new-tokens", min=1, help="Tokens to generate at most."),
    option("temperature", float, 0.0, "--temperature", min=0.0, help="0 = greedy."),
    option("top_p", float, 1.0, "--top-p", min=0.0, max=1.0, help="Nucleus sampling mass (with temperature>0)."),
    option("seed", Optional[int], None, "--seed", help="Random seed for sampling."),
    *_MODEL_OPTIONS,
)
def generate_cmd(ckpt: str, prompt: str, max_new_tokens: int, temperature: float, top_p: float, seed: Optional[int],
                 device: str, tokenizer: Optional[Path], allow_unused: bool, trust_pickle: bool,
                 as_json: bool, allow_long: bool) -> None:
    import torch

    checkpoint, model, tok, dev = _load_model(ckpt, device, tokenizer, allow_unused, trust_pickle)
    ids = tok.encode(prompt).ids
    if not ids:
        raise UsageError("the prompt encodes to no tokens", fix="pass a non-empty --prompt")
    _within_positions(model, len(ids) + max_new_tokens, f"the prompt ({len(ids)} tokens) plus --max-new-tokens",
                      allow_long)
    gen = None
    if seed is not None:
        torch.manual_seed(seed)
        gen = torch.Generator(device=dev).manual_seed(seed)
    t0 = time.perf_counter()
    out = model.generate(torch.tensor([ids], device=dev), max_new_tokens, temperature=temperature, top_p=top_p,
                         eos_token_id=model.cfg.eos_token_id, generator=gen)
    seconds = time.perf_counter() - t0
    new = out[0, len(ids):].tolist()
    completion = tok.decode(new, skip_special_tokens=True)
    if as_json:
        typer.echo(json.dumps({"prompt": prompt, "completion": completion, "new_tokens": len(new),
                               "token_ids": new, "seconds": round(seconds, 3)}))
        return
    con = _console()
    con.print(prompt, end="", markup=False, style="bold")
    con.print(completion, markup=False)
    con.print(f"[dim]{len(new)} tokens in {seconds:.2f}s ({len(new) / max(seconds, 1e-9):.1f} tok/s)[/dim]")
