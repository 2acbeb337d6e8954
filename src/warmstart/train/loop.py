"""``pretrain(TrainConfig)``: the training run, top to bottom.

Order of work: process group (torchrun's ranks, if any) -> run directory name ->
model source (warm start: gates 1-6 via ``prepare_warm_start``) -> data -> settings (parallel
mode; resume: same data, same global batch) -> model (preset for scratch, the checkpoint's for
``--init``, the run's latest checkpoint for ``--resume``; FSDP: sharded on the meta device, then
each rank's shards filled) -> ``parallelize`` -> step-0 validation loss (gate 7 via
``step0_gate`` for ``--init``) -> only then the optimizer -> (resume: trainer state) -> run
directory -> steps.

Under several ranks each decision before the steps is rank 0's, broadcast to every rank
(``distributed.decide_on_main``): the same result or the same refusal everywhere, printed once.

The parts: ``source`` (where the model comes from), ``state`` (``TrainState``), ``budget`` (the
stop condition), ``step`` (``train_step`` and the divergence guard), ``parallel`` (FSDP2 / DDP,
compile), ``distributed`` (ranks), ``checkpoints`` (files), ``report`` (metrics, progress).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import torch

from warmstart import __version__
from warmstart.arch import CausalLM, ModelConfig
from warmstart.arch.attention import Packing
from warmstart.arch.context import check_within_positions
from warmstart.checkpoint.run import (
    MARKER, RunDir, RunLock, choose_run_dir, discard_leftovers, remove_unfinished, step_name,
)
from warmstart.checkpoint.write import atomic_write_json, atomic_write_text
from warmstart.data import TokenDataset, build_dataset, mixture_lines
from warmstart.errors import ResumeError, UsageError
from warmstart.runtime import amp_context
from warmstart.train import checkpoints as ck
from warmstart.train.budget import Budget, StopSignal
from warmstart.train.config import TrainConfig, dump_yaml
from warmstart.train.distributed import Dist, decide_on_main, local_error, setup_distributed
from warmstart.train import fp8, lowbit
from warmstart.train.evaluate import (
    AmpFactory, eval_metrics, evaluate_sets, forgetting, forgetting_lines, load_eval_sets, step0_eval_lines,
)
from warmstart.train.faults import settle
from warmstart.train.optim import Schedule, build_optimizer, set_lr
from warmstart.train.parallel import LossFn, Parallel, compile_loss, parallel_mode, parallelize, shard_model
from warmstart.train.perf import FirstStepClock, flops_budget
from warmstart.train.report import IntervalMeter, NullLog, Reporter, RunLog, fmt_duration
from warmstart.train.source import ModelSource, Resume, WarmStartSource, resolve_source, training_model
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
    data_mixture: list[dict] | None = None  # weighted --data: each source's weight and tokens drawn
    eval_sets: dict[str, dict] | None = None  # --eval-data: {name: {"step0", "final", "change"}}
    first_step_seconds: float | None = None  # from the start to the end of this process's first step

    def lines(self) -> list[str]:
        def f(x):
            return "n/a" if x is None else f"{x:.4f}"

        return [
            f"done: {self.steps} steps, {self.tokens_seen:,} tokens, {fmt_duration(self.seconds)} "
            f"(stopped by {self.stopped_by})" + (f", first step after {self.first_step_seconds:.1f}s"
                                                 if self.first_step_seconds is not None else ""),
            f"val_loss: first {f(self.first_val_loss)} -> final {f(self.final_val_loss)}, best {f(self.best_val_loss)}",
            *forgetting_lines(self.eval_sets), *mixture_lines(self.data_mixture),
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
    context: dict | None  # the context extension of this run (arch/context.py context_change), if any
    model: CausalLM
    par: Parallel
    loss_fn: LossFn
    optimizer: torch.optim.Optimizer
    state: TrainState
    budget: Budget
    guard: DivergenceGuard
    log: RunLog
    out: Reporter
    first_step: FirstStepClock
    evals: dict[str, TokenDataset] = field(default_factory=dict)  # --eval-data sets

    def say(self, text: str) -> None:
        self.out.print(text)

    @property
    def dist(self) -> Dist:
        return self.par.dist


# ------------------------------------------------------------------ main entry


def pretrain(cfg: TrainConfig, *, reporter: Reporter | None = None, quiet: bool = False,
             print_summary: bool = True) -> RunSummary:
    """Train as ``cfg`` says; returns the run summary. ``quiet`` silences progress, not the summary.

    Under torchrun every rank calls this; rank 0 alone prints, logs and writes the run directory."""
    cfg.validate()
    started = time.time()
    dist = setup_distributed(cfg.device, want_group=cfg.parallel in ("ddp", "fsdp"))
    try:
        with StopSignal() as stop:
            try:
                summary = _pretrain(cfg, dist, stop, started, reporter=reporter, quiet=quiet,
                                    print_summary=print_summary)
                dist.barrier()  # every rank done: they leave the process group together
            except BaseException as err:  # several ranks: every rank ends, one paragraph (faults.py)
                settled = settle(dist, err)
                if settled is err:
                    raise
                raise settled from None
        return summary
    finally:
        dist.close()


def _pretrain(cfg: TrainConfig, dist: Dist, stop: StopSignal, started: float, *, reporter: Reporter | None,
              quiet: bool, print_summary: bool) -> RunSummary:
    lock = RunLock()  # rank 0's: --resume takes it now, a new run when it creates the directory
    try:
        return _pretrain_locked(cfg, dist, stop, started, lock, reporter=reporter, quiet=quiet,
                                print_summary=print_summary)
    finally:
        lock.release()


def _claim(cfg: TrainConfig, lock: RunLock) -> str:
    run_dir = choose_run_dir(cfg.out, cfg.resume)
    if cfg.resume:
        lock.acquire(run_dir)
    return str(run_dir)


def _pretrain_locked(cfg: TrainConfig, dist: Dist, stop: StopSignal, started: float, lock: RunLock, *,
                     reporter: Reporter | None, quiet: bool, print_summary: bool) -> RunSummary:
    amp = _runtime(dist.device, cfg)
    run_dir = Path(decide_on_main(dist, lambda: _claim(cfg, lock)))
    out = reporter or Reporter(None, quiet=quiet or not dist.is_main, tty=False)
    seed_all(cfg.seed)

    source = resolve_source(cfg, run_dir, device=dist.device, say=out.print, dist=dist)  # --init: gates 1-6
    if source.config is not None:  # before the data pass: the window must fit the model's positions
        decide_on_main(dist, lambda: _within_positions(cfg, source.config))
    ds = _load_data(cfg, source, out.print, dist, quiet or not dist.is_main)
    evals = _every_rank_builds(dist, lambda: load_eval_sets(cfg, ds.tokenizer, out.print), _fingerprints,
                               "--eval-data")
    mcfg, context = source.model_config(cfg, ds)
    cfg, mode = decide_on_main(dist, lambda: _settings(cfg, source, ds, mcfg, dist, out.print))
    shard = (lambda m: shard_model(m, cfg, dist)) if mode == "fsdp" else None
    model = training_model(source, mcfg, cfg, dist.device, shard=shard)
    model.packing = Packing(cfg.attention, cfg.positions, separator=ds.eos_id)  # training and every evaluation
    out.print(_describe(model, mcfg, dist, amp, mode) + "".join(
        f", {k} {v}" for k, v in (("fp8", cfg.fp8), ("optimizer", cfg.optimizer)) if v not in ("none", "adamw")))
    par = parallelize(model, cfg, dist, mode)
    first_val, first_evals = _step0_evaluation(par, source, ds, evals, cfg, amp, out.print)  # --init: gate 7

    optimizer = build_optimizer(model, lr=cfg.lr, weight_decay=cfg.weight_decay, betas=(cfg.beta1, cfg.beta2),
                                eps=cfg.eps, device=par.optimizer_device, kind=cfg.optimizer)
    global_batch = cfg.batch_size * cfg.grad_accum * dist.world_size
    budget = Budget(cfg, tokens_per_step=global_batch * cfg.seq_len, signal_=stop,
                    agree=dist.any if dist.several else None)
    state = TrainState(sampler=ds.sampler(cfg.seed), data_fingerprint=ds.fingerprint,
                       schedule=Schedule(cfg.lr, cfg.warmup_steps, budget.decay_steps, cfg.min_lr_ratio,
                                         kind=cfg.schedule, decay_fraction=cfg.decay_fraction),
                       started=started, first_val_loss=first_val, val_loss=first_val,
                       first_eval_losses=first_evals, eval_losses=dict(first_evals), world_size=dist.world_size,
                       global_batch=global_batch)
    resuming = isinstance(source, Resume)
    if resuming:
        _resume(run_dir, source, optimizer, state, par, out.print)

    created = not run_dir.exists()
    log = decide_on_main(dist, lambda: _open_run_dir(run_dir, cfg, ds, state, lock, resuming, created),
                         share=lambda _log: None, adopt=lambda _none: NullLog())  # every gate passed
    if reporter is None and dist.is_main:  # now the step count is known: a progress bar on a terminal
        out.close()
        out = Reporter(budget.total_steps, start_step=state.step, quiet=quiet)
    guard = DivergenceGuard(dist.device, state, run_dir=run_dir, lr=cfg.lr, warmup_steps=cfg.warmup_steps,
                            on_device=bool(optimizer.defaults.get("fused")), dist=dist)  # found_inf: fused AdamW
    run = Run(cfg=cfg, run_dir=run_dir, device=dist.device, amp=amp, source=source, ds=ds, mcfg=mcfg, context=context,
              model=model,
              par=par, loss_fn=compile_loss(par, cfg), optimizer=optimizer, state=state, budget=budget, guard=guard,
              log=log, out=out, first_step=FirstStepClock(started), evals=evals)
    try:
        stopped_by = train(run)
    except BaseException:
        if dist.is_main and not resuming:
            log.close()
            remove_unfinished(run_dir, created=created)  # no checkpoint yet: nothing to resume, nothing left
        raise
    finally:
        log.close()
        out.close()
    return _finish(run, stopped_by, print_summary)


# ------------------------------------------------------------------ the loop


def train(run: Run) -> str:
    """Optimizer steps until the budget says stop, logging / evaluating / saving at their points.

    Returns what stopped the run (``max-steps``, ``max-tokens`` or ``max-time``).
    """
    cfg, state, budget, dist = run.cfg, run.state, run.budget, run.dist
    batches = TrainBatches(run.ds, state.sampler, cfg.batch_size, run.device, grad_accum=cfg.grad_accum,
                           rank=dist.rank, world_size=dist.world_size)
    meter = IntervalMeter(run.device, devices=dist.world_size,
                          flops=flops_budget(run.mcfg, cfg.seq_len, run.device, run.amp))
    clip = clip_value(cfg.grad_clip)
    stopped_by = budget.stop_reason(state)  # once per step: under several ranks a collective
    budget.signal.stepping = True
    while stopped_by is None:
        lr = state.schedule.at(state.step)
        set_lr(run.optimizer, lr)
        loss, gnorm = train_step(run.loss_fn, run.optimizer, batches, grad_accum=cfg.grad_accum, clip=clip,
                                 amp=run.amp, guard=run.guard, par=run.par)
        state.advance(budget.tokens_per_step)
        run.first_step.done(run.device)
        meter.add(loss, gnorm, budget.tokens_per_step)

        stopped_by = budget.stop_reason(state)
        last = stopped_by is not None
        log_now = state.step % cfg.log_every == 0 or last
        save_now = (cfg.save_every > 0 and state.step % cfg.save_every == 0) or last
        eval_now = (cfg.eval_every > 0 and state.step % cfg.eval_every == 0) or save_now
        if log_now or eval_now:
            _log_eval_save(run, meter, lr, log_now=log_now, eval_now=eval_now, save_now=save_now)
    budget.signal.stepping = False
    if state.steps_this_run == 0 and state.last_checkpoint is None:
        # Nothing to do (e.g. a budget already reached): still leave a checkpoint behind.
        run.guard.check()
        save_checkpoint(run)
    return stopped_by


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
        rec.update(eval_metrics(state.eval_losses))
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
    """Validation loss now (the fixed windows; the --eval-data sets into ``state.eval_losses``); a
    non-finite one is divergence."""
    cfg = run.cfg
    val = run.par.evaluate(run.ds, cfg.eval_tokens, cfg.batch_size, run.device, run.amp)
    extra = evaluate_sets(run.par.evaluate, run.evals, cfg.eval_tokens, cfg.batch_size, run.device, run.amp)
    for loss in (val, *extra.values()):
        run.guard.check_val(loss)
    run.state.val_loss, run.state.eval_losses = val, extra
    run.say(f"step {run.state.step}: val_loss {val:.4f}" + "".join(f", val/{k} {v:.4f}" for k, v in extra.items()))
    return val


def save_checkpoint(run: Run) -> Path:
    """``checkpoints/step-NNNNNN`` with the model, provenance, optimizer and ``TrainState``; then the
    ``best`` pointer (if this one is best) and rotation."""
    state, run_dir = run.state, run.run_dir
    is_best = state.improves(state.val_loss)
    if is_best:
        state.best = {"step": state.step, "val_loss": state.val_loss, "dir": step_name(state.step)}
    stepping, run.budget.signal.stepping = run.budget.signal.stepping, False  # a SIGTERM now ends the process
    path = ck.save_run_checkpoint(run_dir, step=state.step, model=run.model, model_config=run.mcfg,
                                  tokenizer=run.ds.tokenizer, provenance=provenance(run), optimizer=run.optimizer,
                                  state=state.state_dict(), par=run.par)
    run.budget.signal.stepping = stepping
    state.last_checkpoint = path
    if run.dist.is_main:
        if is_best:
            RunDir(run_dir).point("best", path)
        best_dir = RunDir(run_dir).checkpoints / state.best["dir"] if state.best else None
        ck.rotate(run_dir, run.cfg.keep_last, best_dir)
    return path


def provenance(run: Run) -> dict:
    """``warmstart.json`` of a checkpoint written now."""
    cfg, ds, mcfg, state = run.cfg, run.ds, run.mcfg, run.state
    mixture, eval_sets = ds.drawn(state.sampler), forgetting(state.first_eval_losses, state.eval_losses)
    return {
        "architecture": mcfg.family, "hf_architecture": mcfg.hf_architecture, "model_type": mcfg.model_type,
        "license": cfg.license, "data_sources": list(ds.sources), "data_license": cfg.data_license,
        "parent": run.source.parent, "step": state.step, "tokens_seen": state.tokens_seen,
        "val_loss": state.val_loss, "data_fingerprint": ds.fingerprint,
        "val_windows": len(ds.val_window_indices(cfg.eval_tokens)), "warmstart_version": __version__,
        "created": utc_now(), "attention": cfg.attention, "positions": cfg.positions,
        **({"context_extension": run.context} if run.context else {}),
        **({"data_mixture": mixture} if mixture else {}),
        **({"eval_sets": eval_sets} if eval_sets else {}),
    }


# ------------------------------------------------------------------ setup and finish


def _runtime(device: torch.device, cfg: TrainConfig) -> AmpFactory:
    fp8.check_device(cfg.fp8, device)  # before any data is read or model built
    lowbit.check_available(cfg.optimizer)
    if device.type == "cuda":  # (setup_distributed has made it the current device)
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    return amp_context(device, cfg.dtype)


def _load_data(cfg: TrainConfig, source: ModelSource, say: Callable[[str], None], dist: Dist,
               quiet: bool) -> TokenDataset:
    """The token dataset (one corpus or a weighted mixture), built by every rank (``_every_rank_builds``)."""
    def build() -> TokenDataset:
        ds = build_dataset(cfg.data or None, cfg.data_settings(), tokenizer=source.tokenizer, log=say, quiet=quiet)
        say(ds.summary())
        return ds

    return _every_rank_builds(dist, build, lambda ds: ds.fingerprint, "--data")


def _fingerprints(sets: dict) -> dict[str, str]:
    return {name: ds.fingerprint for name, ds in sets.items()}


def _every_rank_builds(dist: Dist, build: Callable, fingerprint: Callable, what: str):
    """``build()`` on every rank at once: the token cache's lock, not a collective, makes the ranks wait
    for the one that tokenizes (polling the lock, printing its progress, however long it takes); then
    each rank checks that it holds the very data rank 0 holds (the same fingerprint), and a failure on
    rank 0 is every rank's."""
    if not dist.several:
        return build()
    mine, err = None, None
    if not dist.is_main:
        try:
            mine = build()
        except Exception as e:  # reported after rank 0's verdict: rank 0's own failure comes first
            err = e

    def adopt(expected):
        if err is not None:
            raise local_error(err)
        if fingerprint(mine) != expected:
            raise local_error(UsageError(
                f"rank {dist.rank} built {what} with fingerprint {fingerprint(mine)}, rank 0 with {expected}",
                why="every rank must train on the same tokens",
                fix="put --cache-dir on a filesystem every node mounts, or `warmstart prepare` the corpus once "
                    "and pass the printed cache as --data"))
        return mine

    return decide_on_main(dist, build, share=fingerprint, adopt=adopt)


