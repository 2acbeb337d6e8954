"""Corpus sources: which files a ``--data`` list names, and what each file holds, by content.

``resolve_files`` lists the files: a named file, every file under a directory (hidden ones and
those not matching ``--include`` left out and counted), a ``datasets`` ``save_to_disk`` folder (its
Arrow files, in the order its ``state.json`` lists them; of a ``DatasetDict`` the ``train`` split),
or, with no ``--data``, the Python standard library's own ``.py`` files. Each file has a stable key,
its path relative to the source (``I:`` before it when several sources are pooled), which the
train/val split hashes, so the split does not depend on where the corpus sits on disk.

``sniff`` says what a file holds from its first bytes, never from its name: a compression (gzip,
zstd, bzip2, xz: the inner bytes are sniffed in turn), Parquet, Arrow IPC, JSON Lines (a first line
that is a JSON object; a ``.json`` of JSON Lines is read as records), a JSON array of objects, or
text. Binary, empty, undecodable and unsupported files (archives, compressed Parquet) are skipped
and counted by reason (``SourceStats``); a damaged compressed stream is refused (WS212).
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import os
import stat
import sysconfig
from dataclasses import dataclass, field
from pathlib import Path

from warmstart.errors import UsageError
from warmstart.files import path_stat, refuse_special

STDLIB_EXCLUDE_DIRS = {"test", "tests", "idle_test", "site-packages", "dist-packages", "__pycache__",
                       "lib2to3", "turtledemo"}
SNIFF = 8192  # bytes looked at for a NUL: a file holding one there is binary
FIRST_LINE = 1 << 20  # bytes of a first line read to tell JSON Lines from text
CODECS = {b"\x1f\x8b": "gz", b"\x28\xb5\x2f\xfd": "zst", b"BZh": "bz2", b"\xfd7zXZ\x00": "xz"}
RECORD_KINDS = ("jsonl", "json", "parquet", "arrow")
TEXT, SKIP = "text", "skip"
SKIP_REASONS = ("binary", "empty", "undecodable", "unsupported", "damaged", "no text field", "bad record", "too large",
                "hidden", "excluded by --include", "not a regular file", "dataset metadata", "other split",
                "past --max-corpus-bytes")


@dataclass
class FileEntry:
    path: Path  # absolute
    key: str  # relative name, hashed for the split
    size: int
    mtime_ns: int
    named: bool = False  # given as --data itself (a text file then splits into 64 KiB documents)
    kind: str | None = None  # text | jsonl | json | parquet | arrow | skip (set by sniff)
    codec: str = ""  # gz | zst | bz2 | xz | "" (set by sniff)
    reason: str = ""  # why a skipped file is skipped

    @property
    def stat_key(self) -> tuple[int, int]:
        return self.size, self.mtime_ns


@dataclass
class SourceStats:
    """Files and documents read and what was skipped, by reason (``examples``: the first few names)."""

    files: int = 0
    documents: int = 0
    bytes: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    examples: list[str] = field(default_factory=list)

    def skip(self, reason: str, key: str, n: int = 1) -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + n
        if len(self.examples) < 5:
            self.examples.append(f"{key} ({reason})")

    def merge(self, other: "SourceStats | dict") -> None:
        d = other.to_dict() if isinstance(other, SourceStats) else other
        self.files += d.get("files", 0)
        self.documents += d.get("documents", 0)
        self.bytes += d.get("bytes", 0)
        for reason, n in d.get("skipped", {}).items():
            self.skipped[reason] = self.skipped.get(reason, 0) + n
        self.examples.extend(d.get("examples", [])[: 5 - len(self.examples)])

    @property
    def n_skipped(self) -> int:
        return sum(self.skipped.values())

    def line(self) -> str:
        """``3 binary, 1 empty`` (reasons in a fixed order), or ''."""
        return ", ".join(f"{self.skipped[r]} {r}" for r in sorted(self.skipped, key=_reason_order) if self.skipped[r])

    def to_dict(self) -> dict:
        out = {"files": self.files, "documents": self.documents, "bytes": self.bytes,
               "skipped": dict(sorted(self.skipped.items())), "examples": list(self.examples)}
        for reason in ("binary", "empty", "undecodable"):
            out[f"skipped_{reason}"] = self.skipped.get(reason, 0)
        return out


def _reason_order(reason: str) -> tuple[int, str]:
    return (SKIP_REASONS.index(reason) if reason in SKIP_REASONS else len(SKIP_REASONS), reason)


def doc_hash(key: str) -> int:
    """The 64-bit hash of a document key that decides its split: held out when ``doc_hash / 2**64`` is
    below ``val_fraction``."""
    return int.from_bytes(hashlib.sha256(key.encode("utf-8", errors="surrogateescape")).digest()[:8], "big")


def order_hash(key: str) -> int:
    """The 64-bit hash of a file key that decides the corpus order. Salted, so independent of ``doc_hash``:
    were the order the split hash, the held-out documents would all come first and a byte budget
    (``--max-corpus-bytes``) would read nothing else."""
    return int.from_bytes(hashlib.sha256(b"order\0" + key.encode("utf-8", errors="surrogateescape")).digest()[:8],
                          "big")


def stdlib_dir() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def _entry(path: Path, key: str, st: os.stat_result, named: bool = False) -> FileEntry:
    return FileEntry(path, key, st.st_size, st.st_mtime_ns, named=named)


def _dataset_folder(root: Path, stats: SourceStats, prefix: str) -> list[FileEntry] | None:
    """The Arrow files of a ``datasets`` ``save_to_disk`` folder, or None when ``root`` is not one."""
    state, info, splits = root / "state.json", root / "dataset_info.json", root / "dataset_dict.json"
    if splits.is_file():
        names = _json_field(splits, "splits")
        take = ["train"] if "train" in names else names
        for other in (n for n in names if n not in take):
            stats.skip("other split", f"{prefix}{other}")
        return [f for name in take for f in (_dataset_folder(root / name, stats, f"{prefix}{name}/") or [])]
    if not (state.is_file() and info.is_file()):
        return None
    out = []
    for rec in _json_field(state, "_data_files"):
        name = rec.get("filename") if isinstance(rec, dict) else None
        p = root / str(name)
        st = path_stat(p, "dataset file")
        if not isinstance(name, str) or "/" in name or st is None or not stat.S_ISREG(st.st_mode):
            raise UsageError(f"the datasets folder lists a data file {name!r} that is not a file in it",
                             fix="save the dataset again with save_to_disk", path=state)
        out.append(_entry(p, f"{prefix}{name}", st))
    stats.skip("dataset metadata", f"{prefix}state.json", 2)
    return out


def _json_field(path: Path, name: str) -> list:
    try:
        value = json.loads(path.read_text(encoding="utf-8")).get(name)
    except (OSError, ValueError, AttributeError):
        value = None
    if not isinstance(value, list):
        raise UsageError(f"the datasets metadata file has no list '{name}'", fix="save the dataset again with "
                         "save_to_disk, or pass its .arrow files", path=path)
    return value


def _walk(root: Path, include: tuple[str, ...], stats: SourceStats, prefix: str = "",
          exclude_dirs: set[str] | None = None) -> list[FileEntry]:
    """Every regular file under ``root`` (sorted), hidden names and globs left out and counted."""
    found = _dataset_folder(root, stats, prefix)
    if found is not None:
        return found
    out: list[FileEntry] = []
    for dirpath, dirnames, filenames in os.walk(root):
        for d in [d for d in dirnames if d.startswith(".")]:
            stats.skip("hidden", f"{prefix}{Path(dirpath, d).relative_to(root).as_posix()}/")
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and not (exclude_dirs and d in exclude_dirs))
        for fn in sorted(filenames):
            full = Path(dirpath) / fn
            rel = prefix + full.relative_to(root).as_posix()
            if fn.startswith("."):
                stats.skip("hidden", rel)
                continue
            if include and not any(fnmatch.fnmatch(fn, p) or fnmatch.fnmatch(rel[len(prefix):], p) for p in include):
                stats.skip("excluded by --include", rel)
                continue
            st = path_stat(full, "corpus file")
            if st is None or not stat.S_ISREG(st.st_mode):  # a FIFO, a device, a broken link: never opened
                stats.skip("not a regular file", rel)
                continue
            out.append(_entry(full, rel, st))
    return out


def resolve_files(data: list[str] | tuple[str, ...] | None, include: list[str] | tuple[str, ...] | None = None,
                  stats: SourceStats | None = None) -> tuple[list[FileEntry], list[str]]:
    """The files of the corpus and the names of its sources (provenance ``data_sources``; a cache's
    manifest keeps only their last component); what the listing leaves out is counted in ``stats``."""
    stats = stats if stats is not None else SourceStats()
    inc = tuple(include or ())
    if not data:
        root = stdlib_dir()
        return _walk(root, ("*.py",), stats, exclude_dirs=STDLIB_EXCLUDE_DIRS), [f"python-stdlib:{root}"]
    files: list[FileEntry] = []
    names: list[str] = []
    for i, spec in enumerate(data):
        p = Path(spec).expanduser()
        st = refuse_special(p, "data source")  # a FIFO or a device is refused by name, never opened
        if st is None:
            raise UsageError(f"data source '{spec}' does not exist",
                             fix="pass a text file, a directory, a .jsonl/.json/.parquet/.arrow file (compressed "
                                 "or not), a datasets folder, or a prepared token cache to --data", path=spec)
        prefix = f"{i}:" if len(data) > 1 else ""
        if stat.S_ISDIR(st.st_mode):
            files.extend(_walk(p, inc, stats, prefix))
        else:
            files.append(_entry(p, prefix + p.name, st, named=True))
        names.append(str(p.resolve()))
    return files, names


__all__ = ["CODECS", "FileEntry", "RECORD_KINDS", "SourceStats", "doc_hash", "order_hash", "resolve_files", "stdlib_dir"]
