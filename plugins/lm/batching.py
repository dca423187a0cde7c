"""Turning (prompt, completion) strings into padded token batches for causal LMs.

The layout, for one pair, with ``p = encode(prompt)`` and ``c = encode(completion)``::

    input_ids        BOS  p0  p1  c0  c1  EOS  PAD PAD
    target_ids       p0   p1  c0  c1  EOS PAD  PAD PAD     (input_ids shifted left)
    completion_mask  F    F   T   T   T   F    F   F
    attention_mask   T    T   T   T   T   T    F   F

Position ``t`` of the model's output predicts ``input_ids[t + 1]`` (= ``target_ids[t]``);
``completion_mask[t]`` is True exactly when that target is a completion token or the
final EOS. Sequences are right-padded with ``pad_id``.

Truncation to ``n_positions`` tokens: the prompt is cut from the left (BOS is kept);
if even ``BOS + completion + EOS`` does not fit, the prompt is dropped and the
completion is cut at the end to ``n_positions - 1`` tokens, without EOS.

Packing shared prompts
----------------------

Preference objectives score several completions of one prompt. :func:`build_batch`
therefore packs every run of *consecutive* pairs whose kept context
(``BOS + prompt`` after truncation, ``pair_ids(...)[0][:n_context]``) is identical
and longer than BOS alone into one row: the context once, then each pair's
completion tokens (with their EOS when kept) as a *segment*. Each pair is truncated
exactly as above first, so pairs whose truncation left different prompts are not
packed together. For the pairs ``(x, y)``, ``(x, z)`` with ``x = p0 p1``::

    input_ids         BOS p0  p1  y0  y1  EOS z0  EOS PAD
    position_ids      0   1   2   3   4   5   3   4   0       (segments restart at 3)
    segment_ids       0   0   0   1   1   1   2   2   -1      (0 = context, -1 = pad)
    completion_mask   F   F   T   T   T   F   T   F   F       (outputs that are scored)

    attention_mask_4d (query row sees key column; 1 = attend)
              BOS p0  p1  y0  y1  EOS z0  EOS PAD
        BOS   1
        p0    1   1
        p1    1   1   1
        y0    1   1   1   1
        y1    1   1   1   1   1
        EOS   1   1   1   1   1   1
        z0    1   1   1   .   .   .   1
        EOS   1   1   1   .   .   .   1   1
        PAD   1   1   1   .   .   .   .   .   1             (padding, when another row
                                                             is longer, sees the context
                                                             and itself: no NaN)

So every completion token sees exactly the tokens, at exactly the positions, that
it sees in its own unpacked row, and its log-probabilities equal the unpacked ones
(to floating-point round-off). The last context output (``p1`` above) predicts the
first token of *every* segment (``y0`` and ``z0``), which a single ``target_ids``
row cannot express; a packed batch therefore lists its scored outputs explicitly:
``score_index`` (flat ``row * T + t`` output positions), ``score_target`` (the
token each one predicts), ``score_pair``/``score_slot`` (where the log-probability
goes in the ``(B, L)`` result, ``B`` pairs in their original order). Here those are
``t = 2, 3, 4, 2, 6`` predicting ``y0 y1 EOS z0 EOS`` for pairs ``0 0 0 1 1``, slots
``0 1 2 0 1``. ``target_ids`` stays ``input_ids`` shifted left and
``completion_mask`` marks the outputs that are scored at least once; ``pair_row``
``(B,)`` is the row holding each pair. Rows without sharing are single-segment rows
in a batch with any packed row; a packed row may be longer than ``n_positions``
(position ids stay below it). Rows are right-padded to the longest row.

When no two consecutive pairs share a context (e.g. SFT data, or prompts that are
empty), the batch is the plain right-padded one of the first diagram and the
packing fields are ``None``: the model runs its fast causal path. Given a
``key_cost`` (``GPT2Policy.prepare`` passes one), :func:`build_batch` does the same
when packing is estimated to cost more than it saves (:func:`packing_pays`: a
block-masked row attends over all its tokens, so short prompts with many long
completions are cheaper unpacked).
"""

