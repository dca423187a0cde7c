"""Preference data for the objectives that train on it: the DPO family and ``reward``.

:class:`PreferenceData` adds to the alignment base (:mod:`gaf.plugins.alignment.base`)
the groups it trains on:

* a task with ``preference_groups`` (e.g. ``--data FILE.jsonl`` with TRL pairs or
  ranked lists) supplies them; otherwise ``samples_per_prompt`` completions of each
  training prompt are sampled from the SFT policy with the run's sampler and labelled
  with the task's reward (:mod:`.labelling`); those groups are saved to
  ``RUN_DIR/data/preferences.jsonl``, which a resumed run reads back;
* examples longer than the policy's context are skipped (counted) or stop the run
  (``too_long``);
* batches hold ``batch_size`` *units* (pairs, rankings or labelled completions, as the
  subclass says) with a group's units kept together (:mod:`.units`), each distinct
  completion scored once.
"""

from __future__ import annotations

import warnings
from typing import Any, Literal

import attrs
import torch

from gaf.config import option
from gaf.errors import BadConfig, BadData
from gaf.interfaces import PreferenceGroup
from gaf.plugins.alignment.base import AlignmentConfig, AlignmentObjective
from gaf.plugins.alignment.groups import fitting
from gaf.runs import RunContext

from .labelling import read_groups, sample_groups, write_groups
from .units import ScoredBatch, UnitOrder, assemble

__all__ = ["PreferenceDataConfig", "PreferenceData"]


@attrs.define
class PreferenceDataConfig(AlignmentConfig):
    """Options of the objectives that train on preference groups."""

    prompts: int = option(0, "training prompts to sample completions for (0 = all)", ge=0)
    samples_per_prompt: int = option(4, "completions sampled per training prompt (K)", ge=2)
    labels: Literal["order", "bradley-terry", "plackett-luce"] = option(
        "order", "labelling rule: 'order' (by reward), 'bradley-terry' or 'plackett-luce' draws")
    label_temperature: float = option(0.1, "τ of the bradley-terry / plackett-luce draws", gt=0)
    too_long: Literal["skip", "raise"] = option(
        "skip", "an example longer than the policy's context: 'skip' (counted) or 'raise'")


class PreferenceData(AlignmentObjective):
    """The alignment base plus preference groups, units and their order (module
    docstring). A subclass sets ``unit`` (what ``batch_size`` counts) and
    implements :meth:`units_of` and :meth:`responses_of` when its units are not
    pairs."""

    Config: type = PreferenceDataConfig
    unit = "pairs"
    no_units_hint = ""

    def units_of(self, group: PreferenceGroup) -> list[Any]:
        """The training units of ``group`` (default: its preference pairs)."""
        return list(group.pairs)

    def responses_of(self, unit: Any) -> Any:
        """Indices of the responses ``unit`` needs scored."""
        return unit

    def batch_model(self) -> Any:
        """The model whose ``prepare`` builds the training batches (the policy)."""
        return self.policy

    def setup_data(self, ctx: RunContext) -> None:
        """``groups``, ``units``, ``order`` and ``offsets`` of the training data."""
        self.batch_size = ctx.spec.train.batch_size
        self.groups = self._check_lengths(self._train_groups(ctx))
        self.units = [self.units_of(g) for g in self.groups]
        counts = [len(u) for u in self.units]
        if not sum(counts):
            raise BadData(f"the preference data has no {self.unit} to train "
                          f"{ctx.spec.objective} on{self.no_units_hint}")
        self.order = UnitOrder(counts, ctx.spec.seed)
        self.offsets = [0]
        for g in self.groups[:-1]:
            self.offsets.append(self.offsets[-1] + len(g.responses))
        self.data_stats = {"data_groups": float(len(self.groups)),
                           f"data_{self.unit}": float(sum(counts))}
        ctx.log(f"preference data: {len(self.groups)} prompts, {sum(counts)} {self.unit}"
                + (f", {self.skipped} skipped (longer than the context)" if self.skipped else ""))

    def _train_groups(self, ctx: RunContext) -> list[PreferenceGroup]:
        """The task's preference data, else groups sampled and labelled once (and kept
        in ``RUN_DIR/data/preferences.jsonl``, which a resumed run reads back)."""
        provided = getattr(self.task, "preference_groups", None)
        groups = list(provided("train")) if provided is not None else []
        if groups:
            return groups
        reward = self.task.reward()
        if reward is None:
            raise BadConfig(f"task {ctx.spec.components['task'].name!r} has neither preference "
                            f"data nor a reward to label sampled completions with; pass "
                            f"--data FILE.jsonl with {{prompt, chosen, rejected}} records")
        path = ctx.run_dir / "data" / "preferences.jsonl"
        if path.is_file():
            return read_groups(path)[0]
        cfg = self.config
        prompts = list(self.task.prompts("train"))
        prompts = prompts[:cfg.prompts] if cfg.prompts else prompts
        ctx.log(f"stage 2: sampling {cfg.samples_per_prompt} completions for each of "
                f"{len(prompts)} prompts and labelling them ({cfg.labels})")
        with torch.no_grad():  # generation runs the policy in eval mode
            groups, rewards = sample_groups(
                self.policy, self.sampler, reward, prompts, k=cfg.samples_per_prompt,
                max_new_tokens=cfg.max_new_tokens, batch_size=cfg.generation_batch_size,
                rule=cfg.labels, temperature=cfg.label_temperature,
                generator=ctx.generator("preference-samples"))
        if ctx.world.is_main:  # every rank sampled the same groups (same seed)
            write_groups(ctx.path("data", "preferences.jsonl"), groups, rewards)
        return groups

    def _check_lengths(self, groups: list[PreferenceGroup]) -> list[PreferenceGroup]:
        """Drop (or refuse, ``too_long = "raise"``) groups with an example that does
        not fit the policy's context; sets :attr:`skipped`."""
        kept, problems = fitting(groups, self.policy.tokenizer, self.policy.context_length)
        self.skipped = len(problems)
        if problems and self.config.too_long == "raise":
            raise problems[0]
        if problems:
            warnings.warn(f"skipped {len(problems)} preference group(s) longer than the "
                          f"policy's context; the first: {problems[0]}", stacklevel=2)
        if not kept:
            raise BadData("every preference example is longer than the policy's context")
        return kept

    def train_batch(self, index: int) -> tuple[ScoredBatch, Any]:
        start, count = self.ctx.world.shard(index * self.batch_size, self.batch_size)
        picks = self.order.slice(start, count)
        units = [(g, self.units[g][u]) for g, u in picks]
        scored = assemble(self.groups, self.offsets, units, self.responses_of)
        return scored, self.batch_model().prepare(scored.prompts, scored.completions)
