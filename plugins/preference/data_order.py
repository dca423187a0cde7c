"""Deterministic, resumable data order: a fresh permutation per epoch, from the seed.

Objectives draw micro-batch ``i`` as ``order.slice(i * batch_size, batch_size)``, a pure
function of ``i`` and the seed, so a resumed run sees exactly the batches the
uninterrupted run would have seen.
"""

from __future__ import annotations

import numpy as np


class EpochOrder:
    """Positions ``k = 0, 1, 2 …`` map to example indices, epoch by epoch."""

    def __init__(self, n: int, seed: int):
        if n < 1:
            raise ValueError("EpochOrder needs at least one example")
        self.n, self.seed = n, seed
        self._cache: dict[int, np.ndarray] = {}

    def permutation(self, epoch: int) -> np.ndarray:
        if epoch not in self._cache:
            if len(self._cache) > 4:
                self._cache.clear()
            self._cache[epoch] = np.random.default_rng([self.seed, epoch]).permutation(self.n)
        return self._cache[epoch]

    def index(self, k: int) -> int:
        epoch, pos = divmod(k, self.n)
        return int(self.permutation(epoch)[pos])

    def slice(self, start: int, size: int) -> list[int]:
        return [self.index(k) for k in range(start, start + size)]
