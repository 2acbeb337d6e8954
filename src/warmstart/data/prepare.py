"""``prepare``: a corpus into its token cache entry, streaming, on every core, resumable and incremental.

The entry of a corpus is ``<cache root>/<key>/``, ``key`` hashing the sources (their absolute paths),
the settings the split depends on and the tokenizer, not the files: adding, changing or removing a
file keeps the entry and tokenizes only what changed (``manifest.plan``). Under the entry's lock
(``progress.EntryLock``) the files to tokenize are sniffed, grouped into units (``manifest.group``)
and tokenized (``units.run_unit``): in this process when there is one unit or one core (the
tokenizer's own threads then use every core), else by worker processes, one unit each, each with
``cores // workers`` tokenizer threads. The manifest is rewritten after every unit; a killed
``prepare`` leaves complete shards, which the next one keeps and continues after. Memory stays
bounded: documents flow through in batches, shards are written as they fill.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import json
import multiprocessing as mp
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from tokenizers import Tokenizer

from warmstart import errors
from warmstart.data.manifest import (
    FORMAT, MANIFEST, SHARDS, TOKENIZER, damaged_units, entry_key, file_record, group, plan, read_manifest, unit_id,
    write_manifest,
)
from warmstart.data.progress import STATUS, EntryLock, Progress
from warmstart.data.readers import file_sha256, sniff
from warmstart.data.settings import DataSettings
from warmstart.data.shards import TMP
from warmstart.data.sources import SKIP, FileEntry, SourceStats, order_hash, resolve_files, stdlib_dir
from warmstart.data.tokenizer import eos_id, load_tokenizer, tokenizer_hash, vocab_size
from warmstart.data.units import UnitSpec, UnitState, cache_write_error, run_unit
from warmstart.errors import DamagedCacheError, EmptyCorpusError, WarmstartError

Log = Callable[[str], None]


@dataclass
class Corpus:
    """The files of one corpus (from ``stat`` alone) in corpus order, and where they come from."""

    files: list[FileEntry]
    names: list[str]  # the sources as given, resolved (provenance ``data_sources``)
    roots: list[str]  # the same, for the entry's key
    listing: SourceStats  # what the listing left out, by reason
    settings: DataSettings

    @classmethod
    def resolve(cls, data: list[str] | tuple[str, ...] | None, settings: DataSettings) -> "Corpus":
        listing = SourceStats()
        files, names = resolve_files(data, settings.include, listing)
        if not files:
            raise EmptyCorpusError(
                f"no files matched in {', '.join(names)} (include: {', '.join(settings.include) or 'every file'})"
                + (f"; left out: {listing.line()}" if listing.n_skipped else ""),
                why="there is nothing to train on", fix="check --data and --include (e.g. --include '*.py')")
        files.sort(key=lambda f: (order_hash(f.key), f.key))  # location-independent, sampling the tree, not by split
        roots = [str(Path(d).expanduser().resolve()) for d in data] if data else [str(stdlib_dir())]
        return cls(files, names, roots, listing, settings)

    def fingerprint(self) -> str:
        """A hash of the file list as ``stat`` gives it (keys the BPE trained on the corpus)."""
        h = hashlib.sha256(json.dumps(identity(self.settings), sort_keys=True).encode())
        for f in self.files:
            h.update(f"{f.key}\0{f.size}\0{f.mtime_ns}\n".encode("utf-8", errors="surrogateescape"))
        return h.hexdigest()


def identity(s: DataSettings) -> dict:
    """The settings a cache entry's content depends on (its key hashes them)."""
    return {"text_field": s.text_field, "val_fraction": s.val_fraction, "include": list(s.include),
            "max_corpus_bytes": s.max_corpus_bytes}


def entry_of(corpus: Corpus, tokenizer: Tokenizer) -> Path:
    return corpus.settings.cache_root / entry_key(corpus.roots, identity(corpus.settings), tokenizer_hash(tokenizer))


# ------------------------------------------------------------------ the entry, under its lock


def prepare_entry(corpus: Corpus, tokenizer: Tokenizer, *, log: Log, quiet: bool = True,
                  refuse_busy: bool = False) -> Path:
    """The corpus's entry, brought up to date. ``refuse_busy``: an entry another process prepares is
    refused (WS210, ``warmstart prepare``) instead of waited for (a training rank)."""
    entry = entry_of(corpus, tokenizer)
    try:
        (entry / SHARDS).mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise cache_write_error(entry, err) from None
    lock = EntryLock(entry)
    try:
        if not refuse_busy:
            lock.wait(False, log, entry)
            if _up_to_date(entry, corpus, tokenizer):
                log(f"token cache hit {entry}")
                return entry
            lock.wait(True, log, entry)
            if _up_to_date(entry, corpus, tokenizer):  # another process brought it up to date meanwhile
                log(f"token cache hit {entry}")
                return entry
        elif not lock.take(True):
            raise lock.busy_error(entry)
        _build(entry, corpus, tokenizer, log=log, quiet=quiet)
        return entry
    finally:
        lock.release()


