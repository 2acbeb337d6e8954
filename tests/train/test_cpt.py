"""Continued pretraining on tiny models: a weighted mixture with replay, extra validation sets, the forgetting
report in the summary / warmstart.json / model card / plot, exact resume of the mixture order, gate 7 per set."""

from __future__ import annotations

import json
import math
import random

import pytest
from _corpus import make_corpus

from warmstart.errors import ResumeError, UntrainedInitError
from warmstart.release.card import build_card
from warmstart.train import TrainConfig, pretrain, resolve_config
from warmstart.train.plot import loss_curves
from warmstart.checkpoint.run import read_metrics

TARGET = ["textwrap.py", "string.py", "heapq.py", "bisect.py", "queue.py", "shlex.py"]
REPLAY = ["json/decoder.py", "json/encoder.py", "colorsys.py", "fnmatch.py"]
RETAIN = ["keyword.py", "glob.py", "base64.py", "calendar.py"]


@pytest.fixture
def corpora(tmp_path):
    return {name: make_corpus(tmp_path / name, files)
            for name, files in (("target", TARGET), ("replay", REPLAY), ("retain", RETAIN))}


def tiny(corpora, cache, out, **kw) -> TrainConfig:
    base = dict(preset="llama-tiny", data=[f"{corpora['target']}:0.9", f"{corpora['replay']}:0.1"],
                eval_data=[f"retain={corpora['retain']}"], vocab_size=400, seq_len=32, batch_size=8,
                eval_tokens=128, eval_every=10, log_every=5, lr=3e-3, warmup_steps=2, out=str(out),
                cache_dir=str(cache))
    base.update(kw)
    return TrainConfig(**base)


def test_mixture_run_reports_every_set_and_resumes_the_mixture_exactly(corpora, cache, tmp_path, capsys):
    full, part = tmp_path / "full", tmp_path / "part"
    s = pretrain(tiny(corpora, cache, full, max_steps=40, save_every=20), quiet=True)
    printed = capsys.readouterr().out
    # The mixture: 320 windows drawn, token shares within 1% of the weights, recorded everywhere.
    assert [d["weight"] for d in s.data_mixture] == [0.9, 0.1]
    assert sum(d["tokens_drawn"] for d in s.data_mixture) == s.tokens_seen == 40 * 8 * 32
    assert all(abs(d["tokens_drawn"] / s.tokens_seen - d["weight"]) < 0.01 for d in s.data_mixture)
    prov = json.loads((full / "checkpoints/step-000040/warmstart.json").read_text())
    assert prov["data_mixture"] == s.data_mixture == json.loads((full / "summary.json").read_text())["data_mixture"]
    assert "data mixture (weight -> share of tokens drawn)" in printed
    # The retain set: at step 0, at every evaluation, in the summary, warmstart.json, plot and card.
    recs = read_metrics(full / "metrics.jsonl")
    evals = {r["step"]: r["val/retain"] for r in recs if "val/retain" in r}
    assert sorted(evals) == [0, 10, 20, 30, 40] and all(r.get("val_loss") for r in recs if "val/retain" in r)
    retain = s.eval_sets["retain"]
    assert retain["step0"] == evals[0] and retain["final"] == evals[40]
    assert retain["change"] == pytest.approx(evals[40] - evals[0])
    assert prov["eval_sets"] == s.eval_sets
    assert f"val/retain: step 0 {evals[0]:.4f} -> final {evals[40]:.4f}" in printed
    assert "val/retain loss" in loss_curves(recs) and "val loss" in loss_curves(recs)
    card = build_card(full / "checkpoints/step-000040")
    assert "## Evaluation sets" in card and f"| retain | {evals[0]:.4f} | {evals[40]:.4f} |" in card
    assert f"| `{corpora['replay']}` | 0.1 |" in card

    # Interrupted at step 20 and resumed: the same windows in the same order, bit for bit.
    pretrain(tiny(corpora, cache, part, max_steps=20, lr_decay_steps=40, save_every=20), quiet=True)
    r = pretrain(resolve_config({"resume": str(part), "max_steps": 40}), quiet=True)
    def losses(run):
        return {rec["step"]: (rec.get("loss"), rec.get("val/retain")) for rec in read_metrics(run / "metrics.jsonl")}

    assert losses(full) == losses(part)
    cursor = [json.loads((run / "checkpoints/step-000040/trainer_state/state.json").read_text())["sampler"]
              for run in (full, part)]
    assert cursor[0] == cursor[1] and cursor[0]["draws"] == 320
    assert r.eval_sets == s.eval_sets and r.data_mixture == s.data_mixture
    with pytest.raises(ResumeError, match="data"):
        resolve_config({"resume": str(part), "data": [f"{corpora['target']}:0.5", f"{corpora['replay']}:0.5"]})


