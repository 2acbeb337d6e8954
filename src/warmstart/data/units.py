"""Tokenizing one unit: a group of whole files, in order, into a sequence of shards.

A unit is what one worker tokenizes (``manifest.plan`` forms them from the files to tokenize, the
same way whatever the number of workers). Its documents go, in file order, to the shard being
written: a training document (its key hash at or above ``val_fraction``) to the shard's training
part, a held-out one to its held-out part; every document ends with EOS. Pieces are tokenized in
batches (``encode_batch_fast``); a batch ends after ``BATCH_PIECES`` pieces or ``BATCH_BYTES`` of text,
at a document's end. A shard ends after a batch once its training part holds ``shard_tokens``: its
``.idx`` records where reading stands (file, record, the statistics so far), so a unit started again
continues after its last complete shard and writes the very shards an uninterrupted run writes
(batches after a shard's end begin at the same piece in both).
"""

from __future__ import annotations

import errno
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from warmstart.data.readers import Abort, Piece, ReadOptions, read_pieces
from warmstart.data.shards import ShardWriter, read_idx_header
from warmstart.data.sources import FileEntry, SourceStats, doc_hash
from warmstart.errors import CacheWriteError

BATCH_PIECES = 512
BATCH_BYTES = 4 << 20
HARD_BYTES = 16 << 20  # a batch inside one long document ends here, whatever
WRITE_ERRORS = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EIO, errno.EROFS)
Progress = Callable[[int, int, int], None]  # (input bytes, documents, tokens) done since the last call


@dataclass
class UnitSpec:
    id: str
    files: list[FileEntry]
    shard_dir: Path
    dtype: str
    eos: int
    text_field: str
    skip_bad: bool
    val_fraction: float
    shard_tokens: int
    max_bytes: int | None = None  # the corpus byte budget (a unit of every file, read in order)

    def shard_name(self, seq: int) -> str:
        return f"{self.id}-{seq:05d}"


@dataclass
class UnitState:
    """Where reading a unit stands: file index, next record, per-file statistics, shards written."""

    file: int = 0
    record: int = 0
    files: list[dict] = field(default_factory=list)
    shards: list[dict] = field(default_factory=list)
    stopped: bool = False  # the byte budget ran out

    @property
    def text_bytes(self) -> int:
        return sum(f["bytes"] for f in self.files)


def resume_state(spec: UnitSpec) -> UnitState:
    """The state after the unit's last complete shard (shards 0..k all complete and of their recorded
    sizes), or a fresh one."""
    state, seq, size = UnitState(), 0, np.dtype(spec.dtype).itemsize
    while True:
        bin_path, idx_path = (spec.shard_dir / f"{spec.shard_name(seq)}{ext}" for ext in (".bin", ".idx"))
        try:
            header = read_idx_header(idx_path)
            header["idx_bytes"] = idx_path.stat().st_size
            whole = bin_path.stat().st_size == (header["train_tokens"] + header["val_tokens"]) * size
        except (OSError, ValueError, KeyError, TypeError):
            return state
        if not whole or header.get("unit") != spec.id or header.get("seq") != seq:
            return state
        resume = header.pop("resume")
        state = UnitState(resume["file"], resume["record"], resume["files"], state.shards + [header],
                          resume.get("stopped", False))
        seq += 1


class _Tokenize:
    """Batches of pieces through the tokenizer into the shard writer."""

    def __init__(self, spec: UnitSpec, tokenizer, state: UnitState, progress: Progress) -> None:
        self.spec, self.tok, self.state, self.progress = spec, tokenizer, state, progress
        self.dtype = np.dtype(spec.dtype)
        self.threshold = int(spec.val_fraction * 2.0**64)
        self.writer: ShardWriter | None = None
        self.open_key: str | None = None
        self.batch: list[Piece] = []
        self.batch_bytes = 0

    def shard(self) -> ShardWriter:
        if self.writer is None:
            self.writer = ShardWriter(self.spec.shard_dir, self.spec.shard_name(len(self.state.shards)),
                                      self.dtype, self.spec.eos)
        return self.writer

    def full(self) -> bool:
        ended = not self.batch or self.batch[-1].last
        big = len(self.batch) >= BATCH_PIECES or self.batch_bytes >= BATCH_BYTES
        return (big and ended) or self.batch_bytes >= HARD_BYTES

    def flush(self) -> bool:
        """Tokenize and write the batch; True when it ended at a document's end."""
        if not self.batch:
            return True
        encode = getattr(self.tok, "encode_batch_fast", self.tok.encode_batch)
        w, tokens, docs = self.shard(), 0, 0
        for piece, enc in zip(self.batch, encode([p.text for p in self.batch], add_special_tokens=False)):
            if self.open_key is None:
                h = doc_hash(piece.key)
                w.begin(h, h < self.threshold)
                self.open_key = piece.key
            ids = np.array(enc.ids, dtype=self.dtype)
            w.add(ids)
            tokens += len(ids)
            if piece.last:
                w.end()
                self.open_key, tokens, docs = None, tokens + 1, docs + 1
        ended = self.batch[-1].last
        self.batch, self.batch_bytes = [], 0
        self.progress(0, docs, tokens)
        return ended

    def abort(self) -> None:
        self.flush()
        if self.open_key is not None:
            self.shard().abort()
            self.open_key = None


