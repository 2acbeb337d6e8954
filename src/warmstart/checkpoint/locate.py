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
from warmstart.errors import OutsidePathError, UnreadableError
from warmstart.files import inside, is_regular, path_stat, refuse_special

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
    other path is returned as it is. Raises UnreadableError when ``latest`` leads nowhere, and
    OutsidePathError when it leads out of the run's ``checkpoints/``."""
    path = Path(path)
    latest = path / "checkpoints" / "latest"
    if path_stat(latest, "checkpoints/latest") is None and not latest.is_symlink():
        return path
    if latest.is_symlink():
        target = latest.resolve()
        if not target.is_dir():  # dangling
            raise UnreadableError(f"{latest} points to {os.readlink(latest)}, which does not exist",
                                  why="the latest checkpoint was deleted or never finished", fix=_RUN_DIR_FIX,
                                  path=path)
        if not target.is_relative_to(latest.parent.resolve()):
            raise _outside(latest, os.readlink(latest), path)
        return target
    if latest.is_dir():
        return latest
    refuse_special(latest, "checkpoints/latest")
    return _named_step(path, latest)


def _named_step(run: Path, latest: Path) -> Path:
    """The step directory a ``latest`` pointer file names (a name inside ``checkpoints/``)."""
    try:
        name = latest.read_bytes()[:4096].decode("utf-8").strip()
    except UnicodeDecodeError:
        raise UnreadableError(f"{latest} is not UTF-8 text", why="it should name a step directory, e.g. step-000100",
                              fix=_RUN_DIR_FIX, path=run) from None
    if not inside(latest.parent, name) or name in (".", "latest", "best"):
        raise _outside(latest, name, run)
    target = latest.parent / name
    if not target.is_dir():
        raise UnreadableError(f"{latest} names '{name}', which is not a checkpoint directory", fix=_RUN_DIR_FIX,
                              path=run)
    return target


def _outside(latest: Path, name: str, run: Path) -> OutsidePathError:
    return OutsidePathError(f"{latest} names '{name[:200]}', which is not a step directory inside "
                            f"{latest.parent}", why="a run reads only its own checkpoints; a pointer that leaves "
                            "them could name any directory", fix=_RUN_DIR_FIX, path=run)


def locate_checkpoint(path: str | os.PathLike) -> Location:
    """The format and weight files of the checkpoint ``path`` (a path, an alias or a Hugging Face cache id) names.

    Raises UnreadableError (WS101) when it names nothing warmstart can read, SymlinkLoopError (WS004) for
    a symlink loop, NotRegularFileError (WS003) for a FIFO or a device."""
    given = resolve_checkpoint_path(path) if isinstance(path, str) else Path(path)
    if refuse_special(given, "checkpoint path") is None:
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
