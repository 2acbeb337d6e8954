"""``pretrain(TrainConfig)``: the training loop.

Order of work (SPEC §4, §5): (warm start: gates 1-6 via ``prepare_warm_start``) -> data ->
model (preset for scratch, the checkpoint's for ``--init``, the run's latest checkpoint for
``--resume``) -> step-0 validation loss (gate 7 via ``step0_gate`` for ``--init``) -> only then
the optimizer -> steps.

The hot loop makes no host-device synchronisation except at log / eval / save points. On CUDA
the divergence guard runs on the device: a step whose loss or gradient norm is not finite sets a
sticky flag that the fused AdamW kernel reads as ``found_inf``, so neither that update nor any
later one is applied; the flag is read at the next log/eval/save point and raises
``DivergenceError`` before anything is written. On CPU the check runs every step, before the
optimizer step.
"""

from __future__ import annotations

import contextlib
import json
import math
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from warmstart import __version__
from warmstart.arch import CausalLM, ModelConfig, get_preset
from warmstart.checkpoint import load_checkpoint
from warmstart.init.population import populate_model
from warmstart.checkpoint.write import atomic_write_json, atomic_write_text
from warmstart.data import BatchSampler, TokenDataset, build_dataset, load_tokenizer
from warmstart.errors import DivergenceError, ResumeError, UsageError
from warmstart.train import checkpoints as ck
from warmstart.runtime import amp_context, resolve_device
from warmstart.train.config import TrainConfig, dump_yaml
from warmstart.train.evaluate import evaluate, to_device
from warmstart.train.optim import build_optimizer, lr_at
from warmstart.train.report import MetricsLog, Reporter, TensorBoard, fmt_duration


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

    def lines(self) -> list[str]:
        def f(x):
            return "n/a" if x is None else f"{x:.4f}"

        return [
            f"done: {self.steps} steps, {self.tokens_seen:,} tokens, {fmt_duration(self.seconds)} "
            f"(stopped by {self.stopped_by})",
            f"val_loss: first {f(self.first_val_loss)} -> final {f(self.final_val_loss)}, best {f(self.best_val_loss)}",
            f"best checkpoint: {self.best_checkpoint or 'none'}",
            f"last checkpoint: {self.last_checkpoint or 'none'}",
        ]


# ------------------------------------------------------------------ helpers


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _budget(cfg: TrainConfig, tokens_per_step: int) -> int | None:
    limits = []
    if cfg.max_steps is not None:
        limits.append(int(cfg.max_steps))
    if cfg.max_tokens is not None:
        limits.append(int(math.ceil(cfg.max_tokens / tokens_per_step)))
    return min(limits) if limits else None


# ------------------------------------------------------------------ main entry


