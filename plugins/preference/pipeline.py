"""What every preference objective (dpo, ipo, kto, ranking-dpo …) does around its loss.

:class:`PreferenceTraining` is the :class:`~gaf.interfaces.Objective` the DPO family
shares; a concrete objective only says which *units* it trains on (pairs, rankings or
labelled completions) and how it scores them. A run goes through four stages:

1. **SFT policy.** A policy loaded from a path (``--policy RUN_DIR``, ``--init PATH``,
   or a Hugging Face GPT-2 directory) is taken as the SFT policy. A policy built
   from a registered name is first fine-tuned with the ``sft`` objective for
   ``sft_steps`` steps on the task's examples, as a sub-run in ``RUN_DIR/sft/``
   (its own metrics, plots and ``policy/``; ``--init RUN_DIR/sft`` reuses it).
   ``sft_steps = 0`` skips this and uses the policy as built. A frozen copy of the
   SFT policy is the reference ``π_ref``.
2. **Preference data.** A task with ``preference_groups`` (e.g. ``--data FILE.jsonl``
   with TRL pairs or ranked lists) supplies it. Otherwise ``samples_per_prompt``
   completions of each training prompt are sampled from the SFT policy with the run's
   sampler and labelled with the task's reward (:mod:`.labelling`); the groups are
   saved to ``RUN_DIR/data/preferences.jsonl``. Examples longer than the policy's
   context are skipped (counted) or stop the run (``too_long``).
3. **Training.** The reference log-probs of every response are computed once, before
   training (no reference forward per step). Batches hold ``batch_size`` units with a
   group's units kept together (:mod:`.units`), each distinct completion scored once.
   Logged per step with TRL's names: ``loss``, ``rewards/chosen``,
   ``rewards/rejected``, ``rewards/margins``, ``rewards/accuracies`` (strict ``>``),
   ``logps/chosen``, ``logps/rejected``, and throughput.
4. **Evaluation** on held-out prompts: one completion each from the policy and from
   the reference with the run's sampler (default ``top-p``, p = 0.9, which also draws
   the training samples); ``win_rate`` (the policy's completion has the higher true
   reward; ties count ½), ``mean_reward`` and ``reference_mean_reward``. ``kl`` is the
   sequence ``KL(π‖π_ref)`` estimated as the mean of ``log π(y|x) − log π_ref(y|x)``
   over samples ``y ~ π`` drawn by plain ancestral sampling (temperature 1, no
   truncation, so the estimate is unbiased whatever the run's sampler). With held-out
   preference data, ``eval_accuracy`` is the fraction of held-out pairs whose implicit
   reward orders them correctly. Samples go to ``samples/samples.jsonl``.
"""

from __future__ import annotations

import abc
import copy
import json
import warnings
from collections.abc import Sequence
from typing import Any, Literal

import attrs
import torch
from torch import Tensor

from gaf.checkpoint import atomic_write_text
from gaf.config import option
from gaf.errors import BadConfig, BadData
from gaf.interfaces import PreferenceGroup, SequenceLogProbs, batched
from gaf.runs import RunContext

from .labelling import LABEL_RULES, read_groups, sample_groups, write_groups
from .units import ScoredBatch, UnitOrder, assemble

__all__ = ["PreferenceConfig", "PreferenceTraining"]


