"""Issue 14 acceptance on the real SmolLM2-135M-Instruct GGUF, on CPU: continued pretraining on one part of
the standard library (target) with another part as the retain set, without and with 10% replay of
retain-like code; the summary reports both sets. Kept short (3 steps of 2 x 64 tokens, 4 evaluation windows
per set); the mixture's 1% share and exact resume are checked at scale on tiny models (test_cpt.py)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from _corpus import make_corpus

from warmstart.train import pretrain, resolve_config

pytestmark = [pytest.mark.smollm2, pytest.mark.slow]

TARGET = ["json/decoder.py", "json/encoder.py", "json/scanner.py", "textwrap.py", "heapq.py", "bisect.py"]
REPLAY = ["shlex.py", "fnmatch.py", "glob.py"]  # retain-like: more general-purpose library code
RETAIN = ["csv.py", "string.py"]


def run(tmp_path, name, data, **flags):
    return pretrain(resolve_config({
        "init": "smollm2-135m-instruct", "data": data, "eval_data": [f"retain={tmp_path / 'retain'}"],
        "seq_len": 64, "batch_size": 2, "eval_tokens": 256, "val_fraction": 0.3, "max_steps": 3, "warmup_steps": 1,
        "eval_every": 0, "save_every": 0, "log_every": 1, "out": str(tmp_path / name),
        "cache_dir": str(tmp_path / "cache"), **flags}), quiet=True)


def test_continued_pretraining_with_and_without_replay_reports_target_and_retain(tmp_path, capsys):
    target, replay = make_corpus(tmp_path / "target", TARGET), make_corpus(tmp_path / "replay", REPLAY)
    make_corpus(tmp_path / "retain", RETAIN)
    plain = run(tmp_path, "plain", [str(target)])
    mixed = run(tmp_path, "replay", [f"{target}:0.9", f"{replay}:0.1"], schedule="wsd")
    printed = capsys.readouterr().out
    lnv = math.log(49152)
    for s in (plain, mixed):
        retain = s.eval_sets["retain"]
        assert retain["step0"] < 0.9 * lnv and s.first_val_loss < 0.9 * lnv  # a trained start on both sets
        assert retain["change"] == pytest.approx(retain["final"] - retain["step0"]) and abs(retain["change"]) < 0.1
        assert f"val/retain: step 0 {retain['step0']:.4f} -> final {retain['final']:.4f}" in printed
        assert f"val_loss: first {s.first_val_loss:.4f} -> final {s.final_val_loss:.4f}" in printed
        prov = json.loads((Path(s.run_dir) / "checkpoints/step-000003/warmstart.json").read_text())
        assert prov["eval_sets"] == s.eval_sets and prov["parent"]["format"] == "gguf"
    # The same weights on the same retain set: the same step-0 loss, whatever the training data.
    assert plain.eval_sets["retain"]["step0"] == mixed.eval_sets["retain"]["step0"]
    assert plain.data_mixture is None
    drawn = {d["source"]: d for d in mixed.data_mixture}
    assert drawn[str(target)]["weight"] == 0.9 and drawn[str(replay)]["weight"] == 0.1
    assert sum(d["tokens_drawn"] for d in drawn.values()) == mixed.tokens_seen == 3 * 2 * 64
    assert all(abs(d["share"] - d["weight"]) < 2 / 6 for d in drawn.values())  # < 2 windows of 6 drawn
    assert "data mixture (weight -> share of tokens drawn)" in printed
