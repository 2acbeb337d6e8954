"""The parts of a run checkpoint that several ranks write and read: ``torch.distributed.checkpoint``.

- The model: ``full_model_state`` gathers the full state dict on rank 0 only, on the host (FSDP:
  parameter by parameter through ``get_model_state_dict(full_state_dict, cpu_offload)``), so rank 0
  holds one full copy, which ``write_hf_files`` hands to safetensors without copying it again.
- The optimizer: ``trainer_state/optimizer/`` holds one safetensors file per rank written by
  DCP's ``HuggingFaceStorageWriter(save_distributed=True)``: each rank's shards of every state
  tensor, keyed ``"<parameter name>::<state key>"`` (the keys ``optimizer.safetensors`` of a
  single-process checkpoint has), with the shard offsets in the safetensors metadata (JSON).
  ``optimizer.json`` keeps the param groups. No pickle. ``load_optimizer_dcp`` reads either layout
  into the optimizer of any world size: DCP reshards.
- RNG: rank r's generators in ``rng-rank-RRRRR.safetensors`` + ``.json`` (rank 0 keeps
  ``rng.safetensors`` and ``state.json``'s ``rng``, as a single-process checkpoint).

DCP reports a rank's failure to every rank as one ``CheckpointException``; a shard write the OS
refused becomes the same WS230/WS231 on every rank (naming the rank), a shard that does not read
back is ``ShardError`` naming the file, never DCP's text with its tracebacks.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from pathlib import Path
from typing import Any

import torch

from warmstart.checkpoint.write import (
    FAULT_ENV, inject_fault, os_error, save_tensors, write_failure, write_json_durable,
)
from warmstart.errors import ResumeError, UnreadableError
from warmstart.train.faults import mark_shared
from warmstart.train.fp8 import plain

OPTIMIZER_DIR = "optimizer"
DCP_FORMAT = "warmstart-optimizer-dcp-v1"
_SKIP_GROUP_KEYS = ("names", "params", "fused", "foreach", "capturable")


def full_model_state(par) -> dict[str, torch.Tensor]:
    """The model's canonical state dict on rank 0's host (every rank must call it); ``{}`` elsewhere."""
    model, dist = par.model, par.dist
    if par.mode == "fsdp":
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        sd = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        if model.cfg.tie_word_embeddings:
            sd.pop("lm_head.weight", None)
    else:
        sd = model.canonical_state_dict() if dist.is_main else {}
    return {k: plain(v.detach()).to("cpu").contiguous() for k, v in sd.items()} if dist.is_main else {}


def group_json(group: dict) -> dict:
    """A param group as JSON (tuples as lists, a tensor learning rate as a number, without the parameter ids)."""
    return {k: (list(v) if isinstance(v, tuple) else float(v) if torch.is_tensor(v) else v)
            for k, v in group.items() if k != "params"}


def saved_group_values(saved: dict) -> dict:
    """The hyperparameters a saved param group restores (betas as a tuple; not ids, names or kernel flags)."""
    return {k: tuple(v) if k == "betas" else v for k, v in saved.items() if k not in _SKIP_GROUP_KEYS}


def check_same_parameters(index: dict, mine: set[str]) -> None:
    """Refuse optimizer state saved for other parameters than the model's (``index``: optimizer.json)."""
    saved = {n for g in index["param_groups"] for n in g["names"]}
    if saved != mine:
        raise ResumeError(f"optimizer state does not match the model (missing {sorted(mine - saved)[:5]}, "
                          f"unexpected {sorted(saved - mine)[:5]})", fix="resume with the same model")


def _flat(osd: dict) -> dict[str, Any]:
    return {f"{name}::{k}": v for name, st in osd["state"].items() for k, v in st.items()}


