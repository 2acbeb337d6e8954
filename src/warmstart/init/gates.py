"""The seven warm-start gates (docs/errors.md lists their codes), composed by ``prepare_warm_start``.

Order: 1 readable, 2 family, 3 evidence, 4 tokenizer, 5 values, 6 population
(gates 5 and 6 share one pass over the tensors), then — once the caller has built
the validation data — 7 step-0 evaluation through ``step0_gate``. Everything runs
before any optimizer or training state exists. Each refusal is a typed error with
a stable code; each gate that is skipped says why in the report.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from warmstart.arch.config import ModelConfig
from warmstart.arch.families import (
    ENCODER,
    ENCODER_DECODER,
    FAMILIES,
    NON_TRANSFORMER,
    SUPPORTED,
    SUPPORTED_DECODER,
    UNSUPPORTED_DECODER,
    get_family,
    spec_for,
    supported_list,
)
from warmstart.checks import PASS, SKIP, Check
from warmstart.errors import (
    EvidenceError,
    FamilyError,
    InitLossRegressionError,
    TokenizerError,
    UnreadableError,
    UntrainedInitError,
    UsageError,
)
from warmstart.files import is_regular
from warmstart.init.evidence import infer_family_from_names
from warmstart.checkpoint.declared import SHAPE_KEYS
from warmstart.init.population import build_model, verify_tensors

REQUIRED_CONFIG_KEYS = SHAPE_KEYS  # what a model config needs, as declared values are checked


@dataclass
class WarmStart:
    """What ``prepare_warm_start`` hands to the trainer."""

    model: Any  # CausalLM, fp32
    tokenizer: Any  # tokenizers.Tokenizer
    config: ModelConfig
    checkpoint: Any  # warmstart.checkpoint.Checkpoint
    report: list[Check] = field(default_factory=list)  # one per gate: PASS or SKIP
    provenance_parent: dict = field(default_factory=dict)
    recorded_val_loss: float | None = None
    recorded_data_fingerprint: str | None = None
    recorded_val_windows: int | None = None  # how many validation windows the recorded loss averaged
    checkpoint_path: str | None = None  # set by ``portable()``

    @property
    def random_init_loss(self) -> float:
        return math.log(self.config.vocab_size)

    def portable(self) -> "WarmStart":
        """The verdict another rank needs (config, tokenizer, report, lineage), without the model or
        the open checkpoint (the receiver opens ``checkpoint_path`` itself)."""
        return dataclasses.replace(self, model=None, checkpoint=None, checkpoint_path=str(self.checkpoint.path))

    def reopen(self, trust_pickle: bool = False) -> "WarmStart":
        """A portable verdict with its checkpoint opened again (headers only; tensors stay lazy)."""
        from warmstart.checkpoint import load_checkpoint

        if self.checkpoint is None:
            self.checkpoint = load_checkpoint(self.checkpoint_path, trust_pickle=trust_pickle)
        return self


_KIND_WHY = {
    ENCODER: "it is an encoder: bidirectional attention trained to fill in masked tokens, with no causal "
    "language-model head, so a decoder-only trainer cannot continue its pretraining",
    ENCODER_DECODER: "it is an encoder-decoder (sequence-to-sequence) model; a decoder-only trainer has no "
    "place for its encoder and cross-attention weights",
    NON_TRANSFORMER: "it is not a transformer (a state-space or recurrent model); its weights do not map onto "
    "attention and MLP layers",
    UNSUPPORTED_DECODER: "it is a decoder-only family that warmstart does not implement; its layer layout "
    f"(norms, attention, MLP, positions) differs from the {'/'.join(SUPPORTED)} graph",
}


def repair_command(ckpt_path: str | Path, family: str) -> str:
    """The exact `warmstart stamp` line that makes the metadata say ``family`` (its spec's names)."""
    from warmstart.checkpoint.aliases import stamp_recipe

    return stamp_recipe(ckpt_path, family)


def _gate_family(ckpt, path: str) -> tuple[str | None, list[tuple[str, str, str]], Check]:
    """Gate 2. Returns the declared supported family (or None), the concrete claims, the result."""
    claims = [(where, value) for where, value in ckpt.declared_claims() if value]
    if not claims:
        return None, [], Check("family", SKIP, "no declared architecture in config or metadata")
    concrete: list[tuple[str, str, str]] = []  # (where, value, family slug)
    unknown: list[str] = []
    for where, value in claims:
        fam = get_family(value)
        if fam is None:
            unknown.append(f"{where} = '{value}'")
            continue
        if fam.kind != SUPPORTED_DECODER:
            raise FamilyError(
                f"{where} declares '{value}' — the {fam.display} family ({fam.kind})",
                why=_KIND_WHY[fam.kind],
                fix=f"start from a checkpoint of a supported decoder-only family ({supported_list()}), "
                "or train from scratch with --preset",
                path=path,
            )
        concrete.append((where, value, fam.name))
    if not concrete:
        return None, [], Check("family", SKIP, f"claim {', '.join(unknown)} maps to no known family")
    families = {c[2] for c in concrete}
    if len(families) > 1:
        desc = "; ".join(f"{w} = '{v}' ({f})" for w, v, f in concrete)
        inferred, reason = tensor_evidence(ckpt)
        raise FamilyError(
            f"the metadata contradicts itself: {desc}",
            why="warmstart cannot tell which architecture the tensors were trained as"
            + (f"; the tensor names say {inferred} ({reason})" if inferred in SUPPORTED else ""),
            fix=f"let the tensors decide: `{repair_command(path, inferred)}`, then pass the repaired checkpoint"
            if inferred in SUPPORTED else
            "run `warmstart inspect CKPT --quality` and repair the metadata with `warmstart stamp`",
            path=path,
        )
    where, value, family = concrete[0]
    return family, concrete, Check("family", PASS, f"{where} = '{value}' → {family} (supported decoder)")


def tensor_evidence(ckpt) -> tuple[str | None, str]:
    """The family a checkpoint's tensor names point to (HF names and, for GGUF, the stored names), and why."""
    names = list(ckpt.tensor_info) + [i.source_name for i in ckpt.tensor_info.values() if i.source_name]
    return infer_family_from_names(dict.fromkeys(names))


def _gate_evidence(ckpt, path: str, declared: str | None, concrete) -> tuple[str | None, Check]:
    """Gate 3. Returns the family inferred from tensor names (or None)."""
    inferred, reason = tensor_evidence(ckpt)
    if inferred is not None:
        fam = FAMILIES[inferred]
        if fam.kind != SUPPORTED_DECODER and declared is None:
            raise FamilyError(
                f"the tensor names show the {fam.display} family ({reason})",
                why=_KIND_WHY[fam.kind],
                fix=f"start from a checkpoint of a supported decoder-only family ({supported_list()})",
                path=path,
            )
    if declared is None:
        why = "no declared claim" if not concrete else "the claim maps to no known family"
        return inferred, Check("evidence", SKIP, f"{why}; tensor names suggest {inferred or 'nothing'}")
    if inferred is None:
        return None, Check("evidence", SKIP, f"tensor names cannot decide ({reason})")
    if inferred != declared:
        claims = ", ".join(f"{where} = '{value}'" for where, value, _ in concrete)
        raise EvidenceError(
            f"the metadata declares {declared} ({claims}) but the tensors are {inferred}: {reason}",
            why=f"building a {declared} model from {inferred} tensors would leave parameters unmatched or "
            "wrongly shaped, and the run would train from partly random weights (a step-0 loss near ln V)",
            fix=f"repair the metadata with `{repair_command(path, inferred)}`, then pass the repaired "
            "checkpoint to --init",
            path=path,
        )
    return inferred, Check("evidence", PASS, f"tensor names agree: {reason}")


def _model_config(ckpt, family: str | None, path: str) -> ModelConfig:
    if family is None:
        raise FamilyError(
            "neither the metadata nor the tensor names identify a supported family",
            why="warmstart builds the model from the checkpoint's own config and cannot guess it",
            fix=f"add a config.json / metadata declaring one of: {supported_list()} (`warmstart stamp`)",
            path=path,
        )
    if not ckpt.config:
        raise UnreadableError(
            "the checkpoint has no model config (config.json, safetensors metadata or GGUF keys)",
            fix="put the model's config.json beside the weights",
            path=path,
        )
    spec = spec_for(family)
    cfg = dict(ckpt.config)
    cfg["architectures"] = [spec.hf_architecture]
    cfg["model_type"] = spec.model_type
    missing = [k for k in REQUIRED_CONFIG_KEYS if cfg.get(k) is None]
    if missing:
        raise UnreadableError(f"the model config ({ckpt.config_source or 'config'}) gives no {', '.join(missing)}",
                              why=f"a {family} model cannot be built without its shape",
                              fix="put the model's config.json beside the weights (a GGUF: its "
                              "{arch}.* keys must be those of its general.architecture)", path=path)
    return ModelConfig.from_hf_config(cfg, source=path)


def tokenizer_for(tokenizer_path: str | Path | None, ckpt, path: str):
    """``(tokenizer or None, where it came from)`` of a model: ``tokenizer_path`` (a tokenizer.json or its
    directory, ``--tokenizer``) when given, else the checkpoint's own."""
    if tokenizer_path is None:
        return ckpt.tokenizer, "from the checkpoint"
    from tokenizers import Tokenizer

    tp = Path(tokenizer_path)
    if tp.is_dir():
        tp = tp / "tokenizer.json"
    if not is_regular(tp, "tokenizer file"):
        raise UsageError(f"--tokenizer {tokenizer_path} does not exist", fix="pass a tokenizer.json file")
    try:
        return Tokenizer.from_file(str(tp)), str(tp)
    except Exception as err:  # tokenizers raises plain Exceptions
        raise UnreadableError(f"cannot read tokenizer: {err}", fix="pass a tokenizer.json file",
                              path=str(tp)) from None


def embedding_rows(ckpt, cfg: ModelConfig) -> int:
    """Rows of the checkpoint's embedding (what every token id must index); the config's vocab_size without one."""
    emb = ckpt.tensor_info.get("model.embed_tokens.weight")
    return int(emb.shape[0]) if emb is not None else cfg.vocab_size


def check_tokenizer(tokenizer, rows: int, cfg: ModelConfig, *, path: str, source: str) -> Check:
    """Gate 4: every id the tokenizer can produce, and every special id, is < embedding rows."""
    if tokenizer is None:
        raise TokenizerError(
            "the checkpoint carries no tokenizer and none was given",
            why="without the tokenizer the model was trained with, token ids mean nothing to it",
            fix="pass --tokenizer PATH/tokenizer.json (the one the checkpoint was trained with)",
            path=path,
        )
    size = tokenizer.get_vocab_size(with_added_tokens=True)
    max_id = max(tokenizer.get_vocab(with_added_tokens=True).values(), default=-1)
    if size > rows or max_id >= rows:
        raise TokenizerError(
            f"the tokenizer ({source}) has {size} tokens (largest id {max_id}) but the embedding has {rows} rows",
            why="ids at or above the embedding size have no trained vector; truncating the vocabulary would "
            "silently change what the tokens mean",
            fix="use the tokenizer the checkpoint was trained with (drop --tokenizer, or point it at the "
            "checkpoint's own tokenizer.json)",
            path=path,
        )
    specials = {k: v for k, v in (("bos_token_id", cfg.bos_token_id), ("eos_token_id", cfg.eos_token_id),
                                  ("pad_token_id", cfg.pad_token_id)) if isinstance(v, int)}
    bad = {k: v for k, v in specials.items() if not 0 <= v < rows}
    if bad:
        raise TokenizerError(
            f"special token ids out of range for {rows} embedding rows: {bad}",
            why="a special id without an embedding row would index out of bounds",
            fix="correct bos/eos/pad ids in config.json",
            path=path,
        )
    return Check("tokenizer", PASS, f"{size} tokens ({source}) fit {rows} embedding rows; "
                      f"special ids {specials or 'none declared'} in range")


def inference_model(ckpt, cfg: ModelConfig | None = None, *, allow_unused: bool = False,
                    device: str | torch.device = "cpu", check_finite: bool = False):
    """The model ``eval``, ``generate``, ``qa`` and ``export`` run: ``build_model`` from ``ckpt`` (gate 6;
    with ``check_finite`` gate 5 in the same pass), in eval mode."""
    return build_model(ckpt, cfg or ckpt.model_config(), allow_unused=allow_unused, check_finite=check_finite,
                       device=device).eval()


def load_for_inference(ckpt, *, tokenizer_path: str | Path | None = None, allow_unused: bool = False,
                       device: str | torch.device = "cpu"):
    """``(model, tokenizer)`` for ``eval`` and ``generate``: gate 4 (the tokenizer, the checkpoint's or
    ``tokenizer_path``, fits the embedding), then gate 5 (no NaN/Inf) as gate 6 populates the model."""
    path = str(ckpt.path)
    tokenizer, source = tokenizer_for(tokenizer_path, ckpt, path)
    cfg = ckpt.model_config()
    check_tokenizer(tokenizer, embedding_rows(ckpt, cfg), cfg, path=path, source=source)
    return inference_model(ckpt, cfg, allow_unused=allow_unused, device=device, check_finite=True), tokenizer


def prepare_warm_start(
    init: str | Path,
    *,
    tokenizer_path: str | Path | None = None,
    allow_unused_tensors: bool = False,
    allow_zero_tensors: bool = False,
    trust_pickle: bool = False,
    device: str | torch.device = "cpu",
    populate: bool = True,
) -> WarmStart:
    """Gates 1–6. Returns the populated fp32 model, the tokenizer and the gate report.

    ``populate=False`` runs gates 5 and 6 without building the model (``verify_tensors``: each
    tensor read once, one at a time) and returns ``model=None``: the verdict rank 0 of a
    distributed run hands to the other ranks, each of which then loads only its own shards."""
    from warmstart.checkpoint import load_checkpoint, parent_record, provenance, resolve_checkpoint_path

    report: list[Check] = []
    # 1. Readable
    path_obj = resolve_checkpoint_path(str(init))
    ckpt = load_checkpoint(path_obj, trust_pickle=trust_pickle)
    path = str(ckpt.path)
    if not ckpt.tensor_info:
        raise UnreadableError("the checkpoint holds no tensors", path=path)
    report.append(Check("readable", PASS, f"{ckpt.format}, {len(ckpt.tensor_info)} tensors"))
    # 2. Family
    declared, concrete, res = _gate_family(ckpt, path)
    report.append(res)
    # 3. Evidence
    inferred, res = _gate_evidence(ckpt, path, declared, concrete)
    report.append(res)
    family = declared or (inferred if inferred and FAMILIES[inferred].kind == SUPPORTED_DECODER else None)
    cfg = _model_config(ckpt, family, path)
    # 4. Tokenizer
    tokenizer, source = tokenizer_for(tokenizer_path, ckpt, path)
    report.append(check_tokenizer(tokenizer, embedding_rows(ckpt, cfg), cfg, path=path, source=source))
    # 5 + 6. Values and population, one pass over the tensors.
    if populate:
        model = build_model(ckpt, cfg, allow_unused=allow_unused_tensors, check_finite=True,
                            allow_zero=allow_zero_tensors, device=device)
        shapes = {n: tuple(p.shape) for n, p in model.named_parameters()}
    else:
        model, shapes = None, verify_tensors(ckpt, cfg, allow_unused=allow_unused_tensors,
                                             allow_zero=allow_zero_tensors).expected
    n_tensors = len(ckpt.tensor_info)
    report.append(Check("values", PASS, f"all {n_tensors} tensors finite"
                        + ("" if allow_zero_tensors else ", no weight matrix all zero")))
    n_params = sum(math.prod(shape) for shape in shapes.values())
    report.append(Check("population", PASS,
                             f"{len(shapes)} parameters ({n_params:,} values) populated "
                             "from the checkpoint, none random"))

    parent = parent_record(ckpt, family=cfg.family)
    recorded = provenance(ckpt)
    return WarmStart(
        model=model,
        tokenizer=tokenizer,
        config=cfg,
        checkpoint=ckpt,
        report=report,
        provenance_parent=parent,
        recorded_val_loss=parent["val_loss"],
        recorded_data_fingerprint=recorded.get("data_fingerprint"),
        recorded_val_windows=recorded.get("val_windows"),
    )


def step0_gate(
    warm: WarmStart,
    *,
    val_loss: float,
    data_fingerprint: str | None,
    val_windows: int | None = None,
    allow_untrained_init: bool = False,
    tolerance: float = 0.10,
    context: dict | None = None,
) -> Check:
    """Gate 7. Returns its check (``detail``: the line to print); raises when the loss says the weights are
    not trained.

    ``context``: the run's context extension (``arch.context.context_change``): the recorded loss was
    measured with the checkpoint's own positions and windows, so it is not compared."""
    path = str(warm.checkpoint.path)
    lnv = warm.random_init_loss
    line = f"step 0 val_loss {val_loss:.4f} (random init ≈ ln V = {lnv:.4f})"
    if not math.isfinite(val_loss) or val_loss >= 0.9 * lnv:
        if not allow_untrained_init:
            raise UntrainedInitError(
                f"step-0 val_loss is {val_loss:.4f}, at random-init magnitude (ln V = {lnv:.4f}, "
                f"refusal threshold 0.9·ln V = {0.9 * lnv:.4f})",
                why="a trained checkpoint predicts its data far better than chance; this loss means the weights "
                "do not fit this model or tokenizer, and training would effectively start from random weights",
                fix="check the tokenizer (--tokenizer) and the checkpoint's metadata (`warmstart inspect CKPT "
                "--quality`); pass --allow-untrained-init only if the checkpoint is really untrained",
                path=path,
            )
        return Check("step-0", SKIP, f"{line}; allowed by --allow-untrained-init")
    rec = warm.recorded_val_loss
    same_windows = warm.recorded_val_windows is None or warm.recorded_val_windows == val_windows
    same_data = (rec is not None and data_fingerprint and data_fingerprint == warm.recorded_data_fingerprint
                 and same_windows and not context)
    if same_data and val_loss > rec * (1 + tolerance):
        raise InitLossRegressionError(
            f"step-0 val_loss {val_loss:.4f} exceeds the val_loss {rec:.4f} the checkpoint recorded on the same "
            f"data (fingerprint {data_fingerprint}) by {100 * (val_loss / rec - 1):.1f}% "
            f"(tolerance {100 * tolerance:.0f}%)",
            why="the same weights on the same data must give the same loss; a higher one means the weights were "
            "not loaded as trained (wrong family, tokenizer, or a corrupted file)",
            fix="inspect the checkpoint (`warmstart inspect CKPT --quality`, `warmstart validate CKPT`); "
            "--init-loss-tolerance widens the margin if the evaluation itself changed",
            path=path,
        )
    if same_data:
        detail = f"{line}; recorded {rec:.4f} on the same data (within {100 * tolerance:.0f}%)"
    elif rec is not None and context:
        from warmstart.arch.context import describe_change

        detail = f"{line}; recorded {rec:.4f} before the context extension ({describe_change(context)}), not compared"
    elif rec is not None:
        other = "other data" if data_fingerprint != warm.recorded_data_fingerprint else (
            f"{warm.recorded_val_windows} validation windows, here {val_windows}")
        detail = f"{line}; recorded {rec:.4f} on {other}, not compared"
    else:
        detail = f"{line}; no recorded val_loss to compare"
    return Check("step-0", PASS, detail)
