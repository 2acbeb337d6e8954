"""The cache root's housekeeping: what it holds (``prepare --list``) and removing what nothing references
(``prepare --clean``; never done by itself).

Referenced: an entry's manifest, tokenizer and the shards its manifest names; a trained tokenizer
(``tokenizers/``) whose hash some manifest records; a prepared mixture whose entries all exist.
Unreferenced: shards a rebuilt unit left, temporary files of killed writes, entries of an earlier
format, trained tokenizers no entry uses, mixtures naming an entry that is gone. An entry whose lock
another process holds is left alone. Directories that are not warmstart's are never touched.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from warmstart.data.manifest import MANIFEST, OLD_FORMATS, SHARDS, read_manifest
from warmstart.data.mixture import MIXTURE, read_mixture
from warmstart.data.progress import LOCK, STATUS, EntryLock
from warmstart.errors import DamagedCacheError


@dataclass
class EntryInfo:
    path: Path
    sources: list[str]
    files: int
    tokens: int
    shards: int
    size: int
    tokenizer: str
    unreferenced: list[Path] = field(default_factory=list)
    busy: bool = False


@dataclass
class RootInfo:
    entries: list[EntryInfo] = field(default_factory=list)
    unreferenced: list[Path] = field(default_factory=list)  # outside entries
    damaged: list[tuple[Path, str]] = field(default_factory=list)

    @property
    def garbage(self) -> list[Path]:
        return self.unreferenced + [p for e in self.entries if not e.busy for p in e.unreferenced]


def _size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def _entry(path: Path, m: dict) -> EntryInfo:
    shards = [s for u in m["units"] for s in u["shards"]]
    named = {f"{s['name']}{ext}" for s in shards for ext in (".bin", ".idx")}
    extra = sorted(p for p in (path / SHARDS).iterdir() if p.name not in named) if (path / SHARDS).is_dir() else []
    lock = EntryLock(path)
    busy = not lock.take(True)
    lock.release()
    return EntryInfo(path, list(m["sources"]), sum(1 for f in m["files"].values() if f.get("unit")),
                     sum(s["train_tokens"] + s["val_tokens"] for s in shards), len(shards),
                     _size(path) - sum(_size(p) for p in extra), m["tokenizer_sha256"][:12], extra, busy)


def _old_format(path: Path) -> bool:
    try:
        return json.loads((path / "meta.json").read_text(encoding="utf-8")).get("format") in OLD_FORMATS
    except (OSError, ValueError, AttributeError):
        return False


def survey(root: Path) -> RootInfo:
    info = RootInfo()
    if not root.is_dir():
        return info
    for p in sorted(root.iterdir()):
        if not p.is_dir() or p.is_symlink() or p.name in ("tokenizers", "mixtures") or p.name.startswith("."):
            continue
        if (p / MANIFEST).is_file():
            try:
                info.entries.append(_entry(p, read_manifest(p)))
            except DamagedCacheError as err:
                info.damaged.append((p, err.found))
        elif _old_format(p):
            info.unreferenced.append(p)
    used = {e.tokenizer for e in info.entries}
    for t in sorted((root / "tokenizers").glob("*.json")) if (root / "tokenizers").is_dir() else []:
        if hashlib.sha256(t.read_bytes()).hexdigest()[:12] not in used:
            info.unreferenced.append(t)
    for mix in sorted((root / "mixtures").iterdir()) if (root / "mixtures").is_dir() else []:
        try:
            ok = all((e / MANIFEST).is_file() for e, _, _ in read_mixture(mix))
        except DamagedCacheError:
            ok = False
        if not ok and (mix / MIXTURE).is_file():
            info.unreferenced.append(mix)
    return info


def _mb(n: int) -> str:
    return f"{n / 1e6:,.1f} MB"


def list_lines(root: Path) -> list[str]:
    info = survey(root)
    lines = [f"token cache {root}: {len(info.entries)} entries"]
    for e in info.entries:
        lines.append(f"  {e.path.name}  {', '.join(e.sources)}: {e.files} files, {e.tokens:,} tokens in {e.shards} "
                     f"shards, {_mb(e.size)}, tokenizer {e.tokenizer}" + (" (being prepared now)" if e.busy else ""))
    for p, why in info.damaged:
        lines.append(f"  {p.name}  damaged: {why}")
    garbage = info.garbage
    if garbage:
        lines.append(f"unreferenced: {len(garbage)} items, {_mb(sum(_size(p) for p in garbage))} "
                     f"(`warmstart prepare --clean --cache-dir {root}` removes them)")
    return lines


def clean(root: Path) -> list[str]:
    """Remove everything ``survey`` finds unreferenced (never a busy entry's files); the lines it did."""
    info, freed, lines = survey(root), 0, []
    for p in info.garbage:
        if p.name in (LOCK, STATUS):
            continue
        n = _size(p)
        shutil.rmtree(p) if p.is_dir() else p.unlink(missing_ok=True)
        freed += n
        lines.append(f"removed {p} ({_mb(n)})")
    lines.append(f"freed {_mb(freed)} in {root}")
    return lines


__all__ = ["clean", "list_lines", "survey"]
