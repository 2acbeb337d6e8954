"""Weighted mixtures of corpora: ``--data PATH:WEIGHT``, the dataset over several cached sources and
the sampler that draws from them by weight.

Spelling (``parse_data_spec``): an argument that names an existing file or directory is a path,
whatever characters it holds; otherwise a final ``:NUMBER`` (a positive decimal such as ``0.9``,
``1`` or ``2.5e-1``) is the weight and what precedes it is the path. So ``data:v2/`` is a path when
it exists, and ``run:3/corpus.jsonl:0.1`` is the file ``run:3/corpus.jsonl`` at weight 0.1. Every
source has a weight or none does; a weight is finite, positive and at most ``MAX_WEIGHT`` (so their
sum is finite and every share positive), and weights are normalised to sum to 1. Without weights
``--data`` is one pooled corpus, exactly as before mixtures existed.

A prepared mixture (``warmstart prepare`` with weights) is a directory holding ``mixture.json``: the
format, and per source its entry (a path relative to the directory, so the cache root can move as a
whole), its weight and its name. ``--data DIR`` of one is the same mixture as the weighted list.

Sampling (``MixtureSampler``): weights are shares of training tokens. Every window holds
``seq_len`` tokens, so a source's share of windows is its share of tokens. Draw number ``k`` (0, 1,
2, ... over the whole run) takes a window of the source with the largest deficit
``w_i·(k + 1 + φ_i) − n_i`` (``n_i``: windows drawn from source ``i`` so far; ``φ_i``: a phase in
[0, 1) drawn from the seed; ties go to the earlier source), so at any point every source's count is
less than two windows from ``w_i·k``. Within a source, windows come in the order of that source's own
``BatchSampler`` (a fresh permutation each epoch, seeded from the seed and the source's position).
Which source draw ``k`` uses depends on ``k`` alone, and each source's order is a stream, so the
order does not depend on how draws are requested: ``next_indices(a)`` then ``next_indices(b)``
equals ``next_indices(a + b)`` (ranks that each take a slice of one global draw stay exact).
The cursor (``state_dict``) is the draw count, the count per source and each source's cursor.

Window indices are global: source ``i``'s train windows are numbered after all windows of the
sources before it. The held-out split (``val``) is every source's held-out windows, taken from each
in proportion to the weights (at least one window per source), so ``val_loss`` measures the mixture.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from warmstart.data.sampler import BatchSampler
from warmstart.errors import DamagedCacheError, ResumeError, UsageError

MAX_WEIGHT = 1e12
MIXTURE, MIXTURE_FORMAT = "mixture.json", "warmstart-mixture-v1"


def check_weight(spec: str, weight: float) -> float:
    if not math.isfinite(weight) or weight <= 0 or weight > MAX_WEIGHT:
        raise UsageError(f"--data {spec}: the weight {weight!r} must be a positive number of at most {MAX_WEIGHT:g}",
                         why="weights are shares of the training tokens: each must be positive and their sum finite",
                         fix="give each source a positive weight, e.g. --data code/:0.9 --data replay.jsonl:0.1")
    return weight


def shares(weights: Sequence[float]) -> list[float]:
    """Weights normalised to sum to 1 (each checked: ``check_weight``)."""
    ws = [check_weight(str(w), float(w)) for w in weights]
    total = math.fsum(ws)
    return [w / total for w in ws]


def parse_data_spec(spec: str) -> tuple[str, float | None]:
    """``PATH[:WEIGHT]`` -> ``(path, weight or None)`` by the rule in the module docstring."""
    head, sep, tail = spec.rpartition(":")
    if not sep or not head or Path(spec).expanduser().exists():
        return spec, None
    try:
        weight = float(tail)
    except ValueError:
        return spec, None
    return head, check_weight(spec, weight)


def parse_data_specs(data: Sequence[str] | None) -> list[tuple[str, float | None]]:
    """Every ``--data`` argument parsed; weights on all of them or on none."""
    specs = [parse_data_spec(str(d)) for d in data or ()]
    weighted = [s for s in specs if s[1] is not None]
    if weighted and len(weighted) != len(specs):
        unweighted = ", ".join(p for p, w in specs if w is None)
        raise UsageError(f"--data gives weights to some sources but not to {unweighted}",
                         why="a mixture needs the share of every source",
                         fix="give every --data a weight (PATH:WEIGHT) or none; a path holding ':' that does not "
                             "exist yet is read as PATH:WEIGHT, so check the path")
    return specs


def _offsets(counts: Sequence[int]) -> np.ndarray:
    return np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)


def _gather_parts(indices: np.ndarray, offsets: np.ndarray, gathers: list[Callable[[np.ndarray], np.ndarray]],
                  seq_len: int) -> np.ndarray:
    """Windows by global index: each part's rows from its own ``gather(local indices)``."""
    indices = np.asarray(indices, dtype=np.int64)
    part = np.searchsorted(offsets, indices, side="right") - 1
    out = np.empty((len(indices), seq_len + 1), dtype=np.int64)
    for i, gather in enumerate(gathers):
        rows = np.flatnonzero(part == i)
        if len(rows):
            out[rows] = gather(indices[rows] - offsets[i])
    return out