@attrs.define
class PreferenceConfig:
    """Options shared by the preference objectives (the ``[objective]`` section)."""

    beta: float = option(1.0, "β: strength of the KL constraint / implicit-reward scale "
                              "(1.0 won the sweep on the sentiment task, docs/results.md)")
    sft_steps: int = option(1000, "steps of the SFT stage for a policy built from a name "
                                  "(0 = use it as built); a loaded policy skips the stage")
    prompts: int = option(0, "training prompts to sample completions for (0 = all)")
    samples_per_prompt: int = option(4, "completions sampled per training prompt (K)")
    labels: Literal["order", "bradley-terry", "plackett-luce"] = option(
        "order", "labelling rule: 'order' (by reward), 'bradley-terry' or 'plackett-luce' draws")
    label_temperature: float = option(0.1, "τ of the bradley-terry / plackett-luce draws")
    max_new_tokens: int = option(64, "tokens generated per completion (data and evaluation)")
    generation_batch_size: int = option(256, "prompts generated at once")
    rpo_alpha: float = option(0.0, "weight α of an NLL term on the chosen completions "
                                   "(RPO; TRL's rpo_alpha; 0 = off), pairwise losses only")
    too_long: Literal["skip", "raise"] = option(
        "skip", "an example longer than the policy's context: 'skip' (counted) or 'raise'")
    eval_prompts: int = option(200, "held-out prompts for win rate, reward and KL (0 = all)")
    eval_samples: int = option(4, "completions per held-out prompt from each policy (the "
                                  "win rate compares them in pairs)")
    eval_batch_size: int = option(128, "sequences scored at once outside training")

    def __attrs_post_init__(self) -> None:
        if self.labels not in LABEL_RULES:
            raise BadConfig(f"labels must be one of {', '.join(LABEL_RULES)}, got {self.labels!r}")
        if self.too_long not in ("skip", "raise"):
            raise BadConfig(f"too_long must be 'skip' or 'raise', got {self.too_long!r}")
        if self.eval_samples < 1:
            raise BadConfig(f"eval_samples must be at least 1, got {self.eval_samples}")
        if self.samples_per_prompt < 2:
            raise BadConfig(f"samples_per_prompt must be at least 2, got {self.samples_per_prompt}")
        if not self.label_temperature > 0:
            raise BadConfig(f"label_temperature must be > 0, got {self.label_temperature}")
        for name in ("sft_steps", "prompts", "eval_prompts", "rpo_alpha"):
            if getattr(self, name) < 0:
                raise BadConfig(f"{name} must be >= 0, got {getattr(self, name)}")


