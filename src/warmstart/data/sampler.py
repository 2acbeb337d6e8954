"""A batch sampler over training windows whose position is a small JSON-able dict.

Each epoch visits every window once, in the order of a keyed pseudo-random permutation of
``[0, n)`` computed per index (``permute``): a Feistel network of six rounds over the smallest
even-bit-width domain holding ``n`` (at most ``4n``), keyed by ``(seed, epoch)``, with cycle-walking
back into ``[0, n)``. Nothing the size of ``n`` is ever built, so memory and start-up time do not
depend on the number of windows. The cursor is ``{"epoch", "pos"}``: loading it into a fresh sampler
with the same seed and window count continues with exactly the batches the uninterrupted run draws.
(A run's data fingerprint names the token cache format, so a checkpoint of an earlier order never
resumes with this one: ``checkpoints.check_same_data`` refuses it first.)
"""

from __future__ import annotations

import numpy as np

from warmstart.errors import ResumeError

_ROUNDS = 6
_M1, _M2, _GOLDEN = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB), np.uint64(0x9E3779B97F4A7C15)


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser: a bijective, well-mixing map of 64-bit words (numpy wraps mod 2**64)."""
    x = (x ^ (x >> np.uint64(30))) * _M1
    x = (x ^ (x >> np.uint64(27))) * _M2
    return x ^ (x >> np.uint64(31))


def _round_keys(seed: int, epoch: int) -> np.ndarray:
    state = np.random.SeedSequence([int(seed), int(epoch), 0xFE15]).generate_state(_ROUNDS, dtype=np.uint64)
    return state.astype(np.uint64)


def _feistel(x: np.ndarray, half: int, keys: np.ndarray) -> np.ndarray:
    mask = np.uint64((1 << half) - 1)
    left, right = x >> np.uint64(half), x & mask
    with np.errstate(over="ignore"):
        for k in keys:
            left, right = right, left ^ (_mix(right ^ k) & mask)
    return (left << np.uint64(half)) | right


def permute(indices: np.ndarray, n: int, seed: int, epoch: int) -> np.ndarray:
    """The positions ``indices`` (each in ``[0, n)``) of epoch ``epoch``'s order: a bijection of ``[0, n)``."""
    bits = max(2, int(n - 1).bit_length())
    half = (bits + 1) // 2
    keys = _round_keys(seed, epoch)
    y = _feistel(np.asarray(indices, dtype=np.uint64), half, keys)
    out = y >= np.uint64(n)
    while out.any():  # cycle-walking: a value outside [0, n) is permuted again until it falls inside
        y[out] = _feistel(y[out], half, keys)
        out = y >= np.uint64(n)
    return y.astype(np.int64)


class BatchSampler:
    def __init__(self, n_windows: int, seed: int = 0, *, shuffle: bool = True) -> None:
        if n_windows < 1:
            raise ValueError("BatchSampler needs at least one window")
        self.n = int(n_windows)
        self.seed = int(seed)
        self.shuffle = shuffle
        self.epoch = 0
        self.pos = 0

    def _order(self, start: int, count: int) -> np.ndarray:
        positions = np.arange(start, start + count, dtype=np.int64)
        return permute(positions, self.n, self.seed, self.epoch) if self.shuffle else positions

    def next_indices(self, batch_size: int) -> np.ndarray:
        out = np.empty(batch_size, dtype=np.int64)
        filled = 0
        while filled < batch_size:
            take = min(batch_size - filled, self.n - self.pos)
            out[filled : filled + take] = self._order(self.pos, take)
            filled += take
            self.pos += take
            if self.pos >= self.n:
                self.epoch += 1
                self.pos = 0
        return out

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "pos": self.pos, "seed": self.seed, "n_windows": self.n,
                "shuffle": self.shuffle}

    def load_state_dict(self, state: dict) -> None:
        if int(state["n_windows"]) != self.n or int(state["seed"]) != self.seed:
            raise ResumeError(
                f"the saved data cursor is for {state['n_windows']} windows / seed {state['seed']}, "
                f"this run has {self.n} windows / seed {self.seed}",
                why="the data changed since the checkpoint, so its position means nothing",
                fix="resume with the same data, --seq-len and --seed")
        self.epoch = int(state["epoch"])
        self.pos = int(state["pos"])
        self.shuffle = bool(state.get("shuffle", True))