def part_seed(seed: int, index: int) -> int:
    """The seed of source ``index``'s own window order."""
    return int(np.random.SeedSequence([int(seed), int(index)]).generate_state(1)[0])


class MixtureSampler:
    """Global window indices of a mixture, drawn by weight; see the module docstring."""

    def __init__(self, n_windows: Sequence[int], weights: Sequence[float], seed: int = 0) -> None:
        if len(n_windows) != len(weights) or not n_windows:
            raise ValueError("MixtureSampler needs one weight per source")
        self.seed = int(seed)
        self.weights = np.asarray(shares(weights), dtype=np.float64)
        self.parts = [BatchSampler(n, seed=part_seed(seed, i)) for i, n in enumerate(n_windows)]
        self.offsets = _offsets(n_windows)
        self.phase = np.random.Generator(np.random.PCG64([self.seed, len(n_windows)])).random(len(n_windows))
        self.draws = 0
        self.counts = np.zeros(len(n_windows), dtype=np.int64)

    def _sources(self, n: int) -> np.ndarray:
        """The source of each of the next ``n`` draws (advances the draw count and the counts)."""
        # Python floats, not numpy per draw: the same IEEE arithmetic and first-maximum ties, ~5x faster
        w, phase, counts = self.weights.tolist(), self.phase.tolist(), self.counts.tolist()
        sources = range(len(w))
        out = np.empty(n, dtype=np.int64)
        for j in range(n):
            d = self.draws + 1
            i = max(sources, key=lambda k: w[k] * (d + phase[k]) - counts[k])
            counts[i] += 1
            self.draws = d
            out[j] = i
        self.counts[:] = counts
        return out

    def next_indices(self, batch_size: int) -> np.ndarray:
        src = self._sources(batch_size)
        out = np.empty(batch_size, dtype=np.int64)
        for i, part in enumerate(self.parts):
            rows = np.flatnonzero(src == i)
            if len(rows):
                out[rows] = part.next_indices(len(rows)) + self.offsets[i]
        return out

    def state_dict(self) -> dict:
        return {"kind": "mixture", "seed": self.seed, "weights": self.weights.tolist(), "draws": self.draws,
                "counts": self.counts.tolist(), "parts": [p.state_dict() for p in self.parts]}

    def load_state_dict(self, state: dict) -> None:
        same = (state.get("kind") == "mixture" and int(state["seed"]) == self.seed
                and len(state["parts"]) == len(self.parts) and np.allclose(state["weights"], self.weights, atol=1e-12))
        if not same:
            raise ResumeError(
                f"the saved data cursor is for another mixture (weights {state.get('weights')}, seed "
                f"{state.get('seed')}); this run has weights {self.weights.tolist()}, seed {self.seed}",
                why="the data changed since the checkpoint, so its position means nothing",
                fix="resume with the same --data (paths and weights), --seq-len and --seed")
        for part, st in zip(self.parts, state["parts"]):
            part.load_state_dict(st)
        self.draws = int(state["draws"])
        self.counts = np.asarray(state["counts"], dtype=np.int64)