from __future__ import annotations

from collections.abc import Sequence

import attrs
import torch
from torch import Tensor

from gaf.interfaces import Tokenizer

__all__ = ["LMBatch", "batch_from_ids", "build_batch", "packing_pays", "pair_ids", "prompt_ids"]


@attrs.frozen
class LMBatch:
    """A tokenised batch of (prompt, completion) pairs.

    ``input_ids``/``target_ids`` ``(R, T)`` are int64, ``attention_mask`` and
    ``completion_mask`` ``(R, T)`` bool. See the module docstring for the alignment
    (``completion_mask[t]`` marks the target ``input_ids[t + 1]``). Unpacked batches
    have one row per pair (``R = B``) and every other field ``None``; a batch with
    packed shared prompts (module docstring) also carries ``position_ids`` and
    ``segment_ids`` ``(R, T)``, ``attention_mask_4d`` ``(R, 1, T, T)`` bool (True =
    attend), ``pair_row`` ``(B,)`` and the ``(N,)`` scoring lists ``score_index``,
    ``score_target``, ``score_pair`` and ``score_slot``.
    """

    input_ids: Tensor
    target_ids: Tensor
    attention_mask: Tensor
    completion_mask: Tensor
    position_ids: Tensor | None = None
    segment_ids: Tensor | None = None
    attention_mask_4d: Tensor | None = None
    pair_row: Tensor | None = None
    score_index: Tensor | None = None
    score_target: Tensor | None = None
    score_pair: Tensor | None = None
    score_slot: Tensor | None = None

    @property
    def packed(self) -> bool:
        """Whether some rows hold several pairs (the packing fields are set)."""
        return self.pair_row is not None

    @property
    def n_pairs(self) -> int:
        """``B``, the number of (prompt, completion) pairs (rows of the result)."""
        return self.input_ids.shape[0] if self.pair_row is None else self.pair_row.shape[0]

    def __len__(self) -> int:
        return self.n_pairs

    def select(self, index: Tensor) -> LMBatch:
        """The rows ``index`` (an int64 tensor) of an unpacked batch, trimmed to their
        longest sequence (e.g. a minibatch of a PPO rollout)."""
        if self.packed:
            raise ValueError("select needs an unpacked batch (one row per pair)")
        index = index.to(self.input_ids.device)
        keep = self.attention_mask[index]
        T = int(keep.sum(1).max()) if index.numel() else 1
        return LMBatch(self.input_ids[index, :T], self.target_ids[index, :T], keep[:, :T],
                       self.completion_mask[index, :T])

    def to(self, device: torch.device | str) -> LMBatch:
        """The same batch on ``device``."""
        return LMBatch(*(None if t is None else t.to(device)
                         for t in attrs.astuple(self, recurse=False)))


def pair_ids(tokenizer: Tokenizer, prompt: str, completion: str,
             n_positions: int) -> tuple[list[int], int]:
    """Token ids of one pair and the number of leading non-completion tokens.

    Returns ``(ids, n_context)`` where ``ids = BOS + prompt + completion (+ EOS)``
    after truncation (module docstring) and ``ids[n_context:]`` are the completion
    tokens (with EOS when it fits). ``n_context`` is ``1 + len(kept prompt)``.
    """
    p = tokenizer.encode(prompt)
    c = tokenizer.encode(completion)
    room_for_prompt = n_positions - 2 - len(c)
    if room_for_prompt >= 0:
        p = p[len(p) - room_for_prompt:] if len(p) > room_for_prompt else p
        return [tokenizer.bos_id, *p, *c, tokenizer.eos_id], 1 + len(p)
    return [tokenizer.bos_id, *c[:max(n_positions - 1, 0)]], 1


