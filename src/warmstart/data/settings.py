"""``DataSettings``: how a corpus becomes a token cache and a dataset view, declared once.

Every setting here has its default in this class alone. ``TrainConfig`` (``train/config.py``) takes
the defaults of its data options from it and hands its values over through one bridge,
``TrainConfig.data_settings()``; ``warmstart prepare`` builds a ``TrainConfig`` from its options and
uses the same bridge. Settings that are not options (``min_val_docs``, ``unit_bytes``,
``shard_tokens``) keep their defaults outside tests and benchmarks.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path

CACHE_ENV = "WARMSTART_CACHE"


def default_cache_dir() -> Path:
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env).expanduser()
    return Path("~/.cache/warmstart/tokens").expanduser()


def all_cores() -> int:
    """The cores this process may run on (its CPU affinity, which containers and ``taskset`` narrow)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


@dataclass(frozen=True)
class DataSettings:
    """The data settings of a run or of ``warmstart prepare`` (see the module docstring)."""

    include: tuple[str, ...] = ()  # globs for directory sources; empty: every file, taken by its content
    text_field: str = "text"  # the JSON field / Parquet or Arrow column holding the text
    vocab_size: int = 8192  # of the byte-level BPE trained on the corpus when no tokenizer is given
    seq_len: int = 128  # tokens per window (a window holds seq_len + 1)
    val_fraction: float = 0.02  # share of documents held out, by the hash of their key
    min_val_docs: int = 2  # the held-out split is topped up to this many documents
    max_corpus_bytes: int | None = None  # read at most this many bytes of text
    cache_dir: str | None = None  # the cache root (None: $WARMSTART_CACHE or ~/.cache/warmstart/tokens)
    workers: int | None = None  # tokenizer processes / threads (None: every core)
    skip_bad_records: bool = False  # count and skip bad records instead of stopping (WS211, WS214)
    rebuild: bool = False  # tokenize every file again
    unit_bytes: int = 256 << 20  # input bytes of the files one worker tokenizes together
    shard_tokens: int = 64 << 20  # training tokens of a shard (its end is a resume point)

    @property
    def cache_root(self) -> Path:
        return Path(self.cache_dir).expanduser() if self.cache_dir else default_cache_dir()

    @property
    def cores(self) -> int:
        return self.workers if self.workers else all_cores()

    def replace(self, **changes) -> "DataSettings":
        if "include" in changes:
            changes["include"] = tuple(changes["include"] or ())
        return dataclasses.replace(self, **changes)

    @classmethod
    def taken_from(cls, source) -> "DataSettings":
        """The settings ``source`` (an object with attributes of these names, e.g. a ``TrainConfig``) holds;
        the ones it has no attribute for keep their defaults."""
        given = {f.name: getattr(source, f.name) for f in dataclasses.fields(cls) if hasattr(source, f.name)}
        return cls().replace(**given)


__all__ = ["CACHE_ENV", "DataSettings", "all_cores", "default_cache_dir"]
