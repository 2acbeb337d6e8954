"""The shard files of a token cache: one owner for their format, their writing and their checks.

A shard is two files under ``<entry>/shards/``:

``NAME.bin``
    token ids (little-endian uint16 when the vocabulary fits, else uint32): the shard's training
    documents, then its held-out documents, each document's ids followed by one EOS.
``NAME.idx``
    ``WSIDX001``, a little-endian uint32 ``n``, ``n`` bytes of JSON (the header: dtype, token and
    document counts per split, the ``.bin``'s sha256 and id range, the shard's resume point and the
    held-out candidates), zero padding to a multiple of 8, then ``int64[docs]`` (each document's end
    offset in the ``.bin``, training documents first) and ``uint64[docs]`` (each document's key hash).

The ``.bin`` is written under a temporary name and renamed, then the ``.idx`` the same way: a shard
is complete exactly when its ``.idx`` exists, so a killed write leaves only temporary files, which the
next ``prepare`` of the entry removes. Readers memory-map both.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
from pathlib import Path

import numpy as np

IDX_MAGIC = b"WSIDX001"
CANDIDATES = 16  # training documents with the smallest key hashes listed per shard (held-out top-up)
TMP = ".tmp"


def fsync_dir(path: Path) -> None:
    """Make renames in ``path`` durable. (checkpoint/write.py has the same; importing it here would import
    torch into every tokenizing worker.)"""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


class _Growing:
    """An int64/uint64 array that grows by doubling."""

    def __init__(self, dtype) -> None:
        self.a, self.n = np.empty(1024, dtype=dtype), 0

    def append(self, v: int) -> None:
        if self.n == len(self.a):
            self.a = np.concatenate([self.a, np.empty_like(self.a)])
        self.a[self.n] = v
        self.n += 1

    @property
    def values(self) -> np.ndarray:
        return self.a[: self.n]


class _Split:
    """One split's ids as written so far (a temporary file), its document ends and hashes."""

    def __init__(self, path: Path) -> None:
        self.path, self.fh = path, open(path, "wb", buffering=1 << 20)
        self.tokens, self.ends, self.hashes = 0, _Growing(np.int64), _Growing(np.uint64)

    def write(self, ids: np.ndarray) -> None:
        self.fh.write(memoryview(ids))
        self.tokens += len(ids)


class ShardWriter:
    """Documents into one shard: ``begin(hash, val)``, ``add(ids)``..., ``end()`` (or ``abort()``), then
    ``close(header)``; ``discard()`` removes what a failed write left."""

    def __init__(self, shard_dir: Path, name: str, dtype: np.dtype, eos: int) -> None:
        self.dir, self.name, self.dtype = shard_dir, name, np.dtype(dtype)
        self.eos = np.array([eos], dtype=self.dtype)
        self.train = _Split(shard_dir / f".{name}.bin{TMP}")
        self.val = _Split(shard_dir / f".{name}.val{TMP}")
        self.cur: tuple[_Split, int, int] | None = None  # the open document: split, start, hash

    @property
    def train_tokens(self) -> int:
        return self.train.tokens

    def begin(self, doc_hash: int, is_val: bool) -> None:
        split = self.val if is_val else self.train
        self.cur = (split, split.tokens, doc_hash)

    def add(self, ids: np.ndarray) -> None:
        self.cur[0].write(ids.astype(self.dtype, copy=False))

    def end(self) -> None:
        split, _, h = self.cur
        split.write(self.eos)
        split.ends.append(split.tokens)
        split.hashes.append(h)
        self.cur = None

    def abort(self) -> None:
        """Take back the open document's ids."""
        split, start, _ = self.cur
        split.fh.flush()
        split.fh.seek(start * self.dtype.itemsize)
        split.fh.truncate()
        split.tokens, self.cur = start, None

    def close(self, header: dict, resume: dict) -> dict:
        """Finish both files (held-out ids after the training ids), check them by reading them back, and
        rename them into place; returns the shard's record (``header`` plus counts, sha256, id range and
        the ``.idx``'s size; the ``.idx`` alone also holds ``resume``)."""
        t, v = self.train, self.val
        v.fh.close()
        with open(v.path, "rb") as src:
            while chunk := src.read(1 << 22):
                t.fh.write(chunk)
        t.fh.flush()
        os.fsync(t.fh.fileno())
        t.fh.close()
        os.unlink(v.path)
        n = t.tokens + v.tokens
        ends = np.concatenate([t.ends.values, v.ends.values + t.tokens])
        hashes = np.concatenate([t.hashes.values, v.hashes.values])
        record = {**header, "name": self.name, "dtype": self.dtype.name, "train_tokens": t.tokens,
                  "val_tokens": v.tokens, "train_docs": t.ends.n, "val_docs": v.ends.n, **_content(t.path, self.dtype, n),
                  "candidates": _candidates(t.ends.values, t.hashes.values)}
        os.replace(t.path, self.dir / f"{self.name}.bin")
        full = {**record, "resume": resume}
        _write_idx(self.dir / f"{self.name}.idx", full, ends, hashes)
        fsync_dir(self.dir)
        return {**record, "idx_bytes": idx_size(full)}

    def discard(self) -> None:
        for split in (self.train, self.val):
            try:
                split.fh.close()
            except OSError:
                pass
            split.path.unlink(missing_ok=True)