def save_optimizer_dcp(directory: Path, par, optimizer: torch.optim.Optimizer) -> dict:
    """Every rank writes its shards of the optimizer state into ``directory`` (collective); returns
    the JSON index (param groups, non-tensor state) that rank 0 writes beside it."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint import HuggingFaceStorageWriter
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

    from torch.distributed.checkpoint.api import CheckpointException

    osd = get_optimizer_state_dict(par.model, optimizer)
    flat = _flat(osd)
    tensors = {k: v for k, v in flat.items() if torch.is_tensor(v)}
    writer = HuggingFaceStorageWriter(str(directory), save_distributed=True)
    if os.environ.get(FAULT_ENV):
        writer.fs = _fault_fs()
    try:
        dcp.save(tensors, storage_writer=writer)
    except CheckpointException as err:  # every rank has it: every rank raises the same typed error
        failure = _write_failure(err, directory)
        if failure is None:
            raise
        raise mark_shared(failure) from None
    groups = [group_json(g) for g in osd["param_groups"]]
    return {"format": DCP_FORMAT, "class": type(optimizer).__name__, "world_size": par.dist.world_size,
            "param_groups": groups, "values": {k: v for k, v in flat.items() if not torch.is_tensor(v)}}


def _write_failure(err, directory: Path):
    """WS230/WS231 for the first rank whose shard write the OS refused (None: no rank's failure was one)."""
    for rank, (exc, _trace) in sorted(err.failures.items()):
        oserr = os_error(exc)
        if oserr is not None:
            return write_failure(oserr.filename or directory, oserr, who=f"rank {rank}: ")
    return None


def _fault_fs():
    """DCP's local filesystem with ``inject_fault`` on every file it writes (the write-fault test hook)."""
    from torch.distributed.checkpoint.filesystem import FileSystem

    class FaultFS(FileSystem):
        @contextlib.contextmanager
        def create_stream(self, path, mode):
            with super().create_stream(path, mode) as stream:
                yield stream
                if "w" in mode:
                    if not stream.closed:
                        stream.flush()
                    inject_fault(path, path)

    return FaultFS()


class ShardError(ValueError):
    """A shard of the optimizer state that does not read back (``path``: the damaged file, or the directory)."""

    def __init__(self, path: Path, text: str) -> None:
        super().__init__(text)
        self.path = path


def check_shards(directory: Path) -> None:
    """Every safetensors file DCP's reader will open in ``directory`` has a sound header (else ShardError
    naming it), checked before ``dcp.load``, which would log a traceback for it."""
    from warmstart.checkpoint.formats import read_safetensors_header

    for shard in sorted(directory.glob("*.safetensors")):
        try:
            read_safetensors_header(shard)
        except (OSError, UnreadableError) as bad:
            found = bad.found if isinstance(bad, UnreadableError) else str(bad)
            raise ShardError(shard, f"{shard.name} is damaged: {found}") from None


def _read_failure(err, directory: Path) -> ShardError:
    """How the shards failed to load: each rank's exception in one line, without DCP's tracebacks."""
    lines = "; ".join(f"rank {r}: {type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"
                      for r, (e, _t) in sorted(err.failures.items()))
    return ShardError(directory, f"the optimizer shards in {directory.name} do not load ({lines})")


def load_optimizer_dcp(directory: Path, par, optimizer: torch.optim.Optimizer, index: dict) -> None:
    """Fill ``optimizer`` (of this world size and parallel mode) from ``directory``: DCP shards, or a
    single-process checkpoint's ``optimizer.safetensors`` (full tensors; each rank reads its rows)."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint import HuggingFaceStorageReader
    from torch.distributed.checkpoint.api import CheckpointException
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict, set_optimizer_state_dict

    osd = get_optimizer_state_dict(par.model, optimizer)  # the template: state initialised, this sharding
    check_same_parameters(index, set(osd["state"]))
    check_shards(directory)
    flat = {k: v for k, v in _flat(osd).items() if torch.is_tensor(v)}
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*assuming the intent is to load in a single process.*")
        try:
            dcp.load(flat, storage_reader=HuggingFaceStorageReader(str(directory)))
        except CheckpointException as err:
            raise _read_failure(err, directory) from None
    values = {**flat, **index.get("values", {})}
    for name, st in osd["state"].items():
        for k in st:
            st[k] = values[f"{name}::{k}"]
    for g, g_saved in zip(osd["param_groups"], index["param_groups"]):
        g.update(saved_group_values(g_saved))
    set_optimizer_state_dict(par.model, optimizer, osd)


# ------------------------------------------------------------------ per-rank RNG


def rank_rng_name(rank: int) -> str:
    return f"rng-rank-{rank:05d}"


def write_rank_rng(ts: Path, rank: int, rng: dict) -> None:
    """Rank ``rank``'s generators (ranks above 0; rank 0's live in rng.safetensors / state.json)."""
    base = ts / rank_rng_name(rank)
    save_tensors(base.with_suffix(".safetensors"), rng["tensors"])
    write_json_durable(base.with_suffix(".json"), {k: v for k, v in rng.items() if k != "tensors"})


def rank_rng_files(ts: Path, rank: int) -> tuple[Path, Path] | None:
    """(JSON, safetensors) of rank ``rank``'s generators when the checkpoint has them (it was written by
    that many ranks); the trainer state reader checks and reads them as it does rank 0's."""
    base = ts / rank_rng_name(rank)
    if rank == 0 or not base.with_suffix(".json").is_file():
        return None
    return base.with_suffix(".json"), base.with_suffix(".safetensors")
