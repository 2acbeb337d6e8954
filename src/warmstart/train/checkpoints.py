"""Run checkpoints: HF directory + ``warmstart.json`` + ``trainer_state/``; rotation; resume.

``RUN_DIR/checkpoints/step-NNNNNN/`` is built completely under a hidden staging name
(``.step-NNNNNN.partial-XXXX``, ``atomic_dir``): the HF files through ``write_hf_files``, then
``trainer_state/`` (``optimizer.safetensors`` + ``optimizer.json`` index, ``rng.safetensors``,
``state.json``), each file fsynced. Only then is it renamed into place, and only after that is
``checkpoints/latest`` (a one-line text file naming the step dir) replaced atomically. A crash at
any moment leaves ``latest`` naming a complete checkpoint. Nothing here uses pickle.

Under a process group (several ranks, or ``--parallel ddp|fsdp``) rank 0 opens the staging
directory and tells every rank its name; rank 0 writes the HF files (from the full state dict it
alone gathers) and ``state.json``, every rank writes its optimizer shards through
``torch.distributed.checkpoint`` into ``trainer_state/optimizer/`` and its RNG
(``dist_checkpoint.py``), each fsyncing its files; the ranks then agree that every part is
durable, and only then does rank 0 rename the directory into place and move ``latest``. A rank
that fails or dies before that leaves ``latest`` where it was.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

from warmstart.arch import CausalLM, ModelConfig
from warmstart.checkpoint.run import RunDir
from warmstart.checkpoint.write import (
    atomic_dir,
    fsync_dir,
    save_tensors,
    write_hf_files,
    write_json_durable,
)
from warmstart.errors import DamagedStateError, DiskFullError, ResumeError, WarmstartError, WriteFailedError
from warmstart.files import is_regular
from warmstart.train import dist_checkpoint as dc
from warmstart.train import lowbit
from warmstart.train.distributed import agree_ok, decide_on_main
from warmstart.train.state import STATE_RULES, state_defects
from warmstart.train.faults import mark_shared

STATE_FORMAT = "warmstart-trainer-state-v1"
SLOW_SAVE_ENV = "WARMSTART_TEST_SLOW_SAVE"  # seconds to pause inside a save (tests widen the crash window)


def _test_pause(step: int) -> None:
    """Test hook: ``WARMSTART_TEST_SLOW_SAVE=SECONDS`` or ``SECONDS@STEP`` pauses a save after every file
    is written but before the checkpoint is renamed into place (the window a crash test aims at)."""
    spec = os.environ.get(SLOW_SAVE_ENV)
    if not spec:
        return
    secs, _, at = spec.partition("@")
    if at and int(at) != step:
        return
    time.sleep(float(secs))


# ------------------------------------------------------------------ optimizer


def optimizer_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    """Optimizer state keyed by parameter *name*: tensors for safetensors, the rest as a JSON index."""
    sd = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    index: dict[str, Any] = {"format": "warmstart-optimizer-v1", "class": type(optimizer).__name__,
                             "param_groups": [], "state": {}}
    for group in sd["param_groups"]:
        names = group.get("names")
        if names is None:
            raise RuntimeError("optimizer param groups need 'names'")
        index["param_groups"].append(dc.group_json(group))
        for pid, name in zip(group["params"], names):
            st = sd["state"].get(pid)
            if not st:
                continue
            entry = {}
            for k, v in st.items():
                if torch.is_tensor(v):  # an 8-bit moment: its parts (train/lowbit.py)
                    entry[k], parts = lowbit.encode(f"{name}::{k}", v)
                    tensors.update(parts)
                else:
                    entry[k] = {"value": v}
            index["state"][name] = entry
    return tensors, index


def load_optimizer(optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], index: dict) -> None:
    cur = optimizer.state_dict()
    name_to_pid = {}
    for group in cur["param_groups"]:
        for pid, name in zip(group["params"], group["names"]):
            name_to_pid[name] = pid
    dc.check_same_parameters(index, set(name_to_pid))
    state = {}
    for name, entry in index["state"].items():
        st = {}
        for k, v in entry.items():
            st[k] = v["value"] if isinstance(v, dict) and "value" in v else lowbit.decode(v, tensors)
        state[name_to_pid[name]] = st
    groups = [{**g_cur, **dc.saved_group_values(g_saved)}
              for g_saved, g_cur in zip(index["param_groups"], cur["param_groups"])]
    optimizer.load_state_dict({"state": state, "param_groups": groups})


# ------------------------------------------------------------------ save


def save_run_checkpoint(
    run_dir: Path,
    *,
    step: int,
    model: CausalLM,
    model_config: ModelConfig,
    tokenizer,
    provenance: dict,
    optimizer: torch.optim.Optimizer,
    state: dict,
    par=None,
) -> Path:
    """Write ``checkpoints/step-NNNNNN`` completely, then point ``checkpoints/latest`` at it.

    ``state`` is ``TrainState.state_dict()``: its RNG tensors go to ``rng.safetensors``, the rest to
    ``state.json``. ``par`` (a ``train.parallel.Parallel`` with a process group): every rank calls
    this and writes its part (module docstring)."""
    run = RunDir(run_dir)
    final = run.step_dir(step)
    if par is not None and par.dist.group:
        return _save_by_ranks(final, step=step, par=par, model_config=model_config, tokenizer=tokenizer,
                              provenance=provenance, optimizer=optimizer, state=state)
    with way_on(final):
        run.checkpoints.mkdir(parents=True, exist_ok=True)
        _save_here(final, step=step, model=model, model_config=model_config, tokenizer=tokenizer,
                   provenance=provenance, optimizer=optimizer, state=state)
        point_latest(final)
    return final


@contextlib.contextmanager
def way_on(final: Path):
    """A save that failed on a full or failing disk says how this run goes on: ``--resume`` from the checkpoint
    ``latest`` still names, or (none yet) a new start."""
    try:
        yield
    except WriteFailedError as err:
        run_dir, last = final.parent.parent, _latest(final)
        remedy = "free space there" if isinstance(err, DiskFullError) else "check the device and the filesystem"
        err.fix = (f"{remedy}, then `warmstart pretrain --resume {run_dir}` continues from {last.name}" if last
                   else f"{remedy} (or pass another --out), then start the run again: it had no checkpoint yet, so "
                   "nothing of it was kept")
        raise


def _save_here(final: Path, *, step: int, model: CausalLM, model_config: ModelConfig, tokenizer, provenance: dict,
               optimizer: torch.optim.Optimizer, state: dict) -> None:
    """The single-process save: every file into ``final``'s staging directory, renamed into place."""
    with atomic_dir(final, overwrite=True) as staging:
        sd = {k: v.detach().to("cpu", copy=True).contiguous() for k, v in model.canonical_state_dict().items()}
        write_hf_files(staging, model_config, sd, tokenizer=tokenizer, provenance=provenance)
        del sd
        ts = staging / "trainer_state"
        ts.mkdir()
        opt_t, opt_idx = optimizer_tensors(optimizer)
        save_tensors(ts / "optimizer.safetensors", opt_t)
        del opt_t
        write_json_durable(ts / "optimizer.json", opt_idx)
        _write_state(ts, state)
        fsync_dir(ts)
        _test_pause(step)


