"""Preference groups as batches: which fit the context, how to chunk and score them."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch import Tensor

from gaf.errors import BadData
from gaf.interfaces import PreferenceGroup

__all__ = ["fitting", "group_chunks", "score_groups"]


def fitting(groups: Sequence[PreferenceGroup], tokenizer: Any,
            limit: int) -> tuple[list[PreferenceGroup], list[BadData]]:
    """Split ``groups`` into those whose every ``BOS + prompt + response + EOS`` fits in
    ``limit`` tokens and a :class:`BadData` for each other one (naming its source)."""
    kept: list[PreferenceGroup] = []
    problems: list[BadData] = []
    for g in groups:
        n_prompt = len(tokenizer.encode(g.prompt))
        worst = max(n_prompt + len(tokenizer.encode(r)) + 2 for r in g.responses)
        if worst <= limit:
            kept.append(g)
        else:
            problems.append(BadData(
                f"prompt + completion is {worst} tokens with BOS and EOS, longer than the "
                f"policy's context of {limit}; shorten it, or set objective.too_long='skip' "
                f"to drop such rows", path=g.source or "preference data"))
    return kept, problems


def group_chunks(groups: Sequence[PreferenceGroup], size: int) -> Iterator[list[PreferenceGroup]]:
    """Consecutive runs of whole groups holding at most ``size`` responses (at least one
    group each)."""
    chunk: list[PreferenceGroup] = []
    count = 0
    for g in groups:
        if chunk and count + len(g.responses) > size:
            yield chunk
            chunk, count = [], 0
        chunk.append(g)
        count += len(g.responses)
    if chunk:
        yield chunk


def score_groups(model: Any, groups: Sequence[PreferenceGroup], batch_size: int,
                 autocast: Any = None) -> Tensor:
    """``(N, 2)`` float tensor of (sum log-prob, token count) of every response of
    ``groups``, in group order, in eval mode and without gradients (the model's mode is
    restored). ``autocast`` is an optional context-manager factory."""
    import contextlib

    was_training = model.training
    model.eval()
    rows: list[Tensor] = []
    try:
        with torch.no_grad(), (autocast() if autocast else contextlib.nullcontext()):
            for chunk in group_chunks(groups, batch_size):
                prompts = [g.prompt for g in chunk for _ in g.responses]
                completions = [r for g in chunk for r in g.responses]
                seq = model.completion_logprobs(model.prepare(prompts, completions)).sequence()
                rows.append(torch.stack([seq.sum.float(), seq.count.float()], dim=1))
    finally:
        model.train(was_training)
    return torch.cat(rows).cpu() if rows else torch.zeros(0, 2)


def accepts_option(model: Any, method: str, name: str) -> bool:
    """Whether ``type(model).<method>`` takes the keyword ``name`` (the optional
    ``temperature=`` and ``entropy=`` of :meth:`gaf.interfaces.Policy.completion_logprobs`)."""
    import inspect

    func = getattr(type(model), method, None)
    if func is None:
        return False
    try:
        params = inspect.signature(func).parameters
    except (TypeError, ValueError):
        return False
    return name in params or any(p.kind is p.VAR_KEYWORD for p in params.values())