def prompt_ids(tokenizer: Tokenizer, prompt: str, n_positions: int) -> list[int]:
    """``BOS + prompt`` for generation, the prompt cut from the left so that at least
    one new token fits in ``n_positions``."""
    p = tokenizer.encode(prompt)
    keep = max(n_positions - 2, 0)
    if len(p) > keep:
        p = p[len(p) - keep:]
    return [tokenizer.bos_id, *p]


def _groups(pairs: Sequence[tuple[list[int], int]]) -> list[list[int]]:
    """Runs of consecutive pair indices with the same kept context (BOS + prompt);
    a context of BOS alone is never shared (there is nothing to save)."""
    groups: list[list[int]] = []
    last = None
    for b, (ids, n_context) in enumerate(pairs):
        key = tuple(ids[:n_context]) if n_context > 1 else None
        if groups and key is not None and key == last:
            groups[-1].append(b)
        else:
            groups.append([b])
        last = key
    return groups


def packing_pays(unpacked: tuple[int, int], packed: tuple[int, int], key_cost: float) -> bool:
    """Whether ``packed`` ``(rows, T)`` is estimated cheaper than ``unpacked`` ``(rows, T)``.

    The estimate of a forward pass counts, per token, its dense layers (1) plus
    ``key_cost`` per key it attends to: ``T / 2`` on average in a causal row,
    all ``T`` in a block-masked row (a masked kernel computes every pair).
    """
    (r_u, t_u), (r_p, t_p) = unpacked, packed
    return r_p * t_p * (1 + key_cost * t_p) < r_u * t_u * (1 + key_cost * t_u / 2)


def build_batch(tokenizer: Tokenizer, prompts: Sequence[str], completions: Sequence[str],
                n_positions: int, device: torch.device | str = "cpu", *,
                pack: bool = True, key_cost: float | None = None) -> LMBatch:
    """Tokenise, truncate and right-pad ``prompts``/``completions`` into an :class:`LMBatch`.

    With ``pack`` (the default), consecutive pairs with the same kept prompt share
    one row (module docstring); ``pack=False`` always gives one row per pair.
    ``key_cost``, the cost of attending to one key relative to one token's dense
    layers, makes packing conditional on :func:`packing_pays` (padding included);
    ``None`` packs whenever some prompt is shared.
    """
    if isinstance(prompts, str) or isinstance(completions, str):
        raise TypeError("prompts and completions must be sequences of strings, not a string")
    if len(prompts) != len(completions):
        raise ValueError(f"{len(prompts)} prompts but {len(completions)} completions")
    pairs = [pair_ids(tokenizer, p, c, n_positions) for p, c in zip(prompts, completions)]
    B = len(pairs)
    T = max((len(ids) for ids, _ in pairs), default=1)
    groups = _groups(pairs) if pack else []
    if groups and len(groups) < B:  # some prompt is shared
        T_packed = max(pairs[g[0]][1] + sum(len(pairs[b][0]) - pairs[b][1] for b in g)
                       for g in groups)
        if key_cost is None or packing_pays((B, T), (len(groups), T_packed), key_cost):
            return _packed_batch(tokenizer, pairs, groups).to(device)
    return batch_from_ids(pairs, tokenizer.pad_id, device)