def _settings(cfg: TrainConfig, source: ModelSource, ds: TokenDataset, mcfg: ModelConfig, dist: Dist,
              say: Callable[[str], None]) -> tuple[TrainConfig, str]:
    """The settings every rank runs with (rank 0 decides): the parallel mode (``auto``: by the model's
    size); when resuming, the same data as the checkpoint's and the same global batch."""
    world = dist.world_size
    _within_positions(cfg, mcfg)
    mode = parallel_mode(cfg, world, params=mcfg.num_parameters(), device=dist.device)
    fp8.check_model(cfg.fp8, mcfg, cfg.seq_len)
    lowbit.check_placement(cfg.optimizer, mode, cfg.cpu_offload)
    if not isinstance(source, Resume):
        return cfg, mode
    ck.check_same_data(source.state, ds.fingerprint, source.step_dir)
    return _keep_global_batch(cfg, source.state, world, source.step_dir, say), mode


def _within_positions(cfg: TrainConfig, mcfg: ModelConfig) -> None:
    """``--seq-len`` within the model's ``max_position_embeddings`` (as eval and generate refuse)."""
    limit = mcfg.max_position_embeddings
    check_within_positions(limit, cfg.seq_len, "the training window (--seq-len)",
                           fix=f"use --seq-len {limit} or less, or extend the model's context at the warm start: "
                               f"--context-length {cfg.seq_len} with --rope-theta or --rope-scaling "
                               "(docs/continued-pretraining.md, Long context)")


