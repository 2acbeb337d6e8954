"""What a path names: ``locate_checkpoint`` decides the format and the weight files, once, for the
loader (``load_checkpoint``) and the structural view (``read_structure``) alike.

- a file: its format from its first bytes (``formats.sniff_file``);
- a run directory (``checkpoints/latest``, a symlink or a file naming a step directory) or the
  ``latest`` pointer itself: its latest checkpoint directory (``resolve_run_dir``);
- a directory: ``model.safetensors``, else the shards ``model.safetensors.index.json`` names,
  else its one ``*.safetensors``, else its one ``*.gguf``, else its one pickle file.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from warmstart.checkpoint.aliases import resolve_checkpoint_path
from warmstart.checkpoint.formats import FORMAT_GGUF, FORMAT_PICKLE, FORMAT_SAFETENSORS, sniff_file
from warmstart.errors import UnreadableError

FORMAT_HF_DIR = "hf-dir"
INDEX_NAME = "model.safetensors.index.json"
_PICKLE_SUFFIXES = (".bin", ".pt", ".pth")
_RUN_DIR_FIX = "point at one of the step-* directories under checkpoints/"


@dataclass(frozen=True)
class Location:
    given: Path  # what the caller named (a run directory stays the run directory)
    root: Path  # the checkpoint itself: a directory, or the weights file
    format: str  # hf-dir | safetensors | gguf | pickle
    files: tuple[Path, ...] = ()  # weight files; empty when the shard index names them
    index: Path | None = None  # model.safetensors.index.json, for a sharded directory

    @property
    def config_dir(self) -> Path:
        """Where config.json / tokenizer.json / warmstart.json sit beside the weights."""
        return self.root if self.format == FORMAT_HF_DIR else self.root.parent


def resolve_run_dir(path: str | os.PathLike) -> Path:
    """A run directory (``checkpoints/latest``) resolves to its latest checkpoint directory; any
    other path is returned as it is. Raises UnreadableError when ``latest`` leads nowhere."""
    path = Path(path)
    latest = path / "checkpoints" / "latest"
    if not (latest.exists() or latest.is_symlink()):
        return path
    if latest.is_dir():
        return latest.resolve()
    if latest.is_symlink():  # dangling
        raise UnreadableError(f"{latest} points to {os.readlink(latest)}, which does not exist",
                              why="the latest checkpoint was deleted or never finished", fix=_RUN_DIR_FIX, path=path)
    name = latest.read_text(encoding="utf-8").strip()
    target = (path / "checkpoints" / name) if not os.path.isabs(name) else Path(name)
    if not target.is_dir():
        raise UnreadableError(f"{latest} names '{name}', which is not a checkpoint directory", fix=_RUN_DIR_FIX,
                              path=path)
    return target


def locate_checkpoint(path: str | os.PathLike) -> Location:
    """The format and weight files of the checkpoint ``path`` (a path, an alias or a Hugging Face cache id) names.

    Raises UnreadableError (WS101) when it names nothing warmstart can read."""
    given = resolve_checkpoint_path(path) if isinstance(path, str) else Path(path)
    if not given.exists():
        raise UnreadableError("no such file or directory", fix="check the path", path=given)
    if given.is_dir():
        return _locate_dir(given, resolve_run_dir(given))
    if given.name == "latest" and given.parent.name == "checkpoints":
        # The run's pointer file: the same as naming the run directory.
        run = given.parent.parent
        return _locate_dir(run, resolve_run_dir(run))
    return Location(given, given, sniff_file(given), (given,))


def _visible(root: Path, pattern: str) -> list[Path]:
    return sorted(p for p in root.glob(pattern) if not p.name.startswith("."))


def _locate_dir(given: Path, root: Path) -> Location:
    if (root / "model.safetensors").is_file():
        return Location(given, root, FORMAT_HF_DIR, (root / "model.safetensors",))
    if (root / INDEX_NAME).is_file():
        return Location(given, root, FORMAT_HF_DIR, (), root / INDEX_NAME)
    st, ggufs = _visible(root, "*.safetensors"), _visible(root, "*.gguf")
    pickles = [p for p in _visible(root, "*") if p.suffix in _PICKLE_SUFFIXES and p.is_file()]
    if len(st) == 1:
        return Location(given, root, FORMAT_HF_DIR, (st[0],))
    if not st and len(ggufs) == 1:
        return Location(given, ggufs[0], FORMAT_GGUF, (ggufs[0],))
    if not st and len(pickles) == 1:
        return Location(given, pickles[0], FORMAT_PICKLE, (pickles[0],))
    found = ", ".join(sorted(p.name for p in root.iterdir())[:10]) or "nothing"
    raise UnreadableError(
        f"directory holds no checkpoint warmstart can read (found: {found})",
        why="a Hugging Face checkpoint directory has config.json and model.safetensors, or shards "
        "listed in model.safetensors.index.json; a run directory has checkpoints/latest",
        fix="point at a checkpoint directory or a weights file",
        path=given,
    )


__all__ = ["FORMAT_GGUF", "FORMAT_HF_DIR", "FORMAT_PICKLE", "FORMAT_SAFETENSORS", "INDEX_NAME", "Location",
           "locate_checkpoint", "resolve_run_dir"]
