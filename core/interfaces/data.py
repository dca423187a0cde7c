"""Data classes passed between components, and the helper :func:`batched`.

Part of :mod:`gaf.interfaces` (which re-exports every name here); no torch at import.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

import attrs

if TYPE_CHECKING:  # pragma: no cover - typing only
    import torch
    from torch import Tensor


__all__ = ["CompletionLogProbs", "PreferenceGroup", "Rollout", "SFTExample", "SequenceLogProbs",
           "batched"]


@attrs.frozen
class SFTExample:
    """One supervised example: the model sees ``prompt`` and learns ``completion``.

    A ``{"text": ...}`` record is the example ``SFTExample(prompt="", completion=text)``.
    """

    prompt: str
    completion: str


@attrs.frozen
class CompletionLogProbs:
    """Log-probabilities of completion tokens, as returned by :meth:`Policy.completion_logprobs`.

    ``token_logps`` is a ``(B, L)`` float tensor holding ``log π(y_t | x, y_<t)`` for
    every completion position and ``0`` elsewhere; ``mask`` is the ``(B, L)`` bool tensor
    of completion positions (the end-of-sequence token counts as part of the
    completion). Prompt and padding positions are never included. ``entropy`` is
    ``None`` unless asked for (``completion_logprobs(batch, entropy=True)``): then a
    detached ``(B, L)`` tensor of the entropy of the policy's next-token distribution
    at each completion position (``0`` elsewhere), a metric.
    """

    token_logps: Tensor
    mask: Tensor
    entropy: Tensor | None = None

    def mean_entropy(self) -> float:
        """Mean entropy over every completion token of the batch (nats; ``nan`` when
        the entropy was not computed or there are no completion tokens)."""
        if self.entropy is None or not bool(self.mask.any()):
            return float("nan")
        return float(self.entropy[self.mask].mean())

    @property
    def sum(self) -> Tensor:
        """``(B,)`` summed log-probability of each completion: ``log π(y | x)``."""
        return self.token_logps.sum(-1)

    @property
    def count(self) -> Tensor:
        """``(B,)`` number of completion tokens (at least 1 to keep means finite)."""
        return self.mask.sum(-1).clamp_min(1)

    @property
    def mean(self) -> Tensor:
        """``(B,)`` mean token log-probability of each completion."""
        return self.sum / self.count

    def sequence(self) -> SequenceLogProbs:
        """The per-sequence view (sum and token count) that preference losses use."""
        return SequenceLogProbs(self.sum, self.count.to(self.token_logps.dtype))


@attrs.frozen
class PreferenceGroup:
    """Preferences over several completions of one prompt.

    ``responses`` are distinct completions; ``pairs`` holds ``(i, j)`` index pairs
    meaning "``responses[i]`` is preferred to ``responses[j]``". ``ranked`` is True
    when ``responses`` are a full ranking, best first (then ``pairs`` is every
    ``(i, j)`` with ``i < j``). ``labels`` marks each response desirable (True) or
    undesirable (False) for unpaired objectives such as KTO, ``None`` meaning
    "derive from the pairs" (:meth:`desirable`). ``source`` says where the group
    came from (``"data.jsonl:12"``), for messages.

    A TRL pair ``{"prompt", "chosen", "rejected"}`` is the group
    ``PreferenceGroup(prompt, (chosen, rejected), ((0, 1),), ranked=True)``.
    """

    prompt: str
    responses: tuple[str, ...]
    pairs: tuple[tuple[int, int], ...] = ()
    ranked: bool = False
    labels: tuple[bool, ...] | None = None
    source: str = ""

    def desirable(self) -> tuple[bool | None, ...]:
        """Per response: ``labels`` when given; otherwise True if it wins more of its
        pairs than it loses, False if it loses more, ``None`` (unused) on a draw."""
        if self.labels is not None:
            return tuple(self.labels)
        score = [0] * len(self.responses)
        for i, j in self.pairs:
            score[i] += 1
            score[j] -= 1
        return tuple(None if s == 0 else s > 0 for s in score)


@attrs.frozen
class SequenceLogProbs:
    """Sequence-level scores of completions: what preference losses consume.

    ``sum`` is ``(B,)`` ``log π(y | x)`` (summed over completion tokens) and ``count``
    ``(B,)`` the number of completion tokens (at least 1). Build it from
    :class:`CompletionLogProbs` with :meth:`CompletionLogProbs.sequence`, or directly
    from cached values (a frozen reference's log-probs computed once).
    """

    sum: Tensor
    count: Tensor

    @property
    def mean(self) -> Tensor:
        """``(B,)`` mean token log-probability (the length-normalised score)."""
        return self.sum / self.count

    def select(self, index: Tensor) -> SequenceLogProbs:
        """The rows ``index`` (a ``(N,)`` int64 tensor) as a new ``SequenceLogProbs``."""
        return SequenceLogProbs(self.sum[index], self.count[index])


@attrs.frozen
class Rollout:
    """Completions sampled from a policy, kept as the very tokens that were drawn.

    ``batch`` is what :meth:`Policy.completion_logprobs` scores: each row is ``BOS +
    prompt`` followed by the sampled tokens, ending with EOS only where the policy
    emitted it (nothing is re-tokenised, nothing appended), so the log-probabilities
    are those of the sampled actions. ``batch.select(index)`` (an int64 tensor)
    gives the rows ``index`` (a minibatch). ``completions`` are the decoded strings
    (what a :class:`RewardFn` reads) and ``ended`` a ``(B,)`` bool tensor, True
    where the completion stopped on EOS (False when it ran out of
    ``max_new_tokens`` or of context).
    """

    batch: Any
    completions: list[str]
    ended: Tensor


def batched(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    """Yield consecutive slices of ``items`` of at most ``size`` elements."""
    for start in range(0, len(items), size):
        yield items[start:start + size]