def pretrain(cfg: TrainConfig, *, reporter: Reporter | None = None, quiet: bool = False,
             print_summary: bool = True) -> RunSummary:
    """Train as ``cfg`` says; returns the run summary. ``quiet`` silences progress, not the summary."""
    cfg.validate()
    t_start = time.time()
    device = resolve_device(cfg.device)
    amp = amp_context(device, cfg.dtype)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        if device.index is not None:
            torch.cuda.set_device(device)

    resuming = bool(cfg.resume)
    run_dir = Path(cfg.resume or cfg.out or Path("runs") / time.strftime("%Y%m%d-%H%M%S"))
    if resuming:
        if not (run_dir / "config.yaml").is_file():
            raise ResumeError(f"'{run_dir}' is not a warmstart run directory (no config.yaml)", path=run_dir)
        resume_ckpt = ck.find_resume_checkpoint(run_dir)
    else:
        resume_ckpt = None
        if ck.list_step_dirs(run_dir) or (run_dir / "metrics.jsonl").exists():
            raise UsageError(f"run directory {run_dir} already holds a run",
                             why="a new run never overwrites an old one",
                             fix=f"continue it with --resume {run_dir}, or pass another --out")

    own_reporter = reporter is None
    out = reporter or Reporter(None, quiet=quiet, tty=False)
    say = out.print
    _seed_all(cfg.seed)

    # -------------------------------------------------------- model identity (+ warm-start gates 1-6)
    warm = None
    parent = None
    if resume_ckpt is not None:
        prov = json.loads((resume_ckpt / "warmstart.json").read_text())
        hf_cfg = json.loads((resume_ckpt / "config.json").read_text())
        mcfg = ModelConfig.from_hf_config(hf_cfg, source=str(resume_ckpt))
        tokenizer = load_tokenizer(resume_ckpt / "tokenizer.json")
        parent = prov.get("parent")
        say(f"resuming {run_dir} from {resume_ckpt.name}")
    elif cfg.init:
        from warmstart.init import prepare_warm_start

        warm = prepare_warm_start(cfg.init, tokenizer_path=cfg.tokenizer,
                                  allow_unused_tensors=cfg.allow_unused_tensors,
                                  trust_pickle=cfg.trust_pickle, device=device)
        for gate in warm.report:
            say(gate.line())
        mcfg = warm.config
        tokenizer = warm.tokenizer
        parent = warm.provenance_parent
    else:
        tokenizer = load_tokenizer(cfg.tokenizer) if cfg.tokenizer else None
        mcfg = None

    # -------------------------------------------------------- data
    ds = build_dataset(cfg.data or None, include=cfg.include or None, text_field=cfg.text_field,
                       tokenizer=tokenizer, vocab_size_=cfg.vocab_size, seq_len=cfg.seq_len,
                       val_fraction=cfg.val_fraction, max_corpus_bytes=cfg.max_corpus_bytes,
                       cache_dir=cfg.cache_dir, log=say)
    say(ds.summary())
    tokenizer = ds.tokenizer
    V = ds.vocab_size

    # -------------------------------------------------------- model
    if warm is not None:
        model = warm.model
    else:
        if mcfg is None:
            base = get_preset(cfg.preset)
            mcfg = base.replace(vocab_size=V, bos_token_id=ds.eos_id, eos_token_id=ds.eos_id,
                                pad_token_id=ds.eos_id,
                                max_position_embeddings=max(base.max_position_embeddings, cfg.seq_len))
        if resume_ckpt is not None:  # strict population, as for --init: nothing random-initialised
            model = populate_model(load_checkpoint(resume_ckpt), mcfg)
        else:
            model = CausalLM(mcfg)
            model.reset_parameters(cfg.seed)
    model = model.to(device=device, dtype=torch.float32)
    model.activation_checkpointing = bool(cfg.activation_checkpointing)
    model.train()
    n_params = model.num_parameters()
    say(f"model: {mcfg.family} {n_params / 1e6:.2f}M parameters (hidden {mcfg.hidden_size}, "
        f"{mcfg.num_layers} layers, vocab {mcfg.vocab_size}) on {device}"
        + (", bf16 autocast" if amp is not contextlib.nullcontext else ", fp32"))
    lnV = math.log(mcfg.vocab_size)

    # -------------------------------------------------------- step-0 evaluation (gate 7)
    first_val = None
    if resume_ckpt is None:
        first_val = evaluate(model, ds, cfg.eval_tokens, cfg.batch_size, device, amp)
        if warm is not None:
            from warmstart.init import step0_gate

            line = step0_gate(warm, val_loss=first_val, data_fingerprint=ds.fingerprint,
                              val_windows=len(ds.val_window_indices(cfg.eval_tokens)),
                              allow_untrained_init=cfg.allow_untrained_init, tolerance=cfg.init_loss_tolerance)
            say(line)
        else:
            say(f"step 0 val_loss {first_val:.4f} (random init ≈ ln V = {lnV:.4f})")

    # -------------------------------------------------------- optimizer (only now)
    optimizer = build_optimizer(model, lr=cfg.lr, weight_decay=cfg.weight_decay, betas=(cfg.beta1, cfg.beta2),
                                eps=cfg.eps, device=device)
    fused = device.type == "cuda"
    sampler = BatchSampler(ds.n_train_windows, seed=cfg.seed)
    tokens_per_step = cfg.batch_size * cfg.grad_accum * cfg.seq_len
    total_steps = _budget(cfg, tokens_per_step)
    decay_steps = cfg.lr_decay_steps or total_steps or 10**12

    step, tokens_seen, elapsed_before = 0, 0, 0.0
    best: dict | None = None
    last_ckpt: Path | None = None
    last_val: float | None = first_val
    if resume_ckpt is not None:
        state = ck.load_trainer_state(resume_ckpt, optimizer)
        if state.get("data_fingerprint") != ds.fingerprint:
            raise ResumeError(
                f"the data changed since the checkpoint (fingerprint {state.get('data_fingerprint')} -> "
                f"{ds.fingerprint})", why="the saved data position would point at other tokens",
                fix="resume with the same corpus files, tokenizer and --seq-len", path=resume_ckpt)
        sampler.load_state_dict(state["sampler"])
        step = int(state["step"])
        tokens_seen = int(state["tokens_seen"])
        elapsed_before = float(state.get("elapsed", 0.0))
        best = state.get("best")
        first_val = state.get("first_val_loss")
        last_val = state.get("val_loss")
        last_ckpt = resume_ckpt
        ck.clean_partials(run_dir)
        say(f"resumed at step {step}, {tokens_seen:,} tokens seen, val_loss {last_val}")

    # -------------------------------------------------------- run directory (only once every gate passed)
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(run_dir / "config.yaml", dump_yaml(cfg))
    tokenizer.save(str(run_dir / "tokenizer.json"))
    metrics = MetricsLog(run_dir / "metrics.jsonl", truncate_after_step=step if resuming else None)
    if not resuming:
        metrics.write({"step": 0, "val_loss": first_val, "tokens_seen": 0, "elapsed": round(time.time() - t_start, 3),
                       "lr": 0.0})
    tb = TensorBoard(run_dir / "tb")
    if first_val is not None and not resuming:
        tb.scalars(0, {"val/loss": first_val})

    loss_fn = model.loss
    if cfg.compile:
        loss_fn = torch.compile(model.loss)

    def provenance(val_loss: float | None) -> dict:
        return {
            "architecture": mcfg.family, "hf_architecture": mcfg.hf_architecture, "model_type": mcfg.model_type,
            "license": cfg.license, "data_sources": list(ds.sources), "data_license": cfg.data_license,
            "parent": parent, "step": step, "tokens_seen": tokens_seen, "val_loss": val_loss,
            "data_fingerprint": ds.fingerprint, "val_windows": len(ds.val_window_indices(cfg.eval_tokens)),
            "warmstart_version": __version__, "created": _now(),
        }

    # device-side divergence flags (CUDA path)
    bad_any = torch.zeros((), dtype=torch.float32, device=device)
    bad_steps = torch.zeros((), dtype=torch.float32, device=device)
    bad_loss = torch.zeros((), dtype=torch.float32, device=device)
    bad_gnorm = torch.zeros((), dtype=torch.float32, device=device)
    interval_loss = torch.zeros((), dtype=torch.float32, device=device)
    interval_n = 0
    last_gnorm = torch.zeros((), device=device)
    t_interval = time.time()
    tokens_interval = 0
    params = [p for g in optimizer.param_groups for p in g["params"]]
    clip = cfg.grad_clip if cfg.grad_clip and cfg.grad_clip > 0 else float("inf")

    def diverged(at_step: int, loss_v: float, gnorm_v: float) -> DivergenceError:
        return DivergenceError(
            f"training diverged at step {at_step}: loss {loss_v}, gradient norm {gnorm_v} (not finite)",
            why="the optimizer step for that batch was not applied and nothing from it was written; "
                f"the last good checkpoint is {last_ckpt or 'none (no checkpoint yet)'}",
            fix=f"lower --lr (now {cfg.lr:g}), lengthen --warmup-steps (now {cfg.warmup_steps}) or keep "
                f"--grad-clip on, then start again or --resume {run_dir}", path=run_dir)

    def check_divergence() -> None:
        if fused and bad_any.item() > 0:
            n = int(bad_steps.item())
            raise diverged(step - n + 1, bad_loss.item(), bad_gnorm.item())

    def do_save(val_loss: float | None) -> Path:
        nonlocal best, last_ckpt
        is_best = val_loss is not None and (best is None or val_loss < best["val_loss"])
        new_best = {"step": step, "val_loss": val_loss, "dir": ck.step_dir_name(step)} if is_best else best
        state = {"step": step, "tokens_seen": tokens_seen, "scheduler": {"step": step, "lr_next": lr_at(
            step, lr=cfg.lr, warmup=cfg.warmup_steps, decay_steps=decay_steps, min_ratio=cfg.min_lr_ratio),
            "decay_steps": decay_steps}, "sampler": sampler.state_dict(), "data_fingerprint": ds.fingerprint,
            "val_loss": val_loss, "first_val_loss": first_val, "best": new_best,
            "elapsed": elapsed_before + time.time() - t_start, "created": _now()}
        path = ck.save_run_checkpoint(run_dir, step=step, model=model, model_config=mcfg, tokenizer=tokenizer,
                                      provenance=provenance(val_loss), optimizer=optimizer, state=state)
        best = new_best
        last_ckpt = path
        if is_best:
            atomic_write_text(run_dir / "checkpoints" / "best", path.name + "\n")
        best_dir = run_dir / "checkpoints" / best["dir"] if best else None
        ck.rotate(run_dir, cfg.keep_last, best_dir)
        return path

    if own_reporter:
        out.close()
        out = Reporter(total_steps, start_step=step, quiet=quiet)
        say = out.print
    stopped_by = "max-steps"
    eta = None
    steps_this_run = 0
    try:
        while True:
            if total_steps is not None and step >= total_steps:
                stopped_by = "max-tokens" if (cfg.max_tokens is not None and (
                    cfg.max_steps is None or tokens_seen >= cfg.max_tokens)) else "max-steps"
                break
            if cfg.max_time is not None and time.time() - t_start >= cfg.max_time:
                stopped_by = "max-time"
                break
            lr = lr_at(step, lr=cfg.lr, warmup=cfg.warmup_steps, decay_steps=decay_steps, min_ratio=cfg.min_lr_ratio)
            for g in optimizer.param_groups:
                g["lr"] = lr
            step_loss = torch.zeros((), dtype=torch.float32, device=device)
            for _ in range(cfg.grad_accum):
                x, y = to_device(ds.train_windows(sampler.next_indices(cfg.batch_size)), device)
                with amp():
                    loss = loss_fn(x, y)
                (loss / cfg.grad_accum).backward()
                step_loss += loss.detach().float()
            if cfg.grad_accum > 1:
                step_loss /= cfg.grad_accum
            gnorm = torch.nn.utils.clip_grad_norm_(params, clip, foreach=True)
            ok = torch.isfinite(step_loss) & torch.isfinite(gnorm)
            if fused:
                first = (bad_any == 0) & ~ok
                bad_loss = torch.where(first, step_loss, bad_loss)
                bad_gnorm = torch.where(first, gnorm.float(), bad_gnorm)
                bad_any = torch.maximum(bad_any, (~ok).float())
                bad_steps += bad_any
                optimizer.found_inf = bad_any  # fused AdamW skips the update (and its step count) when > 0
            elif not bool(ok):
                raise diverged(step + 1, step_loss.item(), gnorm.item())
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            steps_this_run += 1
            tokens_seen += tokens_per_step
            tokens_interval += tokens_per_step
            interval_loss += step_loss
            interval_n += 1
            last_gnorm = gnorm

            last = (total_steps is not None and step >= total_steps) or (
                cfg.max_time is not None and time.time() - t_start >= cfg.max_time)
            log_now = step % cfg.log_every == 0 or last
            save_now = (cfg.save_every > 0 and step % cfg.save_every == 0) or last
            eval_now = (cfg.eval_every > 0 and step % cfg.eval_every == 0) or save_now
            if not (log_now or eval_now):
                continue
            check_divergence()
            rec: dict = {"step": step}
            if log_now and interval_n:
                now = time.time()
                mean_loss = (interval_loss / interval_n).item()
                dt = max(now - t_interval, 1e-9)
                rec.update({"loss": mean_loss, "lr": lr, "grad_norm": float(last_gnorm.item()),
                            "tokens_seen": tokens_seen, "tokens_per_s": round(tokens_interval / dt, 1)})
                run_rate = steps_this_run / max(now - t_start, 1e-9)
                etas = []
                if total_steps is not None:
                    etas.append((total_steps - step) / max(run_rate, 1e-9))
                if cfg.max_time is not None:
                    etas.append(max(0.0, cfg.max_time - (now - t_start)))
                eta = min(etas) if etas else None
                interval_loss = torch.zeros((), dtype=torch.float32, device=device)
                interval_n = 0
                tokens_interval = 0
                t_interval = now
            if eval_now:
                last_val = evaluate(model, ds, cfg.eval_tokens, cfg.batch_size, device, amp)
                if not math.isfinite(last_val):
                    raise DivergenceError(
                        f"training diverged by step {step}: the validation loss is {last_val}",
                        why="the weights after this step no longer give finite outputs; nothing from this step "
                            f"was written and the last good checkpoint is {last_ckpt or 'none (no checkpoint yet)'}",
                        fix=f"lower --lr (now {cfg.lr:g}), lengthen --warmup-steps (now {cfg.warmup_steps}) or "
                            f"keep --grad-clip on, then start again or --resume {run_dir}", path=run_dir)
                rec["val_loss"] = last_val
                rec.setdefault("tokens_seen", tokens_seen)
                say(f"step {step}: val_loss {last_val:.4f}")
            rec["elapsed"] = round(elapsed_before + time.time() - t_start, 3)
            metrics.write(rec)
            tb.scalars(step, {"train/loss": rec.get("loss"), "train/lr": rec.get("lr"),
                              "train/grad_norm": rec.get("grad_norm"), "train/tokens_per_s": rec.get("tokens_per_s"),
                              "val/loss": rec.get("val_loss")})
            if "loss" in rec:
                out.update(step, rec, eta)
            if save_now:
                path = do_save(last_val)
                say(f"saved {path}")
            if log_now:
                t_interval = time.time()  # do not charge eval/checkpoint time to throughput
        if steps_this_run == 0 and last_ckpt is None:
            # Nothing to do (e.g. a budget already reached): still leave a checkpoint behind.
            check_divergence()
            do_save(last_val)
    finally:
        metrics.close()
        tb.close()
        out.close()

    best_path = str(run_dir / "checkpoints" / best["dir"]) if best else None
    summary = RunSummary(
        run_dir=str(run_dir), steps=step, tokens_seen=tokens_seen,
        seconds=elapsed_before + time.time() - t_start, first_val_loss=first_val, final_val_loss=last_val,
        best_val_loss=best["val_loss"] if best else None, best_checkpoint=best_path,
        last_checkpoint=str(last_ckpt) if last_ckpt else None, stopped_by=stopped_by,
        resumed_from=str(resume_ckpt) if resume_ckpt else None,
    )
    atomic_write_json(run_dir / "summary.json", asdict(summary))
    if print_summary:
        for line in summary.lines():
            print(line, flush=True)
    return summary
