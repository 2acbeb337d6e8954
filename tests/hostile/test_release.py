"""Hostile input to the release commands: ``plot`` on metrics whose values are lists, objects, strings, booleans,
NaN or huge numbers, or whose steps are negative or huge, with an unsupported suffix, and over outputs that are
a user's file, a directory, a FIFO, a device, a loop or below a file; ``card``, ``stamp`` and ``export`` over the
same outputs; a run's config.yaml that never ends. Each is refused with its code (WS002, WS003 a FIFO or device,
WS004 a loop) before any work, in seconds, never as WS999, and nothing is left behind or changed (a user's file
is replaced only with --force / --overwrite, never a FIFO, device or directory). What is accepted: values that
are not finite numbers left out with a warning, --force, other image formats, side files that are FIFOs.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
from _hostile import assert_clean, cli, refused_cli

GOOD = [{"step": s, "loss": 3.0 - 0.1 * s, "lr": 1e-3} for s in range(1, 4)]


def _run(tmp: Path, lines: list) -> Path:
    """A run directory whose metrics.jsonl holds ``lines`` (dicts as JSON, strings as they are)."""
    run = tmp / "run"
    run.mkdir(exist_ok=True)
    text = "".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines)
    (run / "metrics.jsonl").write_text(text)
    return run


def _bad_values(**value) -> list:
    """Three records, each with a loss / val_loss (and lr) of the hostile kind given."""
    return [{"step": s, **value} for s in range(1, 4)]


def _target(tmp: Path, kind: str) -> Path:
    """An output path that is already something: a user's file, a directory, a FIFO, a character device, a
    loop, a dangling link, or a path below a file. The device is a node of its own made here (null's numbers,
    1:3), never /dev/null itself: a regression that renamed over the output would destroy the machine's."""
    p = tmp / "out.png"
    if kind == "file":
        p.write_bytes(b"the user's own picture")
    elif kind == "dir":
        p.mkdir()
    elif kind == "fifo":
        os.mkfifo(p)
    elif kind == "device":
        try:
            os.mknod(p, 0o666 | stat.S_IFCHR, os.makedev(1, 3))
        except PermissionError:
            pytest.skip("making a device node needs CAP_MKNOD")
    elif kind == "loop":
        os.symlink(tmp / "other.png", p)
        os.symlink(p, tmp / "other.png")
    elif kind == "dangling":
        os.symlink(tmp / "nowhere.png", p)
    elif kind == "below-a-file":
        (tmp / "a-file").write_text("x")
        return tmp / "a-file" / "out.png"
    return p


KIND_CODES = {"file": "WS002", "dir": "WS002", "fifo": "WS003", "device": "WS003", "loop": "WS004",
              "dangling": "WS002", "below-a-file": "WS002"}
NEVER = ("dir", "fifo", "device", "loop", "below-a-file")  # refused even with --force / --overwrite

# id -> (argv builder (tmp, hf checkpoint) -> argv, code)
RELEASE_CASES = {
    # plot: metrics of which no loss value is a finite number
    "plot-loss-lists": (lambda t, ck: ["plot", _run(t, _bad_values(loss=[1, 2]))], "WS002"),
    "plot-loss-objects": (lambda t, ck: ["plot", _run(t, _bad_values(loss={"a": 1}, val_loss={"b": 2}))], "WS002"),
    "plot-loss-strings": (lambda t, ck: ["plot", _run(t, _bad_values(loss="2.5"))], "WS002"),
    "plot-loss-booleans": (lambda t, ck: ["plot", _run(t, _bad_values(loss=True, val_loss=False))], "WS002"),
    "plot-loss-nan-inf": (lambda t, ck: ["plot", _run(t, ['{"step": 1, "loss": NaN}', '{"step": 2, "loss": Infinity}',
                                                          '{"step": 3, "val_loss": -Infinity}'])], "WS002"),
    "plot-loss-beyond-float": (lambda t, ck: ["plot", _run(t, ['{"step": 1, "loss": 1%s}' % ("0" * 400)])], "WS002"),
    "plot-val-only-lists": (lambda t, ck: ["plot", _run(t, _bad_values(val_loss=[3.0], lr=[1]))], "WS002"),
    # plot: steps no axis holds
    "plot-steps-huge": (lambda t, ck: ["plot", _run(t, ['{"step": 1%s, "loss": 1.0}' % ("0" * 400)])], "WS002"),
    "plot-steps-beyond-2-53": (lambda t, ck: ["plot", _run(t, [{"step": 2**60, "loss": 1.0}])], "WS002"),
    "plot-steps-negative": (lambda t, ck: ["plot", _run(t, [{"step": -5, "loss": 1.0}])], "WS002"),
    "plot-steps-floats": (lambda t, ck: ["plot", _run(t, [{"step": 1.5, "loss": 1.0}])], "WS002"),
    # plot: the output
    "plot-suffix-txt": (lambda t, ck: ["plot", _run(t, GOOD), "-o", t / "curves.txt"], "WS002"),
    "plot-suffix-unknown": (lambda t, ck: ["plot", _run(t, GOOD), "-o", t / "curves.xyz"], "WS002"),
    "plot-over-metrics": (lambda t, ck: ["plot", _run(t, GOOD), "-o", t / "run" / "metrics.jsonl"], "WS002"),
    "plot-default-is-a-fifo": (lambda t, ck: ["plot", _fifo_curves(_run(t, GOOD))], "WS003"),
    "plot-default-is-a-dir": (lambda t, ck: ["plot", _dir_curves(_run(t, GOOD))], "WS002"),
    **{f"plot-over-{kind}": (lambda t, ck, kind=kind: ["plot", _run(t, GOOD), "-o", _target(t, kind)], code)
       for kind, code in KIND_CODES.items()},
    **{f"plot-force-over-{kind}": (lambda t, ck, kind=kind: ["plot", _run(t, GOOD), "-o", _target(t, kind),
                                                             "--force"], KIND_CODES[kind]) for kind in NEVER},
    # card, stamp, export: the same outputs
    **{f"card-over-{kind}": (lambda t, ck, kind=kind: ["card", ck, "-o", _target(t, kind)], code)
       for kind, code in KIND_CODES.items()},
    "card-force-over-dir": (lambda t, ck: ["card", ck, "-o", _target(t, "dir"), "--force"], "WS002"),
    "card-force-over-fifo": (lambda t, ck: ["card", ck, "-o", _target(t, "fifo"), "--force"], "WS003"),
    **{f"stamp-over-{kind}": (lambda t, ck, kind=kind: ["stamp", ck, "--license", "mit", "-o", _target(t, kind)],
                              code) for kind, code in KIND_CODES.items()},
    **{f"export-over-{kind}": (lambda t, ck, kind=kind: ["export", ck, "--to", "safetensors", "-o", _target(t, kind)],
                               code) for kind, code in KIND_CODES.items()},
    **{f"export-overwrite-{kind}": (lambda t, ck, kind=kind: ["export", ck, "--to", "gguf", "-o", _target(t, kind),
                                                              "--overwrite"], KIND_CODES[kind]) for kind in NEVER},
    "export-hf-overwrite-over-a-file": (lambda t, ck: ["export", ck, "--to", "hf", "-o", _target(t, "file"),
                                                       "--overwrite"], "WS002"),
    "export-hf-over-a-loop": (lambda t, ck: ["export", ck, "--to", "hf", "-o", _target(t, "loop")], "WS004"),
    # a YAML file that never ends (also a run's config.yaml, which card reads)
    "config-alias-contains-itself": (lambda t, ck: ["pretrain", "--config", _yaml(t, "lr: &x [*x]\n")], "WS002"),
    "config-nested-too-deep": (lambda t, ck: ["pretrain", "--config", _yaml(t, "[" * 20000)], "WS002"),
}


