"""``warmstart plot RUN_DIR``: loss, validation loss and learning-rate curves as a PNG."""

from __future__ import annotations

from pathlib import Path

from warmstart.errors import UsageError
from warmstart.train.report import read_metrics


def plot_run(run_dir: str | Path, output: str | Path | None = None) -> Path:
    run_dir = Path(run_dir)
    mpath = run_dir / "metrics.jsonl"
    if not mpath.is_file():
        raise UsageError(f"'{run_dir}' has no metrics.jsonl", fix="pass the --out directory of a pretrain run",
                         path=run_dir)
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise UsageError("plotting needs matplotlib, which is not installed",
                         fix="pip install matplotlib (or 'warmstart[plot]')") from None
    recs = read_metrics(mpath)
    train = [(r["step"], r["loss"]) for r in recs if r.get("loss") is not None]
    val = [(r["step"], r["val_loss"]) for r in recs if r.get("val_loss") is not None]
    lr = [(r["step"], r["lr"]) for r in recs if r.get("lr") is not None and r.get("loss") is not None]
    if not train and not val:
        raise UsageError(f"{mpath} holds no loss values yet", fix="plot again once the run has logged a step",
                         path=mpath)
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(8, 6.5), sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    if train:
        ax1.plot(*zip(*train), label="train loss", lw=1.2)
    if val:
        ax1.plot(*zip(*val), "o-", label="val loss", lw=1.5, ms=3)
    ax1.set_ylabel("loss (nats/token)")
    ax1.set_title(f"warmstart run {run_dir.name}")
    ax1.grid(alpha=0.3)
    ax1.legend()
    if lr:
        ax2.plot(*zip(*lr), color="tab:green", lw=1.2)
    ax2.set_ylabel("learning rate")
    ax2.set_xlabel("step")
    ax2.grid(alpha=0.3)
    fig.tight_layout()
    out = Path(output) if output else run_dir / "curves.png"
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
