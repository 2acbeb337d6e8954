"""Gate 6, population: build the model from checkpoint tensors, strictly.

Every parameter the model needs must be in the checkpoint (never random-init a
missing tensor); every shape must match; extra tensors are refused unless they are
a tied ``lm_head.weight`` equal to the embedding or a rotary cache, or the caller
passed ``allow_unused``. Values are copied into fp32 parameters, so bf16/fp16
sources upcast exactly. The model is built on the meta device first and then
materialised, so the loader holds at most one extra copy of a tensor at a time.

Under several ranks (``pretrain`` with FSDP) the work splits: rank 0 runs gates 5 and 6 alone
(``verify_tensors``: every tensor read once, no model built), then every rank copies only its own
shard of each parameter from the checkpoint into its sharded model (``populate_shards``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Callable

import torch

from warmstart.arch.config import ModelConfig
from warmstart.arch.model import CausalLM
from warmstart.errors import MissingTensorsError, ShapeMismatchError, UnusedTensorsError, ValuesError, ZeroTensorError
from warmstart.init.values import is_zero_matrix

# Tensors some exporters save that carry no learned state.
_ROTARY_CACHE = re.compile(r"(rotary_emb\.(inv_freq|cos_cached|sin_cached)|rope\.freqs|rope_freqs)(\.weight)?$")
_LIST_LIMIT = 12


def _listing(names: list[str]) -> str:
    shown = ", ".join(names[:_LIST_LIMIT])
    if len(names) > _LIST_LIMIT:
        shown += f", … ({len(names) - _LIST_LIMIT} more)"
    return shown


@dataclass
class PopulationPlan:
    expected: dict[str, tuple[int, ...]]
    missing: list[str] = field(default_factory=list)
    mismatched: list[tuple[str, tuple, tuple]] = field(default_factory=list)
    unused: list[str] = field(default_factory=list)
    tied_head_present: bool = False
    ignored: list[str] = field(default_factory=list)  # rotary caches


def expected_shapes(cfg: ModelConfig) -> dict[str, tuple[int, ...]]:
    """HF names and shapes of every tensor a model of ``cfg`` needs (no allocation)."""
    with torch.device("meta"):
        model = CausalLM(cfg)
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    if cfg.tie_word_embeddings:
        shapes.pop("lm_head.weight", None)
    return shapes


def plan_population(cfg: ModelConfig, tensor_shapes: dict[str, tuple[int, ...]]) -> PopulationPlan:
    """Compare what the model needs with what the checkpoint holds (names and shapes only)."""
    plan = PopulationPlan(expected=expected_shapes(cfg))
    for name, shape in plan.expected.items():
        if name not in tensor_shapes:
            plan.missing.append(name)
        elif tuple(tensor_shapes[name]) != shape:
            plan.mismatched.append((name, shape, tuple(tensor_shapes[name])))
    for name in tensor_shapes:
        if name in plan.expected:
            continue
        if name == "lm_head.weight" and cfg.tie_word_embeddings:
            plan.tied_head_present = True
        elif _ROTARY_CACHE.search(name):
            plan.ignored.append(name)
        else:
            plan.unused.append(name)
    return plan


def check_plan(plan: PopulationPlan, *, path: str | None, allow_unused: bool) -> None:
    """Raise the first population refusal: missing, then shape, then unused."""
    if plan.missing:
        raise MissingTensorsError(
            f"{len(plan.missing)} parameter(s) the model needs are missing from the checkpoint: "
            f"{_listing(plan.missing)}",
            why="warmstart never random-initialises a missing tensor; training would start partly from "
            "random weights",
            fix="use the complete checkpoint (all shards, matching config.json), or a config that "
            "matches the tensors it holds",
            path=path,
        )
    if plan.mismatched:
        detail = "; ".join(f"{n}: expected {list(e)}, found {list(f)}" for n, e, f in plan.mismatched[:_LIST_LIMIT])
        more = f" (and {len(plan.mismatched) - _LIST_LIMIT} more)" if len(plan.mismatched) > _LIST_LIMIT else ""
        raise ShapeMismatchError(
            f"{len(plan.mismatched)} tensor shape(s) disagree with the config: {detail}{more}",
            why="a tensor of the wrong shape cannot be loaded without truncating or padding trained weights",
            fix="check config.json (hidden_size, heads, kv heads, head_dim, intermediate_size, vocab_size) "
            "against the tensors with `warmstart inspect CKPT --tensors`",
            path=path,
        )
    if plan.unused and not allow_unused:
        raise UnusedTensorsError(
            f"{len(plan.unused)} tensor(s) in the checkpoint are not used by the model: {_listing(plan.unused)}",
            why="unused tensors usually mean the names or the architecture do not match what the trainer "
            "builds, so trained weights would be silently dropped",
            fix="repair the metadata (see `warmstart inspect CKPT --quality`) or pass --allow-unused-tensors "
            "if dropping them is intended",
            path=path,
        )


def empty_model(cfg: ModelConfig, *, device: str | torch.device = "cpu",
                dtype: torch.dtype = torch.float32) -> CausalLM:
    """A ``CausalLM`` of ``cfg`` with uninitialised parameters, built on the meta device first."""
    with torch.device("meta"):
        model = CausalLM(cfg)
    return materialize(model, device=device, dtype=dtype)


def materialize(model: CausalLM, *, device: str | torch.device, dtype: torch.dtype = torch.float32,
                buffer_device: str | torch.device | None = None) -> CausalLM:
    """Allocate a meta-device model's parameters (uninitialised) on ``device``; the rotary buffers on
    ``buffer_device`` (default ``device``). A model sharded with ``fully_shard`` allocates only its
    local shards."""
    model.to_empty(device=device)
    model.to(dtype)
    tied = model.lm_head.weight is model.model.embed_tokens.weight
    if model.cfg.tie_word_embeddings and not tied:  # to_empty makes new Parameters: tie again
        model.lm_head.weight = model.model.embed_tokens.weight
    model.reset_rope(buffer_device or device)
    return model


def _count_nonfinite(name: str, src: torch.Tensor) -> str | None:
    if not src.is_floating_point():
        return None
    count = int((~torch.isfinite(src)).sum())
    return f"{name} ({count} of {src.numel()} values)" if count else None


@dataclass
class ValueFindings:
    """Gate 5's findings over the tensors read: NaN/Inf (refused), all-zero weight matrices (refused
    unless allowed)."""

    allow_zero: bool = True
    nonfinite: list[str] = field(default_factory=list)
    zero: list[str] = field(default_factory=list)

    def add(self, name: str, src: torch.Tensor) -> None:
        if found := _count_nonfinite(name, src):
            self.nonfinite.append(found)
        elif not self.allow_zero and is_zero_matrix(src):
            self.zero.append(name)

    def raise_any(self, path: str, then: Callable[[], None] | None = None) -> None:
        """NaN/Inf first, then ``then`` (the population plan's refusals: a wrong shape says more than
        its values), then all-zero matrices."""
        if self.nonfinite:
            raise ValuesError(
                f"{len(self.nonfinite)} tensor(s) hold NaN or Inf values: {_listing(self.nonfinite)}",
                why="a non-finite weight makes every loss and gradient NaN from the first step",
                fix="use an earlier, healthy checkpoint (e.g. the run's best or previous step); "
                "`warmstart validate CKPT` lists every bad tensor",
                path=path,
            )
        if then is not None:
            then()
        if self.zero:
            raise ZeroTensorError(
                f"{len(self.zero)} weight matrix(es) hold only zeros: {_listing(self.zero)}",
                why="a trained weight matrix is never all zero; this one was lost in an export or never written, "
                "and training from it starts that layer from nothing",
                fix="use a complete checkpoint (`warmstart validate CKPT` lists every data-quality signal); pass "
                "--allow-zero-tensors if the zeros are intended",
                path=path,
            )


def plan_checkpoint(ckpt, cfg: ModelConfig) -> PopulationPlan:
    """The population plan of ``cfg``'s model from ``ckpt``'s tensor names and shapes."""
    return plan_population(cfg, {n: tuple(i.shape) for n, i in ckpt.tensor_info.items()})


def _check_tied_head(head: torch.Tensor, embedding: torch.Tensor, path: str) -> None:
    if not torch.equal(head, embedding):
        raise UnusedTensorsError(
            "config.json says tie_word_embeddings=true but lm_head.weight differs from "
            "model.embed_tokens.weight",
            why="a tied model would discard the trained output head",
            fix="set tie_word_embeddings=false in config.json if the head is really separate",
            path=path,
        )


def populate_model(
    ckpt,
    cfg: ModelConfig | None = None,
    *,
    allow_unused: bool = False,
    check_finite: bool = False,
    allow_zero: bool = True,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
) -> CausalLM:
    """Build a ``CausalLM`` whose every parameter comes from ``ckpt``; refuse otherwise.

    With ``check_finite`` every tensor of the checkpoint is read once, checked for
    NaN/Inf (gate 5, reported before any population refusal; with ``allow_zero=False`` also
    for weight matrices holding only zeros) and copied into the model in the same pass.
    """
    cfg = cfg or ckpt.model_config()
    path = str(ckpt.path)
    plan = plan_checkpoint(ckpt, cfg)
    if not check_finite:
        check_plan(plan, path=path, allow_unused=allow_unused)
    model = empty_model(cfg, device=device, dtype=dtype)
    params = dict(model.named_parameters(remove_duplicate=False))
    bad = {n for n, _, _ in plan.mismatched}
    values = ValueFindings(allow_zero=allow_zero)
    head = None  # a tied checkpoint's own lm_head, kept from the pass that reads it (a GGUF dequantises once)
    with torch.no_grad():
        for name in ckpt.tensor_info:
            needed = name in plan.expected and name not in bad
            if not (needed or check_finite):
                continue
            src = ckpt.tensor(name)
            if check_finite:
                values.add(name, src)
            if needed:
                params[name].copy_(src)  # exact upcast for bf16/fp16 -> fp32
            if name == "lm_head.weight" and plan.tied_head_present:
                head = src
            del src
    values.raise_any(path, then=lambda: check_plan(plan, path=path, allow_unused=allow_unused))
    if plan.tied_head_present:
        head = (head if head is not None else ckpt.tensor("lm_head.weight")).to(device=device, dtype=dtype)
        _check_tied_head(head, model.model.embed_tokens.weight, path)
    return model


def verify_tensors(ckpt, cfg: ModelConfig, *, allow_unused: bool = False, allow_zero: bool = True) -> PopulationPlan:
    """Gates 5 and 6 without building a model: every tensor read once (one at a time) and checked
    for NaN/Inf (and all-zero matrices unless ``allow_zero``), then the population plan. What rank 0
    runs for every rank of a distributed run."""
    path = str(ckpt.path)
    plan = plan_checkpoint(ckpt, cfg)
    values = ValueFindings(allow_zero=allow_zero)
    tied = ("lm_head.weight", "model.embed_tokens.weight") if plan.tied_head_present else ()
    kept = {}  # the two tied tensors, kept from the one pass instead of read (or dequantised) again
    for name in ckpt.tensor_info:
        t = ckpt.tensor(name)
        values.add(name, t)
        if name in tied:
            kept[name] = t
    values.raise_any(path, then=lambda: check_plan(plan, path=path, allow_unused=allow_unused))
    if tied:
        _check_tied_head(kept[tied[0]].float(), kept[tied[1]].float(), path)
    return plan


def local_rows(p: torch.Tensor) -> tuple[torch.Tensor, int, int]:
    """``(local tensor, start, stop)``: the rows of dim 0 this rank holds of parameter ``p``.

    A plain tensor holds every row; a ``fully_shard`` parameter (a DTensor sharded on dim 0 over a
    1-D mesh) holds ``torch.chunk``'s piece: ``ceil(n / world)`` rows per rank, the last ones fewer.
    """
    from torch.distributed.tensor import DTensor, Shard

    if not isinstance(p, DTensor):
        return p, 0, p.shape[0]
    if p.device_mesh.ndim != 1 or tuple(p.placements) != (Shard(0),):
        raise NotImplementedError(f"parameters sharded as {p.placements} on a {p.device_mesh.ndim}-D mesh")
    local, n, world = p.to_local(), p.shape[0], p.device_mesh.size()
    chunk = -(-n // world)
    start = min(p.device_mesh.get_local_rank() * chunk, n)
    stop = min(start + chunk, n)
    if local.shape[0] != stop - start:
        raise RuntimeError(f"local shard of {tuple(p.shape)} has {local.shape[0]} rows, expected {stop - start}")
    return local, start, stop


def populate_shards(model: CausalLM, ckpt, cfg: ModelConfig, *, allow_unused: bool = False) -> CausalLM:
    """Copy into a materialised (possibly ``fully_shard``-ed) model only the rows each parameter
    holds on this rank, read straight from the checkpoint (safetensors: only those rows). Strict as
    ``populate_model``; the values and the tied head were verified by ``verify_tensors`` (rank 0)."""
    plan = plan_checkpoint(ckpt, cfg)
    check_plan(plan, path=str(ckpt.path), allow_unused=allow_unused)
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name in plan.expected:
            local, start, stop = local_rows(params[name])
            if stop > start:
                src = ckpt.tensor_rows(name, start, stop)  # every row of a plain (unsharded) parameter
                local.copy_(src)
                del src
    return model


def build_model(ckpt, cfg: ModelConfig, *, device: str | torch.device = "cpu", seed: int = 0,
                shard: Callable[[CausalLM], CausalLM] | None = None, home: torch.device | None = None,
                allow_unused: bool = False, check_finite: bool = False, allow_zero: bool = True) -> CausalLM:
    """The one place a model is built, fp32: every parameter from ``ckpt`` (strict population; with
    ``check_finite`` gate 5 in the same pass), or without a checkpoint a fresh one seeded with ``seed``.

    With ``shard`` (FSDP2's ``fully_shard``) the model is sharded while still on the meta device, then each
    rank allocates only its own shards, on ``home`` (the host with ``--cpu-offload``, else ``device``), and
    fills them: from the checkpoint's rows, or from scratch with the single-process init's values (every
    rank draws each full tensor from the seeded generator, on the host, and keeps its rows)."""
    if shard is None:
        if ckpt is not None:
            return populate_model(ckpt, cfg, allow_unused=allow_unused, check_finite=check_finite,
                                  allow_zero=allow_zero, device=device)
        model = CausalLM(cfg)
        model.reset_parameters(seed)
        return model.to(device=device, dtype=torch.float32)
    from torch.distributed.tensor.experimental import implicit_replication

    with torch.device("meta"):
        model = CausalLM(cfg)
    shard(model)
    home = home or torch.device(device)
    if ckpt is not None:
        materialize(model, device=home, buffer_device=device)
        return populate_shards(model, ckpt, cfg, allow_unused=allow_unused)
    materialize(model, device="cpu", buffer_device=device)
    with implicit_replication():
        model.reset_parameters(seed)
    return model.to(home) if home.type != "cpu" else model
