"""``warmstart plot RUN_DIR``: loss, validation loss (one curve per ``--eval-data`` set besides ``val``)
and learning-rate curves as a PNG."""

from __future__ import annotations

from pathlib import Path

from warmstart.checkpoint.run import RunDir
from warmstart.errors import UsageError
from warmstart.files import is_regular


def plot_run(run_dir: str | Path, output: str | Path | None = None, *, warn=None) -> Path:
    """The PNG of a run's curves; ``warn(text)`` hears of lines of metrics.jsonl left out (not JSON, not
    UTF-8, no ``step``)."""
    run = RunDir(run_dir)
    mpath = run.metrics_path
    if not is_regular(mpath, "metrics.jsonl"):
        raise UsageError(f"'{run_dir}' has no metrics.jsonl", fix="pass the --out directory of a pretrain run",
                         path=run_dir)
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise UsageError("plotting needs matplotlib, which is not installed",
                         fix="pip install matplotlib (or 'warmstart[plot]')") from None
    skipped: list[int] = []
    recs = run.metrics(skipped)
    if skipped and warn is not None:
        warn(f"warning: {mpath}: left out {len(skipped)} line(s) that are not a JSON record with a 'step' "
             f"(line {', '.join(map(str, skipped[:5]))}{', ...' if len(skipped) > 5 else ''})")
    curves = loss_curves(recs)
    lr = _series([r for r in recs if r.get("loss") is not None], "lr")
    if "train loss" not in curves and "val loss" not in curves:
        raise UsageError(f"{mpath} holds no loss values yet", fix="plot again once the run has logged a step",
                         path=mpath)
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(8, 6.5), sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    for label, points in curves.items():
        style = {"train loss": "-", "val loss": "o-"}.get(label, "s--")
        ax1.plot(*zip(*points), style, label=label, lw=1.5 if label == "val loss" else 1.2, ms=3)
    ax1.set_ylabel("loss (nats/token)")
    ax1.set_title(f"warmstart run {run.path.name}")
    ax1.grid(alpha=0.3)
    ax1.legend()
    if lr:
        ax2.plot(*zip(*lr), color="tab:green", lw=1.2)
    ax2.set_ylabel("learning rate")
    ax2.set_xlabel("step")
    ax2.grid(alpha=0.3)
    fig.tight_layout()
    out = Path(output) if output else run.path / "curves.png"
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def loss_curves(recs: list[dict]) -> dict[str, list[tuple[int, float]]]:
    """The loss panel's curves by legend label: train, val and one per ``--eval-data`` set (``val/NAME``)."""
    curves = {"train loss": _series(recs, "loss"), "val loss": _series(recs, "val_loss")}
    for key in sorted({k for r in recs for k in r if k.startswith("val/")}):
        curves[f"{key} loss"] = _series(recs, key)
    return {label: points for label, points in curves.items() if points}


def _series(recs: list[dict], key: str) -> list[tuple[int, float]]:
    """``(step, value)`` of every record that has ``key``."""
    return [(r["step"], r[key]) for r in recs if r.get(key) is not None]
