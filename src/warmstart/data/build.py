"""From ``--data`` to the dataset a run trains on: raw sources, prepared entries, mixtures.

``build_dataset(data, settings)``: every ``data`` path pooled into one corpus (``prepare.Corpus``), or
a prepared entry, or a prepared mixture; weighted paths (``PATH:WEIGHT``, ``mixture.py``) give a
``MixtureDataset`` whose sources are each built exactly as if it were the only one (its entry is the
one building it alone gives, so weights never retokenize). The tokenizer is the one given, else the
first prepared entry's (mixtures), else a byte-level BPE trained on the corpus (``corpus_tokenizer``).
``build_eval_set``: an extra validation set (``--eval-data NAME=PATH``), the same entry as the path's
corpus viewed with every document held out.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from tokenizers import Tokenizer

from warmstart.data.dataset import EVAL, HOLDOUT, TokenDataset, is_token_cache, load_cache, open_entry
from warmstart.data.mixture import MixtureDataset, is_prepared_mixture, parse_data_specs, read_mixture
from warmstart.data.prepare import Corpus, prepare_entry
from warmstart.data.settings import DataSettings
from warmstart.data.tokenizer import corpus_tokenizer, load_tokenizer
from warmstart.errors import UsageError

Log = Callable[[str], None]


def _silent(text: str) -> None:
    pass


def _settings(settings: DataSettings | None, changes: dict) -> DataSettings:
    s = (settings or DataSettings()).replace(**changes)
    if s.seq_len < 1:
        raise UsageError(f"--seq-len {s.seq_len} must be positive")
    return s


def _corpus(paths: list[str] | None, tokenizer: Tokenizer | None, s: DataSettings, log: Log, *, role: str = HOLDOUT,
            quiet: bool = True, refuse_busy: bool = False) -> TokenDataset:
    """One corpus (every path pooled) or a prepared entry, viewed for ``role``."""
    if paths and len(paths) == 1 and is_token_cache(paths[0]):
        ds = load_cache(paths[0], seq_len=s.seq_len, tokenizer=tokenizer)
        log(f"using prepared token cache {paths[0]}")
        return ds
    corpus = Corpus.resolve(paths, s)
    tokenizer = tokenizer or corpus_tokenizer(corpus, log)
    entry = prepare_entry(corpus, tokenizer, log=log, quiet=quiet, refuse_busy=refuse_busy)
    ds = open_entry(entry, seq_len=s.seq_len, tokenizer=tokenizer, role=role, min_val_docs=s.min_val_docs)
    ds.sources = corpus.names
    return ds


def _mixture(specs: list[tuple[str, float]], tokenizer: Tokenizer | None, s: DataSettings, log: Log,
             **kw) -> MixtureDataset:
    paths = [p for p, _ in specs]
    if any(is_prepared_mixture(p) for p in paths):
        raise UsageError("a prepared mixture cannot be one source of another mixture",
                         fix="pass the prepared mixture alone (it holds its weights), or its sources with weights")
    if tokenizer is None:
        caches = [p for p in paths if is_token_cache(p)]
        tokenizer = load_tokenizer(Path(caches[0]) / "tokenizer.json") if caches else \
            corpus_tokenizer(Corpus.resolve(paths, s), log)
    parts = [_corpus([p], tokenizer, s, log, **kw) for p in paths]
    return MixtureDataset(parts, [w for _, w in specs], paths)


def _prepared_mixture(path: str, tokenizer: Tokenizer | None, s: DataSettings, log: Log) -> MixtureDataset:
    parts = read_mixture(path)
    if tokenizer is None:
        tokenizer = load_tokenizer(parts[0][0] / "tokenizer.json")
    sets = [load_cache(entry, seq_len=s.seq_len, tokenizer=tokenizer) for entry, _, _ in parts]
    log(f"using prepared mixture {path}")
    return MixtureDataset(sets, [w for _, w, _ in parts], [name for _, _, name in parts], cache_path=Path(path))


def build_dataset(data: list[str] | tuple[str, ...] | None = None, settings: DataSettings | None = None, *,
                  tokenizer: Tokenizer | None = None, tokenizer_path: str | None = None, log: Log | None = None,
                  quiet: bool = True, refuse_busy: bool = False, **changes) -> TokenDataset | MixtureDataset:
    """The dataset of ``data`` (None or empty: the Python standard library) under ``settings`` (with
    ``changes``, field by field); ``quiet=False`` shows tokenization progress, ``refuse_busy`` refuses an
    entry another process prepares (WS210) instead of waiting for it."""
    s, log = _settings(settings, changes), log or _silent
    if tokenizer is None and tokenizer_path:
        tokenizer = load_tokenizer(tokenizer_path)
    specs = parse_data_specs(data)
    kw = {"quiet": quiet, "refuse_busy": refuse_busy}
    if specs and specs[0][1] is not None:
        return _mixture(specs, tokenizer, s, log, **kw)  # type: ignore[arg-type]
    paths = [p for p, _ in specs]
    if len(paths) == 1 and is_prepared_mixture(paths[0]):
        return _prepared_mixture(paths[0], tokenizer, s, log)
    return _corpus(paths or None, tokenizer, s, log, **kw)


def build_eval_set(path: str, *, tokenizer: Tokenizer, settings: DataSettings | None = None, log: Log | None = None,
                   **changes) -> TokenDataset:
    """An extra validation set (``--eval-data NAME=PATH``): every document of ``path`` held out, tokenized
    with the run's tokenizer into the path's entry and evaluated on its first windows as the held-out
    split is. A prepared token cache is used as it is (its held-out split)."""
    s = _settings(settings, changes)
    if is_token_cache(path):
        return load_cache(path, seq_len=s.seq_len, tokenizer=tokenizer)
    return _corpus([path], tokenizer, s, log or _silent, role=EVAL)


__all__ = ["build_dataset", "build_eval_set"]
