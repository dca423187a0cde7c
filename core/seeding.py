"""Named random streams from a seed, and the seeded epoch-by-epoch data order.

A run resumes exactly only if every random draw it makes (the data order, sampled
completions, diffusion noise, labels) is a pure function of the run's seed and of
where in the run the draw happens. This module is the one way gaf makes such draws:

* a **stream** is named by what it is for (``"sft-order"``, ``"rollouts"``,
  ``"eval-policy-samples"`` …) and keyed by integers that say where it is drawn
  (epoch, rollout number, micro-batch, rank): :func:`stream_seed` turns
  ``(seed, name, *keys)`` into a :class:`numpy.random.SeedSequence`, and :func:`rng`
  and :func:`torch_generator` into a numpy ``Generator`` and a ``torch.Generator``;
* :class:`EpochOrder` is the endless shuffled pass over ``n`` items that training
  objectives draw their batches from: epoch ``e`` is a permutation that depends only
  on ``(seed, name, e)``.

Inside a run, :meth:`gaf.runs.RunContext.rng` and :meth:`~gaf.runs.RunContext.generator`
are these on the run's seed: ``ctx.rng("sampling", epoch)``. Code with a seed of its
own (a metric's ``seed`` option, an evaluation helper) calls the functions here.

Two different names, or two different key tuples, give independent streams; the same
inputs give the same draws in every process, on every platform and Python version
(the name is hashed with BLAKE2b, never with Python's salted ``hash()``). So there are
no stream numbers to keep apart by hand, and a new stream cannot collide with an old
one by picking the same small integer.

Importing this module imports neither numpy nor torch (``gaf --help`` stays light).
"""

from __future__ import annotations

import hashlib
import operator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np
    import torch

__all__ = ["stream_seed", "rng", "torch_seed", "torch_generator", "EpochOrder"]

_WORD = 1 << 32
_SEED_MIN, _SEED_END = -(1 << 63), 1 << 64  # what torch.manual_seed accepts


def _words64(value: int) -> list[int]:
    """``value`` (in ``[0, 2**64)``) as two 32-bit words, low first: fixed width, so
    that consecutive values in the entropy cannot run into each other."""
    return [value % _WORD, value // _WORD]


def name_words(name: str) -> list[int]:
    """The stream name as two 32-bit words: the first 8 bytes of BLAKE2b of its UTF-8
    encoding (stable across processes, platforms and Python versions)."""
    if not isinstance(name, str) or not name:
        raise TypeError(f"a random stream is named by a non-empty string (what it is for, "
                        f"e.g. 'sft-order'), got {name!r}")
    digest = hashlib.blake2b(name.encode("utf-8"), digest_size=8).digest()
    return _words64(int.from_bytes(digest, "little"))


def entropy(seed: int, name: str, *keys: int) -> list[int]:
    """The 32-bit words :func:`stream_seed` feeds to ``SeedSequence``:
    ``seed`` (two words, two's complement for a negative seed), the name's two words,
    the number of keys, then each key (two words).

    Every field has a fixed width and the key count comes before the keys, so
    different ``(seed, name, keys)`` give different word lists (up to the 64-bit name
    hash); the list is always longer than ``SeedSequence``'s pool of four words, so
    no two lists collapse into one by trailing zeros.
    """
    seed = operator.index(seed)
    if not _SEED_MIN <= seed < _SEED_END:
        raise ValueError(f"seed must be in [-2**63, 2**64), got {seed}")
    words = _words64(seed % _SEED_END) + name_words(name) + [len(keys)]
    for key in keys:
        k = operator.index(key)
        if not 0 <= k < _SEED_END:
            raise ValueError(f"stream {name!r}: keys must be integers in [0, 2**64) "
                             f"(an epoch, a step, a rank …), got {key!r}")
        words += _words64(k)
    return words


def stream_seed(seed: int, name: str, *keys: int) -> np.random.SeedSequence:
    """The ``SeedSequence`` of stream ``name`` at ``keys`` under ``seed``.

    ``name`` says what the draws are for; ``keys`` (non-negative integers) say where in
    the run they are drawn: ``stream_seed(seed, "rollouts", draw, rank)``.
    """
    import numpy as np

    return np.random.SeedSequence(entropy(seed, name, *keys))


def rng(seed: int, name: str, *keys: int) -> np.random.Generator:
    """A numpy ``Generator`` (PCG64) on stream ``name`` at ``keys`` (see :func:`stream_seed`)."""
    import numpy as np

    return np.random.default_rng(stream_seed(seed, name, *keys))


def torch_seed(seed: int, name: str, *keys: int) -> int:
    """A 64-bit integer for ``torch.Generator.manual_seed``, from stream ``name`` at
    ``keys`` (the first 64 bits its ``SeedSequence`` generates)."""
    import numpy as np

    return int(stream_seed(seed, name, *keys).generate_state(1, np.uint64)[0])


def torch_generator(seed: int, name: str, *keys: int, device: Any = None) -> torch.Generator:
    """A ``torch.Generator`` on ``device`` (default CPU) seeded with
    :func:`torch_seed`: the same draws for the same ``(seed, name, keys)``."""
    import torch

    gen = torch.Generator(device=device if device is not None else "cpu")
    gen.manual_seed(torch_seed(seed, name, *keys))
    return gen


class EpochOrder:
    """Position ``k = 0, 1, 2 …`` of an endless shuffled pass over ``n`` items.

    Epoch ``e`` (positions ``e·n … e·n + n − 1``) is the permutation
    ``rng(seed, name, e).permutation(n)``, so what sits at position ``k`` depends only
    on ``(n, seed, name, k)``: an objective that takes micro-batch ``i`` from positions
    ``i·B … i·B + B − 1`` (``order.slice(i * B, B)``) sees, after a resume, exactly the
    batches the uninterrupted run would have seen. Name the order after what it
    orders (``"sft-order"``, ``"prompt-order"``, ``"ptx-order"``), so that two orders of
    the same run are independent. The last few epochs' permutations are cached.
    """

    def __init__(self, n: int, seed: int, name: str):
        n = operator.index(n)
        if n < 1:
            raise ValueError(f"EpochOrder {name!r} needs at least one item, got {n}")
        entropy(seed, name)  # refuses a bad seed or name now, not at the first batch
        self.n, self.seed, self.name = n, seed, name
        self._cache: dict[int, np.ndarray] = {}

    def permutation(self, epoch: int) -> np.ndarray:
        """Epoch ``epoch``'s order: a permutation of ``range(n)`` (do not modify it)."""
        if epoch not in self._cache:
            if len(self._cache) > 4:
                self._cache.clear()
            perm = rng(self.seed, self.name, epoch).permutation(self.n)
            perm.flags.writeable = False
            self._cache[epoch] = perm
        return self._cache[epoch]

    def index(self, k: int) -> int:
        """The item at position ``k`` (``k >= 0``)."""
        if k < 0:
            raise ValueError(f"EpochOrder positions start at 0, got {k}")
        epoch, pos = divmod(k, self.n)
        return int(self.permutation(epoch)[pos])

    def slice(self, start: int, size: int) -> list[int]:
        """The items at positions ``start … start + size − 1`` (they may span epochs)."""
        return [self.index(k) for k in range(start, start + size)]