def test_without_weights_the_data_is_one_pooled_corpus_as_before(corpora, cache, tmp_path):
    s = pretrain(tiny(corpora, cache, tmp_path / "run", data=[str(corpora["target"]), str(corpora["replay"])],
                      eval_data=[], max_steps=2, eval_every=0), quiet=True)
    assert s.data_mixture is None and s.eval_sets is None
    prov = json.loads((tmp_path / "run/checkpoints/step-000002/warmstart.json").read_text())
    assert "data_mixture" not in prov and "eval_sets" not in prov
    state = json.loads((tmp_path / "run/checkpoints/step-000002/trainer_state/state.json").read_text())
    assert set(state["sampler"]) == {"epoch", "pos", "seed", "n_windows", "shuffle"}


def test_step0_gate_applies_to_every_eval_set(corpora, cache, tmp_path):
    """Gate 7's random-init refusal on each --eval-data set (acceptance and refusal)."""
    trained = tmp_path / "trained"
    pretrain(tiny(corpora, cache, trained, data=[str(corpora["target"])], eval_data=[], max_steps=40,
                  eval_every=0, save_every=0), quiet=True)
    ckpt = trained / "checkpoints" / (trained / "checkpoints/latest").read_text().strip()
    rng = random.Random(0)  # text the model has never seen a byte of: CJK characters, 3 UTF-8 bytes each
    noise = tmp_path / "noise.txt"
    noise.write_text("".join(chr(rng.randint(0x4E00, 0x9FFF)) for _ in range(600)))

    def warm(out, *sets, **kw):
        return tiny(corpora, cache, tmp_path / out, init=str(ckpt), data=[str(corpora["target"])],
                    eval_data=list(sets), max_steps=1, eval_every=0, save_every=0, lr=5e-5, **kw)

    s = pretrain(warm("ok", f"retain={corpora['retain']}"), quiet=True)
    assert s.eval_sets["retain"]["step0"] < 0.9 * math.log(400) and s.first_val_loss < 0.9 * math.log(400)
    with pytest.raises(UntrainedInitError, match="--eval-data noise: step-0 val_loss is"):
        pretrain(warm("refused", f"retain={corpora['retain']}", f"noise={noise}"), quiet=True)
    assert not (tmp_path / "refused" / "checkpoints").exists()
    s = pretrain(warm("allowed", f"noise={noise}", allow_untrained_init=True), quiet=True)
    assert s.eval_sets["noise"]["step0"] >= 0.9 * math.log(400)


def test_cli_mixture_eval_sets_and_refusals(corpora, tmp_path):
    from _ckpt_tools import ws

    flags = ["--preset", "llama-tiny", "--vocab-size", "400", "--seq-len", "32", "--batch-size", "4",
             "--eval-tokens", "128", "--max-steps", "4", "--eval-every", "2", "--log-every", "2", "--warmup", "1"]
    proc = ws("pretrain", "--data", f"{corpora['target']}:3", "--data", f"{corpora['replay']}:1",
              "--eval-data", f"retain={corpora['retain']}", "--schedule", "wsd", *flags, "--out", "run", cwd=tmp_path)
    out = proc.stdout
    assert "step 0 val/retain loss" in out and "(random init ≈ ln V = 5.9915)" in out
    assert "step 2: val_loss" in out and ", val/retain " in out
    assert "val/retain: step 0 " in out and "data mixture (weight -> share of tokens drawn)" in out
    assert ws("plot", "run", cwd=tmp_path).returncode == 0 and (tmp_path / "run/curves.png").is_file()
    bad = ws("pretrain", "--data", f"{corpora['target']}:0.9", "--data", str(corpora["replay"]), *flags,
             "--out", "bad", cwd=tmp_path, check=False)
    assert bad.returncode == 2 and "[WS002]" in bad.stderr and "weights to some sources" in bad.stderr
    bad = ws("pretrain", "--eval-data", f"val={corpora['retain']}", *flags, "--out", "bad2", cwd=tmp_path, check=False)
    assert bad.returncode == 2 and "--eval-data" in bad.stderr and not (tmp_path / "bad2").exists()
