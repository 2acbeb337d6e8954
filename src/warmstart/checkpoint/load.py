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

import json
import os
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Callable

import torch

from warmstart.arch.config import ModelConfig
from warmstart.checkpoint.aliases import resolve_checkpoint_path
from warmstart.checkpoint.formats import (
    FORMAT_GGUF,
    FORMAT_PICKLE,
    FORMAT_SAFETENSORS,
    read_safetensors_header,
    sniff_file,
)
from warmstart.errors import WarmstartError, PickleRefusedError, UnreadableError

FORMAT_HF_DIR = "hf-dir"

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
    ) -> None:
        self.path = path
        self.format = format
        self.files = files
        self.config = config
        self.metadata = metadata
        self.tensor_info = tensor_info
        self.root = root or path  # the resolved location (a run dir resolves to its latest checkpoint)
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
        """Lineage: warmstart.json ``parent`` ({path, sha256, family}) or None."""
        parent = self.metadata.get("parent")
        return parent if isinstance(parent, dict) else None

    def lineage(self, max_depth: int = 16) -> list[dict]:
        """The chain of warm starts: parent, grandparent, … as far as the recorded paths lead.

        Each entry is the recorded ``parent`` dict plus ``present`` (the path still exists).
        The walk stops at a missing or unreadable ancestor, a cycle, or ``max_depth``.
        """
        chain: list[dict] = []
        seen: set[str] = set()
        parent = self.parent
        while parent and len(chain) < max_depth:
            path = parent.get("path")
            entry = dict(parent, present=bool(path) and Path(path).exists())
            chain.append(entry)
            if not entry["present"] or path in seen:
                break
            seen.add(path)
            try:
                parent = load_checkpoint(path).parent
            except WarmstartError:
                break
        return chain

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
    given = resolve_checkpoint_path(path) if isinstance(path, str) else Path(path)
    if not given.exists():
        raise UnreadableError("no such file or directory", fix="check the path", path=given)
    if given.is_dir():
        return _load_dir(given, trust_pickle)
    if given.name == "latest" and given.parent.name == "checkpoints":
        # The run's pointer file: the same as naming the run directory.
        return _load_dir(given.parent.parent, trust_pickle)
    return _load_file(given, given, trust_pickle)


def _load_file(path: Path, given: Path, trust_pickle: bool) -> Checkpoint:
    fmt = sniff_file(path)
    if fmt == FORMAT_SAFETENSORS:
        return _load_safetensors_file(path, given)
    if fmt == FORMAT_GGUF:
        return _load_gguf(path, given)
    return _load_pickle(path, given, trust_pickle, config_dir=path.parent)


# ---------------------------------------------------------------- helpers


def _read_json(path: Path, what: str) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise UnreadableError(f"{what} is not valid JSON ({err})", fix=f"repair or regenerate {path.name}",
                              path=path) from None


def _parse_metadata_value(value: str) -> Any:
    if value[:1] in "[{":
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value
    return value


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

    def __call__(self, info: TensorInfo) -> torch.Tensor:
        from safetensors import safe_open

        f = self.file_of[info.name]
        h = self.handles.get(f)
        if h is None:
            try:
                h = self.handles[f] = safe_open(str(f), framework="pt", device="cpu")
            except Exception as err:  # noqa: BLE001 - safetensors raises SafetensorError
                raise UnreadableError(f"safetensors cannot open the file ({err})", path=f) from None
        return h.get_tensor(info.source_name)

    def close(self) -> None:
        self.handles.clear()


def _safetensors_tables(files: list[Path]) -> tuple[dict[str, TensorInfo], dict[str, Path], dict[str, str]]:
    infos: dict[str, TensorInfo] = {}
    file_of: dict[str, Path] = {}
    first_meta: dict[str, str] = {}
    for i, f in enumerate(files):
        header = read_safetensors_header(f)
        if i == 0:
            first_meta = header.metadata
        for name, entry in header.tensors.items():
            if name in infos:
                raise UnreadableError(f"tensor '{name}' is stored in two shards ({file_of[name].name}, {f.name})",
                                      fix="re-export the checkpoint", path=f)
            infos[name] = TensorInfo(name, tuple(entry["shape"]), entry["dtype"], name)
            file_of[name] = f
    return infos, file_of, first_meta


# ------------------------------------------------------------- safetensors


