"""A batch sampler over training windows whose position is a small JSON-able dict.

Each epoch visits every window once in an order drawn from ``numpy.random.PCG64([seed, epoch])``;
the cursor is ``{"epoch", "pos"}``. Saving the cursor and loading it into a fresh sampler with the
same seed and window count continues with exactly the batches the uninterrupted run would draw.
"""

from __future__ import annotations

import numpy as np

from warmstart.errors import ResumeError


class BatchSampler:
    def __init__(self, n_windows: int, seed: int = 0, *, shuffle: bool = True) -> None:
        if n_windows < 1:
            raise ValueError("BatchSampler needs at least one window")
        self.n = int(n_windows)
        self.seed = int(seed)
        self.shuffle = shuffle
        self.epoch = 0
        self.pos = 0
        self._perm: np.ndarray | None = None
        self._perm_epoch = -1

    def _order(self) -> np.ndarray:
        if self._perm_epoch != self.epoch:
            if self.shuffle:
                rng = np.random.Generator(np.random.PCG64([self.seed, self.epoch]))
                self._perm = rng.permutation(self.n)
            else:
                self._perm = np.arange(self.n)
            self._perm_epoch = self.epoch
        return self._perm  # type: ignore[return-value]

    def next_indices(self, batch_size: int) -> np.ndarray:
        out = np.empty(batch_size, dtype=np.int64)
        filled = 0
        while filled < batch_size:
            order = self._order()
            take = min(batch_size - filled, self.n - self.pos)
            out[filled : filled + take] = order[self.pos : self.pos + take]
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