def _keep_global_batch(cfg: TrainConfig, saved: dict, world: int, where: Path,
                       say: Callable[[str], None]) -> TrainConfig:
    """Resuming on another number of ranks keeps the windows per optimizer step: ``--grad-accum`` is
    adjusted when that divides, else the resume is refused naming the numbers."""
    was = int(saved.get("world_size", 1))
    target = saved.get("global_batch") or cfg.batch_size * cfg.grad_accum * was
    if was == world or cfg.batch_size * cfg.grad_accum * world == target:
        return cfg
    per_micro = cfg.batch_size * world
    if target % per_micro:
        raise ResumeError(
            f"the run trained with {target} windows per step on {was} rank(s); {world} rank(s) x --batch-size "
            f"{cfg.batch_size} cannot make {target} with a whole --grad-accum",
            why="the data order and the learning-rate schedule assume the same global batch",
            fix=_batch_fix(target, world, was, cfg.batch_size), path=where)
    say(f"global batch kept at {target} windows per step: {world} rank(s) x batch {cfg.batch_size} x "
        f"grad-accum {target // per_micro} (was {cfg.grad_accum} on {was} rank(s))")
    return dataclasses.replace(cfg, grad_accum=target // per_micro)


def _batch_fix(target: int, world: int, was: int, batch: int) -> str:
    """The flags that keep ``target`` windows per step on ``world`` ranks (or the rank counts that can)."""
    if target % world:
        return f"resume on {was} rank(s), or on a number of ranks that divides {target}"
    per_rank = target // world
    b = max(d for d in range(1, min(batch, per_rank) + 1) if per_rank % d == 0)
    return (f"pass --batch-size {b} --grad-accum {per_rank // b} (batch x grad-accum x {world} ranks = {target}), "
            f"or resume on {was} rank(s)")


def _describe(model: CausalLM, mcfg: ModelConfig, dist: Dist, amp: AmpFactory, mode: str) -> str:
    where = f"{dist.device}" if not dist.several else f"{dist.world_size} ranks ({dist.device.type})"
    return (f"model: {mcfg.family} {model.num_parameters() / 1e6:.2f}M parameters (hidden {mcfg.hidden_size}, "
            f"{mcfg.num_layers} layers, vocab {mcfg.vocab_size}) on {where}"
            + (", bf16 autocast" if amp is not contextlib.nullcontext else ", fp32")
            + (f", {mode.upper()}" if mode != "none" else ""))


def _step0_evaluation(par: Parallel, source: ModelSource, ds: TokenDataset, evals: dict, cfg: TrainConfig,
                      amp: AmpFactory, say: Callable[[str], None]) -> tuple[float | None, dict[str, float]]:
    """The validation losses before any step (None and {} when resuming): the held-out split's and each
    --eval-data set's; for ``--init`` they pass gate 7, which rank 0 decides for every rank."""
    if isinstance(source, Resume):
        return None, {}
    device = par.dist.device
    val = par.evaluate(ds, cfg.eval_tokens, cfg.batch_size, device, amp)
    warm = source.warm if isinstance(source, WarmStartSource) else None
    if warm is None:
        say(f"step 0 val_loss {val:.4f} (random init ≈ ln V = {math.log(ds.vocab_size):.4f})")
    else:
        from warmstart.init import step0_gate

        say(decide_on_main(par.dist, lambda: step0_gate(
            warm, val_loss=val, data_fingerprint=ds.fingerprint,
            val_windows=len(ds.val_window_indices(cfg.eval_tokens)), allow_untrained_init=cfg.allow_untrained_init,
            tolerance=cfg.init_loss_tolerance, context=source.context).detail))
    extra = evaluate_sets(par.evaluate, evals, cfg.eval_tokens, cfg.batch_size, device, amp)
    lnv = warm.random_init_loss if warm is not None else math.log(ds.vocab_size)
    lines = decide_on_main(par.dist, lambda: step0_eval_lines(extra, random_init_loss=lnv, warm=warm,
                                                              allow_untrained_init=cfg.allow_untrained_init))
    for line in lines:
        say(line)
    return val, extra


def _resume(run_dir: Path, source: ModelSource, optimizer: torch.optim.Optimizer, state: TrainState,
            par: Parallel, say: Callable[[str], None]) -> None:
    ck.restore_trainer_state(source.step_dir, optimizer, state, par, saved=source.state)
    if par.dist.is_main:
        ck.clean_partials(run_dir)
    say(f"resumed at step {state.step}, {state.tokens_seen:,} tokens seen, val_loss {state.val_loss}")


def _open_run_dir(run_dir: Path, cfg: TrainConfig, ds: TokenDataset, state: TrainState, lock: RunLock,
                  resuming: bool, created: bool) -> RunLog:
    """Create the run directory (its lock, config.yaml, tokenizer.json) and its logs; a new run logs step 0.
    A new run checks the directory again (another may have taken it meanwhile) and takes over the files
    of a run that stopped before its first checkpoint. A new run that fails here (a full disk) leaves
    nothing (``remove_unfinished``); a resumed one keeps its files (each is replaced atomically)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    try:
        lock.acquire(run_dir)  # RunLockedError when another run took the directory meanwhile
        RunDir(run_dir).check_layout()  # under the lock: still nothing a write would follow out of the run
    except BaseException:
        if created:
            with contextlib.suppress(OSError):
                run_dir.rmdir()
        raise
    try:
        return _write_run_files(run_dir, cfg, ds, state, resuming=resuming)
    except BaseException:
        if not resuming:
            remove_unfinished(run_dir, created=created)
        raise


def _write_run_files(run_dir: Path, cfg: TrainConfig, ds: TokenDataset, state: TrainState, *,
                     resuming: bool) -> RunLog:
    if not resuming:
        choose_run_dir(str(run_dir), None, probe=False)  # under the lock: still no other run's files
        discard_leftovers(run_dir)
    atomic_write_text(run_dir / "config.yaml", MARKER + dump_yaml(cfg))
    atomic_write_text(run_dir / "tokenizer.json", ds.tokenizer.to_str())
    log = RunLog(run_dir, truncate_after_step=state.step if resuming else None)
    if not resuming:
        extra = eval_metrics(state.first_eval_losses)
        log.metrics.write({"step": 0, "val_loss": state.first_val_loss, **extra, "tokens_seen": 0,
                           "elapsed": round(state.elapsed, 3), "lr": 0.0})
        if state.first_val_loss is not None:
            log.tb.scalars(0, {"val/loss": state.first_val_loss, **extra})
    return log


def _finish(run: Run, stopped_by: str, print_summary: bool) -> RunSummary:
    state, run_dir = run.state, run.run_dir
    best = state.best
    summary = RunSummary(
        run_dir=str(run_dir), steps=state.step, tokens_seen=state.tokens_seen, seconds=state.elapsed,
        first_val_loss=state.first_val_loss, final_val_loss=state.val_loss,
        best_val_loss=best["val_loss"] if best else None,
        best_checkpoint=str(RunDir(run_dir).checkpoints / best["dir"]) if best else None,
        last_checkpoint=str(state.last_checkpoint) if state.last_checkpoint else None, stopped_by=stopped_by,
        resumed_from=str(run.source.step_dir) if isinstance(run.source, Resume) else None,
        data_mixture=run.ds.drawn(state.sampler),
        eval_sets=forgetting(state.first_eval_losses, state.eval_losses) or None,
        first_step_seconds=run.first_step.seconds,
    )
    if not run.dist.is_main:
        return summary
    atomic_write_json(run_dir / "summary.json", asdict(summary))
    if print_summary:
        for line in summary.lines():
            print(line, flush=True)
    return summary