def _load_safetensors_file(path: Path, given: Path) -> Checkpoint:
    infos, file_of, raw_meta = _safetensors_tables([path])
    metadata = {k: _parse_metadata_value(v) for k, v in raw_meta.items() if k not in ("format", "config", "tokenizer")}
    claims: list[tuple[str, str]] = []
    if "config" in raw_meta:
        config = _metadata_config(raw_meta["config"], path)
        claims += _config_claims(config, "safetensors metadata config")
    elif (path.parent / "config.json").is_file():
        config = _read_json(path.parent / "config.json", "config.json")
        claims += _config_claims(config, "config.json")
    else:
        config = {}
    warm = path.parent / "warmstart.json"
    if warm.is_file() and path.name == "model.safetensors":  # the weights file of a HF/run dir
        provenance = _read_json(warm, "warmstart.json")
        claims += _metadata_claims(provenance, "warmstart.json")
        metadata = {**metadata, **provenance}
    claims += _metadata_claims(metadata, "safetensors metadata")
    tokenizer_loader = None
    if "tokenizer" in raw_meta:
        def tokenizer_loader():
            from tokenizers import Tokenizer

            return Tokenizer.from_str(raw_meta["tokenizer"])
    elif (path.parent / "tokenizer.json").is_file():
        tokenizer_loader = _tokenizer_file_loader(path.parent / "tokenizer.json")
    reader = _SafetensorsReader(file_of)
    return Checkpoint(path=given, format=FORMAT_SAFETENSORS, files=[path], config=config, metadata=metadata,
                      tensor_info=infos, reader=reader, claims=_dedupe(claims), tokenizer_loader=tokenizer_loader,
                      root=path, closer=reader.close)


def _metadata_config(text: str, path: Path) -> dict:
    try:
        config = json.loads(text)
    except json.JSONDecodeError as err:
        raise UnreadableError(f"safetensors metadata 'config' is not valid JSON ({err})",
                              fix="re-export the file, or remove the key and put config.json beside it",
                              path=path) from None
    if not isinstance(config, dict):
        raise UnreadableError("safetensors metadata 'config' is not a JSON object", path=path)
    return config


def _dedupe(claims: list[tuple[str, str]]) -> list[tuple[str, str]]:
    seen, out = set(), []
    for c in claims:
        if c not in seen:
            seen.add(c)
            out.append(c)
    return out


# ------------------------------------------------------------- directories


def _resolve_run_dir(path: Path) -> Path:
    """A run directory (``checkpoints/latest``) resolves to its latest checkpoint directory."""
    latest = path / "checkpoints" / "latest"
    if not (latest.exists() or latest.is_symlink()):
        return path
    if latest.is_dir():
        return latest.resolve()
    if latest.is_symlink():  # dangling
        raise UnreadableError(f"{latest} points to {os.readlink(latest)}, which does not exist",
                              why="the latest checkpoint was deleted or never finished",
                              fix="point at one of the step-* directories under checkpoints/", path=path)
    name = latest.read_text(encoding="utf-8").strip()
    target = (path / "checkpoints" / name) if not os.path.isabs(name) else Path(name)
    if not target.is_dir():
        raise UnreadableError(f"{latest} names '{name}', which is not a checkpoint directory",
                              fix="point at one of the step-* directories under checkpoints/", path=path)
    return target


