"""Corpus sources: text files, directories (``--include`` globs), JSONL, Parquet, and the
default corpus (the Python standard library's own ``.py`` files).

A source yields ``Document(key, text)``; ``key`` is a stable relative name (relative path,
plus ``#line-N`` / ``#row-N`` / ``#part-N`` for records inside one file). The train/val split
hashes ``key``, so it does not depend on where the corpus sits on disk.

``describe_files`` gives the (relative path, size, mtime) list that the cache fingerprint
hashes; it is computed from ``stat`` alone, before any file is read.
"""

from __future__ import annotations

import fnmatch
import json
import os
import sysconfig
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from warmstart.errors import UsageError
from warmstart.files import is_regular, refuse_special

DEFAULT_INCLUDE = ("*.py", "*.txt", "*.md", "*.rst")
STDLIB_EXCLUDE_DIRS = {"test", "tests", "idle_test", "site-packages", "dist-packages", "__pycache__",
                       "lib2to3", "turtledemo"}
TEXT_CHUNK_BYTES = 64 * 1024  # a single plain-text file is split into ~64 KiB pseudo-documents


@dataclass
class Document:
    key: str
    text: str


@dataclass
class SourceStats:
    files: int = 0
    documents: int = 0
    bytes: int = 0
    skipped_binary: int = 0
    skipped_empty: int = 0
    skipped_undecodable: int = 0
    skipped_examples: list[str] = field(default_factory=list)

    def skip(self, kind: str, key: str) -> None:
        setattr(self, f"skipped_{kind}", getattr(self, f"skipped_{kind}") + 1)
        if len(self.skipped_examples) < 5:
            self.skipped_examples.append(f"{key} ({kind})")

    @property
    def skipped(self) -> int:
        return self.skipped_binary + self.skipped_empty + self.skipped_undecodable

    def to_dict(self) -> dict:
        return {"files": self.files, "documents": self.documents, "bytes": self.bytes,
                "skipped_binary": self.skipped_binary, "skipped_empty": self.skipped_empty,
                "skipped_undecodable": self.skipped_undecodable,
                "skipped_examples": list(self.skipped_examples)}


@dataclass
class FileEntry:
    path: Path  # absolute
    key: str  # relative name, used for the split hash
    kind: str  # "text" | "jsonl" | "parquet"
    size: int
    mtime_ns: int


def stdlib_dir() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def _kind_of(path: Path) -> str:
    name = path.name.lower()
    if name.endswith(".jsonl") or name.endswith(".ndjson"):
        return "jsonl"
    if name.endswith(".parquet"):
        return "parquet"
    return "text"


def _entry(path: Path, key: str, kind: str | None = None) -> FileEntry:
    st = path.stat()
    return FileEntry(path, key, kind or _kind_of(path), st.st_size, st.st_mtime_ns)


def _walk(root: Path, include: tuple[str, ...], exclude_dirs: set[str] | None = None) -> list[FileEntry]:
    out: list[FileEntry] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames
                             if not d.startswith(".") and not (exclude_dirs and d in exclude_dirs))
        for fn in sorted(filenames):
            if fn.startswith("."):
                continue
            full = Path(dirpath) / fn
            rel = full.relative_to(root).as_posix()
            if not any(fnmatch.fnmatch(fn, pat) or fnmatch.fnmatch(rel, pat) for pat in include):
                continue
            if not full.is_file():
                continue
            out.append(_entry(full, rel))
    return out


def resolve_files(data: list[str] | tuple[str, ...] | None, include: list[str] | tuple[str, ...] | None = None,
                  ) -> tuple[list[FileEntry], list[str]]:
    """The files of the corpus and human names of the sources (for provenance ``data_sources``)."""
    inc = tuple(include) if include else DEFAULT_INCLUDE
    if not data:
        root = stdlib_dir()
        files = _walk(root, ("*.py",), STDLIB_EXCLUDE_DIRS)
        return files, [f"python-stdlib:{root}"]
    files: list[FileEntry] = []
    names: list[str] = []
    multi = len(data) > 1
    for i, spec in enumerate(data):
        p = Path(spec).expanduser()
        if refuse_special(p, "data source") is None:  # a FIFO or a device is refused by name, never opened
            raise UsageError(f"data source '{spec}' does not exist",
                             fix="pass a text file, a directory, a .jsonl/.parquet file, or a prepared "
                                 "token cache to --data", path=spec)
        prefix = f"{i}:" if multi else ""
        if p.is_dir():
            found = _walk(p, inc)
            for f in found:
                f.key = prefix + f.key
            files.extend(found)
        else:
            files.append(_entry(p, prefix + p.name))
        names.append(str(p.resolve()))
    return files, names


SNIFF = 8192  # bytes looked at for a NUL: a file holding one there is binary


def _open_regular(path: Path):
    """``path`` opened for reading bytes; OSError for anything but a regular file (never opened)."""
    if not is_regular(path, "corpus file"):
        raise OSError(f"{path} is not a regular file")
    return open(path, "rb")


def _decode(raw: bytes) -> str | None:
    if b"\x00" in raw[:SNIFF]:
        return None  # binary
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return ""  # undecodable marker (distinct from None)