def point_latest(final: Path) -> None:
    """Move ``checkpoints/latest`` to the checkpoint just renamed into place. When that write fails (a full
    disk) the new checkpoint goes too: the run is exactly as before the save, ``latest`` naming the last one."""
    try:
        RunDir(final.parent.parent).point("latest", final)
    except BaseException:
        if _latest(final) != final:
            shutil.rmtree(final, ignore_errors=True)
        raise


def _latest(final: Path) -> Path | None:
    """The step directory ``latest`` names in the run of ``final`` (None: none, or it cannot be read)."""
    try:
        return RunDir(final.parent.parent).pointer("latest")
    except WarmstartError:
        return None


def _write_state(ts: Path, state: dict) -> None:
    """``rng.safetensors`` (the RNG tensors) and ``state.json`` (the rest)."""
    rng = state["rng"]
    save_tensors(ts / "rng.safetensors", rng["tensors"])
    js = {**state, "rng": {k: v for k, v in rng.items() if k != "tensors"}, "format": STATE_FORMAT}
    write_json_durable(ts / "state.json", js)


def _save_by_ranks(final: Path, *, step: int, par, model_config: ModelConfig, tokenizer, provenance: dict,
                   optimizer: torch.optim.Optimizer, state: dict) -> Path:
    """Every rank writes its part into the staging directory rank 0 opened; rank 0 renames it into
    place and moves ``latest`` once every rank's part is durable."""
    dist = par.dist
    sd = dc.full_model_state(par)  # collective: the full model on rank 0's host only
    with contextlib.ExitStack() as stack, way_on(final):
        def open_staging() -> str:
            with way_on(final):
                final.parent.mkdir(parents=True, exist_ok=True)
                return str(stack.enter_context(atomic_dir(final, overwrite=True)))

        ts = Path(decide_on_main(dist, open_staging)) / "trainer_state"
        ts.mkdir(parents=True, exist_ok=True)
        index = dc.save_optimizer_dcp(ts / dc.OPTIMIZER_DIR, par, optimizer)  # collective
        failure = None
        try:
            if dist.is_main:
                write_hf_files(ts.parent, model_config, sd, tokenizer=tokenizer, provenance=provenance)
                write_json_durable(ts / "optimizer.json", index)
                _write_state(ts, state)
            else:
                dc.write_rank_rng(ts, dist.rank, state["rng"])
        except Exception as err:  # noqa: BLE001 - every rank learns of it below
            failure = err
        del sd
        agree_ok(dist, failure, f"write their part of checkpoint {final.name}")
        if dist.is_main:
            _test_pause(step)

        def publish() -> None:
            with way_on(final):
                fsync_dir(ts / dc.OPTIMIZER_DIR)
                fsync_dir(ts)
                stack.close()  # atomic_dir: fsync, rename into place
                point_latest(final)

        decide_on_main(dist, publish)
    return final


