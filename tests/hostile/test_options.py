"""Hostile options, YAML files, corpus paths and metrics: every one refused with its code before work
starts (or, for ``plot``, a damaged line skipped with a warning), in seconds, nothing left behind."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from _hostile import assert_clean, cli, refused_cli

TINY = ("--preset", "llama-tiny", "--vocab-size", 300, "--seq-len", 16, "--batch-size", 1, "--max-steps", 1,
        "--eval-tokens", 16)


def _fifo(tmp: Path, name: str = "pipe") -> Path:
    os.mkfifo(tmp / name)
    return tmp / name


def _loop(tmp: Path) -> Path:
    os.symlink(tmp / "loop-b", tmp / "loop-a")
    os.symlink(tmp / "loop-a", tmp / "loop-b")
    return tmp / "loop-a"


def _yaml(tmp: Path, text: str | bytes) -> Path:
    p = tmp / "run.yaml"
    p.write_bytes(text if isinstance(text, bytes) else text.encode())
    return p


def _metrics(tmp: Path, lines: list[bytes]) -> Path:
    run = tmp / "run"
    run.mkdir()
    (run / "metrics.jsonl").write_bytes(b"".join(line + b"\n" for line in lines))
    return run


# id -> (args builder (tmp, hf checkpoint, text file) -> argv, code)
OPTION_CASES = {
    # corpus, tokenizer and config paths that are not regular files
    "data-fifo": (lambda t, ck, tx: ["pretrain", *TINY, "--data", _fifo(t), "--out", t / "r"], "WS003"),
    "data-dev-zero": (lambda t, ck, tx: ["pretrain", *TINY, "--data", "/dev/zero", "--out", t / "r"], "WS003"),
    "data-symlink-loop": (lambda t, ck, tx: ["pretrain", *TINY, "--data", _loop(t), "--out", t / "r"], "WS004"),
    "prepare-dev-zero": (lambda t, ck, tx: ["prepare", "--data", "/dev/zero", "--cache-dir", t / "cache"], "WS003"),
    "prepare-fifo": (lambda t, ck, tx: ["prepare", "--data", _fifo(t), "--cache-dir", t / "cache"], "WS003"),
    "init-data-fifo": (lambda t, ck, tx: ["pretrain", "--init", ck, "--data", _fifo(t), "--out", t / "r",
                                          "--max-steps", 1], "WS003"),
    "eval-data-fifo": (lambda t, ck, tx: ["eval", ck, "--data", _fifo(t)], "WS003"),
    "eval-data-dev-zero": (lambda t, ck, tx: ["eval", ck, "--data", "/dev/zero"], "WS003"),
    "eval-data-loop": (lambda t, ck, tx: ["eval", ck, "--data", _loop(t)], "WS004"),
    "tokenizer-fifo": (lambda t, ck, tx: ["pretrain", *TINY, "--data", tx, "--tokenizer", _fifo(t),
                                          "--out", t / "r"], "WS003"),
    "eval-tokenizer-fifo": (lambda t, ck, tx: ["eval", ck, "--data", tx, "--tokenizer", _fifo(t)], "WS003"),
    "config-fifo": (lambda t, ck, tx: ["pretrain", "--config", _fifo(t)], "WS003"),
    "eval-data-binary": (lambda t, ck, tx: ["eval", ck, "--data", _binary(t)], "WS002"),
    # YAML values of the wrong type or range
    "yaml-lr-string": (lambda t, ck, tx: ["pretrain", "--config", _yaml(t, "lr: abc\n")], "WS002"),
    "yaml-steps-string": (lambda t, ck, tx: ["pretrain", "--config", _yaml(t, 'max_steps: "three"\n')], "WS002"),
    "yaml-data-number": (lambda t, ck, tx: ["pretrain", "--config", _yaml(t, "data: 5\n")], "WS002"),
    "yaml-compile-string": (lambda t, ck, tx: ["pretrain", "--config", _yaml(t, "compile: maybe\n")], "WS002"),
    "yaml-betas-strings": (lambda t, ck, tx: ["pretrain", "--config", _yaml(t, "betas: [a, b]\n")], "WS002"),
    "yaml-seq-len-float": (lambda t, ck, tx: ["pretrain", "--config", _yaml(t, "seq_len: 12.5\n")], "WS002"),
    "yaml-lr-infinite": (lambda t, ck, tx: ["pretrain", "--config", _yaml(t, "lr: .inf\n")], "WS002"),
    "yaml-list": (lambda t, ck, tx: ["pretrain", "--config", _yaml(t, "- lr\n- 1\n")], "WS002"),
    "yaml-unknown-key": (lambda t, ck, tx: ["pretrain", "--config", _yaml(t, "learning_rate: 1\n")], "WS002"),
    "yaml-not-utf8": (lambda t, ck, tx: ["pretrain", "--config", _yaml(t, b"lr: \xff\xfe\n")], "WS002"),
    "yaml-broken": (lambda t, ck, tx: ["pretrain", "--config", _yaml(t, "lr: [1\n")], "WS002"),
    "yaml-negative-batch": (lambda t, ck, tx: ["pretrain", "--config", _yaml(t, "batch_size: -3\n")], "WS002"),
    # command-line values
    "flag-lr-not-a-number": (lambda t, ck, tx: ["pretrain", "--lr", "abc"], "WS002"),
    "flag-unknown-option": (lambda t, ck, tx: ["pretrain", "--learning-rate", 1], "WS002"),
    "flag-seq-len-one": (lambda t, ck, tx: ["pretrain", *TINY[:-6], "--seq-len", 1, "--data", tx], "WS002"),
    "flag-beta2": (lambda t, ck, tx: ["pretrain", "--beta2", 1.5, "--data", tx], "WS002"),
    "flag-vocab-size": (lambda t, ck, tx: ["pretrain", "--vocab-size", 10, "--data", tx], "WS002"),
    "flag-seed-negative": (lambda t, ck, tx: ["pretrain", "--seed", -1, "--data", tx], "WS002"),
    "flag-weight-decay": (lambda t, ck, tx: ["pretrain", "--weight-decay", -0.1, "--data", tx], "WS002"),
    "flag-max-tokens-zero": (lambda t, ck, tx: ["pretrain", "--max-tokens", 0, "--data", tx], "WS002"),
    "flag-nproc-zero": (lambda t, ck, tx: ["pretrain", "--nproc-per-node", 0], "WS002"),
    "flag-unknown-command": (lambda t, ck, tx: ["pretrian"], "WS002"),
    "eval-missing-data": (lambda t, ck, tx: ["eval", ck], "WS002"),
    "eval-batch-zero": (lambda t, ck, tx: ["eval", ck, "--data", tx, "--batch-size", 0], "WS002"),
    "generate-top-p": (lambda t, ck, tx: ["generate", ck, "--prompt", "x", "--top-p", 3], "WS002"),
    "generate-empty-prompt": (lambda t, ck, tx: ["generate", ck, "--prompt", ""], "WS002"),
    "export-unknown-target": (lambda t, ck, tx: ["export", ck, "--to", "onnx", "-o", t / "o"], "WS002"),
    "export-unknown-dtype": (lambda t, ck, tx: ["export", ck, "--to", "gguf", "--dtype", "q3", "-o", t / "o.gguf"],
                             "WS002"),
    # sequences beyond the model's positions (max_position_embeddings 512)
    "eval-seq-beyond-positions": (lambda t, ck, tx: ["eval", ck, "--data", tx, "--seq-len", 4096], "WS002"),
    "generate-beyond-positions": (lambda t, ck, tx: ["generate", ck, "--prompt", "def f", "--max-new-tokens", 4096],
                                  "WS002"),
    # plot
    "plot-no-step": (lambda t, ck, tx: ["plot", _metrics(t, [b'{"loss": 1.0}', b'{"val_loss": 2.0}'])], "WS002"),
    "plot-not-utf8": (lambda t, ck, tx: ["plot", _metrics(t, [b'\xff\xfe{"step": 1}', b"\x00\x01"])], "WS002"),
    "plot-metrics-fifo": (lambda t, ck, tx: ["plot", _plot_fifo(t)], "WS003"),
    "plot-not-a-dir": (lambda t, ck, tx: ["plot", tx], "WS002"),
}


def _binary(tmp: Path) -> Path:
    p = tmp / "blob.bin"
    p.write_bytes(b"\x00\x81" * 100)
    return p


def _plot_fifo(tmp: Path) -> Path:
    run = tmp / "run"
    run.mkdir()
    _fifo(run, "metrics.jsonl")
    return run


@pytest.mark.parametrize("case", list(OPTION_CASES))
def test_hostile_option(case, tmp_path, hf, text):
    build, code = OPTION_CASES[case]
    args = build(tmp_path, hf, text)
    refused_cli(tmp_path, args, code)


def test_plot_skips_damaged_lines_with_a_warning(tmp_path):
    lines = [json.dumps({"step": s, "loss": 3.0 - 0.1 * s, "lr": 1e-3}).encode() for s in range(1, 6)]
    run = _metrics(tmp_path, [lines[0], b'{"loss": 2.0}', b"\xff\xfe not utf-8", b"[1, 2]", *lines[1:],
                              b'{"step": "three", "loss": 1}'])
    o = cli("plot", run, "-o", tmp_path / "c.png")
    assert_clean(o)
    assert o.exit == 0 and (tmp_path / "c.png").read_bytes()[:4] == b"\x89PNG", o.text
    assert "warning" in o.err and "left out 4 line(s)" in o.err, o.err


def test_a_huge_sparse_corpus_file_is_not_read_whole(tmp_path):
    """8 GiB of zeros (a sparse file): its first 8 KiB say binary, the rest is never read."""
    big = tmp_path / "huge.txt"
    with open(big, "wb") as fh:
        fh.truncate(8 << 30)
    refused_cli(tmp_path, ("pretrain", *TINY, "--data", big, "--out", tmp_path / "r"), "WS202", says="1 binary")


def test_a_byte_budget_bounds_reading_within_a_file(tmp_path):
    """--max-corpus-bytes stops inside a large text file: its first bytes are read, not all of it."""
    from warmstart.data.readers import ReadOptions, read_pieces, sniff
    from warmstart.data.sources import SourceStats, resolve_files

    big = tmp_path / "big.txt"
    big.write_bytes(("héllo wörld " * 1000 + "\n").encode() * 2000)  # ~26 MB
    files, _ = resolve_files([str(big)])
    sniff(files[0])
    stats = SourceStats()
    docs = list(read_pieces(files[0], ReadOptions(budget=lambda: 100_001), stats))
    stats.bytes = sum(d.nbytes for d in docs)
    assert stats.bytes <= 100_001 and sum(len(d.text.encode()) for d in docs) == stats.bytes > 90_000