class PreferenceTraining(abc.ABC):
    """The shared pipeline (module docstring); subclasses define units and their loss.

    A subclass sets ``unit`` (what ``batch_size`` counts: ``"pairs"``, ``"rankings"``,
    ``"completions"``) and implements :meth:`units_of`, :meth:`responses_of` and
    :meth:`batch_loss`.
    """

    Config = PreferenceConfig
    uses = {"policy": "gpt2-tiny", "task": "sentiment", "sampler": "top-p"}
    # Tuned on the sentiment task, measured on a 2-core CPU (docs/results.md): about
    # 2 minutes end to end, SFT stage included.
    train_defaults = {"steps": 1600, "batch_size": 32, "lr": 2e-4, "warmup_steps": 20,
                      "log_every": 10, "max_grad_norm": 10.0}
    unit = "pairs"
    no_units_hint = ""
    reference_free = False
    plot_keys = ("loss", "rewards/margins", "rewards/accuracies", "rewards/chosen",
                 "rewards/rejected", "logps/chosen", "logps/rejected", "grad_norm")

    def __init__(self, config: PreferenceConfig | None = None):
        self.config = config if config is not None else self.Config()

    @property
    def beta(self) -> float:
        return self.config.beta

    # ----------------------------------------------------------- per-objective hooks

    def units_of(self, group: PreferenceGroup) -> list[Any]:
        """The training units of ``group`` (default: its preference pairs)."""
        return list(group.pairs)

    def responses_of(self, unit: Any) -> Sequence[int]:
        """Indices of the responses ``unit`` needs scored."""
        return unit

    @abc.abstractmethod
    def batch_loss(self, batch: ScoredBatch, policy: SequenceLogProbs,
                   ref: SequenceLogProbs | None) -> tuple[Tensor, dict[str, float]]:
        """``(mean loss, metrics)`` of a batch, from the policy's and the cached
        reference's log-probs of ``batch``'s completions (rows as ``batch.local``)."""

    def implicit_reward(self, policy: SequenceLogProbs, ref: SequenceLogProbs | None) -> Tensor:
        """``β·(log π − log π_ref)``; reference-free objectives use ``β·mean log π``."""
        if ref is None:
            return self.beta * policy.mean
        return self.beta * (policy.sum - ref.sum)

    # -------------------------------------------------------------------- setup

    def setup(self, ctx: RunContext) -> None:
        self.ctx = ctx
        self.task = ctx.component("task")
        self.sampler = ctx.component("sampler")
        self.policy = self._sft_policy(ctx)
        self.reference = copy.deepcopy(self.policy).eval().requires_grad_(False)
        self.batch_size = ctx.spec.train.batch_size
        groups = self._train_groups(ctx)
        self.groups = self._check_lengths(groups)
        self.units = [self.units_of(g) for g in self.groups]
        counts = [len(u) for u in self.units]
        if not sum(counts):
            raise BadData(f"the preference data has no {self.unit} to train "
                          f"{ctx.spec.objective} on{self.no_units_hint}")
        self.order = UnitOrder(counts, ctx.spec.seed)
        self.offsets = [0]
        for g in self.groups[:-1]:
            self.offsets.append(self.offsets[-1] + len(g.responses))
        self.ref_logps = (None if self.reference_free
                          else self._score_groups(self.reference, self.groups))
        self.data_stats = {"data_groups": float(len(self.groups)),
                           f"data_{self.unit}": float(sum(counts))}
        ctx.log(f"preference data: {len(self.groups)} prompts, {sum(counts)} {self.unit}"
                + (f", {self.skipped} skipped (longer than the context)" if self.skipped else ""))

    def _sft_policy(self, ctx: RunContext) -> Any:
        comp = ctx.spec.components["policy"]
        if ctx.registry.is_path("policy", comp.name) or self.config.sft_steps == 0:
            return ctx.component("policy")
        sft_dir = ctx.run_dir / "sft"
        if not (sft_dir / "policy" / "gaf.json").is_file():
            self._run_sft(ctx, sft_dir)
        return ctx.registry.load("policy", sft_dir / "policy").to(ctx.device)

    def _run_sft(self, ctx: RunContext, sft_dir: Any) -> None:
        from gaf.runs import train_stage

        ctx.log(f"stage 1: supervised fine-tuning ({self.config.sft_steps} steps) in {sft_dir}")
        train_stage(ctx, sft_dir, "sft", ("policy", "task"), {"steps": self.config.sft_steps},
                    label="SFT stage")

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
        self.policy.eval()
        with torch.no_grad():
            groups, rewards = sample_groups(
                self.policy, self.sampler, reward, prompts, k=cfg.samples_per_prompt,
                max_new_tokens=cfg.max_new_tokens, batch_size=cfg.generation_batch_size,
                rule=cfg.labels, temperature=cfg.label_temperature,
                generator=ctx.generator(stream=11))
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

    # ----------------------------------------------------------------- scoring

    def _score_groups(self, model: Any, groups: Sequence[PreferenceGroup]) -> Tensor:
        """``(N, 2)`` float tensor of (sum log-prob, token count) of every response, in
        group order, without gradients."""
        was_training = model.training
        model.eval()
        rows: list[Tensor] = []
        with torch.no_grad(), self.ctx.autocast():
            for chunk in _chunks(groups, self.config.eval_batch_size):
                prompts = [g.prompt for g in chunk for _ in g.responses]
                completions = [r for g in chunk for r in g.responses]
                seq = model.completion_logprobs(model.prepare(prompts, completions)).sequence()
                rows.append(torch.stack([seq.sum.float(), seq.count.float()], dim=1))
        model.train(was_training)
        return torch.cat(rows).cpu() if rows else torch.zeros(0, 2)

    # ----------------------------------------------------------------- training

    def modules(self) -> dict[str, Any]:
        return {"policy": self.policy}

    def train_batch(self, index: int) -> tuple[ScoredBatch, Any]:
        start, count = self.ctx.world.shard(index * self.batch_size, self.batch_size)
        picks = self.order.slice(start, count)
        units = [(g, self.units[g][u]) for g, u in picks]
        scored = assemble(self.groups, self.offsets, units, self.responses_of)
        return scored, self.policy.prepare(scored.prompts, scored.completions)

    def loss(self, batch: tuple[ScoredBatch, Any]) -> tuple[Tensor, dict[str, float]]:
        scored, lm_batch = batch
        policy = self.policy.completion_logprobs(lm_batch).sequence()
        ref = None
        if self.ref_logps is not None:
            cached = self.ref_logps[torch.tensor(scored.response_ids)].to(policy.sum.device)
            ref = SequenceLogProbs(cached[:, 0], cached[:, 1])
        return self.batch_loss(scored, policy, ref)

    def pair_metrics(self, chosen: SequenceLogProbs, rejected: SequenceLogProbs,
                     ref_chosen: SequenceLogProbs | None,
                     ref_rejected: SequenceLogProbs | None) -> dict[str, float]:
        """TRL's metric names, averaged over the pairs."""
        with torch.no_grad():
            rc = self.implicit_reward(chosen, ref_chosen)
            rr = self.implicit_reward(rejected, ref_rejected)
            return {"rewards/chosen": float(rc.mean()), "rewards/rejected": float(rr.mean()),
                    "rewards/margins": float((rc - rr).mean()),
                    "rewards/accuracies": float((rc > rr).float().mean()),
                    "logps/chosen": float(chosen.sum.mean()),
                    "logps/rejected": float(rejected.sum.mean())}

    # --------------------------------------------------------------- evaluation

    def evaluate(self, ctx: RunContext) -> dict[str, float]:
        out: dict[str, float] = dict(self.data_stats)
        if self.skipped:
            out["data_skipped"] = float(self.skipped)
        out.update(self._heldout_accuracy())
        prompts = list(self.task.prompts("eval"))
        if self.config.eval_prompts:
            prompts = prompts[:self.config.eval_prompts]
        if prompts:
            out.update(self._evaluate_samples(ctx, prompts))
        return out

    def _generate(self, model: Any, prompts: Sequence[str], generator: Any,
                  sampler: Any = None) -> list[str]:
        out: list[str] = []
        for chunk in batched(list(prompts), self.config.generation_batch_size):
            out += model.generate(list(chunk), sampler=sampler or self.sampler,
                                  max_new_tokens=self.config.max_new_tokens, generator=generator)
        return out

    def _evaluate_samples(self, ctx: RunContext, held_out: list[str]) -> dict[str, float]:
        prompts = [p for p in held_out for _ in range(self.config.eval_samples)]
        ours = self._generate(self.policy, prompts, ctx.generator(stream=21))
        theirs = self._generate(self.reference, prompts, ctx.generator(stream=22))
        # KL(π‖π_ref) = E_{y~π}[log π(y|x) − log π_ref(y|x)] needs samples of π itself:
        # plain ancestral sampling, whatever the run's sampler truncates.
        if _is_ancestral(self.sampler):
            kl_samples = ours
        else:
            ancestral = ctx.registry.create("sampler", "temperature", temperature=1.0)
            kl_samples = self._generate(self.policy, prompts, ctx.generator(stream=23),
                                        ancestral)
        groups = [PreferenceGroup(p, (y,)) for p, y in zip(prompts, kl_samples)]
        logp = self._score_groups(self.policy, groups)[:, 0]
        ref_logp = self._score_groups(self.reference, groups)[:, 0]
        log_ratio = (logp - ref_logp).tolist()
        out = {"kl": sum(log_ratio) / len(log_ratio), "eval_prompts": float(len(held_out)),
               "eval_samples": float(len(prompts))}
        reward_fn = self.task.reward()
        rows: list[dict[str, Any]] = [{"prompt": p, "completion": y, "reference_completion": z}
                                      for p, y, z in zip(prompts, ours, theirs)]
        if reward_fn is not None:
            r = [float(x) for x in reward_fn(prompts, ours)]
            r_ref = [float(x) for x in reward_fn(prompts, theirs)]
            wins = [1.0 if a > b else 0.5 if a == b else 0.0 for a, b in zip(r, r_ref)]
            out.update(win_rate=sum(wins) / len(wins), mean_reward=sum(r) / len(r),
                       reference_mean_reward=sum(r_ref) / len(r_ref))
            for row, a, b in zip(rows, r, r_ref):
                row["reward"], row["reference_reward"] = round(a, 5), round(b, 5)
        for row, y, k in zip(rows, kl_samples, log_ratio):
            if kl_samples is not ours:
                row["kl_sample"] = y
            row["log_ratio"] = round(k, 5)
        atomic_write_text(ctx.path("samples", "samples.jsonl"),
                          "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))
        return out

    def _heldout_accuracy(self) -> dict[str, float]:
        provided = getattr(self.task, "preference_groups", None)
        groups = [g for g in (provided("eval") if provided is not None else []) if g.pairs]
        if not groups:
            return {}
        groups, _ = fitting(groups, self.policy.tokenizer, self.policy.context_length)
        if not groups:
            return {}
        policy = self._score_groups(self.policy, groups)[:, 0]
        ref = self._score_groups(self.reference, groups)[:, 0]
        ratio = policy - ref
        correct, total, offset = 0, 0, 0
        for g in groups:
            for i, j in g.pairs:
                correct += int(ratio[offset + i] > ratio[offset + j])
                total += 1
            offset += len(g.responses)
        return {"eval_accuracy": correct / total, "eval_pairs": float(total)}


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


def _chunks(groups: Sequence[PreferenceGroup], size: int) -> Any:
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


def _is_ancestral(sampler: Any) -> bool:
    """True for a sampler that draws from the model's own distribution (temperature 1,
    no truncation), whose samples estimate ``KL(π‖π_ref)`` without bias."""
    config = getattr(sampler, "config", None)
    return (getattr(sampler, "gaf_name", None) == "temperature"
            and getattr(config, "temperature", None) == 1.0)