def _damaged(run_dir: Path, path: Path, found: str, current: Path | None = None) -> DamagedStateError:
    """A damaged file of a run, with the way back: an earlier complete checkpoint, or a new run."""
    run = RunDir(run_dir)
    earlier = [d.name for d in run.step_dirs() if d != current and (d / "trainer_state" / "state.json").is_file()]
    back = (f"point the run at an earlier checkpoint (`echo {earlier[-1]} > {run.checkpoints / 'latest'}`) "
            "and --resume again, or " if earlier else "")
    return DamagedStateError(found, why="a resumed run continues exactly from its saved state, which this file "
                             "no longer holds", fix=back + "start a new run with another --out", path=path)


def rotate(run_dir: Path, keep_last: int, best: Path | None) -> list[Path]:
    """Delete step dirs beyond the newest ``keep_last``, never the best nor the one ``latest`` names."""
    run = RunDir(run_dir)
    dirs = run.step_dirs()
    keep = set(dirs[-keep_last:])
    if best is not None:
        keep.add(Path(best))
    try:
        latest = run.pointer("latest")
    except WarmstartError:  # damaged: it names none of them
        latest = None
    if latest is not None:
        keep.add(latest)
    removed = []
    for d in dirs:
        if d not in keep:
            shutil.rmtree(d, ignore_errors=True)
            removed.append(d)
    return removed


def clean_partials(run_dir: Path) -> None:
    ckdir = RunDir(run_dir).checkpoints
    if ckdir.is_dir():
        for p in ckdir.iterdir():
            # atomic_dir's staging (.step-N.partial-X) and set-aside (.step-N.old-X) directories
            if p.name.startswith(".") and "step-" in p.name and any(
                    t in p.name for t in (".partial-", ".old-", ".tmp-")):
                shutil.rmtree(p, ignore_errors=True)


# ------------------------------------------------------------------ load


def find_resume_checkpoint(run_dir: Path) -> Path:
    """The step directory ``latest`` names (DamagedStateError, WS206, when it names none), else the newest
    one holding a trainer state."""
    run = RunDir(run_dir)
    latest = run.pointer("latest", lambda found, _outside: _damaged(run_dir, run.checkpoints / "latest", found))
    if latest is None:
        dirs = [d for d in run.step_dirs() if (d / "trainer_state" / "state.json").is_file()]
        latest = dirs[-1] if dirs else None
    if latest is None or not (latest / "trainer_state" / "state.json").is_file():
        raise ResumeError(f"no complete checkpoint in {Path(run_dir) / 'checkpoints'}",
                          why="the run stopped before its first checkpoint was written",
                          fix="start the run again (same --out is fine after deleting it), or use a smaller "
                              "--save-every", path=run_dir)
    return latest


def _json_file(run_dir: Path, path: Path, ckpt_dir: Path) -> dict:
    try:
        obj = json.loads(path.read_text(encoding="utf-8")) if is_regular(path) else None
    except (OSError, ValueError, RecursionError) as err:
        raise _damaged(run_dir, path, f"{path.name} cannot be read ({type(err).__name__}: {err})", ckpt_dir) from None
    if not isinstance(obj, dict):
        raise _damaged(run_dir, path, f"{path.name} is {'missing' if obj is None else 'not a JSON object'}", ckpt_dir)
    return obj


def _tensors_file(run_dir: Path, path: Path, ckpt_dir: Path) -> dict[str, torch.Tensor]:
    """A safetensors file of the trainer state, its header checked before it is read."""
    from warmstart.checkpoint.formats import read_safetensors_header
    from warmstart.errors import UnreadableError

    try:
        if not is_regular(path):
            raise OSError("the file is missing")
        read_safetensors_header(path)
        return load_file(str(path))
    except (OSError, UnreadableError) as err:
        found = err.found if isinstance(err, UnreadableError) else str(err)
        raise _damaged(run_dir, path, f"{path.name} is damaged: {found}", ckpt_dir) from None


