"""The dataset a run trains on: a view of a token cache entry as training and held-out streams of windows.

``build_dataset`` resolves ``--data`` (raw sources, a prepared entry, a prepared mixture, or weighted
``PATH:WEIGHT`` sources), gets the tokenizer (given, or a byte-level BPE trained on the corpus),
brings the corpus's cache entry up to date (``prepare.prepare_entry``) and opens it.

Opening an entry (``open_entry``) reads its manifest and checks it against the shards' sizes and a
bounded sample of their ids, never a pass over all of them: start-up does not grow with the cache.
Every batch read is checked against the vocabulary as it is gathered. Shards are memory-mapped when
first read.

Streams and windows: the training stream is the shards' training parts in manifest order, the
held-out stream their held-out parts (``TokenStream``: segments of shards). Each is cut into
windows of ``seq_len + 1`` tokens at stride ``seq_len`` (inputs ``w[:-1]``, targets ``w[1:]``), so
every token is a target once per epoch; a window may span two shards of one stream, never the two
streams. Documents are separated by EOS; ``train_documents`` gives where documents begin inside
windows, from the shards' indexes.

The split is by document (``units.py``): a document is held out when the hash of its key falls
below ``val_fraction``. When that gives fewer than ``min_val_docs`` documents or ``seq_len + 1``
tokens, the training documents with the smallest hashes are moved over (from the candidates each
shard lists; the view only, the shards stay as written) until it does; when every document is held
out, the one with the largest hash trains instead; a corpus of one document is split by tokens. Roles: a training corpus (``holdout``) and an extra validation set (``eval``: every
document held out, ``build_eval_set``); both views share the corpus's one entry.
"""

from __future__ import annotations

import hashlib
import json
import math
import resource
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
from tokenizers import Tokenizer

from warmstart.data.manifest import (
    FORMAT, MANIFEST, OLD_FORMATS, SHARDS, TOKENIZER, damaged, damaged_units, read_manifest,
)
from warmstart.data.sampler import BatchSampler
from warmstart.data.settings import DataSettings
from warmstart.data.shards import doc_ends
from warmstart.data.sources import SourceStats
from warmstart.data.tokenizer import load_tokenizer, tokenizer_hash, vocab_size
from warmstart.errors import EmptyCorpusError, UsageError

HOLDOUT, EVAL = "holdout", "eval"  # the roles of a view
Log = Callable[[str], None]


def _doc_hash(key: str) -> float:
    """The split hash of a document key as a fraction in [0, 1) (held out below ``val_fraction``)."""
    from warmstart.data.sources import doc_hash

    return doc_hash(key) / 2.0**64


# ------------------------------------------------------------------ streams


class Shards:
    """The shard files of an entry, each memory-mapped on first use and kept mapped."""

    def __init__(self, entry: Path, dtype: str, records: list[dict]) -> None:
        self.entry, self.dtype, self.records = entry, np.dtype(dtype), records
        self._maps: dict[int, np.ndarray] = {}
        self._ends: dict[int, np.ndarray] = {}
        _room_for_files(2 * len(records))

    def ids(self, i: int) -> np.ndarray:
        if i not in self._maps:
            r = self.records[i]
            n = r["train_tokens"] + r["val_tokens"]
            self._maps[i] = np.memmap(self.entry / SHARDS / f"{r['name']}.bin", dtype=self.dtype, mode="r", shape=(n,))
        return self._maps[i]

    def ends(self, i: int) -> np.ndarray:
        if i not in self._ends:
            self._ends[i] = doc_ends(self.entry / SHARDS / f"{self.records[i]['name']}.idx", self.records[i])
        return self._ends[i]

    def name(self, i: int) -> str:
        return f"shards/{self.records[i]['name']}.bin"