def _split_text(text: str, key: str) -> Iterator[Document]:
    if len(text) <= TEXT_CHUNK_BYTES:
        yield Document(key, text)
        return
    part, start = 0, 0
    while start < len(text):
        end = min(len(text), start + TEXT_CHUNK_BYTES)
        if end < len(text):
            nl = text.rfind("\n", start, end)
            if nl > start:
                end = nl + 1
        yield Document(f"{key}#part-{part}", text[start:end])
        part += 1
        start = end


def iter_documents(files: list[FileEntry], *, text_field: str = "text", stats: SourceStats,
                   max_bytes: int | None = None, split_single_text: bool = True) -> Iterator[Document]:
    """Yield documents; binary / empty / undecodable inputs are skipped and counted in ``stats``."""
    total = 0
    for f in files:
        if max_bytes is not None and total >= max_bytes:
            break
        stats.files += 1
        if f.kind == "parquet":
            docs = _parquet_docs(f, text_field, stats)
        elif f.kind == "jsonl":
            docs = _jsonl_docs(f, text_field, stats)
        else:
            try:
                raw = read_bounded(f.path, f.size, None if max_bytes is None else max_bytes - total)
            except OSError:
                stats.skip("undecodable", f.key)
                continue
            raw = _whole_chars(raw) if len(raw) < f.size else raw
            if not raw.strip():
                stats.skip("empty", f.key)
                continue
            text = _decode(raw)
            if text is None:
                stats.skip("binary", f.key)
                continue
            if text == "":
                stats.skip("undecodable", f.key)
                continue
            docs = _split_text(text, f.key) if (split_single_text and len(files) == 1) else iter(
                [Document(f.key, text)])
        for d in docs:
            stats.documents += 1
            n = len(d.text.encode("utf-8", errors="replace"))
            stats.bytes += n
            total += n
            yield d
            if max_bytes is not None and total >= max_bytes:
                return  # the byte budget bounds reading within a file too


def read_bounded(path: Path, size: int, budget: int | None = None) -> bytes:
    """A regular file's bytes, at most the ``size`` it had when listed (a file that grows meanwhile is
    not followed) and at most ``budget`` (the corpus byte budget left), never a special file. A file
    whose first 8 KiB hold a NUL byte (binary, e.g. a huge sparse file) gives those 8 KiB only."""
    limit = size if budget is None else max(0, min(size, budget))
    with _open_regular(path) as fh:
        head = fh.read(min(limit, SNIFF))
        return head if b"\x00" in head else head + fh.read(limit - len(head))


def _whole_chars(raw: bytes) -> bytes:
    """Bytes cut at a budget with the partial UTF-8 character at their end dropped."""
    for k in range(1, min(4, len(raw)) + 1):
        lead = raw[-k]
        if lead & 0xC0 != 0x80:  # ASCII or the lead byte of the last character
            need = 1 if lead < 0x80 else 2 if lead < 0xE0 else 3 if lead < 0xF0 else 4
            return raw if need <= k else raw[:-k]
    return raw


def _lines(fh, size: int) -> Iterator[bytes]:
    """The lines of a file, read up to the ``size`` it had when listed (never past it)."""
    left = size
    while left > 0:
        line = fh.readline(left)
        if not line:
            return
        left -= len(line)
        yield line


def _jsonl_docs(f: FileEntry, text_field: str, stats: SourceStats) -> Iterator[Document]:
    try:
        fh = _open_regular(f.path)
    except OSError:
        stats.skip("undecodable", f.key)
        return
    with fh:
        for n, line in enumerate(_lines(fh, f.size)):
            if not line.strip():
                continue
            key = f"{f.key}#line-{n}"
            try:
                rec = json.loads(line)
            except (json.JSONDecodeError, UnicodeDecodeError):
                stats.skip("undecodable", key)
                continue
            text = rec.get(text_field) if isinstance(rec, dict) else None
            if not isinstance(text, str):
                if isinstance(rec, dict) and text_field not in rec:
                    raise UsageError(
                        f"JSONL record {key} has no field '{text_field}' (fields: {', '.join(list(rec)[:8])})",
                        fix="pass --text-field NAME naming the field that holds the text", path=f.path)
                stats.skip("undecodable", key)
                continue
            if not text.strip():
                stats.skip("empty", key)
                continue
            yield Document(key, text)


def _parquet_docs(f: FileEntry, text_field: str, stats: SourceStats) -> Iterator[Document]:
    try:
        import pyarrow.parquet as pq  # type: ignore
    except ImportError:
        raise UsageError(f"{f.path} is a Parquet file but pyarrow is not installed",
                         fix="pip install pyarrow (or 'warmstart[parquet]'), or convert the data to JSONL",
                         path=f.path) from None
    pf = pq.ParquetFile(f.path)
    if text_field not in pf.schema_arrow.names:
        raise UsageError(f"Parquet file has no column '{text_field}' (columns: {', '.join(pf.schema_arrow.names)})",
                         fix="pass --text-field NAME", path=f.path)
    row = 0
    for batch in pf.iter_batches(columns=[text_field]):
        for text in batch.column(0).to_pylist():
            key = f"{f.key}#row-{row}"
            row += 1
            if not isinstance(text, str) or not text.strip():
                stats.skip("empty", key)
                continue
            yield Document(key, text)
