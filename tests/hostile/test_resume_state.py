"""Hostile resume state: ``trainer_state/state.json`` holding values of the wrong type or range (counters,
losses, the best checkpoint, ranks and global batch, the data cursor of one corpus and of a mixture, the
generators). Each is refused at the edge, field by field (WS206 naming state.json and the field, the way back to
the earlier checkpoint in the fix), before anything is built: exit 2, no traceback, nothing left behind, within
seconds (a cursor past the windows used to loop forever)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from _hostile import refused_cli

DROP = object()


def _top(**changes):
    def edit(state: dict) -> None:
        for k, v in changes.items():
            state.pop(k) if v is DROP else state.__setitem__(k, v)
    return edit


def _nested(*where, value):
    """Set (or with DROP remove) ``state[where[0]][where[1]]...``."""
    def edit(state: dict) -> None:
        node = state
        for key in where[:-1]:
            node = node[key]
        node.pop(where[-1]) if value is DROP else node.__setitem__(where[-1], value)
    return edit


def _sampler(key, value):
    return _nested("sampler", key, value=value)


def _pos_past_windows(state: dict) -> None:
    state["sampler"]["pos"] = state["sampler"]["n_windows"] + 5


# case -> (edit of the state.json dict, the field the message names); a one-corpus run
CASES = {
    "step-negative": (_top(step=-1), "step"),
    "step-float": (_top(step=2.5), "step"),
    "step-bool": (_top(step=True), "step"),
    "step-huge": (_top(step=2**70), "step"),
    "tokens-negative": (_top(tokens_seen=-64), "tokens_seen"),
    "tokens-string": (_top(tokens_seen="64"), "tokens_seen"),
    "elapsed-negative": (_top(elapsed=-3.0), "elapsed"),
    "elapsed-string": (_top(elapsed="1s"), "elapsed"),
    "elapsed-nan": (_top(elapsed=float("nan")), "elapsed"),
    "fingerprint-missing": (_top(data_fingerprint=DROP), "data_fingerprint"),
    "fingerprint-number": (_top(data_fingerprint=12), "data_fingerprint"),
    "val-loss-string": (_top(val_loss="5.6"), "val_loss"),
    "val-loss-missing": (_top(val_loss=DROP), "val_loss"),
    "val-loss-infinite": (_top(val_loss=float("inf")), "val_loss"),
    "first-val-loss-string": (_top(first_val_loss="low"), "first_val_loss"),
    "first-val-loss-missing": (_top(first_val_loss=DROP), "first_val_loss"),
    "best-string": (_top(best="step-000002"), "best"),
    "best-missing": (_top(best=DROP), "best"),
    "best-val-loss-string": (_nested("best", "val_loss", value="5"), "best"),
    "best-dir-outside": (_nested("best", "dir", value="../../elsewhere"), "best"),
    "best-step-negative": (_nested("best", "step", value=-2), "best"),
    "eval-losses-strings": (_top(eval_losses={"retain": "low"}), "eval_losses"),
    "eval-losses-list": (_top(eval_losses=[5.0]), "eval_losses"),
    "first-eval-losses-null": (_top(first_eval_losses={"retain": None}), "first_eval_losses"),
    "world-size-zero": (_top(world_size=0), "world_size"),
    "world-size-negative": (_top(world_size=-2), "world_size"),
    "world-size-string": (_top(world_size="2"), "world_size"),
    "global-batch-negative": (_top(world_size=2, global_batch=-4), "global_batch"),
    "global-batch-zero": (_top(world_size=2, global_batch=0), "global_batch"),
    "global-batch-huge": (_top(world_size=2, global_batch=2**40), "global_batch"),
    "sampler-missing": (_top(sampler=DROP), "sampler"),
    "sampler-list": (_top(sampler=[0, 2]), "sampler"),
    "sampler-pos-past-windows": (_pos_past_windows, "sampler.pos"),
    "sampler-pos-negative": (_sampler("pos", -1), "sampler.pos"),
    "sampler-pos-missing": (_sampler("pos", DROP), "sampler.pos"),
    "sampler-epoch-negative": (_sampler("epoch", -1), "sampler.epoch"),
    "sampler-epoch-float": (_sampler("epoch", 0.5), "sampler.epoch"),
    "sampler-windows-zero": (_sampler("n_windows", 0), "sampler.n_windows"),
    "sampler-seed-negative": (_sampler("seed", -7), "sampler.seed"),
    "sampler-shuffle-string": (_sampler("shuffle", "yes"), "sampler.shuffle"),
    "rng-missing": (_top(rng=DROP), "rng"),
    "rng-python-short": (_nested("rng", "python", value=[3]), "rng"),
    "rng-numpy-strings": (_nested("rng", "numpy", value=["MT19937", "x", 0, 0, 0.0]), "rng"),
    "scheduler-string": (_top(scheduler="cosine"), "scheduler"),
}


def _mixture(key, value):
    return _nested("sampler", key, value=value)


def _counts_off(state: dict) -> None:
    state["sampler"]["counts"][0] += 1


def _part_past_windows(state: dict) -> None:
    part = state["sampler"]["parts"][1]
    part["pos"] = part["n_windows"]


def _short(key):
    def edit(state: dict) -> None:
        state["sampler"][key] = state["sampler"][key][:1]
    return edit


# the same, of a weighted two-source mixture's cursor
MIXTURE_CASES = {
    "mixture-counts-short": (_short("counts"), "sampler.counts"),
    "mixture-parts-short": (_short("parts"), "sampler.parts"),
    "mixture-weights-strings": (_mixture("weights", ["0.5", "0.5"]), "sampler.weights"),
    "mixture-weight-zero": (_mixture("weights", [1.0, 0.0]), "sampler.weights"),
    "mixture-weights-empty": (_mixture("weights", []), "sampler.weights"),
    "mixture-draws-negative": (_mixture("draws", -4), "sampler.draws"),
    "mixture-counts-negative": (_mixture("counts", [-1, 5]), "sampler.counts"),
    "mixture-counts-not-draws": (_counts_off, "sampler.counts"),
    "mixture-part-past-windows": (_part_past_windows, "sampler.parts[1].pos"),
    "mixture-part-epoch-negative": (_nested("sampler", "parts", 0, "epoch", value=-1), "sampler.parts[0].epoch"),
    "mixture-part-nested": (_nested("sampler", "parts", 0, "kind", value="mixture"), "sampler.parts[0].kind"),
    "mixture-parts-strings": (_mixture("parts", ["a", "b"]), "sampler.parts"),
}


def _damage(run: Path, edit) -> None:
    path = run / "checkpoints" / "step-000002" / "trainer_state" / "state.json"
    state = json.loads(path.read_text())
    edit(state)
    path.write_text(json.dumps(state))


def _refused(run: Path, tmp_path: Path, edit, field: str) -> None:
    _damage(run, edit)
    o = refused_cli(tmp_path, ("pretrain", "--resume", run, "--max-steps", 3, "--quiet"), "WS206", 2,
                    says=("state.json", field))
    assert "step-000001" in o.err, o.err  # the way back: the earlier complete checkpoint


@pytest.mark.parametrize("case", list(CASES))
def test_state_json_values_are_checked_field_by_field(case, resumable, tmp_path):
    _refused(resumable, tmp_path, *CASES[case])


@pytest.fixture
def mixture_run(tiny_mixture_run, tmp_path):
    shutil.copytree(tiny_mixture_run / "run", tmp_path / "run")
    return tmp_path / "run"


@pytest.mark.parametrize("case", list(MIXTURE_CASES))
def test_a_mixture_cursor_is_checked_field_by_field(case, mixture_run, tmp_path):
    _refused(mixture_run, tmp_path, *MIXTURE_CASES[case])