def _room_for_files(n: int) -> None:
    """Every mapped shard holds a file descriptor: raise the soft limit toward the hard one if needed."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = n + 256
    if soft != resource.RLIM_INFINITY and soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want if hard == resource.RLIM_INFINITY else min(want, hard), hard))


class TokenStream:
    """A stream of token ids made of segments ``(shard, start, end)`` of an entry's shards."""

    def __init__(self, shards: Shards | None, segments: list[tuple[int, int, int]], dtype) -> None:
        self.shards, self.segments = shards, [s for s in segments if s[2] > s[1]]
        self.dtype = np.dtype(dtype)
        lengths = np.array([e - s for _, s, e in self.segments], dtype=np.int64)
        self.starts = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)

    def __len__(self) -> int:
        return int(self.starts[-1])

    @property
    def memmapped(self) -> bool:
        return all(isinstance(self.shards.ids(i), np.memmap) for i, _, _ in self.segments) if self.shards else True

    def pieces(self, start: int, stop: int):
        """``(segment index, shard, shard start, shard stop)`` covering stream positions ``[start, stop)``."""
        k = int(np.searchsorted(self.starts, start, side="right")) - 1
        while start < stop and k < len(self.segments):
            shard, s, e = self.segments[k]
            lo = s + start - int(self.starts[k])
            hi = min(e, lo + stop - start)
            yield k, shard, lo, hi
            start += hi - lo
            k += 1

    def read(self, start: int, stop: int) -> np.ndarray:
        stop = min(stop, len(self))
        parts = [self.shards.ids(shard)[lo:hi] for _, shard, lo, hi in self.pieces(start, stop)]
        if len(parts) == 1:
            return parts[0]
        return np.concatenate(parts) if parts else np.empty(0, dtype=self.dtype)

    def __getitem__(self, item):
        if isinstance(item, slice):
            start, stop, step = item.indices(len(self))
            return self.read(start, stop)[::step] if step != 1 else self.read(start, stop)
        i = int(item) + (len(self) if int(item) < 0 else 0)
        if not 0 <= i < len(self):
            raise IndexError(item)
        return self.read(i, i + 1)[0]

    def __array__(self, dtype=None, copy=None):
        out = np.asarray(self.read(0, len(self)))
        return out.astype(dtype) if dtype is not None else out

    def doc_starts(self, start: int, stop: int) -> np.ndarray:
        """Positions (relative to ``start``) in ``[start, stop)`` where a document begins."""
        out = []
        for k, shard, lo, hi in self.pieces(start, stop):
            ends = self.shards.ends(shard)  # the end of each document is where the next one begins
            begins = np.asarray(ends[int(np.searchsorted(ends, lo)) : int(np.searchsorted(ends, hi))])
            if lo == 0:
                begins = np.concatenate([[0], begins])
            out.append(begins.astype(np.int64) + int(self.starts[k]) - self.segments[k][1] - start)
        return np.concatenate(out) if out else np.empty(0, dtype=np.int64)


def _gather(stream: TokenStream, indices: np.ndarray, seq_len: int, vocab: int) -> np.ndarray:
    out = np.empty((len(indices), seq_len + 1), dtype=np.int64)
    for row, i in enumerate(indices):
        s = int(i) * seq_len
        out[row] = stream.read(s, s + seq_len + 1)
    if len(out) and int(out.max()) >= vocab:
        start = int(indices[int(np.argmax(out.max(axis=1)))]) * seq_len
        where = [stream.shards.name(sh) for _, sh, lo, hi in stream.pieces(start, start + seq_len + 1)
                 if int(stream.shards.ids(sh)[lo:hi].max()) >= vocab][0]
        raise damaged(stream.shards.entry / where, f"{where} holds token id {int(out.max())}, past the tokenizer's "
                                                   f"{vocab} ids")
    return out


# ------------------------------------------------------------------ the dataset


