"""Preference data made on the fly: sample K completions per prompt, label them with a reward.

This is the DPO paper's controlled-sentiment recipe (§6.1): for each training prompt,
draw ``K`` completions from the SFT policy and label them with the task's
ground-truth reward ``r*``. Three labelling rules (``labels`` option):

``order``
    deterministic: responses sorted by reward, best first; every pair with a strictly
    higher reward is a preference, ties give no pair. The group is a full ranking
    (``ranked``) when no two rewards tie.
``bradley-terry``
    each of the ``C(K, 2)`` pairs is labelled independently, ``i ≻ j`` with
    probability ``σ((r_i − r_j) / τ)`` (the Bradley–Terry model of a noisy rater);
    groups are not rankings.
``plackett-luce``
    one full ranking per group drawn from the Plackett–Luce model with scores
    ``r / τ`` (Gumbel-max: sort ``r/τ + Gumbel noise``); every implied pair is a
    preference. With ``K = 2`` this is ``bradley-terry``.

Identical completions of one prompt are kept once; an empty completion (the policy
ended at once) is a sample like any other. Groups are written to
``RUN_DIR/data/preferences.jsonl`` with their pairs and rewards, so a resumed run
reuses them and a user can inspect them. Full rankings also get the ``ranking`` key of
the ``{prompt, responses, ranking}`` form that ``--data`` reads; as ``--data`` refuses
empty completions, reuse such a file with ``--set task.on_error=skip``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from gaf.atomic import atomic_write_text
from gaf.errors import BadData
from gaf.interfaces import PreferenceGroup, RewardFn, batched

__all__ = ["LABEL_RULES", "label_group", "sample_groups", "write_groups", "read_groups"]

LABEL_RULES = ("order", "bradley-terry", "plackett-luce")


def label_group(prompt: str, responses: Sequence[str], rewards: Sequence[float], *,
                rule: str = "order", temperature: float = 0.1,
                generator: torch.Generator | None = None, source: str = "") -> PreferenceGroup:
    """One labelled group from ``responses`` and their ``rewards`` (see the module doc).

    Responses come back reordered best first (by reward for ``order`` and
    ``bradley-terry``, by the drawn ranking for ``plackett-luce``).
    """
    if rule not in LABEL_RULES:
        raise ValueError(f"unknown labelling rule {rule!r} (known: {', '.join(LABEL_RULES)})")
    unique: dict[str, float] = {}
    for resp, r in zip(responses, rewards):
        unique.setdefault(resp, float(r))
    items = list(unique.items())
    if rule == "plackett-luce":
        u = torch.rand(len(items), generator=generator, dtype=torch.float64)
        gumbel = -torch.log(-torch.log(u.clamp(1e-300, 1 - 1e-16)))
        keys = [r / temperature + float(g) for (_, r), g in zip(items, gumbel)]
        order = sorted(range(len(items)), key=lambda i: -keys[i])
        items = [items[i] for i in order]
        n = len(items)
        pairs = tuple((i, j) for i in range(n) for j in range(i + 1, n))
        return PreferenceGroup(prompt, tuple(t for t, _ in items), pairs, ranked=n >= 2,
                               source=source)
    items.sort(key=lambda t: -t[1])  # stable: ties keep sampling order
    texts = tuple(t for t, _ in items)
    r = [v for _, v in items]
    n = len(items)
    if rule == "order":
        pairs = tuple((i, j) for i in range(n) for j in range(i + 1, n) if r[i] > r[j])
        ranked = n >= 2 and len(pairs) == n * (n - 1) // 2
        return PreferenceGroup(prompt, texts, pairs, ranked=ranked, source=source)
    draws = torch.rand(n * (n - 1) // 2, generator=generator, dtype=torch.float64).tolist()
    out, k = [], 0
    for i in range(n):
        for j in range(i + 1, n):
            p_i = 1.0 / (1.0 + math.exp(-(r[i] - r[j]) / temperature))
            out.append((i, j) if draws[k] < p_i else (j, i))
            k += 1
    return PreferenceGroup(prompt, texts, tuple(out), ranked=False, source=source)


def sample_groups(policy: Any, sampler: Any, reward: RewardFn, prompts: Sequence[str], *,
                  k: int, max_new_tokens: int, batch_size: int, rule: str,
                  temperature: float, generator: torch.Generator,
                  ) -> tuple[list[PreferenceGroup], list[list[float]]]:
    """Sample ``k`` completions per prompt from ``policy`` and label them.

    Returns the groups and, per group, the rewards of its responses (best first).
    """
    flat = [p for p in prompts for _ in range(k)]
    completions: list[str] = []
    for chunk in batched(flat, batch_size):
        completions += policy.generate(list(chunk), sampler=sampler,
                                       max_new_tokens=max_new_tokens, generator=generator)
    scores = [float(x) for x in reward(flat, completions)]
    groups, rewards = [], []
    for g, prompt in enumerate(prompts):
        resp = completions[g * k:(g + 1) * k]
        rs = scores[g * k:(g + 1) * k]
        group = label_group(prompt, resp, rs, rule=rule, temperature=temperature,
                            generator=generator, source=f"sampled prompt {g}")
        by_text = dict(zip(resp, rs))
        groups.append(group)
        rewards.append([by_text[t] for t in group.responses])
    return groups, rewards


def write_groups(path: Path, groups: Sequence[PreferenceGroup],
                 rewards: Sequence[Sequence[float]] | None = None) -> None:
    """Write groups as JSONL (``prompt``, ``responses`` best first, ``pairs``, ``ranked``,
    ``rewards``); a ranked group also gets the ``ranking`` that ``--data`` reads."""
    lines = []
    for g, group in enumerate(groups):
        row: dict[str, Any] = {"prompt": group.prompt, "responses": list(group.responses)}
        if group.ranked:
            row["ranking"] = list(range(len(group.responses)))
        row["pairs"] = [list(p) for p in group.pairs]
        row["ranked"] = group.ranked
        if rewards is not None:
            row["rewards"] = [round(float(x), 6) for x in rewards[g]]
        lines.append(json.dumps(row, ensure_ascii=False))
    atomic_write_text(path, "\n".join(lines) + "\n")


def read_groups(path: Path) -> tuple[list[PreferenceGroup], list[list[float]]]:
    """Read back what :func:`write_groups` wrote."""
    groups, rewards = [], []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            groups.append(PreferenceGroup(
                row["prompt"], tuple(row["responses"]),
                tuple((int(i), int(j)) for i, j in row["pairs"]), ranked=bool(row["ranked"]),
                source=f"{path}:{number}"))
            rewards.append([float(x) for x in row.get("rewards", [])])
        except (KeyError, TypeError, ValueError) as exc:
            raise BadData(f"not a preference group written by gaf ({exc})", path=str(path),
                          line=number) from None
    return groups, rewards