class MixtureDataset:
    """The training data of a weighted ``--data`` list: one cached ``TokenDataset`` per source."""

    def __init__(self, parts: list, weights: Sequence[float], names: Sequence[str],
                 cache_path: Path | None = None) -> None:
        self.parts = list(parts)
        self.weights = shares(weights)
        self.names = [str(n) for n in names]
        self._cache_path = cache_path
        self._train_offsets = _offsets([p.n_train_windows for p in self.parts])
        self._val_offsets = _offsets([p.n_val_windows for p in self.parts])
        key = json.dumps([[p.fingerprint, w] for p, w in zip(self.parts, self.weights)])
        self.fingerprint = hashlib.sha256(f"mixture:{key}".encode()).hexdigest()[:20]

    # the TokenDataset interface the trainer reads
    tokenizer = property(lambda self: self.parts[0].tokenizer)
    eos_id = property(lambda self: self.parts[0].eos_id)
    seq_len = property(lambda self: self.parts[0].seq_len)
    vocab_size = property(lambda self: self.parts[0].vocab_size)
    n_train_windows = property(lambda self: sum(p.n_train_windows for p in self.parts))
    n_val_windows = property(lambda self: sum(p.n_val_windows for p in self.parts))

    @property
    def sources(self) -> list[str]:
        return [s for p in self.parts for s in p.sources]

    @property
    def cache_path(self) -> Path:
        """The prepared mixture's directory, else the cache root the sources' entries sit in (each part's
        ``cache_path`` is its own entry)."""
        return self._cache_path or Path(self.parts[0].cache_path).parent

    def train_windows(self, indices: np.ndarray) -> np.ndarray:
        return _gather_parts(indices, self._train_offsets, [p.train_windows for p in self.parts], self.seq_len)

    def val_window_indices(self, eval_tokens: int) -> np.ndarray:
        """Each source's first held-out windows, as many as its weight's share of ``eval_tokens // seq_len``."""
        n = max(1, eval_tokens // self.seq_len)
        return np.concatenate([off + np.arange(max(1, min(p.n_val_windows, round(n * w))), dtype=np.int64)
                               for p, w, off in zip(self.parts, self.weights, self._val_offsets)])

    def val_windows(self, indices: np.ndarray) -> np.ndarray:
        return _gather_parts(indices, self._val_offsets, [p.val_windows for p in self.parts], self.seq_len)

    def sampler(self, seed: int) -> MixtureSampler:
        return MixtureSampler([p.n_train_windows for p in self.parts], self.weights, seed)

    def drawn(self, sampler: MixtureSampler) -> list[dict]:
        """The sources with their weights and the training tokens drawn from each so far."""
        counts = sampler.state_dict()["counts"]
        total = max(1, sum(counts))
        return [{"source": name, "weight": round(w, 6), "tokens_drawn": int(c) * self.seq_len,
                 "share": round(c / total, 6)} for name, w, c in zip(self.names, self.weights, counts)]

    def summary(self) -> str:
        lines = [f"data: a mixture of {len(self.parts)} sources by token weight, {self.n_train_windows:,} windows "
                 f"of {self.seq_len}; fingerprint {self.fingerprint}"]
        for name, w, p in zip(self.names, self.weights, self.parts):
            lines.append(f"  {w:.3f} {name}: " + p.summary().removeprefix("data: ") + f"; cache {p.cache_path}")
        return "\n".join(lines)


def write_mixture(root: Path, entries: Sequence[Path], weights: Sequence[float], names: Sequence[str]) -> Path:
    """A prepared mixture of ``entries`` under ``root/mixtures/`` (its directory)."""
    from warmstart.checkpoint.write import atomic_write_json

    parts = [{"entry": os.path.relpath(e, root / "mixtures" / "x"), "weight": w, "source": Path(n).name or n}
             for e, w, n in zip(entries, shares(weights), names)]
    key = hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:20]
    out = root / "mixtures" / key
    atomic_write_json(out / MIXTURE, {"format": MIXTURE_FORMAT, "parts": parts})
    return out


def is_prepared_mixture(path: str | Path) -> bool:
    return (Path(path) / MIXTURE).is_file()


def read_mixture(path: str | Path) -> list[tuple[Path, float, str]]:
    """``[(entry, weight, source), ...]`` of a prepared mixture (DamagedCacheError, WS207, when the file
    or an entry it names is not what it should be)."""
    p = Path(path) / MIXTURE
    try:
        m = json.loads(p.read_text(encoding="utf-8"))
        parts = m["parts"] if isinstance(m, dict) and m.get("format") == MIXTURE_FORMAT else None
        out = [(Path(path) / str(x["entry"]), float(x["weight"]), str(x["source"])) for x in parts]
    except (OSError, ValueError, KeyError, TypeError, RecursionError):
        out = []
    if not out or not all(math.isfinite(w) and w > 0 for _, w, _ in out):
        raise DamagedCacheError("the prepared mixture's mixture.json is not a list of entries with positive weights",
                                fix="run `warmstart prepare` with the weighted --data again", path=p)
    for entry, _, name in out:
        if not (entry / "manifest.json").is_file():
            raise DamagedCacheError(f"the prepared mixture's source {name} names an entry with no manifest.json "
                                    f"({entry.name})", why="the mixture's data is gone",
                                    fix="run `warmstart prepare` with the weighted --data again", path=p)
    return out


def mixture_lines(drawn: list[dict] | None) -> list[str]:
    """Summary lines for the tokens drawn from each source of a mixture (none for one corpus)."""
    if not drawn:
        return []
    return ["data mixture (weight -> share of tokens drawn): " + "; ".join(
        f"{d['source']} {d['weight']:.3f} -> {d['share']:.3f} ({d['tokens_drawn']:,} tokens)" for d in drawn)]


__all__ = ["MAX_WEIGHT", "MixtureDataset", "MixtureSampler", "is_prepared_mixture", "mixture_lines", "parse_data_spec",
           "parse_data_specs", "part_seed", "read_mixture", "shares", "write_mixture"]