@dataclass
class TokenDataset:
    train: TokenStream
    val: TokenStream
    seq_len: int
    tokenizer: Tokenizer
    eos_id: int
    fingerprint: str  # recorded in checkpoints (warmstart.json data_fingerprint)
    cache_path: Path
    sources: list[str]
    meta: dict = field(default_factory=dict)

    @property
    def vocab_size(self) -> int:
        return vocab_size(self.tokenizer)

    @property
    def n_train_windows(self) -> int:
        return max(0, (len(self.train) - 1) // self.seq_len)

    @property
    def n_val_windows(self) -> int:
        return max(0, (len(self.val) - 1) // self.seq_len)

    def train_windows(self, indices: np.ndarray) -> np.ndarray:
        return _gather(self.train, indices, self.seq_len, self.meta["vocab_size"])

    def train_documents(self, indices: np.ndarray) -> list[np.ndarray]:
        """For each window, the positions inside it where a document begins (EOS precedes each)."""
        return [self.train.doc_starts(int(i) * self.seq_len, int(i) * self.seq_len + self.seq_len + 1)
                for i in indices]

    def val_window_indices(self, eval_tokens: int) -> np.ndarray:
        """The fixed validation windows: the first ``eval_tokens // seq_len`` (at least one)."""
        n = max(1, min(self.n_val_windows, eval_tokens // self.seq_len))
        return np.arange(n, dtype=np.int64)

    def val_windows(self, indices: np.ndarray) -> np.ndarray:
        return _gather(self.val, indices, self.seq_len, self.meta["vocab_size"])

    def sampler(self, seed: int) -> BatchSampler:
        """The data cursor of a run on this dataset."""
        return BatchSampler(self.n_train_windows, seed=seed)

    def drawn(self, sampler: BatchSampler) -> None:
        """The sources with their weights and tokens drawn: a mixture's record; one corpus has none."""
        return None

    def summary(self) -> str:
        m = self.meta
        stats = SourceStats()
        stats.merge(m.get("stats", {}))
        return (f"data: {m.get('train_docs', '?')} train / {m.get('val_docs', '?')} val documents, "
                f"{len(self.train):,} train / {len(self.val):,} val tokens, "
                f"{self.n_train_windows:,} windows of {self.seq_len}"
                + (f", {stats.n_skipped} files or records skipped ({stats.line()})" if stats.n_skipped else "")
                + f"; fingerprint {self.fingerprint}")


# ------------------------------------------------------------------ views of an entry


@dataclass
class _View:
    train: list[tuple[int, int, int]]
    val: list[tuple[int, int, int]]
    train_docs: int
    val_docs: int


def _candidates(shards: Shards, full: bool) -> list[tuple[int, int, int, int, int]]:
    """``(hash, shard, doc, start, tokens)`` of training documents, smallest hashes first: the ones each
    shard lists (``full``: every training document, read from the indexes)."""
    out = []
    for i, r in enumerate(shards.records):
        if not full:
            out += [(h, i, d, s, n) for d, h, s, n in r["candidates"]]
            continue
        ends, docs = shards.ends(i)[: r["train_docs"]], r["train_docs"] + r["val_docs"]
        path = shards.entry / SHARDS / f"{r['name']}.idx"
        hashes = np.memmap(path, dtype="<u8", mode="r", offset=r["idx_bytes"] - 8 * docs, shape=(docs,))
        starts = np.concatenate([[0], ends[:-1]])
        out += [(int(hashes[d]), i, d, int(starts[d]), int(ends[d] - starts[d])) for d in range(r["train_docs"])]
    return sorted(out)


def _top_up(shards: Shards, v: _View, total: int, need_docs: int, need_tokens: int) -> None:
    """Move the training documents with the smallest key hashes to the held-out view until it holds
    ``need_docs`` documents and ``need_tokens`` tokens (never the last training document)."""
    val_tok = sum(e - s for _, s, e in v.val)
    moved: list[tuple[int, int, int]] = []
    for full in (False, True):
        for h, i, d, start, n in _candidates(shards, full):
            if (v.val_docs >= need_docs and val_tok >= need_tokens) or v.val_docs + 1 >= total:
                break
            if (i, start, start + n) in moved:
                continue
            moved.append((i, start, start + n))
            v.val_docs, v.train_docs, val_tok = v.val_docs + 1, v.train_docs - 1, val_tok + n
    v.val += moved
    v.train = _without(v.train, moved)


def _without(segments: list[tuple[int, int, int]], moved: list[tuple[int, int, int]]) -> list[tuple[int, int, int]]:
    """``segments`` with the ``moved`` documents (each inside one of them) cut out."""
    holes: dict[int, list[tuple[int, int]]] = {}
    for i, s, e in moved:
        holes.setdefault(i, []).append((s, e))
    out = []
    for i, s, e in segments:
        for hs, he in sorted(h for h in holes.get(i, []) if s <= h[0] and h[1] <= e):
            out.append((i, s, hs))
            s = he
        out.append((i, s, e))
    return out


def _keep_one_training(shards: Shards, v: _View) -> None:
    """Every document held out (their hashes all fell below ``val_fraction``): the held-out document with
    the largest key hash goes back to training, so the split never leaves training empty."""
    best = None
    for i, r in enumerate(shards.records):
        docs = r["train_docs"] + r["val_docs"]
        if not r["val_docs"]:
            continue
        path = shards.entry / SHARDS / f"{r['name']}.idx"
        hashes = np.memmap(path, dtype="<u8", mode="r", offset=r["idx_bytes"] - 8 * docs, shape=(docs,))
        ends = shards.ends(i)
        for d in range(r["train_docs"], docs):
            start = int(ends[d - 1]) if d else 0
            if best is None or int(hashes[d]) > best[0]:
                best = (int(hashes[d]), i, start, int(ends[d]))
    _, i, start, end = best
    v.train, v.val = [(i, start, end)], _without(v.val, [(i, start, end)])
    v.train_docs, v.val_docs = 1, v.val_docs - 1


def _view(shards: Shards, role: str, seq_len: int, min_val_docs: int, val_fraction: float) -> _View:
    recs = shards.records
    if role == EVAL:
        return _View([], [(i, 0, r["train_tokens"] + r["val_tokens"]) for i, r in enumerate(recs)], 0,
                     sum(r["train_docs"] + r["val_docs"] for r in recs))
    v = _View([(i, 0, r["train_tokens"]) for i, r in enumerate(recs)],
              [(i, r["train_tokens"], r["train_tokens"] + r["val_tokens"]) for i, r in enumerate(recs)],
              sum(r["train_docs"] for r in recs), sum(r["val_docs"] for r in recs))
    total = v.train_docs + v.val_docs
    if total == 1:  # one document: split by tokens
        i, s, e = next(seg for seg in v.train + v.val if seg[2] > seg[1])
        n_val = max(seq_len + 1, int(math.ceil((e - s) * val_fraction)))
        return _View([(i, s, max(s, e - n_val))], [(i, max(s, e - n_val), e)], 1, 1)
    if v.train_docs == 0:
        _keep_one_training(shards, v)
    need = min(min_val_docs, total - 1)
    if v.val_docs < need or sum(e - s for _, s, e in v.val) < seq_len + 1:
        _top_up(shards, v, total, need, seq_len + 1)
    return v


def _fingerprint(shards: Shards, v: _View, role: str, seq_len: int) -> str:
    sha = [r["sha256"] for r in shards.records]
    blob = json.dumps([FORMAT, role, seq_len, [[sha[i], s, e] for i, s, e in v.train],
                       [[sha[i], s, e] for i, s, e in v.val]])
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def _entry_tokenizer(entry: Path, m: dict, given: Tokenizer | None) -> Tokenizer:
    try:
        tok = load_tokenizer(entry / TOKENIZER)
    except UsageError as err:
        raise damaged(entry / TOKENIZER, err.found) from None
    if tokenizer_hash(tok) != m["tokenizer_sha256"] or vocab_size(tok) != m["vocab_size"]:
        raise damaged(entry / TOKENIZER, "tokenizer.json is not the tokenizer manifest.json records (sha256)")
    if given is not None and tokenizer_hash(given) != m["tokenizer_sha256"]:
        raise UsageError(
            "the prepared token cache was built with a different tokenizer than the one this run uses",
            why="token ids from one tokenizer mean nothing to another",
            fix="run `warmstart prepare` again with this tokenizer, or point --data at the raw corpus", path=entry)
    return given or tok


def _stats(m: dict) -> SourceStats:
    st = SourceStats()
    for key, rec in m["files"].items():
        if rec.get("kind") == "skip":
            st.skip(rec.get("reason", "skipped"), key)
        else:
            st.merge({"files": 1, "documents": rec.get("documents", 0), "bytes": rec.get("bytes", 0),
                      "skipped": rec.get("skipped", {})})
    for reason, n in m.get("listing", {}).items():
        st.skipped[reason] = st.skipped.get(reason, 0) + n
    return st


def _too_small(v: _View, train: TokenStream, val: TokenStream, role: str, seq_len: int, entry: Path) -> None:
    need = seq_len + 1
    if len(val) < need or (len(train) < need and role != EVAL):
        raise EmptyCorpusError(
            f"the corpus is too small: {len(train) + len(val)} tokens in {v.train_docs + v.val_docs} documents, but "
            + ("an evaluation set needs" if role == EVAL else "training needs")
            + f" at least one window of seq_len+1 = {need} tokens"
            + ("" if role == EVAL else " for train and for validation each"),
            fix="use a larger corpus or a smaller --seq-len", path=entry)


def open_entry(entry: str | Path, *, seq_len: int, tokenizer: Tokenizer | None = None, role: str = HOLDOUT,
               min_val_docs: int = 2) -> TokenDataset:
    """The view of a cache entry for a run, its manifest and shards checked first (DamagedCacheError,
    WS207, naming the damaged file; no pass over the ids)."""
    entry = Path(entry)
    m = read_manifest(entry)
    tok = _entry_tokenizer(entry, m, tokenizer)
    for why in damaged_units(entry, m, m["vocab_size"]).values():
        raise damaged(entry / why.split(" ", 1)[0], why)
    shards = Shards(entry, m["dtype"], [s for u in m["units"] for s in u["shards"]])
    stats = _stats(m)
    if not shards.records or not any(r["train_docs"] + r["val_docs"] for r in shards.records):
        raise EmptyCorpusError(
            f"the corpus {', '.join(m['sources'])} has no usable text: {stats.files} files read"
            + (f", skipped: {stats.line()}" if stats.n_skipped else "")
            + (f" (e.g. {', '.join(stats.examples)})" if stats.examples else ""),
            why="there is nothing to train on", fix="point --data at text, or check --include and --text-field")
    v = _view(shards, role, seq_len, min_val_docs, m["settings"].get("val_fraction", 0.02))
    train, val = TokenStream(shards, v.train, m["dtype"]), TokenStream(shards, v.val, m["dtype"])
    _too_small(v, train, val, role, seq_len, entry)
    meta = {"format": FORMAT, "role": role, "dtype": m["dtype"], "vocab_size": m["vocab_size"],
            "eos_id": m["eos_id"], "tokenizer_sha256": m["tokenizer_sha256"], "train_docs": v.train_docs,
            "val_docs": v.val_docs, "shards": len(shards.records), "stats": stats.to_dict(), "sources": m["sources"]}
    return TokenDataset(train=train, val=val, seq_len=seq_len, tokenizer=tok, eos_id=m["eos_id"],
                        fingerprint=_fingerprint(shards, v, role, seq_len), cache_path=entry,
                        sources=list(m["sources"]), meta=meta)


def is_token_cache(path: str | Path) -> bool:
    """A prepared cache entry (of this format or an earlier one, which opening then refuses by name)."""
    p = Path(path)
    if (p / MANIFEST).is_file():
        return True
    try:
        meta = json.loads((p / "meta.json").read_text(encoding="utf-8")) if (p / "meta.json").is_file() else None
    except (OSError, ValueError):
        return False
    return isinstance(meta, dict) and meta.get("format") in OLD_FORMATS


def load_cache(path: str | Path, *, seq_len: int | None = None, tokenizer: Tokenizer | None = None,
               role: str = HOLDOUT) -> TokenDataset:
    """A prepared entry given as ``--data`` (or ``--eval-data``)."""
    p = Path(path)
    if not (p / MANIFEST).is_file():
        raise damaged(p / "meta.json", "the token cache was written by an earlier warmstart (format "
                                       f"{OLD_FORMATS[0]}), which this one does not read")
    return open_entry(p, seq_len=seq_len or DataSettings().seq_len, tokenizer=tokenizer, role=role)
