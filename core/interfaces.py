"""The component interfaces: each docstring is the contract a plugin must meet.

Interfaces are :class:`typing.Protocol` classes (runtime-checkable where the check is
meaningful), so a plugin needs no base class: it only has to provide the members
named here. This module does not import torch; tensor types are named in strings.

Language-model side (implemented by the built-in plugins today):

* :class:`Tokenizer`, :class:`Policy` (and :class:`RolloutPolicy`), :class:`Sampler`,
  :class:`RewardFn`, :class:`Task`, :class:`Objective`, :class:`PreferenceObjective`;
* data: :class:`SFTExample`, :class:`PreferenceGroup`, :class:`CompletionLogProbs`,
  :class:`SequenceLogProbs`, :class:`Rollout`.

Image side:

* :class:`Dataset`, :class:`Scheduler`, :class:`Autoencoder`, :class:`Metric`,
  :class:`NoiseModel`, :class:`Conditioner` (implemented by the built-in plugins).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import attrs

if TYPE_CHECKING:  # pragma: no cover - typing only
    import torch
    from torch import Tensor

    from .runs import RunContext


# --------------------------------------------------------------------------- data


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


# ------------------------------------------------------------------- language side


@runtime_checkable
class Tokenizer(Protocol):
    """Text ↔ token ids.

    ``encode`` never adds special tokens; ``decode(encode(s)) == s`` for every string
    the tokenizer can represent. ``bos_id``, ``eos_id`` and ``pad_id`` are ids below
    ``vocab_size`` (distinct for the byte tokenizer; GPT-2's BPE uses one id,
    ``<|endoftext|>``, for all three). ``decode`` drops special ids unless
    ``skip_special=False``.
    """

    vocab_size: int
    bos_id: int
    eos_id: int
    pad_id: int

    def encode(self, text: str) -> list[int]: ...

    def decode(self, ids: Sequence[int], skip_special: bool = True) -> str: ...


@runtime_checkable
class Sampler(Protocol):
    """A decoding strategy: picks the next token from a batch of logits.

    ``__call__(logits, generator)`` takes ``(B, V)`` float logits for the next
    position and returns ``(B,)`` int64 token ids. All randomness comes from
    ``generator`` (a ``torch.Generator`` on the logits' device, or ``None`` for the
    global RNG), so a seeded
    generator gives the same tokens every time. A sampler must never return an id
    whose logit is ``-inf``.

    Optional: ``scoring_temperature`` (a float, or ``None``). A sampler that draws
    from ``softmax(logits / T)`` over the whole vocabulary says ``T``; one that
    truncates or reshapes the distribution (top-k, top-p, greedy) says ``None`` or
    leaves it out. On-policy objectives (``reinforce``, ``rloo``, ``ppo``) score
    their samples under the distribution they were drawn from, so they accept only
    samplers that state a temperature.
    """

    def __call__(self, logits: Tensor, generator: torch.Generator | None = None) -> Tensor: ...


@runtime_checkable
class Policy(Protocol):
    """A language model that scores and generates completions of prompts.

    A policy is a ``torch.nn.Module`` (so it has ``parameters()``, ``state_dict()``,
    ``train()``/``eval()``, ``to(device)``) with a ``config`` (an attrs instance that
    rebuilds it through the registry) and a :class:`Tokenizer`.

    ``context_length`` is the longest sequence (in tokens, BOS and EOS included) the
    policy scores without truncation; ``tokenizer`` tells how long a string is.

    ``prepare(prompts, completions)`` turns strings into an opaque batch on the
    policy's device. The prompt is tokenised once, separately from the completion
    (so no token straddles the boundary); the sequence is
    ``BOS + prompt + completion + EOS``; the completion positions are the completion
    tokens and the final EOS. Over-long inputs are cut from the left of the prompt;
    a completion that alone does not fit is cut at its end and gets no EOS. A policy
    may share work between pairs with the same prompt (e.g. run the prompt once for
    several completions); results must not depend on it.

    ``completion_logprobs(batch)`` returns :class:`CompletionLogProbs` for that batch,
    differentiable with respect to the parameters. Objectives use only these two
    methods (and ``generate``), never the model's internals. Two keyword options are
    asked for only when needed, so a policy without them still serves objectives that
    do not: ``temperature=T`` scores under ``softmax(logits / T)`` (on-policy
    objectives sampling at ``T ≠ 1``) and ``entropy=True`` fills
    :attr:`CompletionLogProbs.entropy` (an ``entropy`` metric).

    ``device`` is the device of the policy's parameters (objectives move their
    tensors there).

    ``generate(prompts, sampler=..., max_new_tokens=..., generator=...)`` returns one
    completion string per prompt (without the prompt, stopped at EOS). Batched
    generation gives the same result as one prompt at a time.
    """

    config: Any
    tokenizer: Tokenizer
    context_length: int
    device: Any

    def prepare(self, prompts: Sequence[str], completions: Sequence[str]) -> Any: ...

    def completion_logprobs(self, batch: Any) -> CompletionLogProbs: ...

    def generate(self, prompts: Sequence[str], *, sampler: Sampler, max_new_tokens: int = 64,
                 generator: torch.Generator | None = None) -> list[str]: ...


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


@runtime_checkable
class RolloutPolicy(Protocol):
    """A :class:`Policy` that can also sample :class:`Rollout` objects (what on-policy
    RL objectives such as ``ppo`` need).

    ``rollout(prompts, sampler=..., max_new_tokens=..., generator=...)`` samples one
    completion per prompt, like :meth:`Policy.generate`, and returns them as a
    :class:`Rollout` whose batch scores exactly the sampled tokens.
    """

    def rollout(self, prompts: Sequence[str], *, sampler: Sampler, max_new_tokens: int = 64,
                generator: torch.Generator | None = None) -> Rollout: ...


@runtime_checkable
class RewardFn(Protocol):
    """Scores completions: ``reward(prompts, completions) -> Tensor`` of shape ``(B,)``.

    Higher is better. A learned reward model and a task's ground-truth scorer both
    fit this interface, so they are interchangeable in RL objectives.
    """

    def __call__(self, prompts: Sequence[str], completions: Sequence[str]) -> Tensor: ...


@runtime_checkable
class Task(Protocol):
    """A language task: prompts, supervised examples and (optionally) a true reward.

    ``split`` is ``"train"``, ``"validation"`` or ``"eval"``, with pairwise disjoint
    prompts: train to learn from, validation to choose defaults and hyper-parameters
    on (tuning scripts read it), eval for the headline figures, read once. A split may
    be empty (a task option can switch it off). Every method is deterministic for the
    task's configured seed.

    * ``sft_examples(split)`` — :class:`SFTExample` list for supervised fine-tuning.
    * ``prompts(split)`` — prompts for generation and evaluation.
    * ``reward()`` — the task's ground-truth :class:`RewardFn`, or ``None``.

    Optionally, a task that carries preference data (e.g. a JSONL file of TRL pairs)
    has ``preference_groups(split) -> list[PreferenceGroup]``; preference objectives
    use it instead of sampling and labelling their own pairs.
    """

    def sft_examples(self, split: str) -> list[SFTExample]: ...

    def prompts(self, split: str) -> list[str]: ...

    def reward(self) -> RewardFn | None: ...


@runtime_checkable
class Objective(Protocol):
    """A trainable recipe (``sft``, ``dpo``, ``ppo``, ``ldm`` …), driven by :func:`gaf.train.train`.

    The class declares ``Config`` (an attrs class: the objective's own options),
    ``uses`` (a mapping from component kind to default name: the components it
    needs, e.g. ``{"policy": "gpt2-tiny", "task": "sentiment"}``) and
    ``train_defaults`` (overrides of :class:`gaf.train.TrainConfig` defaults).
    It is built as ``Objective(config)`` and then:

    1. ``setup(ctx)`` builds models and data through ``ctx.component(kind)``;
    2. ``modules()`` returns the ``nn.Module`` objects to optimise and checkpoint,
       by name (each is exported to ``RUN_DIR/<name>/`` at the end);
    3. ``train_batch(index)`` returns micro-batch number ``index``. It must be a pure
       function of ``index`` and the seed, so that runs resume exactly;
    4. ``loss(batch)`` returns ``(scalar loss, {metric: float})``;
    5. ``evaluate(ctx)`` runs the final evaluation, may write samples into the run
       directory and returns metrics for ``summary.json``.

    An objective that carries state of its own across steps (PPO's adaptive KL
    coefficient) may also define ``training_state() -> dict`` (JSON values, saved in
    every checkpoint's ``state.json``) and ``load_training_state(dict)`` (called on
    resume, after ``setup``). An objective that keeps weights the optimiser does not
    step (an EMA copy) may define ``after_step(step)``, called after every optimiser
    step with its 1-based number; such weights live in modules whose parameters do
    not require gradients, so they are checkpointed but never optimised.
    """

    def setup(self, ctx: RunContext) -> None: ...

    def modules(self) -> Mapping[str, Any]: ...

    def train_batch(self, index: int) -> Any: ...

    def loss(self, batch: Any) -> tuple[Tensor, dict[str, float]]: ...

    def evaluate(self, ctx: RunContext) -> dict[str, float]: ...


@runtime_checkable
class PreferenceObjective(Protocol):
    """A loss on preference pairs, written only in terms of sequence scores.

    ``pair_loss(chosen, rejected, ref_chosen, ref_rejected)`` takes
    :class:`SequenceLogProbs` of the policy and of the frozen reference (the latter
    ``None`` for reference-free losses, where ``reference_free`` is True) and returns
    the per-pair loss ``(B,)``. ``beta`` scales the implicit reward
    ``β·log π(y|x)/π_ref(y|x)`` that is logged as ``rewards/*``. Nothing here assumes
    tokens: any model that can answer "score these completions" can be trained by
    the same objective.
    """

    reference_free: bool
    beta: float

    def pair_loss(self, chosen: SequenceLogProbs, rejected: SequenceLogProbs,
                  ref_chosen: SequenceLogProbs | None,
                  ref_rejected: SequenceLogProbs | None) -> Tensor: ...


# ---------------------------------------------------------------------- image side


@runtime_checkable
class Dataset(Protocol):
    """A map-style dataset: ``len(ds)`` and ``ds[i] -> dict`` (e.g. ``{"image", "caption"}``).

    Images are float tensors ``(C, H, W)`` in ``[-1, 1]``. Deterministic per seed.
    """

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> dict[str, Any]: ...


@runtime_checkable
class Autoencoder(Protocol):
    """An image first stage: ``encode(x) -> z`` and ``decode(z) -> x``.

    ``x`` is ``(B, C, H, W)`` in ``[-1, 1]``; ``z`` is ``(B, c, H/f, W/f)``.
    ``scale_factor`` multiplies latents before diffusion (unit variance on the data)
    and is stored with the checkpoint.
    """

    scale_factor: float

    def encode(self, x: Tensor) -> Tensor: ...

    def decode(self, z: Tensor) -> Tensor: ...


@runtime_checkable
class Conditioner(Protocol):
    """Turns conditions (captions, labels) into token states for cross-attention.

    * ``__call__(conditions) -> Tensor`` of shape ``(B, tokens, width)``, one row per
      condition (a caption string for ``text-transformer``, an int label for ``class``);
      a condition it cannot encode (a prompt longer than its context, an unknown
      label) raises :class:`~gaf.errors.BadData` naming it.
    * ``null(batch_size) -> Tensor`` ``(batch_size, tokens, width)``: the
      unconditional embedding that classifier-free guidance uses, and that training
      substitutes for a dropped condition. It does not depend on any condition.
    * ``condition_key``: the dataset item field it reads (``"caption"``, ``"label"``).
    * ``tokens`` and ``width``: the shape of one condition's states (``width`` must equal
      the noise model's ``context_dim``).
    * ``trainable``: True when it is trained jointly with the noise model (the LDM
      recipe); a frozen pretrained encoder says False and the objective leaves it be.
    """

    condition_key: str
    tokens: int
    width: int
    trainable: bool

    def __call__(self, conditions: Sequence[Any]) -> Tensor: ...

    def null(self, batch_size: int) -> Tensor: ...


@runtime_checkable
class NoiseModel(Protocol):
    """Predicts the diffusion target (ε, v or x0) from ``(x_t, t, context)``.

    ``__call__(x_t (B,C,H,W), t, context=None, *, labels=None) -> (B,C,H,W)``, where
    ``t`` is a ``(B,)`` tensor or one timestep for the whole batch (an int or a 0-d
    tensor) and ``context`` is the conditioner's ``(B, L, D)`` states, or ``None`` for
    a model without cross-attention. ``labels`` ``(B,)`` are class labels for a model
    with a class embedding. ``prediction_type`` names what it predicts
    (``"epsilon"``, ``"v_prediction"`` or ``"sample"``: the scheduler's names), and
    ``in_channels`` the channels of ``x_t``.

    Optional: ``cache_context(context) -> object``, accepted in place of ``context`` and
    giving the same output, lets a sampler compute the context's cross-attention keys
    and values once instead of at every step.
    """

    prediction_type: str
    in_channels: int

    def __call__(self, x_t: Tensor, t: Any, context: Any = None, *,
                 labels: Tensor | None = None) -> Tensor: ...


@runtime_checkable
class Scheduler(Protocol):
    """A diffusion noise schedule and sampler (diffusers' field names and semantics).

    * ``set_timesteps(n)`` fixes ``timesteps``: ``n`` strictly decreasing ints.
    * ``add_noise(x0, noise, t)`` and ``velocity(x0, noise, t)`` give ``x_t`` and the
      v-target; ``t`` broadcasts over the batch as in diffusers (an int, or a tensor of
      1 or B timesteps of any shape: 0-d, ``(1,)``, ``(B,)``, ``(B, 1)``).
    * ``step(model_output, t, sample, *, generator=None) -> Tensor`` returns the
      previous sample. There is no hidden step counter: the previous timestep is
      looked up in ``timesteps``, so one scheduler can serve several threads.
    * ``from_config(dict)`` (a classmethod) builds one from another scheduler's saved
      config, ignoring fields it does not know: a run trained with ``ddpm`` samples
      with any scheduler.

    Optional members, used by samplers when present (diffusers' names):

    * ``init_noise_sigma`` (float, default 1): the scale of the initial noise;
    * ``scale_model_input(sample, t) -> Tensor``: what the noise model sees at ``t``;
    * ``new_state() -> dict`` for a multistep solver: a sampler calls it once per
      sampling run and passes the dict as ``step(..., state=state)``; the scheduler
      keeps its history (earlier model outputs) there, not on itself, so it stays
      shareable across threads.
    """

    timesteps: Any

    def set_timesteps(self, num_inference_steps: int) -> None: ...

    def add_noise(self, x0: Tensor, noise: Tensor, t: Tensor) -> Tensor: ...

    def velocity(self, x0: Tensor, noise: Tensor, t: Tensor) -> Tensor: ...

    def step(self, model_output: Tensor, t: int, sample: Tensor, *,
             generator: torch.Generator | None = None) -> Tensor: ...


@runtime_checkable
class Metric(Protocol):
    """A metric: ``__call__(*inputs) -> dict[str, float]`` (one or more named values)."""

    def __call__(self, *inputs: Any) -> dict[str, float]: ...


def batched(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    """Yield consecutive slices of ``items`` of at most ``size`` elements."""
    for start in range(0, len(items), size):
        yield items[start:start + size]