def _load_dir(given: Path, trust_pickle: bool) -> Checkpoint:
    root = _resolve_run_dir(given)
    index = root / "model.safetensors.index.json"
    single = root / "model.safetensors"
    if single.is_file():
        files = [single]
    elif index.is_file():
        files = _shards_from_index(index)
    else:
        st = sorted(p for p in root.glob("*.safetensors") if not p.name.startswith("."))
        ggufs = sorted(p for p in root.glob("*.gguf") if not p.name.startswith("."))
        pickles = sorted(p for p in root.iterdir() if p.suffix in (".bin", ".pt", ".pth") and p.is_file()
                         and not p.name.startswith("."))
        if len(st) == 1:
            files = st
        elif not st and len(ggufs) == 1:
            return _load_gguf(ggufs[0], given)
        elif not st and len(pickles) == 1:
            return _load_pickle(pickles[0], given, trust_pickle, config_dir=root)
        else:
            found = ", ".join(sorted(p.name for p in root.iterdir())[:10]) or "nothing"
            raise UnreadableError(
                f"directory holds no checkpoint warmstart can read (found: {found})",
                why="a Hugging Face checkpoint directory has config.json and model.safetensors, or shards "
                "listed in model.safetensors.index.json; a run directory has checkpoints/latest",
                fix="point at a checkpoint directory or a weights file",
                path=given,
            )
    for f in files:
        if sniff_file(f) != FORMAT_SAFETENSORS:
            raise UnreadableError(f"{f.name} is not a safetensors file", path=f, fix="re-export the checkpoint")
    infos, file_of, raw_meta = _safetensors_tables(files)
    claims: list[tuple[str, str]] = []
    config: dict = {}
    if (root / "config.json").is_file():
        config = _read_json(root / "config.json", "config.json")
        if not isinstance(config, dict):
            raise UnreadableError("config.json is not a JSON object", path=root / "config.json")
        claims += _config_claims(config, "config.json")
    elif "config" in raw_meta:
        config = _metadata_config(raw_meta["config"], files[0])
        claims += _config_claims(config, "safetensors metadata config")
    metadata = {k: _parse_metadata_value(v) for k, v in raw_meta.items() if k not in ("format", "config", "tokenizer")}
    claims += _metadata_claims(metadata, "safetensors metadata")
    if (root / "warmstart.json").is_file():
        provenance = _read_json(root / "warmstart.json", "warmstart.json")
        if not isinstance(provenance, dict):
            raise UnreadableError("warmstart.json is not a JSON object", path=root / "warmstart.json")
        claims = _metadata_claims(provenance, "warmstart.json") + claims
        metadata = {**metadata, **provenance}
    tokenizer_loader = None
    if (root / "tokenizer.json").is_file():
        tokenizer_loader = _tokenizer_file_loader(root / "tokenizer.json")
    reader = _SafetensorsReader(file_of)
    return Checkpoint(path=given, format=FORMAT_HF_DIR, files=files, config=config, metadata=metadata,
                      tensor_info=infos, reader=reader, claims=_dedupe(claims), tokenizer_loader=tokenizer_loader,
                      root=root, closer=reader.close)


def _shards_from_index(index: Path) -> list[Path]:
    data = _read_json(index, "model.safetensors.index.json")
    weight_map = data.get("weight_map") if isinstance(data, dict) else None
    if not isinstance(weight_map, dict) or not weight_map:
        raise UnreadableError("model.safetensors.index.json has no 'weight_map'", path=index,
                              fix="regenerate the index (or re-save the checkpoint)")
    shards = sorted(set(weight_map.values()))
    missing = [s for s in shards if not (index.parent / s).is_file()]
    if missing:
        raise UnreadableError(f"{len(missing)} shard(s) listed in the index are missing: {', '.join(missing[:5])}",
                              why="part of the weights is absent", fix="download every shard", path=index)
    files = [index.parent / s for s in shards]
    # every tensor the index names must be in the shard it names
    for shard in files:
        header = read_safetensors_header(shard)
        expected = {n for n, s in weight_map.items() if s == shard.name}
        absent = sorted(expected - set(header.tensors))
        if absent:
            raise UnreadableError(
                f"{len(absent)} tensor(s) the index places in {shard.name} are not in it: {', '.join(absent[:5])}",
                fix="re-download the shard or regenerate the index", path=shard)
    return files


# -------------------------------------------------------------------- GGUF


def _load_gguf(path: Path, given: Path) -> Checkpoint:
    from warmstart.checkpoint.gguf.hf import gguf_hf_config, gguf_metadata, hf_tensor_plan, read_planned
    from warmstart.checkpoint.gguf.parse import GGUFFile
    from warmstart.checkpoint.gguf.tokenizer import gguf_tokenizer

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
                      root=path, closer=g.close)


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
        config = _read_json(config_dir / "config.json", "config.json")
        claims += _config_claims(config, "config.json")
    tokenizer_loader = None
    if (config_dir / "tokenizer.json").is_file():
        tokenizer_loader = _tokenizer_file_loader(config_dir / "tokenizer.json")
    return Checkpoint(path=given, format=FORMAT_PICKLE, files=[path], config=config, metadata={},
                      tensor_info=infos, reader=lambda info: state[info.source_name], claims=claims,
                      tokenizer_loader=tokenizer_loader, root=path)


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
