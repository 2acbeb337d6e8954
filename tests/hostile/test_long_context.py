"""Hostile long-context options: a training window beyond the model's positions (refused as eval and
generate refuse it, the fix naming --context-length), malformed or unexpressible RoPE overrides, and an
export that cannot carry the RoPE scaling; each refused with its code, in seconds, nothing left behind."""

from __future__ import annotations

from pathlib import Path

import pytest
from _hostile import edit_config, refused_cli


def _scaled(ck: Path) -> Path:
    edit_config(ck, rope_scaling={"rope_type": "linear", "factor": 2.0})
    return ck


STEP = ("--max-steps", 1, "--batch-size", 1, "--eval-tokens", 64)

# id -> (args builder (tmp, hf checkpoint: llama-tiny, 512 positions) -> argv, code, what the message says)
LONG_CONTEXT_CASES = {
    "init-seq-len-beyond-positions": (
        lambda t, ck: ["pretrain", "--init", ck, "--seq-len", 1024, *STEP, "--out", t / "r"], "WS002",
        ("the training window (--seq-len) is 1024 tokens, beyond the model's max_position_embeddings = 512",
         "--context-length 1024")),
    "init-context-length-below-seq-len": (
        lambda t, ck: ["pretrain", "--init", ck, "--seq-len", 256, "--context-length", 128, *STEP, "--out", t / "r"],
        "WS002", ("max_position_embeddings = 128",)),
    "init-rope-scaling-unknown": (
        lambda t, ck: ["pretrain", "--init", ck, "--rope-scaling", "dynamic:2", *STEP, "--out", t / "r"], "WS002",
        ("TYPE:FACTOR",)),
    "init-rope-scaling-no-factor": (
        lambda t, ck: ["pretrain", "--init", ck, "--rope-scaling", "yarn", *STEP, "--out", t / "r"], "WS002",
        ("TYPE:FACTOR",)),
    "init-rope-theta-zero": (
        lambda t, ck: ["pretrain", "--init", ck, "--rope-theta", 0, *STEP, "--out", t / "r"], "WS002",
        ("--rope-theta",)),
    "init-attention-unknown": (
        lambda t, ck: ["pretrain", "--init", ck, "--attention", "bidirectional", *STEP, "--out", t / "r"], "WS002",
        ("--attention",)),
    "init-rope-scaling-stacked": (
        lambda t, ck: ["pretrain", "--init", _scaled(ck), "--rope-scaling", "yarn:4", "--context-length", 2048,
                       *STEP, "--out", t / "r"], "WS125", ("already scales RoPE",)),
}


@pytest.mark.parametrize("case", list(LONG_CONTEXT_CASES))
def test_hostile_long_context_option(case, tmp_path, hf):
    build, code, says = LONG_CONTEXT_CASES[case]
    refused_cli(tmp_path, build(tmp_path, hf), code, says=says)
