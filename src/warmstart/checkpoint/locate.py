"""What a path names: ``locate_checkpoint`` decides the format and the weight files, once, for the
loader (``load_checkpoint``) and the structural view (``read_structure``) alike.

- a file: its format from its first bytes (``formats.sniff_file``);
- a run directory or its ``checkpoints/latest`` pointer: the step directory ``latest`` names
  (``resolve_run_dir``; the layout and the pointer's rules are ``run.py``'s);
- a directory: ``model.safetensors``, else the shards ``model.safetensors.index.json`` names,
  else its one ``*.safetensors``, else its one ``*.gguf``, else its one pickle file.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from warmstart.checkpoint.aliases import resolve_checkpoint_path
from warmstart.checkpoint.formats import FORMAT_GGUF, FORMAT_PICKLE, FORMAT_SAFETENSORS, sniff_file
from warmstart.checkpoint.run import find_run
from warmstart.errors import UnreadableError
from warmstart.files import is_regular, refuse_special

FORMAT_HF_DIR = "hf-dir"
INDEX_NAME = "model.safetensors.index.json"
_PICKLE_SUFFIXES = (".bin", ".pt", ".pth")


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
    """A run directory (or its ``checkpoints/latest``) resolves to the step directory ``latest`` names; any
    other path is returned as it is. A ``latest`` that names no step directory of the run is UnreadableError
    (WS101), one that leads out of its ``checkpoints/`` OutsidePathError (WS113)."""
    path = Path(path)
    run = find_run(path)
    if run is None or path not in (run.path, run.checkpoints / "latest"):
        return path
    return run.pointer("latest") or path


def locate_checkpoint(path: str | os.PathLike) -> Location:
    """The format and weight files of the checkpoint ``path`` (a path, an alias or a Hugging Face cache id) names.

    Raises UnreadableError (WS101) when it names nothing warmstart can read, SymlinkLoopError (WS004) for
    a symlink loop, NotRegularFileError (WS003) for a FIFO or a device."""
    given = resolve_checkpoint_path(path) if isinstance(path, str) else Path(path)
    if refuse_special(given, "checkpoint path") is None:
        raise UnreadableError("no such file or directory", fix="check the path", path=given)
    run = find_run(given)
    if run is not None and given == run.checkpoints / "latest":
        given = run.path  # the run's pointer: the same as naming the run directory
    if given.is_dir():
        return _locate_dir(given, resolve_run_dir(given))
    return Location(given, given, sniff_file(given), (given,))


def _visible(root: Path, pattern: str) -> list[Path]:
    return sorted(p for p in root.glob(pattern) if not p.name.startswith("."))


def _locate_dir(given: Path, root: Path) -> Location:
    single = is_regular(root / "model.safetensors", "model.safetensors")
    index = is_regular(root / INDEX_NAME, INDEX_NAME)  # both refused first when special
    if single:
        return Location(given, root, FORMAT_HF_DIR, (root / "model.safetensors",))
    if index:
        return Location(given, root, FORMAT_HF_DIR, (), root / INDEX_NAME)
    # a FIFO, a device or a symlink loop among the candidates is refused by name (is_regular), never opened
    st = [p for p in _visible(root, "*.safetensors") if is_regular(p, "checkpoint file")]
    ggufs = [p for p in _visible(root, "*.gguf") if is_regular(p, "checkpoint file")]
    pickles = [p for p in _visible(root, "*") if p.suffix in _PICKLE_SUFFIXES and is_regular(p, "checkpoint file")]
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