def _fifo_curves(run: Path) -> Path:
    os.mkfifo(run / "curves.png")
    return run


def _dir_curves(run: Path) -> Path:
    (run / "curves.png").mkdir()
    return run


def _yaml(tmp: Path, text: str) -> Path:
    p = tmp / "run.yaml"
    p.write_text(text)
    return p


@pytest.mark.parametrize("case", list(RELEASE_CASES))
def test_hostile_release(case, tmp_path, hf):
    build, code = RELEASE_CASES[case]
    refused_cli(tmp_path, build(tmp_path, hf), code)


# ------------------------------------------------------------------ what is accepted


def test_plot_leaves_out_values_that_are_not_finite_numbers_with_a_warning(tmp_path):
    run = _run(tmp_path, [*GOOD, {"step": 4, "loss": [1, 2]}, {"step": 5, "loss": 1e308, "lr": "x"},
                          {"step": 6, "val_loss": {"a": 1}, "val/set": True}, '{"step": 7, "loss": NaN}'])
    o = cli("plot", run, "-o", tmp_path / "c.png")
    assert_clean(o)
    assert o.exit == 0 and (tmp_path / "c.png").read_bytes()[:4] == b"\x89PNG", o.text
    assert "left out values that are not finite numbers: 2 of loss, 1 of lr, 1 of val/set, 1 of val_loss" in o.err
    assert "Warning" not in o.err and "overflow" not in o.err, o.err  # 1e308 is drawn without numpy's noise


def test_plot_replaces_a_file_only_with_force_and_writes_other_formats(tmp_path):
    run = _run(tmp_path, GOOD)
    mine = tmp_path / "mine.png"
    mine.write_bytes(b"the user's own picture")
    assert cli("plot", run, "-o", mine).exit == 2 and mine.read_bytes() == b"the user's own picture"
    o = cli("plot", run, "-o", mine, "--force")
    assert o.exit == 0 and mine.read_bytes()[:4] == b"\x89PNG", o.text
    o = cli("plot", run, "-o", tmp_path / "c.svg")
    assert o.exit == 0 and b"<svg" in (tmp_path / "c.svg").read_bytes()[:400], o.text
    for _ in range(2):  # the run's own curves.png is rewritten
        o = cli("plot", run)
        assert o.exit == 0 and (run / "curves.png").read_bytes()[:4] == b"\x89PNG", o.text
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.svg", "mine.png", "run"]  # no temp files


def test_side_files_that_are_fifos_are_never_opened(tmp_path, hf):
    """generation_config.json and tokenizer_config.json are read through the checkpoint's checks: as FIFOs
    they are passed over (the export writes its own), in seconds, instead of blocking the export forever."""
    for name in ("generation_config.json", "tokenizer_config.json"):
        (hf / name).unlink()
        os.mkfifo(hf / name)
    for to, out in (("hf", tmp_path / "hf-out"), ("gguf", tmp_path / "m.gguf")):
        o = cli("export", hf, "--to", to, "-o", out)
        assert_clean(o)
        assert o.exit == 0 and "logits equal" in o.out, o.text


def test_card_reads_past_a_config_yaml_that_never_ends(tmp_path, hf_base):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(hf_base, run / "checkpoints" / "step-000001")
    (run / "checkpoints" / "latest").write_text("step-000001\n")
    (run / "metrics.jsonl").write_text(json.dumps({"step": 1, "loss": 2.0}) + "\n")
    (run / "config.yaml").write_text("lr: &x [*x]\n")
    o = cli("card", run, "-o", tmp_path / "README.md")
    assert_clean(o)
    assert o.exit == 0 and (tmp_path / "README.md").is_file(), o.text
