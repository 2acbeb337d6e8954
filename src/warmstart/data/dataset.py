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
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
from tokenizers import Tokenizer

from warmstart.data.sources import Document, FileEntry, SourceStats, iter_documents, resolve_files
from warmstart.data.tokenizer import BPE_VERSION, eos_id, load_tokenizer, tokenizer_hash, train_bpe, vocab_size
from warmstart.errors import EmptyCorpusError, UsageError

CACHE_FORMAT = "warmstart-token-cache-v1"
ENCODE_BATCH = 256


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
        return json.loads(meta.read_text()).get("format") == CACHE_FORMAT
    except (OSError, ValueError):
        return False


def load_cache(path: str | Path, *, seq_len: int | None = None, tokenizer: Tokenizer | None = None) -> TokenDataset:
    p = Path(path)
    meta = json.loads((p / "meta.json").read_text())
    tok = load_tokenizer(p / "tokenizer.json")
    if tokenizer is not None and tokenizer_hash(tokenizer) != meta["tokenizer_sha256"]:
        raise UsageError(
            "the prepared token cache was built with a different tokenizer than the one this run uses",
            why="token ids from one tokenizer mean nothing to another",
            fix="run `warmstart prepare` again with this tokenizer, or point --data at the raw corpus",
            path=p)
    if tokenizer is not None:
        tok = tokenizer
    dtype = np.dtype(meta["dtype"])
    train = np.memmap(p / "train.bin", dtype=dtype, mode="r", shape=(meta["train_tokens"],))
    val = np.memmap(p / "val.bin", dtype=dtype, mode="r", shape=(meta["val_tokens"],))
    L = int(seq_len or meta["seq_len"])
    if len(val) < L + 1 or len(train) < L + 1:
        raise EmptyCorpusError(
            f"the token cache holds {len(train)} train / {len(val)} val tokens, fewer than one window of "
            f"seq_len+1 = {L + 1}", fix="use a larger corpus or a smaller --seq-len", path=p)
    fp = meta["key"] if L == int(meta["seq_len"]) else hashlib.sha256(f"{meta['key']}:{L}".encode()).hexdigest()[:20]
    return TokenDataset(train=train, val=val, seq_len=L, tokenizer=tok, eos_id=int(meta["eos_id"]),
                        fingerprint=fp, cache_path=p, sources=list(meta.get("sources", [])), meta=meta)


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
    log: Callable[[str], None] | None = None,
) -> TokenDataset:
    """Resolve the corpus, get or train the tokenizer, tokenize, split, pack and cache.

    ``data``: paths (file / directory / .jsonl / .parquet / prepared cache); None or empty =
    the Python standard library. ``tokenizer`` (an object) or ``tokenizer_path`` wins over
    training a BPE of ``vocab_size_`` on the corpus.
    """
    log = log or (lambda s: None)
    if tokenizer is None and tokenizer_path:
        tokenizer = load_tokenizer(tokenizer_path)
    if data and len(data) == 1 and is_token_cache(data[0]):
        ds = load_cache(data[0], seq_len=seq_len, tokenizer=tokenizer)
        log(f"using prepared token cache {data[0]}")
        return ds
    if seq_len < 1:
        raise UsageError(f"--seq-len {seq_len} must be positive")
    cache_root = Path(cache_dir).expanduser() if cache_dir else default_cache_dir()
    files, names = resolve_files(data, include)
    # A deterministic, location-independent order (a byte budget then samples across the tree).
    files.sort(key=lambda f: (_doc_hash(f.key), f.key))
    corpus_settings = {"text_field": text_field, "max_corpus_bytes": max_corpus_bytes}
    files_fp = _files_fingerprint(files, corpus_settings)

    docs_cache: list[Document] | None = None
    stats = SourceStats()

    def read_docs() -> list[Document]:
        nonlocal docs_cache, stats
        if docs_cache is None:
            stats = SourceStats()
            docs_cache = list(iter_documents(files, text_field=text_field, stats=stats, max_bytes=max_corpus_bytes))
            if not docs_cache:
                what = names[0] if len(names) == 1 else ", ".join(names)
                raise EmptyCorpusError(
                    f"the corpus {what} has no usable text: {stats.files} files, "
                    f"{stats.skipped_binary} binary, {stats.skipped_empty} empty, "
                    f"{stats.skipped_undecodable} undecodable"
                    + (f" (e.g. {', '.join(stats.skipped_examples)})" if stats.skipped_examples else ""),
                    why="there is nothing to train on",
                    fix="point --data at UTF-8 text, or widen --include (e.g. --include '*.py' --include '*.txt')")
        return docs_cache

    if not files:
        raise EmptyCorpusError(
            f"no files matched in {', '.join(names)} (include: {', '.join(include or ()) or 'default'})",
            why="there is nothing to train on",
            fix="check --data and --include (e.g. --include '*.py')")

    # ------------------------------------------------------------ tokenizer
    if tokenizer is None:
        tkey = hashlib.sha256(f"{files_fp}:{vocab_size_}:{val_fraction}:{BPE_VERSION}".encode()).hexdigest()[:20]
        tpath = cache_root / "tokenizers" / f"{tkey}.json"
        if tpath.is_file() and not rebuild:
            tokenizer = load_tokenizer(tpath)
            log(f"tokenizer: cached byte-level BPE ({vocab_size(tokenizer)} tokens) {tpath}")
        else:
            docs = read_docs()
            t0 = time.time()
            train_texts = [d.text for d in docs if _doc_hash(d.key) >= val_fraction] or [d.text for d in docs]
            tokenizer = train_bpe(train_texts, vocab_size_, length=len(train_texts))
            tpath.parent.mkdir(parents=True, exist_ok=True)
            tmp = tpath.with_name(f".{tpath.name}.{uuid.uuid4().hex[:8]}.tmp")
            tokenizer.save(str(tmp))
            os.replace(tmp, tpath)
            log(f"tokenizer: trained byte-level BPE, {vocab_size(tokenizer)} tokens, in {time.time() - t0:.1f}s")
    thash = tokenizer_hash(tokenizer)
    eos = eos_id(tokenizer)
    V = vocab_size(tokenizer)

    # ------------------------------------------------------------ cache
    settings = {"format": CACHE_FORMAT, "files": files_fp, "tokenizer": thash, "seq_len": seq_len,
                "val_fraction": val_fraction, "min_val_docs": min_val_docs}
    key = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:20]
    entry = cache_root / key
    if is_token_cache(entry) and not rebuild:
        ds = load_cache(entry, seq_len=seq_len, tokenizer=tokenizer)
        ds.sources = names
        log(f"token cache hit {entry}")
        return ds

    docs = read_docs()
    t0 = time.time()
    per_doc: list[np.ndarray] = []
    dtype = np.uint16 if V <= 65536 else np.uint32
    encode = getattr(tokenizer, "encode_batch_fast", tokenizer.encode_batch)
    for i in range(0, len(docs), ENCODE_BATCH):
        batch = [d.text for d in docs[i : i + ENCODE_BATCH]]
        for enc in encode(batch, add_special_tokens=False):
            ids = np.empty(len(enc.ids) + 1, dtype=dtype)
            ids[:-1] = enc.ids
            ids[-1] = eos
            per_doc.append(ids)
    tok_time = time.time() - t0

    # ------------------------------------------------------------ split
    hashes = [_doc_hash(d.key) for d in docs]
    order = sorted(range(len(docs)), key=lambda i: (hashes[i], docs[i].key))
    is_val = [hashes[i] < val_fraction for i in range(len(docs))]
    need = seq_len + 1
    total_tokens = sum(len(a) for a in per_doc)
    if len(docs) >= 2:
        val_tok = sum(len(per_doc[i]) for i in range(len(docs)) if is_val[i])
        n_val = sum(is_val)
        for i in order:
            if n_val >= min(min_val_docs, len(docs) - 1) and val_tok >= need:
                break
            if is_val[i]:
                continue
            if n_val + 1 >= len(docs):
                break
            is_val[i] = True
            n_val += 1
            val_tok += len(per_doc[i])
        train_ids = [per_doc[i] for i in range(len(docs)) if not is_val[i]]
        val_ids = [per_doc[i] for i in range(len(docs)) if is_val[i]]
        train_arr = np.concatenate(train_ids) if train_ids else np.empty(0, dtype=dtype)
        val_arr = np.concatenate(val_ids) if val_ids else np.empty(0, dtype=dtype)
        train_docs, val_docs = len(train_ids), len(val_ids)
    else:
        flat = per_doc[0]
        n_val = max(need, int(math.ceil(len(flat) * val_fraction)))
        train_arr, val_arr = flat[: len(flat) - n_val], flat[len(flat) - n_val :]
        train_docs, val_docs = 1, 1
    if len(train_arr) < need or len(val_arr) < need:
        raise EmptyCorpusError(
            f"the corpus is too small: {total_tokens} tokens in {len(docs)} documents, but training needs "
            f"at least one window of seq_len+1 = {need} tokens for train and for validation each",
            fix="use a larger corpus or a smaller --seq-len")

    # ------------------------------------------------------------ write
    meta = {
        "format": CACHE_FORMAT, "key": key, "settings": settings, "dtype": np.dtype(dtype).name,
        "seq_len": seq_len, "eos_id": eos, "vocab_size": V, "tokenizer_sha256": thash,
        "train_tokens": int(len(train_arr)), "val_tokens": int(len(val_arr)),
        "train_docs": train_docs, "val_docs": val_docs, "sources": names, "stats": stats.to_dict(),
        "tokenize_seconds": round(tok_time, 3), "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    cache_root.mkdir(parents=True, exist_ok=True)
    staging = cache_root / f".{key}.tmp-{uuid.uuid4().hex[:8]}"
    staging.mkdir()
    try:
        for name, arr in (("train.bin", train_arr), ("val.bin", val_arr)):
            with open(staging / name, "wb") as fh:
                fh.write(np.ascontiguousarray(arr).tobytes())
                fh.flush()
                os.fsync(fh.fileno())
        tokenizer.save(str(staging / "tokenizer.json"))
        (staging / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
        if entry.exists():
            shutil.rmtree(entry, ignore_errors=True)
        os.replace(staging, entry)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    log(f"tokenized {len(docs)} documents ({stats.bytes / 1e6:.1f} MB) into {total_tokens:,} tokens "
        f"in {tok_time:.1f}s; cached at {entry}")
    ds = load_cache(entry, seq_len=seq_len, tokenizer=tokenizer)
    ds.sources = names
    return ds
