"""Language-model side contracts: :class:`Tokenizer`, :class:`Sampler`, :class:`Policy`,
:class:`RolloutPolicy`, :class:`RewardFn`, :class:`Task`.

Part of :mod:`gaf.interfaces` (which re-exports every name here); no torch at import.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from .data import CompletionLogProbs, PreferenceGroup, Rollout, SFTExample

if TYPE_CHECKING:  # pragma: no cover - typing only
    import torch
    from torch import Tensor


__all__ = ["Policy", "RewardFn", "RolloutPolicy", "Sampler", "Task", "Tokenizer"]


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


@runtime_checkable
class RolloutPolicy(Policy, Protocol):
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