def _old_manifest(entry: Path, settings: DataSettings, log: Log) -> dict | None:
    if settings.rebuild or not (entry / MANIFEST).is_file():
        return None
    try:
        return read_manifest(entry)
    except DamagedCacheError as err:  # an entry warmstart manages is rebuilt, not refused
        log(f"token cache entry {entry} is damaged ({err.found}); rebuilding it")
        return None


def _up_to_date(entry: Path, corpus: Corpus, tokenizer: Tokenizer) -> bool:
    try:
        m = read_manifest(entry)
    except DamagedCacheError:
        return False
    p = plan(m, corpus.files, damaged_units(entry, m, vocab_size(tokenizer)), file_sha256)
    return not (p.pending or p.rebuilt or corpus.settings.rebuild) and all(
        (r["size"], r["mtime_ns"]) == (m["files"][k]["size"], m["files"][k]["mtime_ns"])
        for k, r in p.kept_files.items())


def _clean_tmp(shard_dir: Path) -> None:
    """Temporary files of killed writes (the exclusive lock is held: nobody else writes here)."""
    for p in shard_dir.iterdir():
        if p.name.startswith(".") and TMP in p.name:
            p.unlink(missing_ok=True)


def _header(corpus: Corpus, tokenizer: Tokenizer, entry: Path) -> dict:
    V = vocab_size(tokenizer)
    return {"format": FORMAT, "key": entry.name, "tokenizer_sha256": tokenizer_hash(tokenizer), "vocab_size": V,
            "eos_id": eos_id(tokenizer), "dtype": "uint16" if V <= 65536 else "uint32",
            "settings": identity(corpus.settings), "sources": [Path(n).name or n for n in corpus.names],
            "listing": corpus.listing.to_dict()["skipped"], "units": [], "files": {}}


@dataclass
class _Book:
    """The manifest being written: kept units and files, plus each unit as it completes."""

    entry: Path
    m: dict
    order: dict[str, int]  # file key -> position in corpus order
    done: list[tuple[UnitSpec, UnitState]] = field(default_factory=list)

    def add(self, spec: UnitSpec, state: UnitState) -> None:
        self.done.append((spec, state))
        self.m["units"].append({"id": spec.id, "files": [f.key for f in spec.files], "shards": state.shards})
        for f, stats in zip(spec.files, state.files):
            self.m["files"][f.key] = file_record(f, spec.id, stats)
        self.write()

    def write(self) -> None:
        self.m["units"].sort(key=lambda u: min((self.order.get(k, 1 << 62) for k in u["files"]), default=1 << 62))
        try:
            write_manifest(self.entry, self.m)
        except OSError as err:
            raise cache_write_error(self.entry, err) from None


def _build(entry: Path, corpus: Corpus, tokenizer: Tokenizer, *, log: Log, quiet: bool) -> None:
    s = corpus.settings
    _clean_tmp(entry / SHARDS)
    old = _old_manifest(entry, s, log)
    V = vocab_size(tokenizer)
    p = plan(old, corpus.files, damaged_units(entry, old, V) if old else {}, file_sha256)
    for unit, why in p.rebuilt.items():
        log(f"token cache entry {entry}: unit {unit} " + ("is stale" if why.endswith("removed") else "is damaged")
            + f" ({why}); rebuilding it")
        if not why.endswith("removed"):  # its files are the same, so is its name: the damaged shards go first
            for f in (entry / SHARDS).glob(f"{unit}-*"):
                f.unlink(missing_ok=True)
    for f in p.pending:
        sniff(f, s.skip_bad_records)
    to_read = [f for f in p.pending if f.kind != SKIP]
    book = _Book(entry, _header(corpus, tokenizer, entry), {f.key: i for i, f in enumerate(corpus.files)})
    book.m["units"] = list(p.keep)
    book.m["files"] = {**p.kept_files, **{f.key: file_record(f, None) for f in p.skipped + p.pending
                                           if f.kind == SKIP}}
    _write_tokenizer(entry, tokenizer)
    specs = [UnitSpec(unit_id(fs, {**identity(s), "tokenizer": book.m["tokenizer_sha256"]}), fs, entry / SHARDS,
                      book.m["dtype"], book.m["eos_id"], s.text_field, s.skip_bad_records, s.val_fraction,
                      s.shard_tokens, s.max_corpus_bytes)
             for fs in ([to_read] if s.max_corpus_bytes is not None and to_read else group(to_read, s.unit_bytes))]
    book.write()
    if not specs:
        log(f"token cache hit {entry}" + (" (file records updated)" if p.kept_files else ""))
        return
    t0 = time.monotonic()
    progress = Progress(sum(f.size for f in to_read), quiet=quiet, status=entry / STATUS)
    try:
        run_units(specs, tokenizer, entry, s.cores, progress, book.add)
    finally:
        progress.close()
    log(_summary(book, p, progress, time.monotonic() - t0, entry))


