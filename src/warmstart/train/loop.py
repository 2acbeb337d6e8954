"""``pretrain(TrainConfig)``: the training run, top to bottom.

Order of work (SPEC §4, §5): model source (warm start: gates 1-6 via ``prepare_warm_start``) ->
data -> model (preset for scratch, the checkpoint's for ``--init``, the run's latest checkpoint
for ``--resume``) -> ``parallelize`` -> step-0 validation loss (gate 7 via ``step0_gate`` for
``--init``) -> only then the optimizer -> (resume: trainer state) -> run directory -> steps.

The parts: ``source`` (where the model comes from), ``state`` (``TrainState``), ``budget`` (the
stop condition), ``step`` (``train_step`` and the divergence guard), ``parallel`` (the
``parallelize`` hook, compile), ``checkpoints`` (files), ``report`` (metrics, progress).
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import torch

from warmstart import __version__
from warmstart.arch import CausalLM, ModelConfig
from warmstart.checkpoint.write import atomic_write_json, atomic_write_text
from warmstart.data import BatchSampler, TokenDataset, build_dataset
from warmstart.runtime import amp_context, resolve_device
from warmstart.train import checkpoints as ck
from warmstart.train.budget import Budget
from warmstart.train.config import TrainConfig, dump_yaml
from warmstart.train.evaluate import AmpFactory, evaluate
from warmstart.train.optim import Schedule, build_optimizer, set_lr
from warmstart.train.parallel import LossFn, compile_loss, parallelize
from warmstart.train.perf import FirstStepClock, flops_per_token, peak_flops
from warmstart.train.report import IntervalMeter, Reporter, RunLog, fmt_duration
from warmstart.train.source import ModelSource, build_model, resolve_source
from warmstart.train.state import TrainState, seed_all, utc_now
from warmstart.train.step import DivergenceGuard, TrainBatches, clip_value, train_step


@dataclass
class RunSummary:
    run_dir: str
    steps: int
    tokens_seen: int
    seconds: float
    first_val_loss: float | None
    final_val_loss: float | None
    best_val_loss: float | None
    best_checkpoint: str | None
    last_checkpoint: str | None
    stopped_by: str
    resumed_from: str | None = None
    first_step_seconds: float | None = None  # from the start to the end of this process's first step

    def lines(self) -> list[str]:
        def f(x):
            return "n/a" if x is None else f"{x:.4f}"

        return [
            f"done: {self.steps} steps, {self.tokens_seen:,} tokens, {fmt_duration(self.seconds)} "
            f"(stopped by {self.stopped_by})" + (f", first step after {self.first_step_seconds:.1f}s"
                                                 if self.first_step_seconds is not None else ""),
            f"val_loss: first {f(self.first_val_loss)} -> final {f(self.final_val_loss)}, best {f(self.best_val_loss)}",
            f"best checkpoint: {self.best_checkpoint or 'none'}",
            f"last checkpoint: {self.last_checkpoint or 'none'}",
        ]


@dataclass
class Run:
    """The parts of one training run, built by ``pretrain`` and handed to the loop, eval and save."""

    cfg: TrainConfig
    run_dir: Path
    device: torch.device
    amp: AmpFactory
    source: ModelSource
    ds: TokenDataset
    mcfg: ModelConfig
    model: CausalLM
    loss_fn: LossFn
    optimizer: torch.optim.Optimizer
    state: TrainState
    budget: Budget
    guard: DivergenceGuard
    log: RunLog
    out: Reporter
    first_step: FirstStepClock

    def say(self, text: str) -> None:
        self.out.print(text)


# ------------------------------------------------------------------ main entry


def pretrain(cfg: TrainConfig, *, reporter: Reporter | None = None, quiet: bool = False,
             print_summary: bool = True) -> RunSummary:
    """Train as ``cfg`` says; returns the run summary. ``quiet`` silences progress, not the summary."""
    cfg.validate()
    started = time.time()
    device, amp = _runtime(cfg)
    run_dir = ck.run_directory(cfg.out, cfg.resume)
    out = reporter or Reporter(None, quiet=quiet, tty=False)
    seed_all(cfg.seed)

    source = resolve_source(cfg, run_dir, device=device, say=out.print)  # --init: gates 1-6
    ds = _load_data(cfg, source, out.print)
    mcfg = source.model_config(cfg, ds)
    model = build_model(source, mcfg, cfg, device)
    out.print(_describe(model, mcfg, device, amp))
    model = parallelize(model, cfg)
    first_val = _step0_evaluation(model, source, ds, cfg, device, amp, out.print)  # --init: gate 7

    optimizer = build_optimizer(model, lr=cfg.lr, weight_decay=cfg.weight_decay, betas=(cfg.beta1, cfg.beta2),
                                eps=cfg.eps, device=device)
    budget = Budget(cfg, tokens_per_step=cfg.batch_size * cfg.grad_accum * cfg.seq_len)
    state = TrainState(sampler=BatchSampler(ds.n_train_windows, seed=cfg.seed), data_fingerprint=ds.fingerprint,
                       schedule=Schedule(cfg.lr, cfg.warmup_steps, budget.decay_steps, cfg.min_lr_ratio),
                       started=started, first_val_loss=first_val, val_loss=first_val)
    if source.resume_dir is not None:
        _resume(run_dir, source.resume_dir, optimizer, state, out.print)

    log = _open_run_dir(run_dir, cfg, ds, state, resuming=source.resume_dir is not None)  # every gate passed
    if reporter is None:  # now the step count is known: a progress bar on a terminal
        out.close()
        out = Reporter(budget.total_steps, start_step=state.step, quiet=quiet)
    guard = DivergenceGuard(device, state, run_dir=run_dir, lr=cfg.lr, warmup_steps=cfg.warmup_steps)
    run = Run(cfg=cfg, run_dir=run_dir, device=device, amp=amp, source=source, ds=ds, mcfg=mcfg, model=model,
              loss_fn=compile_loss(model, cfg), optimizer=optimizer, state=state, budget=budget, guard=guard,
              log=log, out=out, first_step=FirstStepClock(started))
    try:
        stopped_by = train(run)
    finally:
        log.close()
        out.close()
    return _finish(run, stopped_by, print_summary)


# ------------------------------------------------------------------ the loop


def train(run: Run) -> str:
    """Optimizer steps until the budget says stop, logging / evaluating / saving at their points.

    Returns what stopped the run (``max-steps``, ``max-tokens`` or ``max-time``).
    """
    cfg, state, budget = run.cfg, run.state, run.budget
    batches = TrainBatches(run.ds, state.sampler, cfg.batch_size, run.device)
    meter = _meter(run)
    clip = clip_value(cfg.grad_clip)
    while (stopped_by := budget.stop_reason(state)) is None:
        lr = state.schedule.at(state.step)
        set_lr(run.optimizer, lr)
        loss, gnorm = train_step(run.loss_fn, run.optimizer, batches, grad_accum=cfg.grad_accum, clip=clip,
                                 amp=run.amp, guard=run.guard)
        state.advance(budget.tokens_per_step)
        run.first_step.done(run.device)
        meter.add(loss, gnorm, budget.tokens_per_step)

        last = budget.stop_reason(state) is not None
        log_now = state.step % cfg.log_every == 0 or last
        save_now = (cfg.save_every > 0 and state.step % cfg.save_every == 0) or last
        eval_now = (cfg.eval_every > 0 and state.step % cfg.eval_every == 0) or save_now
        if log_now or eval_now:
            _log_eval_save(run, meter, lr, log_now=log_now, eval_now=eval_now, save_now=save_now)
    if state.steps_this_run == 0 and state.last_checkpoint is None:
        # Nothing to do (e.g. a budget already reached): still leave a checkpoint behind.
        run.guard.check()
        save_checkpoint(run)
    return stopped_by


def _meter(run: Run) -> IntervalMeter:
    """The throughput meter, with MFU on a GPU whose peak is known (said once)."""
    peak = peak_flops(run.device, torch.bfloat16 if run.amp is not contextlib.nullcontext else torch.float32)
    if peak is not None:
        run.say(f"MFU against {peak[1]}")
    return IntervalMeter(run.device, flops_per_token=flops_per_token(run.mcfg, run.cfg.seq_len),
                         peak_flops=peak[0] if peak else None)


def _log_eval_save(run: Run, meter: IntervalMeter, lr: float, *, log_now: bool, eval_now: bool,
                      save_now: bool) -> None:
    """A sync point: the divergence check, then the log record, evaluation and checkpoint that are due."""
    state = run.state
    run.guard.check()
    rec: dict = {"step": state.step}
    eta = None
    if log_now:
        rec.update(meter.read(lr, state.tokens_seen))
        eta = run.budget.eta(state, time.time())
    if eval_now:
        rec["val_loss"] = evaluate_run(run)
        rec.setdefault("tokens_seen", state.tokens_seen)
    rec["elapsed"] = round(state.elapsed, 3)
    run.log.write(rec)
    if log_now:
        run.out.update(state.step, rec, eta)
    if save_now:
        run.say(f"saved {save_checkpoint(run)}")
    if log_now:
        meter.reset()


def evaluate_run(run: Run) -> float:
    """Validation loss now (the fixed windows); a non-finite one is divergence."""
    cfg = run.cfg
    val = evaluate(run.model, run.ds, cfg.eval_tokens, cfg.batch_size, run.device, run.amp)
    run.guard.check_val(val)
    run.state.val_loss = val
    run.say(f"step {run.state.step}: val_loss {val:.4f}")
    return val


def save_checkpoint(run: Run) -> Path:
    """``checkpoints/step-NNNNNN`` with the model, provenance, optimizer and ``TrainState``; then the
    ``best`` pointer (if this one is best) and rotation."""
    state, run_dir = run.state, run.run_dir
    is_best = state.improves(state.val_loss)
    if is_best:
        state.best = {"step": state.step, "val_loss": state.val_loss, "dir": ck.step_dir_name(state.step)}
    path = ck.save_run_checkpoint(run_dir, step=state.step, model=run.model, model_config=run.mcfg,
                                  tokenizer=run.ds.tokenizer, provenance=provenance(run), optimizer=run.optimizer,
                                  state=state.state_dict())
    state.last_checkpoint = path
    if is_best:
        ck.mark_best(run_dir, path)
    best_dir = run_dir / "checkpoints" / state.best["dir"] if state.best else None
    ck.rotate(run_dir, run.cfg.keep_last, best_dir)
    return path


def provenance(run: Run) -> dict:
    """``warmstart.json`` of a checkpoint written now."""
    cfg, ds, mcfg, state = run.cfg, run.ds, run.mcfg, run.state
    return {
        "architecture": mcfg.family, "hf_architecture": mcfg.hf_architecture, "model_type": mcfg.model_type,
        "license": cfg.license, "data_sources": list(ds.sources), "data_license": cfg.data_license,
        "parent": run.source.parent, "step": state.step, "tokens_seen": state.tokens_seen,
        "val_loss": state.val_loss, "data_fingerprint": ds.fingerprint,
        "val_windows": len(ds.val_window_indices(cfg.eval_tokens)), "warmstart_version": __version__,
        "created": utc_now(),
    }


# ------------------------------------------------------------------ setup and finish


def _runtime(cfg: TrainConfig) -> tuple[torch.device, AmpFactory]:
    device = resolve_device(cfg.device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        if device.index is not None:
            torch.cuda.set_device(device)
    return device, amp_context(device, cfg.dtype)


def _load_data(cfg: TrainConfig, source: ModelSource, say: Callable[[str], None]) -> TokenDataset:
    ds = build_dataset(cfg.data or None, include=cfg.include or None, text_field=cfg.text_field,
                       tokenizer=source.tokenizer, vocab_size_=cfg.vocab_size, seq_len=cfg.seq_len,
                       val_fraction=cfg.val_fraction, max_corpus_bytes=cfg.max_corpus_bytes,
                       cache_dir=cfg.cache_dir, log=say)
    say(ds.summary())
    return ds


def _describe(model: CausalLM, mcfg: ModelConfig, device: torch.device, amp: AmpFactory) -> str:
    return (f"model: {mcfg.family} {model.num_parameters() / 1e6:.2f}M parameters (hidden {mcfg.hidden_size}, "
            f"{mcfg.num_layers} layers, vocab {mcfg.vocab_size}) on {device}"
            + (", bf16 autocast" if amp is not contextlib.nullcontext else ", fp32"))


def _step0_evaluation(model, source: ModelSource, ds: TokenDataset, cfg: TrainConfig, device: torch.device,
                      amp: AmpFactory, say: Callable[[str], None]) -> float | None:
    """The validation loss before any step (None when resuming); for ``--init`` it is gate 7."""
    if source.resume_dir is not None:
        return None
    val = evaluate(model, ds, cfg.eval_tokens, cfg.batch_size, device, amp)
    if source.warm is None:
        say(f"step 0 val_loss {val:.4f} (random init ≈ ln V = {math.log(ds.vocab_size):.4f})")
        return val
    from warmstart.init import step0_gate

    say(step0_gate(source.warm, val_loss=val, data_fingerprint=ds.fingerprint,
                   val_windows=len(ds.val_window_indices(cfg.eval_tokens)),
                   allow_untrained_init=cfg.allow_untrained_init, tolerance=cfg.init_loss_tolerance))
    return val


def _resume(run_dir: Path, ckpt_dir: Path, optimizer: torch.optim.Optimizer, state: TrainState,
            say: Callable[[str], None]) -> None:
    ck.restore_trainer_state(ckpt_dir, optimizer, state)
    ck.clean_partials(run_dir)
    say(f"resumed at step {state.step}, {state.tokens_seen:,} tokens seen, val_loss {state.val_loss}")


def _open_run_dir(run_dir: Path, cfg: TrainConfig, ds: TokenDataset, state: TrainState, *,
                  resuming: bool) -> RunLog:
    """Create the run directory (config.yaml, tokenizer.json) and its logs; a new run logs step 0."""
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(run_dir / "config.yaml", dump_yaml(cfg))
    ds.tokenizer.save(str(run_dir / "tokenizer.json"))
    log = RunLog(run_dir, truncate_after_step=state.step if resuming else None)
    if not resuming:
        log.metrics.write({"step": 0, "val_loss": state.first_val_loss, "tokens_seen": 0,
                           "elapsed": round(state.elapsed, 3), "lr": 0.0})
        if state.first_val_loss is not None:
            log.tb.scalars(0, {"val/loss": state.first_val_loss})
    return log


def _finish(run: Run, stopped_by: str, print_summary: bool) -> RunSummary:
    state, run_dir = run.state, run.run_dir
    best = state.best
    summary = RunSummary(
        run_dir=str(run_dir), steps=state.step, tokens_seen=state.tokens_seen, seconds=state.elapsed,
        first_val_loss=state.first_val_loss, final_val_loss=state.val_loss,
        best_val_loss=best["val_loss"] if best else None,
        best_checkpoint=str(run_dir / "checkpoints" / best["dir"]) if best else None,
        last_checkpoint=str(state.last_checkpoint) if state.last_checkpoint else None, stopped_by=stopped_by,
        resumed_from=str(run.source.resume_dir) if run.source.resume_dir else None,
        first_step_seconds=run.first_step.seconds,
    )
    atomic_write_json(run_dir / "summary.json", asdict(summary))
    if print_summary:
        for line in summary.lines():
            print(line, flush=True)
    return summary
