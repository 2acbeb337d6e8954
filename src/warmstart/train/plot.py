"""``warmstart plot RUN_DIR``: loss, validation loss (one curve per ``--eval-data`` set besides ``val``)
and learning-rate curves as an image (PNG by default; the suffix of ``-o`` picks another format matplotlib
writes, such as .svg or .pdf).

Only values that are finite numbers are plotted: a record's value that is a list, an object, a string, a
boolean, NaN, infinite or too large for a float is left out with a warning, as damaged lines are. The output
is checked before any work (``files.check_output``: ``-o`` over an existing file only with ``--force``; the
default ``RUN_DIR/curves.png`` is the run's own and is rewritten) and written atomically.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path

from warmstart.checkpoint.run import RunDir
from warmstart.checkpoint.write import atomic_path
from warmstart.errors import UsageError
from warmstart.files import check_output, is_regular


def plot_run(run_dir: str | Path, output: str | Path | None = None, *, warn=None, force: bool = False) -> Path:
    """The image of a run's curves; ``warn(text)`` hears of lines of metrics.jsonl left out (not JSON, not
    UTF-8, no ``step``) and of values that are not finite numbers."""
    run = RunDir(run_dir)
    mpath = run.metrics_path
    if not is_regular(mpath, "metrics.jsonl"):
        raise UsageError(f"'{run_dir}' has no metrics.jsonl", fix="pass the --out directory of a pretrain run",
                         path=run_dir)
    out = Path(output) if output else run.path / "curves.png"
    check_output(out, replace=force or output is None)
    plt = _pyplot()
    fmt = _format(out)
    skipped: list[int] = []
    recs = run.metrics(skipped)
    if skipped and warn is not None:
        warn(f"warning: {mpath}: left out {len(skipped)} line(s) that are not a JSON record with a 'step' "
             f"(line {', '.join(map(str, skipped[:5]))}{', ...' if len(skipped) > 5 else ''})")
    dropped: dict[str, int] = {}
    curves = loss_curves(recs, dropped)
    lr = _series([r for r in recs if _number(r.get("loss")) is not None], "lr", dropped)
    if dropped and warn is not None:
        warn(f"warning: {mpath}: left out values that are not finite numbers: "
             + ", ".join(f"{n} of {key}" for key, n in sorted(dropped.items())))
    if "train loss" not in curves and "val loss" not in curves:
        raise UsageError(f"{mpath} holds no loss values yet", fix="plot again once the run has logged a step",
                         path=mpath)
    with warnings.catch_warnings():  # values near the float limit overflow matplotlib's tick arithmetic
        warnings.simplefilter("ignore", RuntimeWarning)
        fig = _figure(plt, curves, lr, run.path.name)
        try:
            with atomic_path(out) as tmp:
                fig.savefig(tmp, dpi=110, format=fmt)
        finally:
            plt.close(fig)
    return out


def _pyplot():
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise UsageError("plotting needs matplotlib, which is not installed",
                         fix="pip install matplotlib (or 'warmstart[plot]')") from None
    return plt


def _format(out: Path) -> str:
    """The image format the output's suffix names (none: PNG); one matplotlib does not write is refused."""
    from matplotlib.backend_bases import FigureCanvasBase

    fmt = out.suffix.lower().removeprefix(".") or "png"
    supported = FigureCanvasBase.get_supported_filetypes()
    if fmt not in supported:
        raise UsageError(f"plot cannot write a '.{fmt}' file ({out})",
                         fix=f"give -o a name ending in one of: {', '.join('.' + s for s in sorted(supported))}")
    return fmt


def _figure(plt, curves: dict, lr: list, name: str):
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(8, 6.5), sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    for label, points in curves.items():
        style = {"train loss": "-", "val loss": "o-"}.get(label, "s--")
        ax1.plot(*zip(*points), style, label=label, lw=1.5 if label == "val loss" else 1.2, ms=3)
    ax1.set_ylabel("loss (nats/token)")
    ax1.set_title(f"warmstart run {name}")
    ax1.grid(alpha=0.3)
    ax1.legend()
    if lr:
        ax2.plot(*zip(*lr), color="tab:green", lw=1.2)
    ax2.set_ylabel("learning rate")
    ax2.set_xlabel("step")
    ax2.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def loss_curves(recs: list[dict], dropped: dict[str, int] | None = None) -> dict[str, list[tuple[int, float]]]:
    """The loss panel's curves by legend label: train, val and one per ``--eval-data`` set (``val/NAME``)."""
    curves = {"train loss": _series(recs, "loss", dropped), "val loss": _series(recs, "val_loss", dropped)}
    for key in sorted({k for r in recs for k in r if k.startswith("val/")}):
        curves[f"{key} loss"] = _series(recs, key, dropped)
    return {label: points for label, points in curves.items() if points}


def _number(value) -> float | None:
    """``value`` as a float when it is a finite real number (not a boolean), else None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        number = float(value)
    except OverflowError:  # an integer beyond any float
        return None
    return number if math.isfinite(number) else None


def _series(recs: list[dict], key: str, dropped: dict[str, int] | None = None) -> list[tuple[int, float]]:
    """``(step, value)`` of every record whose ``key`` is a finite number; the others counted in ``dropped``."""
    points = []
    for r in recs:
        if r.get(key) is None:
            continue
        value = _number(r[key])
        if value is None:
            if dropped is not None:
                dropped[key] = dropped.get(key, 0) + 1
        else:
            points.append((r["step"], value))
    return points