def _write_tokenizer(entry: Path, tokenizer: Tokenizer) -> None:
    path = entry / TOKENIZER
    text = tokenizer.to_str()
    try:
        if path.is_file() and path.read_text(encoding="utf-8") == text:
            return
        from warmstart.checkpoint.write import atomic_write_text

        atomic_write_text(path, text)
    except OSError as err:
        raise cache_write_error(entry, err) from None


def _summary(book: _Book, p, progress: Progress, seconds: float, entry: Path) -> str:
    files = [f for spec, _ in book.done for f in spec.files]
    tokens = sum(s["train_tokens"] + s["val_tokens"] for _, st in book.done for s in st.shards)
    shards = sum(len(st.shards) for _, st in book.done)
    stats = SourceStats()
    for _, st in book.done:
        for d in st.files:
            stats.merge(d)
    for f in p.skipped + [f for f in p.pending if f.kind == SKIP]:
        stats.skip(f.reason, f.key)
    kept = sum(len(u["files"]) for u in p.keep)
    return (f"tokenized {len(files)} files ({stats.documents:,} documents, {stats.bytes / 1e6:.1f} MB of text) into "
            f"{tokens:,} tokens in {shards} shards in {seconds:.1f}s ({tokens / max(seconds, 1e-9):,.0f} tokens/s)"
            + (f"; {kept} files kept from before" if kept else "")
            + (f"; skipped: {stats.line()}" if stats.n_skipped else "") + f"; cached at {entry}")


# ------------------------------------------------------------------ running units


def run_units(specs: list[UnitSpec], tokenizer: Tokenizer, entry: Path, cores: int, progress: Progress,
              done: Callable[[UnitSpec, UnitState], None]) -> None:
    """Every unit tokenized, ``done`` called as each completes (in completion order)."""
    procs = min(cores, len(specs))
    if procs <= 1:
        with _parallelism(cores):
            for spec in specs:
                done(spec, run_unit(spec, tokenizer, progress.add))
        return
    ctx = mp.get_context("spawn")
    queue = ctx.SimpleQueue()
    drain = threading.Thread(target=_drain, args=(queue, progress), daemon=True)
    drain.start()
    with _main_module_hidden():
        pool = ctx.Pool(procs, initializer=_init_worker, initargs=(str(entry / TOKENIZER), max(1, cores // procs),
                                                                   queue))
    try:
        by_id = {spec.id: spec for spec in specs}
        for uid, kind, payload in pool.imap_unordered(_work, specs, chunksize=1):
            if kind == "error":
                raise _rebuilt(payload)
            done(by_id[uid], payload)
        pool.close()
    finally:
        pool.terminate()
        pool.join()
        queue.put(None)
        drain.join()


@contextlib.contextmanager
def _main_module_hidden():
    """Spawned workers need nothing of the caller's ``__main__`` (their functions live here), so it is not
    named to them: a script without an ``if __name__ == "__main__"`` guard is then not run again in each."""
    main = sys.modules.get("__main__")
    saved = {k: getattr(main, k) for k in ("__file__", "__spec__") if hasattr(main, k)}
    try:
        main.__spec__ = None
        if "__file__" in saved:
            del main.__file__
        yield
    finally:
        for k, v in saved.items():
            setattr(main, k, v)


@contextlib.contextmanager
def _parallelism(cores: int):
    """One core: the tokenizer's own threads off for the call (``TOKENIZERS_PARALLELISM``)."""
    old = os.environ.get("TOKENIZERS_PARALLELISM")
    if cores <= 1:
        os.environ["TOKENIZERS_PARALLELISM"] = "false"
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("TOKENIZERS_PARALLELISM", None)
        else:
            os.environ["TOKENIZERS_PARALLELISM"] = old


def _drain(queue, progress: Progress) -> None:
    while (item := queue.get()) is not None:
        progress.add(*item)


_WORKER: dict = {}


def _init_worker(tokenizer_path: str, threads: int, queue) -> None:
    """A worker process: it dies with its parent (Linux), its tokenizer uses ``threads`` threads."""
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent stops the pool
    os.environ["TOKENIZERS_PARALLELISM"] = "true" if threads > 1 else "false"
    os.environ["RAYON_NUM_THREADS"] = str(threads)
    _WORKER.update(tokenizer=load_tokenizer(tokenizer_path), queue=queue, parent=os.getppid())


def _work(spec: UnitSpec):
    queue = _WORKER["queue"]

    def progress(b: int, d: int, t: int) -> None:
        if os.getppid() != _WORKER["parent"]:
            os._exit(1)  # the parent is gone (where PR_SET_PDEATHSIG is not available)
        queue.put((b, d, t))

    try:
        return spec.id, "ok", run_unit(spec, _WORKER["tokenizer"], progress)
    except WarmstartError as err:
        return spec.id, "error", {"class": type(err).__name__, **err.to_dict()}


def _rebuilt(rec: dict) -> WarmstartError:
    cls = getattr(errors, rec["class"], WarmstartError)
    return cls(rec["found"], why=rec["why"], fix=rec["fix"], path=rec["path"], code=rec["code"])


__all__ = ["Corpus", "entry_of", "identity", "prepare_entry", "run_units"]
