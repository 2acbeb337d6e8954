"""Hugging Face cache ids: ``ORG/NAME`` or ``ORG/NAME@REVISION`` names a snapshot in the local Hugging Face
cache, found offline through ``huggingface_hub``'s cache scanner (``scan_cache_dir``); warmstart never
downloads. The cache is ``$HF_HUB_CACHE``, else ``$HF_HOME/hub``, else huggingface_hub's default.

A revision is a branch or tag the cache has a ref for (``refs/main`` by default) or a commit hash (a
prefix of at least 7 characters will do). An id that is not cached is refused with the exact download
command that would cache it.

Only the one model's directory is read, never the whole cache (huggingface_hub's ``scan_cache_dir`` reads
every ref and stats every blob of every model, so one damaged neighbour would stop any id). Every path read
there goes through the checks a checkpoint's files go through (``warmstart.files``): a symlink loop is WS004,
a FIFO or device WS003, and a ref is a small regular file holding a commit hash or it is refused (WS130), as
is a directory of the layout that is a file, or a ref naming a commit without a snapshot.
"""

from __future__ import annotations

import os
import re
import shlex
import stat
from pathlib import Path

from warmstart.errors import HubCacheError, UnreadableError, UsageError
from warmstart.files import inside, read_small, refuse_special

_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*(@\S+)?$")
_WEIGHT_SUFFIXES = (".gguf", ".safetensors", ".bin", ".pt", ".pth", ".json")
_COMMIT = re.compile(r"^(?:[0-9a-f]{40}|[0-9a-f]{64})$")  # a git commit hash (SHA-1, or SHA-256)
MAX_REF_BYTES = 1024  # a ref holds one commit hash; anything larger is not a ref
_LAYOUT = ("huggingface_hub keeps models--ORG--NAME/{refs,snapshots,blobs}: directories, and refs that each hold "
           "a commit hash naming a snapshot")
_REPAIR = "download the model again (`hf download ORG/NAME`), which rewrites its refs and snapshot"


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
    the download command when it is not there, HubCacheError (WS130) where the cache is damaged."""
    repo_id, _, revision = hub_id.partition("@")
    cache = hub_cache_dir()
    repo = _repo_dir(cache, repo_id) if _directory(cache, f"Hugging Face cache ({cache})") else None
    snapshots = repo / "snapshots" if repo is not None else None
    if snapshots is not None and _directory(snapshots, f"snapshots directory of {repo_id}"):
        found = _revision(repo, revision or "main")
        if found is not None:
            return found
        have = f"; the cache holds {repo.name.removeprefix('models--').replace('--', '/', 1)} at {_held(repo)}"
    else:
        have = ""
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


def _directory(path: Path, what: str) -> bool:
    """Whether ``path`` is a directory (False: nothing there); a loop (WS004), a special file (WS003) or a
    file where the cache layout has a directory (WS130) is refused."""
    st = refuse_special(path, what)
    if st is not None and not stat.S_ISDIR(st.st_mode):
        raise HubCacheError(f"the {what} is a file, not a directory", why=_LAYOUT,
                            fix=_REPAIR + " (or point $HF_HUB_CACHE at the cache directory)", path=path)
    return st is not None


def _repo_dir(cache: Path, repo_id: str) -> Path | None:
    """``models--ORG--NAME`` in the cache (the exact spelling, else the one that differs only in case)."""
    name = "models--" + repo_id.replace("/", "--")
    if not os.path.lexists(cache / name):
        name = next((n for n in _names(cache) if n.lower() == name.lower()), None)
    if name is None or not _directory(cache / name, f"cache directory of {repo_id}"):
        return None
    return cache / name


def _revision(repo: Path, wanted: str) -> Path | None:
    """The snapshot a ref (``refs/WANTED``), a commit hash or a unique prefix of >= 7 hex digits names."""
    refs, snapshots = repo / "refs", repo / "snapshots"
    if not inside(refs, wanted):
        raise UsageError(f"the revision '{wanted}' is not a branch, tag or commit name",
                         fix="name a branch or tag (main, v1.0, refs/pr/1) or a commit hash after '@'")
    ref = refs / wanted
    commit = _read_ref(ref, repo) if _directory(refs, "refs directory") and not ref.is_dir() else None
    if commit is not None:
        if not _directory(snapshots / commit, f"snapshot of {wanted}"):
            raise HubCacheError(f"refs/{wanted} names commit {commit}, which has no snapshot in the cache",
                                why="the download that wrote the ref did not finish, or the snapshot was removed",
                                fix=_REPAIR, path=refs / wanted)
        return snapshots / commit
    if _COMMIT.match(wanted) and _directory(snapshots / wanted, f"snapshot {wanted}"):
        return snapshots / wanted
    if re.fullmatch(r"[0-9a-f]{7,63}", wanted):
        hits = [c for c in _snapshot_names(snapshots) if c.startswith(wanted)]
        if len(hits) == 1 and _directory(snapshots / hits[0], f"snapshot {hits[0]}"):
            return snapshots / hits[0]
    return None


def _read_ref(path: Path, repo: Path) -> str | None:
    """The commit hash a ref file holds (None when there is no such ref); anything else is WS130."""
    data = read_small(path, MAX_REF_BYTES, what=f"ref {path.relative_to(repo)}", error=HubCacheError)
    if data is None:
        return None
    text = data.decode("ascii", errors="replace").strip()
    if not _COMMIT.match(text):
        raise HubCacheError(f"the ref holds {_shown(data)}, not a commit hash", why=_LAYOUT, fix=_REPAIR, path=path)
    return text


def _names(directory: Path) -> list[str]:
    """The entries of a directory of the cache, sorted; one that cannot be listed is WS130."""
    try:
        with os.scandir(directory) as entries:
            return sorted(e.name for e in entries)
    except OSError as err:
        raise HubCacheError(f"the directory cannot be listed ({err.strerror})", fix="check its permissions",
                            path=directory) from None


def _snapshot_names(snapshots: Path) -> list[str]:
    return [n for n in _names(snapshots) if _COMMIT.match(n)]


def _held(repo: Path) -> str:
    """``main, v2 (0123456789ab); no ref (fedcba987654)``: the revisions cached, for the not-cached message."""
    by_commit: dict[str, list[str]] = {c: [] for c in _snapshot_names(repo / "snapshots")}
    refs = repo / "refs"
    if _directory(refs, "refs directory"):
        for dirpath, _, files in os.walk(refs):
            for name in files:
                ref = Path(dirpath) / name
                commit = _read_ref(ref, repo)
                by_commit.setdefault(commit, []).append(ref.relative_to(refs).as_posix())
    names = sorted(f"{', '.join(sorted(r)) or 'no ref'} ({c[:12]})" for c, r in by_commit.items())
    return "; ".join(names) or "no revision"


def _shown(data: bytes) -> str:
    text = repr(data[:40])
    return text + ("..." if len(data) > 40 else "")


__all__ = ["download_command", "hub_cache_dir", "hub_id_of", "hub_snapshot", "is_hub_id"]
