"""Tuning reads validation: the runs and prompts that sweeps and tuning scripts use.

Defaults, β, learning rates and sampler settings are chosen on the ``validation``
split; the ``eval`` split reports the headline figures, once. Scripts that compare
settings (``benchmarks/dpo_beta_sweep.py``, ``examples/frontier.py``,
``benchmarks/win_rate.py`` …) build their runs with :func:`tuning_run` and their
held-out prompts with :func:`tuning_prompts`, so that they cannot read the eval split
by accident (``tests/alignment/test_tuning_scripts.py`` checks each of them).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__ = ["TUNING_SPLIT", "tuning_sets", "tuning_run", "tuning_prompts"]

#: the held-out split every tuning figure comes from
TUNING_SPLIT = "validation"


def tuning_sets(sets: Sequence[str] = ()) -> list[str]:
    """``sets`` plus ``objective.eval_split="validation"``; a ``sets`` entry that picks
    the split itself is refused (a sweep must not be pointed at eval)."""
    for s in sets:
        if s.replace(" ", "").startswith("objective.eval_split="):
            raise ValueError(f"a tuning run reads the {TUNING_SPLIT} split; drop {s!r}")
    return [*sets, f'objective.eval_split="{TUNING_SPLIT}"']


def tuning_run(objective: str, *, sets: Sequence[str] = (), **kwargs: Any) -> Any:
    """``gaf.run(objective, ...)`` evaluated on the validation split."""
    import gaf

    return gaf.run(objective, sets=tuning_sets(sets), **kwargs)


def tuning_prompts(task: Any, limit: int = 0) -> list[str]:
    """The task's validation prompts (the first ``limit``, all when 0)."""
    prompts = list(task.prompts(TUNING_SPLIT))
    return prompts[:limit] if limit else prompts
