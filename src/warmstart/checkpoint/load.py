"""``load_checkpoint``: one reader for every checkpoint format warmstart accepts.

The format is detected from content (``formats.sniff_file``), never from the file
name. Headers are validated before any tensor is touched; tensors are read lazily
(safetensors through ``safe_open``, GGUF through a memory map, dequantised one
tensor at a time), so the loader holds at most one extra copy of any tensor.
Pickle files are refused unless ``trust_pickle=True``, and then loaded with
``torch.load(weights_only=True)`` only.

    ckpt = load_checkpoint("runs/demo")            # run dir -> checkpoints/latest
    ckpt.format, ckpt.config, ckpt.tensor_info      # see docs/design.md
    w = ckpt.tensor("model.embed_tokens.weight")
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Callable

import torch

from warmstart.arch.config import ModelConfig
from warmstart.checkpoint.formats import FORMAT_GGUF, FORMAT_PICKLE, FORMAT_SAFETENSORS
from warmstart.checkpoint.declared import config_defects
from warmstart.checkpoint.defects import raise_first
from warmstart.checkpoint.locate import FORMAT_HF_DIR, locate_checkpoint
from warmstart.checkpoint.metadata import recorded_parent, safetensors_metadata
from warmstart.checkpoint.structure import CheckpointStructure, json_object, structure_at
from warmstart.errors import PickleRefusedError, UnreadableError

_TORCH_TO_ST = {
    torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16", torch.float64: "F64",
    torch.int8: "I8", torch.uint8: "U8", torch.int16: "I16", torch.int32: "I32", torch.int64: "I64",
    torch.bool: "BOOL",
}
_CLAIM_KEYS = ("architecture", "hf_architecture", "model_type")


@dataclass(frozen=True)
class TensorInfo:
    name: str  # HF name
    shape: tuple[int, ...]
    dtype: str  # safetensors dtype name (F32, BF16, ...) or GGML type name (Q4_1, ...)
    source_name: str  # the name inside the file (GGUF: llama.cpp name)

    @property
    def numel(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n


class Checkpoint:
    """A checkpoint on disk: config, metadata, tensor table, lazy tensors, tokenizer."""

    def __init__(
        self,
        *,
        path: Path,
        format: str,
        files: list[Path],
        config: dict,
        metadata: dict,
        tensor_info: dict[str, TensorInfo],
        reader: Callable[[TensorInfo], torch.Tensor],
        claims: list[tuple[str, str]],
        tokenizer_loader: Callable[[], Any] | None = None,
        root: Path | None = None,
        closer: Callable[[], None] | None = None,
        config_source: str | None = None,
        tokenizer_declared: dict | None = None,
    ) -> None:
        self.path = path
        self.format = format
        self.files = files
        self.config = config
        self.metadata = metadata
        self.tensor_info = tensor_info
        self.root = root or path  # the resolved location (a run dir resolves to its latest checkpoint)
        self.config_source = config_source  # where ``config`` was read: config.json, safetensors metadata, GGUF
        # what the file says about its tokenizer, whether or not it can be built (GGUF: kind, ids, flags)
        self.tokenizer_declared = dict(tokenizer_declared or {})
        self._reader = reader
        self._claims = claims
        self._tokenizer_loader = tokenizer_loader
        self._closer = closer

    # ------------------------------------------------------------ tensors
    def tensor(self, name: str) -> torch.Tensor:
        """The tensor stored under HF name ``name`` (quantised GGUF tensors come back as float32)."""
        try:
            info = self.tensor_info[name]
        except KeyError:
            raise KeyError(f"{name} is not in checkpoint {self.path}") from None
        return self._reader(info)

    def tensor_rows(self, name: str, start: int, stop: int) -> torch.Tensor:
        """Rows ``start:stop`` (dim 0) of ``tensor(name)``; safetensors reads only those rows from
        the memory map (a sharded model's loader), other formats slice the whole tensor."""
        rows = getattr(self._reader, "rows", None)
        if rows is not None:
            return rows(self.tensor_info[name], start, stop)
        return self.tensor(name)[start:stop]

    def __contains__(self, name: str) -> bool:
        return name in self.tensor_info

    def num_parameters(self) -> int:
        """Elements over all tensors, not counting a tied ``lm_head.weight`` twice."""
        tied = bool(self.config.get("tie_word_embeddings")) and "model.embed_tokens.weight" in self.tensor_info
        return sum(i.numel for n, i in self.tensor_info.items() if not (tied and n == "lm_head.weight"))

    def dtype_histogram(self) -> dict[str, int]:
        """dtype -> number of tensors."""
        hist: dict[str, int] = {}
        for info in self.tensor_info.values():
            hist[info.dtype] = hist.get(info.dtype, 0) + 1
        return dict(sorted(hist.items(), key=lambda kv: -kv[1]))

    # ------------------------------------------------------ identity / config
    @cached_property
    def tokenizer(self):
        """``tokenizers.Tokenizer`` or None (tokenizer.json, or built from the GGUF vocabulary)."""
        return self._tokenizer_loader() if self._tokenizer_loader else None

    def declared_claims(self) -> list[tuple[str, str]]:
        """Every architecture claim the checkpoint makes: ``[(where, value), ...]``."""
        return list(self._claims)

    def model_config(self) -> ModelConfig:
        """``ModelConfig.from_hf_config(self.config)``; FamilyError if the family is unsupported."""
        if not self.config:
            raise UnreadableError(
                "the checkpoint has no model config (no config.json, no 'config' in the safetensors metadata)",
                why="without it the model's shape is unknown",
                fix="put the model's config.json next to the weights",
                path=self.path,
            )
        try:
            return ModelConfig.from_hf_config(self.config, source=str(self.path))
        except (KeyError, TypeError, ValueError) as err:
            raise UnreadableError(
                f"the model config is incomplete or malformed ({type(err).__name__}: {err})",
                fix="repair config.json (hidden_size, num_hidden_layers, num_attention_heads, "
                "intermediate_size, vocab_size are required)",
                path=self.path,
            ) from None

    @property
    def parent(self) -> dict | None:
        """Lineage: the recorded ``parent`` ({path, sha256, family, ...}) or None."""
        return recorded_parent(self.metadata)

    # ------------------------------------------------------------ lifetime
    def close(self) -> None:
        if self._closer:
            self._closer()
            self._closer = None

    def __enter__(self) -> "Checkpoint":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Checkpoint({str(self.path)!r}, format={self.format!r}, tensors={len(self.tensor_info)})"


# ====================================================================== entry


def load_checkpoint(path: str | os.PathLike, trust_pickle: bool = False) -> Checkpoint:
    """Open a checkpoint of any supported format (see module docstring); validate headers now,
    read tensors later. Raises UnreadableError (WS101) / PickleRefusedError (WS100)."""
    loc = locate_checkpoint(path)
    if loc.format == FORMAT_PICKLE:
        return _load_pickle(loc.root, loc.given, trust_pickle, config_dir=loc.config_dir)
    st = structure_at(loc)
    st.raise_first()
    if loc.format == FORMAT_GGUF:
        return _load_gguf(loc.root, loc.given)
    return _load_safetensors(st)


# ---------------------------------------------------------------- helpers


def _config_claims(config: dict, where: str) -> list[tuple[str, str]]:
    claims = []
    archs = config.get("architectures")
    if isinstance(archs, list) and archs and isinstance(archs[0], str):
        claims.append((f"{where} architectures", archs[0]))
    elif isinstance(archs, str):
        claims.append((f"{where} architectures", archs))
    if isinstance(config.get("model_type"), str):
        claims.append((f"{where} model_type", config["model_type"]))
    return claims


def _metadata_claims(metadata: dict, where: str) -> list[tuple[str, str]]:
    return [(f"{where} {k}", metadata[k]) for k in _CLAIM_KEYS if isinstance(metadata.get(k), str) and metadata[k]]


def _tokenizer_file_loader(path: Path) -> Callable[[], Any]:
    def load():
        from tokenizers import Tokenizer

        try:
            return Tokenizer.from_file(str(path))
        except Exception as err:  # noqa: BLE001 - tokenizers raises plain Exception
            raise UnreadableError(f"tokenizer.json cannot be read ({err})",
                                  fix="regenerate tokenizer.json from the model's tokenizer", path=path) from None

    return load


class _SafetensorsReader:
    """Lazy tensor reads through ``safe_open`` (memory-mapped), one handle per file."""

    def __init__(self, file_of: dict[str, Path]) -> None:
        self.file_of = file_of
        self.handles: dict[Path, Any] = {}

    def _handle(self, info: TensorInfo):
        from safetensors import safe_open

        f = self.file_of[info.name]
        h = self.handles.get(f)
        if h is None:
            try:
                h = self.handles[f] = safe_open(str(f), framework="pt", device="cpu")
            except Exception as err:  # noqa: BLE001 - safetensors raises SafetensorError
                raise UnreadableError(f"safetensors cannot open the file ({err})", path=f) from None
        return h

    def __call__(self, info: TensorInfo) -> torch.Tensor:
        return self._handle(info).get_tensor(info.source_name)

    def rows(self, info: TensorInfo, start: int, stop: int) -> torch.Tensor:
        return self._handle(info).get_slice(info.source_name)[start:stop]

    def close(self) -> None:
        self.handles.clear()


# ------------------------------------------------------------- safetensors


def _load_safetensors(st: CheckpointStructure) -> Checkpoint:
    """A single safetensors file or a HF directory, built from its checked structure."""
    loc = st.location
    infos: dict[str, TensorInfo] = {}
    file_of: dict[str, Path] = {}
    for t in (t for f in st.files for t in f.tensors):
        infos[t.name] = TensorInfo(t.name, t.shape, t.dtype, t.name)
        file_of[t.name] = t.file
    raw_meta = st.files[0].metadata
    metadata = safetensors_metadata(raw_meta)
    config = st.config or {}
    claims = _config_claims(config, st.config_source) if st.config_source else []
    claims += _metadata_claims(metadata, "safetensors metadata")
    if st.provenance_file is not None:
        claims = _metadata_claims(st.provenance_file, "warmstart.json") + claims
        metadata = {**metadata, **st.provenance_file}
    reader = _SafetensorsReader(file_of)
    return Checkpoint(path=loc.given, format=loc.format, files=[f.path for f in st.files], config=config,
                      metadata=metadata, tensor_info=infos, reader=reader, claims=_dedupe(claims),
                      tokenizer_loader=_tokenizer_loader(st), root=loc.root, closer=reader.close,
                      config_source=st.config_source)


def _tokenizer_loader(st: CheckpointStructure) -> Callable[[], Any] | None:
    """A single file's embedded tokenizer, else tokenizer.json beside the weights."""
    embedded = st.files[0].metadata.get("tokenizer") if st.format == FORMAT_SAFETENSORS else None
    if isinstance(embedded, str):
        def load():
            from tokenizers import Tokenizer

            return Tokenizer.from_str(embedded)

        return load
    path = st.location.config_dir / "tokenizer.json"
    return _tokenizer_file_loader(path) if path.is_file() else None


def _dedupe(claims: list[tuple[str, str]]) -> list[tuple[str, str]]:
    seen, out = set(), []
    for c in claims:
        if c not in seen:
            seen.add(c)
            out.append(c)
    return out


# -------------------------------------------------------------------- GGUF


def _load_gguf(path: Path, given: Path) -> Checkpoint:
    from warmstart.checkpoint.gguf.hf import gguf_hf_config, gguf_metadata, hf_tensor_plan, read_planned
    from warmstart.checkpoint.gguf.parse import GGUFFile
    from warmstart.checkpoint.gguf.tokenizer import declared_tokenizer, gguf_tokenizer

    g = GGUFFile(path)
    config = gguf_hf_config(g)
    plan = hf_tensor_plan(g, config)
    infos = {hf: TensorInfo(hf, p.source.shape, p.source.type_name, p.source.name) for hf, p in plan.items()}
    metadata = gguf_metadata(g)
    claims: list[tuple[str, str]] = []
    if g.architecture:
        claims.append(("GGUF general.architecture", g.architecture))
    claims += _metadata_claims(metadata, "GGUF warmstart metadata")

    def reader(info: TensorInfo) -> torch.Tensor:
        return read_planned(g, plan[info.name])

    return Checkpoint(path=given, format=FORMAT_GGUF, files=[path], config=config, metadata=metadata,
                      tensor_info=infos, reader=reader, claims=claims, tokenizer_loader=lambda: gguf_tokenizer(g),
                      root=path, closer=g.close, config_source="GGUF metadata",
                      tokenizer_declared=declared_tokenizer(g.metadata, g.architecture))


# ------------------------------------------------------------------ pickle


def _load_pickle(path: Path, given: Path, trust_pickle: bool, *, config_dir: Path) -> Checkpoint:
    if not trust_pickle:
        raise PickleRefusedError(
            "this is a pickle checkpoint (torch.save / .bin / .pt), refused by default",
            why="unpickling a file can execute arbitrary code",
            fix="convert it to safetensors, or pass --trust-pickle to load it with "
            "torch.load(weights_only=True), which only rebuilds tensors",
            path=path,
        )
    try:
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as err:
            if "mmap" not in str(err):
                raise
            obj = torch.load(path, map_location="cpu", weights_only=True)  # legacy (non-zip) format
    except Exception as err:  # noqa: BLE001 - torch raises UnpicklingError/RuntimeError/EOFError...
        raise UnreadableError(f"torch.load(weights_only=True) cannot read the file ({type(err).__name__}: "
                              f"{str(err).splitlines()[0] if str(err) else ''})",
                              why="the file is corrupt or holds objects other than tensors",
                              fix="convert the checkpoint to safetensors", path=path) from None
    state = _find_state_dict(obj)
    if state is None:
        raise UnreadableError("the pickle holds no state dict (a mapping of names to tensors)",
                              fix="save model.state_dict(), ideally as safetensors", path=path)
    infos = {n: TensorInfo(n, tuple(t.shape), _TORCH_TO_ST.get(t.dtype, str(t.dtype)), n) for n, t in state.items()}
    config: dict = {}
    claims: list[tuple[str, str]] = []
    if (config_dir / "config.json").is_file():
        config, defect = json_object(config_dir / "config.json")
        if defect is not None:
            defect.raise_()
        raise_first(config_defects(config, where="config.json", path=config_dir / "config.json",
                                   data_bytes=sum(t.numel() * t.element_size() for t in state.values())))
        claims += _config_claims(config, "config.json")
    tokenizer_loader = None
    if (config_dir / "tokenizer.json").is_file():
        tokenizer_loader = _tokenizer_file_loader(config_dir / "tokenizer.json")
    return Checkpoint(path=given, format=FORMAT_PICKLE, files=[path], config=config, metadata={},
                      tensor_info=infos, reader=lambda info: state[info.source_name], claims=claims,
                      tokenizer_loader=tokenizer_loader, root=path,
                      config_source="config.json" if config else None)


def _find_state_dict(obj: Any) -> dict[str, torch.Tensor] | None:
    if isinstance(obj, dict):
        tensors = {k: v for k, v in obj.items() if isinstance(k, str) and isinstance(v, torch.Tensor)}
        if tensors and len(tensors) == len(obj):
            return tensors
        for key in ("state_dict", "model", "model_state_dict", "module"):
            inner = obj.get(key)
            found = _find_state_dict(inner) if isinstance(inner, dict) else None
            if found:
                return found
    return None


__all__ = ["Checkpoint", "FORMAT_GGUF", "FORMAT_HF_DIR", "FORMAT_PICKLE", "FORMAT_SAFETENSORS", "TensorInfo",
           "load_checkpoint"]
