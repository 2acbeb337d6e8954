"""Progress output (rich bar on a TTY, plain lines otherwise), metrics.jsonl, TensorBoard."""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from warmstart.checkpoint.run import open_run_file, read_metrics


def fmt_duration(seconds: float | None) -> str:
    if seconds is None or seconds != seconds or seconds == float("inf"):
        return "?"
    s = int(round(seconds))
    h, rem = divmod(s, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m" if h else (f"{m}m{s:02d}s" if m else f"{s}s")


class MetricsLog:
    """Append-only ``metrics.jsonl``; on resume, lines past the checkpoint step are dropped first. A record
    the disk has no room for is taken back whole (the file is cut to its length before) and raised as
    WS230/WS231: the file holds whole lines only."""

    def __init__(self, path: Path, *, truncate_after_step: int | None = None) -> None:
        from warmstart.checkpoint.write import atomic_write_text, writing

        self.path = Path(path)
        if truncate_after_step is not None and os.path.lexists(self.path):
            # the records up to the checkpoint's step; a torn last line or a damaged one goes
            keep = [json.dumps(r) for r in read_metrics(self.path) if r["step"] <= truncate_after_step]
            atomic_write_text(self.path, "".join(k + "\n" for k in keep))
        with writing(self.path):
            self.fh = os.fdopen(open_run_file(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT), "ab", buffering=0)

    def write(self, rec: dict[str, Any]) -> None:
        from warmstart.checkpoint.write import inject_fault, write_failure

        data = memoryview((json.dumps(rec) + "\n").encode("utf-8"))
        end = self.fh.seek(0, os.SEEK_END)
        try:
            while data:
                data = data[self.fh.write(data):]
            inject_fault(self.path)
        except OSError as err:
            with contextlib.suppress(OSError):
                self.fh.truncate(end)
            raise write_failure(self.path, err) from None

    def close(self) -> None:
        self.fh.close()


class TensorBoard:
    def __init__(self, log_dir: Path) -> None:
        self.writer = None
        try:
            from torch.utils.tensorboard import SummaryWriter  # needs the tensorboard package
        except Exception:  # noqa: BLE001 - optional
            return
        try:
            self.writer = SummaryWriter(log_dir=str(log_dir))
        except Exception:  # noqa: BLE001
            self.writer = None

    def scalars(self, step: int, values: dict[str, float | None]) -> None:
        if self.writer is None:
            return
        for k, v in values.items():
            if v is not None:
                self.writer.add_scalar(k, v, step)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


class RunLog:
    """``metrics.jsonl`` and TensorBoard of a run: one record, both sinks."""

    _TB = {"loss": "train/loss", "lr": "train/lr", "grad_norm": "train/grad_norm",
           "tokens_per_s": "train/tokens_per_s", "tokens_per_s_per_device": "train/tokens_per_s_per_device",
           "mfu": "train/mfu", "val_loss": "val/loss"}

    def __init__(self, run_dir: Path, *, truncate_after_step: int | None = None) -> None:
        self.metrics = MetricsLog(Path(run_dir) / "metrics.jsonl", truncate_after_step=truncate_after_step)
        self.tb = TensorBoard(Path(run_dir) / "tb")

    def write(self, rec: dict[str, Any]) -> None:
        self.metrics.write(rec)
        extra = {key: value for key, value in rec.items() if key.startswith("val/")}  # --eval-data sets
        self.tb.scalars(rec["step"], {**{tag: rec.get(key) for key, tag in self._TB.items()}, **extra})

    def close(self) -> None:
        self.metrics.close()
        self.tb.close()


class NullLog:
    """The run log of a rank other than 0: nothing is written."""

    def write(self, rec: dict[str, Any]) -> None:
        pass

    def close(self) -> None:
        pass


class IntervalMeter:
    """Mean training loss, last gradient norm and throughput since the last log point.

    The loss is summed on the device; nothing syncs with the host until ``read``. Throughput is
    global (every rank's tokens); with several devices also per device, and with ``flops`` (see
    ``train.perf.flops_budget``) the model FLOPs utilisation of one device.
    """

    def __init__(self, device, *, devices: int = 1, flops: tuple[float, float] | None = None) -> None:
        import torch

        self._zero = lambda: torch.zeros((), dtype=torch.float32, device=device)
        self.devices, self.flops = devices, flops
        self.reset()

    def reset(self) -> None:
        """Start a new interval now (after logging, so eval / checkpoint time is not charged to throughput)."""
        self.loss_sum, self.n, self.tokens, self.t0 = self._zero(), 0, 0, time.time()
        self.grad_norm = self._zero()

    def add(self, loss, grad_norm, tokens: int) -> None:
        self.loss_sum += loss
        self.grad_norm = grad_norm
        self.n += 1
        self.tokens += tokens

    def read(self, lr: float, tokens_seen: int) -> dict[str, Any]:
        from warmstart.train.perf import mfu

        loss = (self.loss_sum / self.n).item()  # the sync: the interval's steps are done after it
        dt = max(time.time() - self.t0, 1e-9)
        rec = {"loss": loss, "lr": lr, "grad_norm": float(self.grad_norm.item()), "tokens_seen": tokens_seen,
               "tokens_per_s": round(self.tokens / dt, 1)}
        per_device = self.tokens / dt / self.devices
        if self.devices > 1:
            rec["tokens_per_s_per_device"] = round(per_device, 1)
        if self.flops is not None:
            rec["mfu"] = round(mfu(per_device, *self.flops), 4)
        return rec


class Reporter:
    """A rich progress bar when stdout is a terminal; plain log lines otherwise."""

    def __init__(self, total_steps: int | None, start_step: int = 0, *, quiet: bool = False,
                 tty: bool | None = None) -> None:
        self.total = total_steps
        self.quiet = quiet
        self.tty = sys.stdout.isatty() if tty is None else tty
        self.progress = None
        self.task = None
        self.t0 = time.time()
        self.start_step = start_step
        if self.tty and not quiet:
            from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

            self.progress = Progress(
                TextColumn("[bold]step {task.completed}/{task.total}"),
                BarColumn(),
                TextColumn("{task.fields[info]}"),
                TimeElapsedColumn(),
                transient=False,
            )
            self.progress.start()
            self.task = self.progress.add_task("train", total=total_steps, completed=start_step, info="")

    def print(self, text: str) -> None:
        if self.quiet:
            return
        if self.progress is not None:
            self.progress.console.print(text, highlight=False, markup=False)
        else:
            print(text, flush=True)

    def update(self, step: int, rec: dict[str, Any], eta: float | None) -> None:
        speed = f"{rec['tokens_per_s']:,.0f} tok/s"
        if "tokens_per_s_per_device" in rec:
            speed += f" ({rec['tokens_per_s_per_device']:,.0f}/device)"
        if "mfu" in rec:
            speed += f"  MFU {100 * rec['mfu']:.1f}%"
        info = f"loss {rec['loss']:.4f}  lr {rec['lr']:.2e}  {speed}  ETA {fmt_duration(eta)}"
        if self.progress is not None:
            self.progress.update(self.task, completed=step, info=info)
        elif not self.quiet:
            total = f"/{self.total}" if self.total else ""
            print(f"step {step}{total}  loss {rec['loss']:.4f}  lr {rec['lr']:.2e}  grad_norm {rec['grad_norm']:.3f}  "
                  f"{speed}  ETA {fmt_duration(eta)}", flush=True)

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None
