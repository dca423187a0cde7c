"""Training units of preference data and the order they are drawn in.

A preference objective trains on *units* taken from :class:`~gaf.interfaces.PreferenceGroup`
objects: pairs ``(i, j)`` for pairwise losses, whole rankings for the ranking loss,
labelled single responses for KTO. :class:`UnitOrder` shuffles the **groups** each
epoch and keeps a group's units next to each other, so the units of one prompt mostly
land in the same batch: their completions are then scored once and their prompt is
run once (the policy packs shared prompts), instead of once per pair. InstructGPT
trains its reward model the same way (all pairs of a prompt in one batch element).

Batch ``b`` is the units at positions ``b·size … (b+1)·size − 1`` of the endless
epoch-by-epoch sequence: a pure function of ``b`` and the seed, so runs resume exactly.
The groups of epoch ``e`` come in the order of the core's
:class:`~gaf.seeding.EpochOrder` over the groups, on the stream ``"preference-order"``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import attrs
import numpy as np

from gaf.interfaces import PreferenceGroup
from gaf.seeding import EpochOrder

__all__ = ["UnitOrder", "ScoredBatch", "assemble", "ORDER_STREAM"]

#: the random stream the groups are shuffled on (what the DPO-family and reward runs use)
ORDER_STREAM = "preference-order"


class UnitOrder:
    """Positions ``k = 0, 1, 2 …`` → ``(group, unit)``; groups shuffled per epoch.

    ``counts[g]`` is the number of units of group ``g`` (groups with none are never
    drawn); epoch ``e``'s group order is ``EpochOrder(len(counts), seed, name)``'s.
    """

    def __init__(self, counts: Sequence[int], seed: int, name: str = ORDER_STREAM):
        self.counts = np.asarray(counts, dtype=np.int64)
        self.total = int(self.counts.sum())
        if self.total < 1:
            raise ValueError("UnitOrder needs at least one unit")
        self.seed = seed
        self.groups = EpochOrder(len(self.counts), seed, name)
        self._cache: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def _epoch(self, epoch: int) -> tuple[np.ndarray, np.ndarray]:
        if epoch not in self._cache:
            if len(self._cache) > 4:
                self._cache.clear()
            perm = self.groups.permutation(epoch)
            perm = perm[self.counts[perm] > 0]
            self._cache[epoch] = perm, np.cumsum(self.counts[perm])
        return self._cache[epoch]

    def index(self, k: int) -> tuple[int, int]:
        epoch, pos = divmod(k, self.total)
        perm, ends = self._epoch(epoch)
        slot = int(np.searchsorted(ends, pos, side="right"))
        start = int(ends[slot - 1]) if slot else 0
        return int(perm[slot]), pos - start

    def slice(self, start: int, size: int) -> list[tuple[int, int]]:
        return [self.index(k) for k in range(start, start + size)]


@attrs.frozen
class ScoredBatch:
    """The distinct completions a batch of units needs, and where each unit's are.

    ``prompts``/``completions`` list each needed response once, grouped by prompt
    (so a policy can run each prompt once); ``response_ids`` are their global ids
    (``offsets[g] + i``), used to look up cached reference log-probs; ``units`` are the
    batch's ``(group, unit)`` entries; ``local`` maps ``(group, response)`` to a row of
    this batch.
    """

    prompts: list[str]
    completions: list[str]
    response_ids: list[int]
    units: list[tuple[int, Any]]
    local: dict[tuple[int, int], int]


def assemble(groups: Sequence[PreferenceGroup], offsets: Sequence[int],
             units: Sequence[tuple[int, Any]],
             responses_of: Callable[[Any], Iterable[int]]) -> ScoredBatch:
    """Collect the responses of every ``(group, unit)``, each once, grouped by prompt.

    ``responses_of(unit)`` gives the indices (into its group's responses) a unit uses;
    ``offsets[g]`` is the global id of group ``g``'s first response.
    """
    per_group: dict[int, set[int]] = {}
    for g, u in units:
        per_group.setdefault(g, set()).update(responses_of(u))
    prompts, completions, ids = [], [], []
    local: dict[tuple[int, int], int] = {}
    for g, idx in per_group.items():
        for i in sorted(idx):
            local[(g, i)] = len(completions)
            prompts.append(groups[g].prompt)
            completions.append(groups[g].responses[i])
            ids.append(int(offsets[g]) + i)
    return ScoredBatch(prompts, completions, ids, list(units), local)