def _file_stats(state: UnitState, i: int, entry: FileEntry) -> SourceStats:
    while len(state.files) <= i:
        state.files.append({"key": entry.key, "files": 1, "documents": 0, "bytes": 0, "skipped": {}, "examples": []})
    d = state.files[i]
    st = SourceStats()
    st.merge(d)
    return st


def _save_stats(state: UnitState, i: int, st: SourceStats, digest: dict | None = None) -> None:
    d = {"key": state.files[i]["key"], **st.to_dict()}
    for k in ("skipped_binary", "skipped_empty", "skipped_undecodable"):
        d.pop(k)
    if digest:
        d["sha256"] = digest["sha256"]
    state.files[i] = d


def _cut(t: _Tokenize, state: UnitState, i: int, record: int) -> None:
    """End the shard at the end of a batch: its ``.idx`` records where reading resumes (file ``i``,
    record ``record``; ``i == len(files)``: the unit is done)."""
    state.file, state.record = i, record
    resume = {"file": i, "record": record, "files": state.files, "stopped": state.stopped}
    state.shards.append(t.writer.close({"unit": t.spec.id, "seq": len(state.shards)}, resume))
    t.writer = None


def _read_file(t: _Tokenize, state: UnitState, i: int, start: int) -> None:
    """Every piece of file ``i`` from record ``start`` through the tokenizer."""
    spec, entry = t.spec, t.spec.files[i]
    st = _file_stats(state, i, entry)
    before = sum(f["bytes"] for f in state.files[:i])
    budget = None if spec.max_bytes is None else (lambda: spec.max_bytes - before - st.bytes)
    opts = ReadOptions(spec.text_field, spec.skip_bad, budget or (lambda: None))
    digest = None if spec.max_bytes is not None else {}
    for item in read_pieces(entry, opts, st, start, digest):
        if isinstance(item, Abort):
            t.abort()
            st.skip(item.reason, entry.key)
            continue
        t.batch.append(item)
        t.batch_bytes += item.nbytes
        st.bytes += item.nbytes
        st.documents += item.last
        if t.full() and t.flush() and t.writer.train_tokens >= spec.shard_tokens:
            _save_stats(state, i, st)
            _cut(t, state, i, item.record + 1)
        if budget is not None and item.last and budget() <= 0:
            state.stopped = True
            break
    _save_stats(state, i, st, digest)
    t.progress(entry.size, 0, 0)


def run_unit(spec: UnitSpec, tokenizer, progress: Progress = lambda b, d, t: None) -> UnitState:
    """Tokenize the unit (continuing after its last complete shard); returns its final state, whose
    ``shards`` are the unit's shard records and ``files`` each file's statistics."""
    state = resume_state(spec)
    t = _Tokenize(spec, tokenizer, state, progress)
    try:
        for i in range(state.file, len(spec.files)):
            if state.stopped:
                break
            _read_file(t, state, i, state.record if i == state.file else 0)
        t.flush()
        if t.writer is not None and (t.writer.train_tokens or t.writer.val.tokens):
            _cut(t, state, len(spec.files), 0)
    except OSError as err:
        if t.writer is not None:
            t.writer.discard()
        if err.errno in WRITE_ERRORS:
            raise cache_write_error(spec.shard_dir, err) from None
        raise
    except BaseException:
        if t.writer is not None:
            t.writer.discard()
        raise
    for i in range(len(state.files), len(spec.files)):  # files the byte budget left unread
        state.files.append({"key": spec.files[i].key, "files": 0, "documents": 0, "bytes": 0,
                            "skipped": {"past --max-corpus-bytes": 1}, "examples": []})
    return state


def cache_write_error(where: Path, err: OSError) -> CacheWriteError:
    what = {errno.ENOSPC: "no space is left on the device", errno.EDQUOT: "the disk quota is used up",
            errno.EFBIG: "a file grew past the size this process may write", errno.EROFS: "the file system is "
            "read-only"}.get(err.errno, f"an I/O error ({err.strerror})")
    return CacheWriteError(f"the token cache could not be written: {what}",
                           why="the shard being written was removed; every shard completed before is kept",
                           fix="free space (or pass --cache-dir on another disk) and run the same command again: "
                               "it continues after the last complete shard", path=where)


__all__ = ["UnitSpec", "UnitState", "cache_write_error", "resume_state", "run_unit"]
