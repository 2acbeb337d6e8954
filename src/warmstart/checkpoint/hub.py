"""Hugging Face cache ids: ``ORG/NAME`` or ``ORG/NAME@REVISION`` names a snapshot in the local Hugging Face
cache, found offline through ``huggingface_hub``'s cache scanner (``scan_cache_dir``); warmstart never
downloads. The cache is ``$HF_HUB_CACHE``, else ``$HF_HOME/hub``, else huggingface_hub's default.

A revision is a branch or tag the cache has a ref for (``refs/main`` by default) or a commit hash (a
prefix of at least 7 characters will do). An id that is not cached is refused with the exact download
command that would cache it.
"""

from __future__ import annotations

import os
import re
import shlex
from pathlib import Path

from warmstart.errors import UnreadableError

_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*(@\S+)?$")
_WEIGHT_SUFFIXES = (".gguf", ".safetensors", ".bin", ".pt", ".pth", ".json")


def is_hub_id(text: str) -> bool:
    """``ORG/NAME`` or ``ORG/NAME@REVISION`` (not a file name such as ``dir/model.gguf``)."""
    return bool(_HUB_ID.match(text)) and not text.partition("@")[0].lower().endswith(_WEIGHT_SUFFIXES)


def hub_cache_dir() -> Path:
    """The Hugging Face hub cache, read from the environment now (not when huggingface_hub was imported)."""
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if os.environ.get(var):
            return Path(os.environ[var]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def download_command(repo_id: str, revision: str | None) -> str:
    rev = f" --revision {shlex.quote(revision)}" if revision else ""
    return f"hf download {repo_id}{rev}"


def hub_snapshot(hub_id: str) -> Path:
    """The snapshot directory of ``ORG/NAME[@REVISION]`` in the local cache; UnreadableError (exit 2) with
    the download command when it is not there."""
    from huggingface_hub import CacheNotFound, scan_cache_dir

    repo_id, _, revision = hub_id.partition("@")
    cache = hub_cache_dir()
    try:
        repos = [r for r in scan_cache_dir(cache).repos if r.repo_type == "model"]
    except CacheNotFound:
        repos = []
    repo = next((r for r in repos if r.repo_id == repo_id), None) or next(
        (r for r in repos if r.repo_id.lower() == repo_id.lower()), None)
    found = _revision(repo.revisions, revision or "main") if repo is not None else None
    if found is not None:
        return Path(found.snapshot_path)
    have = ""
    if repo is not None:
        names = sorted(f"{', '.join(sorted(r.refs)) or 'no ref'} ({r.commit_hash[:12]})" for r in repo.revisions)
        have = f"; the cache holds {repo.repo_id} at {'; '.join(names) or 'no revision'}"
    cmd = download_command(repo_id, revision or None)
    raise UnreadableError(
        f"'{hub_id}' is neither a file or directory nor a model in the local Hugging Face cache ({cache}){have}",
        why="warmstart reads Hugging Face ids from the local cache only and never downloads",
        fix=f"download it first: `{cmd}` (or `huggingface-cli {cmd.removeprefix('hf ')}`), then rerun; "
        "or check the path if a local checkpoint was meant",
        path=None)


def hub_id_of(path: str | Path) -> str | None:
    """``ORG/NAME@COMMIT`` when ``path`` is a snapshot directory of the Hugging Face cache layout, else None."""
    parts = Path(path).parts
    if len(parts) >= 3 and parts[-2] == "snapshots" and parts[-3].startswith("models--"):
        return f"{parts[-3].removeprefix('models--').replace('--', '/', 1)}@{parts[-1]}"
    return None


def _revision(revisions, wanted: str):
    """The cached revision a ref name or commit hash (or a unique prefix of >= 7 characters) names."""
    for rev in revisions:
        if wanted in rev.refs or rev.commit_hash == wanted:
            return rev
    if len(wanted) >= 7 and re.fullmatch(r"[0-9a-f]+", wanted):
        hits = [r for r in revisions if r.commit_hash.startswith(wanted)]
        if len(hits) == 1:
            return hits[0]
    return None


__all__ = ["download_command", "hub_cache_dir", "hub_id_of", "hub_snapshot", "is_hub_id"]