def batch_from_ids(pairs: Sequence[tuple[Sequence[int], int]], pad_id: int,
                   device: torch.device | str = "cpu") -> LMBatch:
    """The plain right-padded :class:`LMBatch` of already-tokenised pairs, one row each.

    ``pairs`` holds ``(ids, n_context)`` with ``ids`` the whole sequence (BOS and
    prompt first, then the completion tokens, ending with EOS only if it has one)
    and ``ids[n_context:]`` the scored completion, as :func:`pair_ids` returns; a
    policy's sampled tokens go in as they were drawn, without re-tokenising."""
    B = len(pairs)
    T = max((len(ids) for ids, _ in pairs), default=1)
    input_ids = torch.full((B, T), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((B, T), dtype=torch.bool)
    completion_mask = torch.zeros((B, T), dtype=torch.bool)
    for b, (ids, n_context) in enumerate(pairs):
        if not 1 <= n_context < len(ids):
            raise ValueError(f"pair {b}: n_context {n_context} leaves no completion in "
                             f"{len(ids)} tokens (a context of at least BOS is needed)")
        input_ids[b, :len(ids)] = torch.tensor(list(ids), dtype=torch.long)
        attention_mask[b, :len(ids)] = True
        # targets ids[n_context:] sit at output positions n_context-1 .. len(ids)-2
        completion_mask[b, n_context - 1:len(ids) - 1] = True
    target_ids = torch.full_like(input_ids, pad_id)
    target_ids[:, :-1] = input_ids[:, 1:]
    return LMBatch(input_ids, target_ids, attention_mask, completion_mask).to(device)


def _packed_batch(tokenizer: Tokenizer, pairs: Sequence[tuple[list[int], int]],
                  groups: Sequence[Sequence[int]]) -> LMBatch:
    """One row per group: the shared context, then each pair's completion segment."""
    R = len(groups)
    rows, positions, segments = [], [], []
    pair_row = [0] * len(pairs)
    score_col: list[int] = []
    score_row: list[int] = []
    score_target: list[int] = []
    score_pair: list[int] = []
    score_slot: list[int] = []
    for r, group in enumerate(groups):
        n = pairs[group[0]][1]
        row = list(pairs[group[0]][0][:n])
        pos = list(range(n))
        seg = [0] * n
        for s, b in enumerate(group, start=1):
            ids, n_context = pairs[b]
            assert n_context == n
            targets = ids[n:]
            start = len(row)
            # output n-1 (the last context token) predicts the first target, then each
            # segment token predicts the next; the segment's last token predicts nothing
            cols = [n - 1, *range(start, start + len(targets) - 1)][:len(targets)]
            score_row += [r] * len(targets)
            score_col += cols
            score_target += targets
            score_pair += [b] * len(targets)
            score_slot += range(len(targets))
            row += targets
            pos += range(n, n + len(targets))
            seg += [s] * len(targets)
            pair_row[b] = r
        rows.append(row)
        positions.append(pos)
        segments.append(seg)
    T = max(len(row) for row in rows)
    input_ids = torch.full((R, T), tokenizer.pad_id, dtype=torch.long)
    position_ids = torch.zeros((R, T), dtype=torch.long)
    segment_ids = torch.full((R, T), -1, dtype=torch.long)
    for r, (row, pos, seg) in enumerate(zip(rows, positions, segments)):
        input_ids[r, :len(row)] = torch.tensor(row, dtype=torch.long)
        position_ids[r, :len(row)] = torch.tensor(pos, dtype=torch.long)
        segment_ids[r, :len(row)] = torch.tensor(seg, dtype=torch.long)
    attention_mask = segment_ids >= 0
    target_ids = torch.full_like(input_ids, tokenizer.pad_id)
    target_ids[:, :-1] = input_ids[:, 1:]
    completion_mask = torch.zeros((R, T), dtype=torch.bool)
    completion_mask[score_row, score_col] = True
    # query q sees key k <= q of the context or of its own segment (never padding);
    # every query sees itself, so padded queries stay finite
    q_seg, k_seg = segment_ids[:, :, None], segment_ids[:, None, :]
    idx = torch.arange(T)
    causal = idx[None, :] <= idx[:, None]
    mask = causal & (k_seg >= 0) & ((k_seg == 0) | (k_seg == q_seg))
    mask |= torch.eye(T, dtype=torch.bool)

    def as_long(xs: list[int]) -> Tensor:
        return torch.tensor(xs, dtype=torch.long)

    return LMBatch(input_ids, target_ids, attention_mask, completion_mask,
                   position_ids=position_ids, segment_ids=segment_ids,
                   attention_mask_4d=mask.unsqueeze(1), pair_row=as_long(pair_row),
                   score_index=as_long(score_row) * T + as_long(score_col),
                   score_target=as_long(score_target), score_pair=as_long(score_pair),
                   score_slot=as_long(score_slot))