def read_state_json(ckpt_dir: Path) -> dict:
    """``trainer_state/state.json`` of a run checkpoint (the shape of ``TrainState.state_dict()``, rank 0's
    generators), every field checked for its type and range at the edge (``train.state.state_defects``):
    read once per resume, before anything is built from it. A damaged file is DamagedStateError (WS206)
    naming the file and each field."""
    path = ckpt_dir / "trainer_state" / "state.json"
    state = _json_file(ckpt_dir.parent.parent, path, ckpt_dir)
    bad = state_defects(state)
    if bad:
        shown = "; ".join(f"{k} = {_shown(v)} (expected {what})" for k, v, what in bad[:4])
        raise _damaged(ckpt_dir.parent.parent, path, f"state.json: {shown}" + ("; ..." if len(bad) > 4 else ""),
                       ckpt_dir)
    return state


def _shown(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def rank_rng(ckpt_dir: Path, state: dict, rank: int) -> dict:
    """Rank ``rank``'s generators: its own files when the checkpoint has them (it was written by that many
    ranks), else rank 0's from ``state`` (``state.json``) and ``rng.safetensors``; each file checked."""
    ts, run_dir = ckpt_dir / "trainer_state", ckpt_dir.parent.parent
    rng_json, rng_tensors = dc.rank_rng_files(ts, rank) or (None, ts / "rng.safetensors")
    rng = state["rng"]
    if rng_json is not None:
        rng = _json_file(run_dir, rng_json, ckpt_dir)
        if not STATE_RULES["rng"][0](rng):
            raise _damaged(run_dir, rng_json, f"{rng_json.name} does not hold {STATE_RULES['rng'][1]}", ckpt_dir)
    return {**rng, "tensors": _tensors_file(run_dir, rng_tensors, ckpt_dir)}


def check_same_data(state: dict, fingerprint: str, ckpt_dir: Path) -> None:
    """Refuse to resume on data other than the checkpoint's (``state``: its ``state.json``)."""
    if state.get("data_fingerprint") != fingerprint:
        raise ResumeError(
            f"the data changed since the checkpoint (fingerprint {state.get('data_fingerprint')} -> "
            f"{fingerprint})", why="the saved data position would point at other tokens",
            fix="resume with the same corpus files, tokenizer and --seq-len", path=ckpt_dir)


def restore_trainer_state(ckpt_dir: Path, optimizer: torch.optim.Optimizer, train_state, par=None, *,
                          saved: dict | None = None) -> None:
    """Load a run checkpoint's optimizer and ``TrainState`` (data cursor, counters, RNG), refusing
    when the data changed since it was written; ``saved``: its ``state.json`` as ``read_state_json``
    read it (read here when not given). Either optimizer layout loads at any world size.
    A damaged file is DamagedStateError (WS206) naming it."""
    rank = par.dist.rank if par is not None else 0
    state = dict(saved if saved is not None else read_state_json(ckpt_dir))
    state["rng"] = rank_rng(ckpt_dir, state, rank)
    check_same_data(state, train_state.data_fingerprint, ckpt_dir)
    ts, run_dir = ckpt_dir / "trainer_state", ckpt_dir.parent.parent
    index = _json_file(run_dir, ts / "optimizer.json", ckpt_dir)
    lowbit.check_same_kind(index, optimizer, ckpt_dir)
    sharded = (ts / dc.OPTIMIZER_DIR).is_dir()
    try:
        if sharded or (par is not None and par.dist.group):
            dc.load_optimizer_dcp(ts / dc.OPTIMIZER_DIR if sharded else ts, par, optimizer, index)
        else:
            load_optimizer(optimizer, _tensors_file(run_dir, ts / "optimizer.safetensors", ckpt_dir), index)
    except dc.ShardError as err:  # every rank checks and loads the same shards: they all raise it
        raise mark_shared(_damaged(run_dir, err.path, str(err), ckpt_dir)) from None
    except (OSError, ValueError, KeyError, TypeError, IndexError, RuntimeError) as err:
        raise _damaged(run_dir, ts / "optimizer.json", f"the optimizer state does not load ({type(err).__name__}: "
                       f"{str(err)[:200]})", ckpt_dir) from None
    try:
        train_state.load_state_dict(state)
    except (ValueError, KeyError, TypeError, IndexError, RuntimeError) as err:
        raise _damaged(run_dir, ts / "state.json", f"state.json does not load ({type(err).__name__}: "
                       f"{str(err)[:200]})", ckpt_dir) from None
    train_state.last_checkpoint = ckpt_dir