def _content(path: Path, dtype: np.dtype, n: int) -> dict:
    """sha256 and id range of a written ``.bin``, read back (the check that it holds ``n`` ids)."""
    h, lo, hi, count = hashlib.sha256(), None, None, 0
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 24):
            h.update(chunk)
            ids = np.frombuffer(chunk, dtype=dtype)
            count += len(ids)
            if len(ids):
                lo = int(ids.min()) if lo is None else min(lo, int(ids.min()))
                hi = int(ids.max()) if hi is None else max(hi, int(ids.max()))
    if count != n:
        raise OSError(f"{path} holds {count} ids after writing {n}")
    return {"sha256": h.hexdigest(), "id_min": lo, "id_max": hi}


def _candidates(ends: np.ndarray, hashes: np.ndarray) -> list[list[int]]:
    """``[[doc, hash, start, tokens], ...]`` of the training documents with the smallest key hashes."""
    if not len(ends):
        return []
    k = min(CANDIDATES, len(ends))
    pick = np.argsort(hashes, kind="stable")[:k]
    starts = np.concatenate([[0], ends[:-1]])
    return [[int(i), int(hashes[i]), int(starts[i]), int(ends[i] - starts[i])] for i in pick]


def _header_bytes(record: dict) -> bytes:
    body = json.dumps(record, sort_keys=True, separators=(",", ":")).encode()
    raw = IDX_MAGIC + struct.pack("<I", len(body)) + body
    return raw + b"\0" * (-len(raw) % 8)


def _write_idx(path: Path, record: dict, ends: np.ndarray, hashes: np.ndarray) -> None:
    tmp = path.with_name(f".{path.name}{TMP}")
    with open(tmp, "wb") as fh:
        fh.write(_header_bytes(record))
        fh.write(memoryview(np.ascontiguousarray(ends, dtype="<i8")))
        fh.write(memoryview(np.ascontiguousarray(hashes, dtype="<u8")))
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def read_idx_header(path: Path) -> dict:
    """The JSON header of a ``.idx`` (ValueError when the file is not one)."""
    with open(path, "rb") as fh:
        head = fh.read(12)
        if len(head) < 12 or head[:8] != IDX_MAGIC:
            raise ValueError("not a warmstart shard index")
        (n,) = struct.unpack("<I", head[8:])
        body = fh.read(n)
    if len(body) != n:
        raise ValueError("the shard index is truncated")
    rec = json.loads(body)
    if not isinstance(rec, dict):
        raise ValueError("the shard index header is not an object")
    return rec


def idx_size(header: dict) -> int:
    """The byte size of a ``.idx`` whose JSON header is ``header``."""
    return len(_header_bytes(header)) + 16 * (header["train_docs"] + header["val_docs"])


def doc_ends(path: Path, record: dict) -> np.ndarray:
    """The ``int64`` document ends of a shard (memory-mapped) from its manifest record."""
    docs = record["train_docs"] + record["val_docs"]
    if not docs:
        return np.empty(0, dtype=np.int64)
    return np.memmap(path, dtype="<i8", mode="r", offset=record["idx_bytes"] - 16 * docs, shape=(docs,))


def shard_files(name: str) -> tuple[str, str]:
    return f"{name}.bin", f"{name}.idx"


__all__ = ["CANDIDATES", "ShardWriter", "doc_ends", "fsync_dir", "idx_size", "read_idx_header", "shard_files"]
