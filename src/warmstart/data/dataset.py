"""Tokenize, split by document, pack, and cache as memory-mapped token arrays.

Layout of one cache entry (``<cache>/<key>/``)::

    meta.json        format, key, fingerprint, dtype, token counts, document counts, skip counts
    tokenizer.json   the tokenizer the ids belong to
    train.bin        uint16 (vocab <= 65536) or uint32 ids, documents separated by EOS
    val.bin          same, held-out documents

``key`` hashes the file list (relative names, sizes, mtimes), the tokenizer (sha256 of
``tokenizer.to_str()``) and the settings (split, seq_len, text field, byte budget), so any
change to any of them builds a fresh entry. Entries are written under a temporary name and
renamed into place; a half-written entry is never read.

Packing: the EOS-separated token stream of each split is cut into windows of ``seq_len + 1``
tokens at stride ``seq_len`` (inputs ``w[:-1]``, targets ``w[1:]``), so every token is a target
exactly once per epoch.

The split is by document: a document goes to validation when the hash of its key falls below
``val_fraction``; when that yields too few documents or tokens, the train documents with the
smallest hashes are moved over until validation holds at least ``min_val_docs`` documents and
``seq_len + 1`` tokens (a corpus of a single document falls back to a token split).

Roles: a training corpus (``holdout``, above) and an extra validation set (``eval``,
``build_eval_set``: every document goes to ``val.bin``, ``train.bin`` is empty; its key holds
``"role": "eval"`` instead of the split settings, so it does not depend on ``seq_len``).

A weighted ``--data`` list (``PATH:WEIGHT``, see ``mixture.py``) builds each source as its own
entry, exactly as if it were the only source (same key: changing the weights never retokenizes),
and returns a ``MixtureDataset`` over them; without weights nothing changes.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
from tokenizers import Tokenizer

from warmstart.data.mixture import MixtureDataset, parse_data_specs
from warmstart.data.sampler import BatchSampler
from warmstart.data.sources import Document, FileEntry, SourceStats, iter_documents, resolve_files
from warmstart.data.tokenizer import BPE_VERSION, eos_id, load_tokenizer, tokenizer_hash, train_bpe, vocab_size
from warmstart.errors import DamagedCacheError, EmptyCorpusError, UsageError

CACHE_FORMAT = "warmstart-token-cache-v1"
ENCODE_BATCH = 256
HOLDOUT, EVAL = "holdout", "eval"  # the roles of a cache entry
Log = Callable[[str], None]


def default_cache_dir() -> Path:
    env = os.environ.get("WARMSTART_CACHE")
    if env:
        return Path(env).expanduser()
    return Path("~/.cache/warmstart/tokens").expanduser()


def _doc_hash(key: str) -> float:
    h = hashlib.sha256(key.encode("utf-8")).digest()
    return int.from_bytes(h[:8], "big") / 2.0**64


def _files_fingerprint(files: list[FileEntry], settings: dict) -> str:
    h = hashlib.sha256()
    h.update(json.dumps(settings, sort_keys=True).encode())
    for f in files:
        h.update(f"{f.key}\0{f.kind}\0{f.size}\0{f.mtime_ns}\n".encode("utf-8", errors="surrogateescape"))
    return h.hexdigest()


@dataclass
class TokenDataset:
    train: np.ndarray  # 1-D memmap of token ids
    val: np.ndarray
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
        return _gather(self.train, indices, self.seq_len)

    def val_window_indices(self, eval_tokens: int) -> np.ndarray:
        """The fixed validation windows: the first ``eval_tokens // seq_len`` (at least one)."""
        n = max(1, min(self.n_val_windows, eval_tokens // self.seq_len))
        return np.arange(n, dtype=np.int64)

    def val_windows(self, indices: np.ndarray) -> np.ndarray:
        return _gather(self.val, indices, self.seq_len)

    def sampler(self, seed: int) -> BatchSampler:
        """The data cursor of a run on this dataset."""
        return BatchSampler(self.n_train_windows, seed=seed)

    def drawn(self, sampler: BatchSampler) -> None:
        """The sources with their weights and tokens drawn: a mixture's record; one corpus has none."""
        return None

    def summary(self) -> str:
        m = self.meta
        skipped = m.get("stats", {})
        nskip = sum(skipped.get(k, 0) for k in ("skipped_binary", "skipped_empty", "skipped_undecodable"))
        return (f"data: {m.get('train_docs', '?')} train / {m.get('val_docs', '?')} val documents, "
                f"{len(self.train):,} train / {len(self.val):,} val tokens, "
                f"{self.n_train_windows:,} windows of {self.seq_len}"
                + (f", {nskip} files skipped (binary/empty/undecodable)" if nskip else "")
                + f"; fingerprint {self.fingerprint}")


def _gather(arr: np.ndarray, indices: np.ndarray, seq_len: int) -> np.ndarray:
    out = np.empty((len(indices), seq_len + 1), dtype=np.int64)
    for row, i in enumerate(indices):
        s = int(i) * seq_len
        out[row] = arr[s : s + seq_len + 1]
    return out


def is_token_cache(path: str | Path) -> bool:
    p = Path(path)
    meta = p / "meta.json"
    if not meta.is_file():
        return False
    try:
        found = json.loads(meta.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(found, dict) and found.get("format") == CACHE_FORMAT


def _map(path: Path, dtype: np.dtype, n: int) -> np.ndarray:
    """A read-only memory map of ``n`` ids (an empty array for an empty file, which cannot be mapped)."""
    return np.memmap(path, dtype=dtype, mode="r", shape=(n,)) if n else np.empty(0, dtype=dtype)


def load_cache(path: str | Path, *, seq_len: int | None = None, tokenizer: Tokenizer | None = None) -> TokenDataset:
    """A cache entry, every file checked first (``check_cache``: DamagedCacheError naming the damaged file)."""
    p = Path(path)
    meta, tok = check_cache(p)
    if tokenizer is not None and tokenizer_hash(tokenizer) != meta["tokenizer_sha256"]:
        raise UsageError(
            "the prepared token cache was built with a different tokenizer than the one this run uses",
            why="token ids from one tokenizer mean nothing to another",
            fix="run `warmstart prepare` again with this tokenizer, or point --data at the raw corpus",
            path=p)
    if tokenizer is not None:
        tok = tokenizer
    dtype = np.dtype(meta["dtype"])
    train, val = _map(p / "train.bin", dtype, meta["train_tokens"]), _map(p / "val.bin", dtype, meta["val_tokens"])
    _check_ids(p, {"train.bin": train, "val.bin": val}, vocab_size(tok))
    L = int(seq_len or meta["seq_len"])
    eval_only = meta.get("settings", {}).get("role") == EVAL  # an extra validation set: no train split
    if len(val) < L + 1 or (len(train) < L + 1 and not eval_only):
        raise EmptyCorpusError(
            f"the token cache holds {len(train)} train / {len(val)} val tokens, fewer than one window of "
            f"seq_len+1 = {L + 1}", fix="use a larger corpus or a smaller --seq-len", path=p)
    fp = meta["key"] if L == int(meta["seq_len"]) else hashlib.sha256(f"{meta['key']}:{L}".encode()).hexdigest()[:20]
    return TokenDataset(train=train, val=val, seq_len=L, tokenizer=tok, eos_id=int(meta["eos_id"]),
                        fingerprint=fp, cache_path=p, sources=list(meta.get("sources", [])), meta=meta)


_META_KEYS = {"key": str, "dtype": str, "seq_len": int, "eos_id": int, "tokenizer_sha256": str, "train_tokens": int,
              "val_tokens": int}
CACHE_DTYPES = ("uint16", "uint32")


def _damaged(path: Path, found: str) -> DamagedCacheError:
    return DamagedCacheError(found, why="the token ids a run trains on must be exactly those the corpus gave",
                             fix="run `warmstart prepare` on the corpus again with --rebuild (an entry under the "
                             "cache directory is rebuilt by itself), or pass the raw corpus as --data", path=path)


def check_cache(p: Path) -> tuple[dict, Tokenizer]:
    """``(meta, tokenizer)`` of a cache entry whose meta.json, tokenizer.json and token files are whole:
    known dtype, file sizes equal to the recorded counts. DamagedCacheError (WS207) names what is not."""
    try:
        meta = json.loads((p / "meta.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise _damaged(p / "meta.json", f"the token cache's meta.json cannot be read ({err})") from None
    bad = [k for k, t in _META_KEYS.items() if not isinstance(meta.get(k), t)
           or isinstance(meta.get(k), bool)] if isinstance(meta, dict) else list(_META_KEYS)
    if bad or meta.get("format") != CACHE_FORMAT:
        raise _damaged(p / "meta.json", f"the token cache's meta.json lacks or mistypes {', '.join(bad) or 'format'}")
    if meta["dtype"] not in CACHE_DTYPES:
        raise _damaged(p / "meta.json", f"the token cache declares dtype {meta['dtype']!r}; expected one of "
                       f"{', '.join(CACHE_DTYPES)}")
    size = np.dtype(meta["dtype"]).itemsize
    for name, count in (("train.bin", meta["train_tokens"]), ("val.bin", meta["val_tokens"])):
        have = (p / name).stat().st_size if (p / name).is_file() else None
        if count < 0 or have != count * size:
            raise _damaged(p / name, f"{name} holds {have if have is not None else 'no'} bytes; meta.json records "
                           f"{count} {meta['dtype']} ids ({count * size} bytes)")
    try:
        tok = load_tokenizer(p / "tokenizer.json")
    except UsageError as err:
        raise _damaged(p / "tokenizer.json", err.found) from None
    return meta, tok


def _check_ids(p: Path, arrays: dict[str, np.ndarray], vocab: int) -> None:
    """Every id below the vocabulary (one pass over the memory map, in chunks)."""
    for name, arr in arrays.items():
        if len(arr):
            top = max(int(arr[i:i + (1 << 24)].max()) for i in range(0, len(arr), 1 << 24))
            if top >= vocab:
                raise _damaged(p / name, f"{name} holds token id {top}, past the tokenizer's {vocab} ids")


def _silent(text: str) -> None:
    pass


@dataclass(frozen=True)
class BuildSettings:
    """How a corpus becomes a cache entry: the settings ``build_dataset`` and ``build_eval_set`` share."""

    include: tuple[str, ...] | None = None
    text_field: str = "text"
    vocab_size: int = 8192  # of the BPE trained when no tokenizer is given
    seq_len: int = 256
    val_fraction: float = 0.02
    min_val_docs: int = 2
    max_corpus_bytes: int | None = None
    cache_root: Path = field(default_factory=default_cache_dir)
    rebuild: bool = False
    log: Log = _silent

    @classmethod
    def make(cls, *, include: list[str] | tuple[str, ...] | None = None, cache_dir: str | Path | None = None,
             log: Log | None = None, **settings) -> "BuildSettings":
        """From the arguments of ``build_dataset`` / ``build_eval_set`` (None: no globs, default cache, silent)."""
        return cls(include=tuple(include) if include else None, log=log or _silent,
                   cache_root=Path(cache_dir).expanduser() if cache_dir else default_cache_dir(), **settings)


@dataclass
class Corpus:
    """The files of one corpus (fingerprinted from ``stat`` alone); its documents are read once, on first use."""

    files: list[FileEntry]
    names: list[str]  # human names of the sources (provenance ``data_sources``)
    settings: BuildSettings
    stats: SourceStats = field(default_factory=SourceStats)
    _docs: list[Document] | None = None

    @classmethod
    def resolve(cls, data: list[str] | tuple[str, ...] | None, settings: BuildSettings) -> "Corpus":
        files, names = resolve_files(data, settings.include)
        if not files:
            raise EmptyCorpusError(
                f"no files matched in {', '.join(names)} (include: {', '.join(settings.include or ()) or 'default'})",
                why="there is nothing to train on",
                fix="check --data and --include (e.g. --include '*.py')")
        # A deterministic, location-independent order (a byte budget then samples across the tree).
        files.sort(key=lambda f: (_doc_hash(f.key), f.key))
        return cls(files, names, settings)

    @property
    def fingerprint(self) -> str:
        s = self.settings
        return _files_fingerprint(self.files, {"text_field": s.text_field, "max_corpus_bytes": s.max_corpus_bytes})

    def documents(self) -> list[Document]:
        if self._docs is None:
            self.stats = SourceStats()
            self._docs = list(iter_documents(self.files, text_field=self.settings.text_field, stats=self.stats,
                                             max_bytes=self.settings.max_corpus_bytes))
            if not self._docs:
                st, names = self.stats, self.names
                raise EmptyCorpusError(
                    f"the corpus {names[0] if len(names) == 1 else ', '.join(names)} has no usable text: "
                    f"{st.files} files, {st.skipped_binary} binary, {st.skipped_empty} empty, "
                    f"{st.skipped_undecodable} undecodable"
                    + (f" (e.g. {', '.join(st.skipped_examples)})" if st.skipped_examples else ""),
                    why="there is nothing to train on",
                    fix="point --data at UTF-8 text, or widen --include (e.g. --include '*.py' --include '*.txt')")
        return self._docs


def corpus_tokenizer(corpus: Corpus) -> Tokenizer:
    """A byte-level BPE trained on the corpus's train documents, cached by (files, vocabulary, split)."""
    s = corpus.settings
    tkey = hashlib.sha256(f"{corpus.fingerprint}:{s.vocab_size}:{s.val_fraction}:{BPE_VERSION}".encode()).hexdigest()
    tpath = s.cache_root / "tokenizers" / f"{tkey[:20]}.json"
    if tpath.is_file() and not s.rebuild:
        tokenizer = load_tokenizer(tpath)
        s.log(f"tokenizer: cached byte-level BPE ({vocab_size(tokenizer)} tokens) {tpath}")
        return tokenizer
    docs = corpus.documents()
    t0 = time.time()
    train_texts = [d.text for d in docs if _doc_hash(d.key) >= s.val_fraction] or [d.text for d in docs]
    tokenizer = train_bpe(train_texts, s.vocab_size, length=len(train_texts))
    from warmstart.checkpoint.write import atomic_write_text

    atomic_write_text(tpath, tokenizer.to_str())
    s.log(f"tokenizer: trained byte-level BPE, {vocab_size(tokenizer)} tokens, in {time.time() - t0:.1f}s")
    return tokenizer


def _tokenize(docs: list[Document], tokenizer: Tokenizer, dtype: type) -> list[np.ndarray]:
    """Each document's ids followed by one EOS."""
    eos = eos_id(tokenizer)
    per_doc: list[np.ndarray] = []
    encode = getattr(tokenizer, "encode_batch_fast", tokenizer.encode_batch)
    for i in range(0, len(docs), ENCODE_BATCH):
        for enc in encode([d.text for d in docs[i : i + ENCODE_BATCH]], add_special_tokens=False):
            ids = np.empty(len(enc.ids) + 1, dtype=dtype)
            ids[:-1] = enc.ids
            ids[-1] = eos
            per_doc.append(ids)
    return per_doc


def _val_documents(docs: list[Document], per_doc: list[np.ndarray], s: BuildSettings) -> list[bool]:
    """Which documents are held out: hash below ``val_fraction``, topped up by the smallest hashes."""
    hashes = [_doc_hash(d.key) for d in docs]
    is_val = [h < s.val_fraction for h in hashes]
    n_val, val_tok = sum(is_val), sum(len(a) for a, v in zip(per_doc, is_val) if v)
    for i in sorted(range(len(docs)), key=lambda i: (hashes[i], docs[i].key)):
        if n_val >= min(s.min_val_docs, len(docs) - 1) and val_tok >= s.seq_len + 1:
            break
        if is_val[i]:
            continue
        if n_val + 1 >= len(docs):
            break
        is_val[i] = True
        n_val += 1
        val_tok += len(per_doc[i])
    return is_val


def _split(docs: list[Document], per_doc: list[np.ndarray], s: BuildSettings, role: str,
           dtype: type) -> tuple[np.ndarray, np.ndarray, int, int]:
    """``(train tokens, val tokens, train documents, val documents)`` of the role's split."""
    if role == EVAL:
        return _concat([], dtype), _concat(per_doc, dtype), 0, len(docs)
    if len(docs) < 2:
        flat = per_doc[0]
        n_val = max(s.seq_len + 1, int(math.ceil(len(flat) * s.val_fraction)))
        return flat[: len(flat) - n_val], flat[len(flat) - n_val :], 1, 1
    is_val = _val_documents(docs, per_doc, s)
    train_ids = [a for a, v in zip(per_doc, is_val) if not v]
    val_ids = [a for a, v in zip(per_doc, is_val) if v]
    return _concat(train_ids, dtype), _concat(val_ids, dtype), len(train_ids), len(val_ids)


def _concat(arrays: list[np.ndarray], dtype: type) -> np.ndarray:
    return np.concatenate(arrays) if arrays else np.empty(0, dtype=dtype)


def _write_entry(entry: Path, arrays: dict[str, np.ndarray], tokenizer: Tokenizer, meta: dict) -> None:
    """The arrays, ``tokenizer.json`` and ``meta.json`` under a temporary name, then renamed into place
    (``atomic_dir``: a killed build's staging goes at the next build of the entry)."""
    from warmstart.checkpoint.write import atomic_dir, fsync_file, write_json_durable

    with atomic_dir(entry, overwrite=True) as staging:
        for name, arr in arrays.items():
            with open(staging / name, "wb") as fh:
                fh.write(np.ascontiguousarray(arr).tobytes())
                fh.flush()
                os.fsync(fh.fileno())
        tokenizer.save(str(staging / "tokenizer.json"))
        fsync_file(staging / "tokenizer.json")
        write_json_durable(staging / "meta.json", meta)


def _entry_settings(corpus: Corpus, thash: str, role: str) -> dict:
    """What the key of a cache entry hashes (a training corpus's keys are those of every earlier version)."""
    s = corpus.settings
    if role == EVAL:
        return {"format": CACHE_FORMAT, "files": corpus.fingerprint, "tokenizer": thash, "role": EVAL}
    return {"format": CACHE_FORMAT, "files": corpus.fingerprint, "tokenizer": thash, "seq_len": s.seq_len,
            "val_fraction": s.val_fraction, "min_val_docs": s.min_val_docs}


def _tokenize_entry(corpus: Corpus, tokenizer: Tokenizer, entry: Path, settings: dict, role: str) -> None:
    """Read, tokenize, split and write the cache entry ``entry``."""
    s = corpus.settings
    docs = corpus.documents()
    V = vocab_size(tokenizer)
    dtype = np.uint16 if V <= 65536 else np.uint32
    t0 = time.time()
    per_doc = _tokenize(docs, tokenizer, dtype)
    tok_time = time.time() - t0
    train_arr, val_arr, train_docs, val_docs = _split(docs, per_doc, s, role, dtype)
    total_tokens, need = sum(len(a) for a in per_doc), s.seq_len + 1
    if len(val_arr) < need or (len(train_arr) < need and role != EVAL):
        raise EmptyCorpusError(
            f"the corpus is too small: {total_tokens} tokens in {len(docs)} documents, but "
            + ("an evaluation set needs" if role == EVAL else "training needs")
            + f" at least one window of seq_len+1 = {need} tokens"
            + ("" if role == EVAL else " for train and for validation each"),
            fix="use a larger corpus or a smaller --seq-len")
    meta = {
        "format": CACHE_FORMAT, "key": entry.name, "settings": settings, "dtype": np.dtype(dtype).name,
        "seq_len": s.seq_len, "eos_id": eos_id(tokenizer), "vocab_size": V, "tokenizer_sha256": settings["tokenizer"],
        "train_tokens": int(len(train_arr)), "val_tokens": int(len(val_arr)),
        "train_docs": train_docs, "val_docs": val_docs, "sources": corpus.names, "stats": corpus.stats.to_dict(),
        "tokenize_seconds": round(tok_time, 3), "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    _write_entry(entry, {"train.bin": train_arr, "val.bin": val_arr}, tokenizer, meta)
    s.log(f"tokenized {len(docs)} documents ({corpus.stats.bytes / 1e6:.1f} MB) into {total_tokens:,} tokens "
          f"in {tok_time:.1f}s; cached at {entry}")


def _cached_entry(corpus: Corpus, tokenizer: Tokenizer, role: str = HOLDOUT) -> TokenDataset:
    """The corpus's cache entry for this tokenizer and these settings: found, or built now."""
    s = corpus.settings
    settings = _entry_settings(corpus, tokenizer_hash(tokenizer), role)
    entry = s.cache_root / hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:20]
    hit = is_token_cache(entry) and not s.rebuild
    if hit:
        try:
            ds = load_cache(entry, seq_len=s.seq_len, tokenizer=tokenizer)
        except DamagedCacheError as err:  # an entry warmstart manages is simply rebuilt
            s.log(f"token cache entry {entry} is damaged ({err.found}); rebuilding it")
            hit = False
    if not hit:
        _tokenize_entry(corpus, tokenizer, entry, settings, role)
        ds = load_cache(entry, seq_len=s.seq_len, tokenizer=tokenizer)
    ds.sources = corpus.names
    if hit:
        s.log(f"token cache hit {entry}")
    return ds


def _build_corpus(data: list[str] | None, tokenizer: Tokenizer | None, s: BuildSettings) -> TokenDataset:
    """One corpus (every ``data`` path pooled), or a prepared token cache."""
    if data and len(data) == 1 and is_token_cache(data[0]):
        ds = load_cache(data[0], seq_len=s.seq_len, tokenizer=tokenizer)
        s.log(f"using prepared token cache {data[0]}")
        return ds
    if s.seq_len < 1:
        raise UsageError(f"--seq-len {s.seq_len} must be positive")
    corpus = Corpus.resolve(data, s)
    return _cached_entry(corpus, tokenizer or corpus_tokenizer(corpus))


def _build_mixture(specs: list[tuple[str, float]], tokenizer: Tokenizer | None, s: BuildSettings) -> MixtureDataset:
    """Each source its own cache entry, all with one tokenizer: the given one, else the first prepared
    cache's, else a BPE trained on every source pooled (the one the same ``--data`` without weights trains)."""
    paths = [p for p, _ in specs]
    if tokenizer is None:
        caches = [p for p in paths if is_token_cache(p)]
        tokenizer = load_tokenizer(Path(caches[0]) / "tokenizer.json") if caches else \
            corpus_tokenizer(Corpus.resolve(paths, s))
    parts = [_build_corpus([p], tokenizer, s) for p in paths]
    return MixtureDataset(parts, [w for _, w in specs], paths)


def build_dataset(
    data: list[str] | tuple[str, ...] | None = None,
    *,
    include: list[str] | tuple[str, ...] | None = None,
    text_field: str = "text",
    tokenizer: Tokenizer | None = None,
    tokenizer_path: str | None = None,
    vocab_size_: int = 8192,
    seq_len: int = 256,
    val_fraction: float = 0.02,
    min_val_docs: int = 2,
    max_corpus_bytes: int | None = None,
    cache_dir: str | Path | None = None,
    rebuild: bool = False,
    log: Log | None = None,
) -> TokenDataset | MixtureDataset:
    """Resolve the corpus, get or train the tokenizer, tokenize, split, pack and cache.

    ``data``: paths (file / directory / .jsonl / .parquet / prepared cache), each optionally
    ``PATH:WEIGHT`` (``mixture.py``: weights on every path or none); None or empty = the Python
    standard library. ``tokenizer`` (an object) or ``tokenizer_path`` wins over training a BPE of
    ``vocab_size_`` on the corpus. Weighted paths give a ``MixtureDataset``, otherwise one
    ``TokenDataset`` of all paths pooled.
    """
    if tokenizer is None and tokenizer_path:
        tokenizer = load_tokenizer(tokenizer_path)
    s = BuildSettings.make(include=include, cache_dir=cache_dir, log=log, text_field=text_field,
                           vocab_size=vocab_size_, seq_len=seq_len, val_fraction=val_fraction,
                           min_val_docs=min_val_docs, max_corpus_bytes=max_corpus_bytes, rebuild=rebuild)
    specs = parse_data_specs(data)
    if specs and specs[0][1] is not None:
        return _build_mixture(specs, tokenizer, s)  # type: ignore[arg-type]
    return _build_corpus([p for p, _ in specs] or None, tokenizer, s)


def build_eval_set(path: str, *, tokenizer: Tokenizer, seq_len: int, include: list[str] | tuple[str, ...] | None = None,
                   text_field: str = "text", max_corpus_bytes: int | None = None, cache_dir: str | Path | None = None,
                   rebuild: bool = False, log: Log | None = None) -> TokenDataset:
    """An extra validation set (``--eval-data NAME=PATH``): every document of ``path`` tokenized with the
    run's tokenizer into one cached ``val`` stream, evaluated on its first windows as the held-out split
    is. A prepared token cache is used as it is (its held-out split)."""
    if is_token_cache(path):
        return load_cache(path, seq_len=seq_len, tokenizer=tokenizer)
    s = BuildSettings.make(include=include, cache_dir=cache_dir, log=log, text_field=text_field, seq_len=seq_len,
                           max_corpus_bytes=max_corpus_bytes, rebuild=rebuild)
    return _cached_entry(Corpus.resolve([path], s), tokenizer, EVAL)
