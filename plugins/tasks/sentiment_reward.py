"""``sentiment-oracle``: the ground-truth reward r*(x, y) of the ``sentiment`` task.

The oracle plays the human labeller of the DPO paper's IMDb experiment: it scores how
*positive* a movie-review continuation is, in ``[0, 1]``, and punishes degenerate text
so that a policy cannot reach a high reward with one trick. It is pure Python,
deterministic, and reads only the completion (the prompt is accepted for the
:class:`~gaf.interfaces.RewardFn` interface and ignored).

Formula
-------
Tokens: the completion is split on whitespace; each chunk loses its leading and
trailing ASCII punctuation (``.,;:!?"'()[]-``) and is lower-cased (a possessive
``'s`` is dropped when the stem is a known word). A chunk of punctuation only is not
a token. A token followed by ``.,;:!?`` ends a clause. ``n`` is the number of tokens;
the *collapsed* sequence merges runs of the same token (``great great great`` → one
``great``), ``m`` is its length and ``r = n - m`` the number of immediate repeats.
Everything below except ``r`` and the too-long factor is computed on the collapsed
sequence, so repeating a word can never add sentiment or content.

Sentiment (``valence`` ``S``)::

    S = Σ_i  v(w_i) · Π_{modifiers j of i} m(w_j) · c_i

over sentiment words ``w_i`` (:data:`~gaf.plugins.tasks.sentiment_lexicon.VALENCE`,
±1…±3). The modifiers of ``w_i`` are the up to 3 tokens before it, stopping at a clause
end, another sentiment word or a contrast word: a negator (``not``, ``never``,
``…n't``) multiplies by ``negation`` (default −0.75: "not good" is negative, "not bad"
mildly positive), an intensifier by its boost (``very`` 1.3, ``absolutely`` 1.5) and a
diminisher by its damping (``a bit`` 0.6). ``c_i`` is 0.5 before the first ``but`` /
``however`` and 1.5 after it (1 without one). The sentiment probability is
``p = sigmoid(scale · S)`` (0.5 for text without sentiment words).

Penalties (each in ``[0, 1]``, multiplied)::

    length      0 if m = 0;  (m / min_words)^2 if m < min_words;  1 otherwise,
                times exp(-(n - max_words) / 10) if n > max_words
    vocabulary  q ** unknown_power, q = fraction of tokens in the task's vocabulary
    topic       1 with a movie word (film, plot, acting …); 0.6 with other content
                words only; 0.25 with only sentiment and function words
    density     1 if d <= 0.5 else ((1 - d) / 0.5)^2, d = fraction of sentiment,
                intensifier and diminisher tokens ("adjective salad")
    repetition  repeat_factor ** r · reuse_factor ** (e + t), e = extra uses of
                non-function words, t = trigrams that occurred before
    punctuation 1 if the completion ends with . ! or ?, else 0.85

and ``reward = p · length · vocabulary · topic · density · repetition · punctuation``
(``reward = p`` with ``penalties = false``). Consequences: an empty completion scores
0; appending copies of the last word never raises the reward (the collapsed sequence
is unchanged and ``repeat_factor < 1``); a fluent, on-topic positive review scores
close to ``p``.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from typing import Any

import attrs

from gaf.config import option
from gaf.errors import BadConfig

from .sentiment_lexicon import (CONTRAST, DIMINISHERS, FUNCTION_WORDS, INTENSIFIERS,
                                NEGATORS, TOPIC_WORDS, VALENCE, VOCABULARY)

__all__ = ["SentimentOracle", "SentimentOracleConfig", "tokenize", "collapse"]

_STRIP = ".,;:!?\"'()[]-"
_CLAUSE_END = frozenset(".,;:!?")
_FINAL = (".", "!", "?")
_MODIFIER_WINDOW = 3


@attrs.define
class SentimentOracleConfig:
    """Options of the ``sentiment-oracle`` reward (see the module docstring's formula)."""

    scale: float = option(1.0, "multiplies the valence sum before the logistic squash")
    negation: float = option(-0.75, "factor a negator applies to the next sentiment word")
    penalties: bool = option(True, "multiply p(positive) by the degenerate-text penalties")
    min_words: int = option(4, "completions with fewer distinct-run words are penalised")
    max_words: int = option(30, "completions with more words decay by exp(-excess/10)")
    repeat_factor: float = option(0.4, "penalty per immediately repeated word (0 < f < 1)")
    reuse_factor: float = option(0.7, "penalty per re-used content word or repeated trigram")
    unknown_power: float = option(3.0, "vocabulary factor = (known-word fraction) ** power")


def _is_negator(word: str) -> bool:
    return word in NEGATORS or word.endswith("n't")


def tokenize(text: str) -> list[tuple[str, bool]]:
    """``(word, ends_clause)`` tokens of ``text`` (lower-case; punctuation stripped)."""
    tokens: list[tuple[str, bool]] = []
    for chunk in text.split():
        core = chunk.strip(_STRIP)
        if not core:
            if tokens and any(c in _CLAUSE_END for c in chunk):
                tokens[-1] = (tokens[-1][0], True)
            continue
        tail = chunk[len(chunk.rstrip(_STRIP)):]
        word = core.lower()
        if word.endswith("'s") and word[:-2] in VOCABULARY:
            word = word[:-2]
        tokens.append((word, any(c in _CLAUSE_END for c in tail)))
    return tokens


def collapse(tokens: list[tuple[str, bool]]) -> list[tuple[str, bool]]:
    """Merge runs of the same word (a run ends a clause if any of its tokens does)."""
    out: list[tuple[str, bool]] = []
    for word, end in tokens:
        if out and out[-1][0] == word:
            out[-1] = (word, out[-1][1] or end)
        else:
            out.append((word, end))
    return out


def _sigmoid(x: float) -> float:
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    z = math.exp(x)
    return z / (1.0 + z)


class SentimentOracle:
    """Ground-truth sentiment reward in ``[0, 1]``: ``oracle(prompts, completions)``.

    Returns a float32 tensor of shape ``(B,)``; :meth:`score_one` scores one pair and
    :meth:`components` returns the breakdown of the formula in the module docstring.
    """

    Config = SentimentOracleConfig

    def __init__(self, config: SentimentOracleConfig | None = None):
        cfg = config if config is not None else SentimentOracleConfig()
        if not cfg.scale > 0:
            raise BadConfig(f"sentiment-oracle: scale must be > 0, got {cfg.scale}")
        if not cfg.negation < 0:
            raise BadConfig(f"sentiment-oracle: negation must be < 0, got {cfg.negation}")
        if not 0 < cfg.repeat_factor < 1:
            raise BadConfig("sentiment-oracle: repeat_factor must be in (0, 1), "
                            f"got {cfg.repeat_factor}")
        if not 0 < cfg.reuse_factor <= 1:
            raise BadConfig("sentiment-oracle: reuse_factor must be in (0, 1], "
                            f"got {cfg.reuse_factor}")
        if cfg.min_words < 1 or cfg.max_words < cfg.min_words:
            raise BadConfig("sentiment-oracle: need 1 <= min_words <= max_words, got "
                            f"{cfg.min_words} and {cfg.max_words}")
        if not cfg.unknown_power >= 0:
            raise BadConfig("sentiment-oracle: unknown_power must be >= 0, "
                            f"got {cfg.unknown_power}")
        self.config = cfg
        self.vocabulary = VOCABULARY

    def __call__(self, prompts: Sequence[str], completions: Sequence[str]) -> Any:
        import torch

        if len(prompts) != len(completions):
            raise ValueError(f"got {len(prompts)} prompts but {len(completions)} completions")
        scores = [self.score_one(p, c) for p, c in zip(prompts, completions)]
        return torch.tensor(scores, dtype=torch.float32).reshape(len(scores))

    def score_one(self, prompt: str, completion: str) -> float:
        """The reward of one completion (``prompt`` is ignored)."""
        return self.components(prompt, completion)["reward"]

    def valence(self, completion: str) -> float:
        """The signed sentiment sum ``S`` of ``completion``."""
        return self._valence(collapse(tokenize(completion)))

    def components(self, prompt: str, completion: str) -> dict[str, float]:
        """Every factor of the reward: ``valence`` (S), ``sentiment`` (p), the penalties
        ``length``, ``vocabulary``, ``topic``, ``density``, ``repetition``,
        ``punctuation``, their product ``penalty`` and the final ``reward``."""
        cfg = self.config
        tokens = tokenize(completion)
        col = collapse(tokens)
        words = [w for w, _ in col]
        n, m = len(tokens), len(col)
        s = self._valence(col)
        p = _sigmoid(cfg.scale * s)

        if m == 0:
            length = 0.0
        else:
            length = min(1.0, m / cfg.min_words) ** 2
            if n > cfg.max_words:
                length *= math.exp(-(n - cfg.max_words) / 10.0)
        known = sum(w in VOCABULARY for w in words)
        vocabulary = (known / m) ** cfg.unknown_power if m else 0.0
        if any(w in TOPIC_WORDS for w in words):
            topic = 1.0
        elif any(_is_content(w) for w in words):
            topic = 0.6
        else:
            topic = 0.25
        evaluative = sum(w in VALENCE or w in INTENSIFIERS or w in DIMINISHERS
                         for w in words)
        d = evaluative / m if m else 0.0
        density = 1.0 if d <= 0.5 else ((1.0 - d) / 0.5) ** 2
        counts = Counter(w for w in words if w not in FUNCTION_WORDS)
        reused = sum(c - 1 for c in counts.values())
        trigrams = [tuple(words[i:i + 3]) for i in range(m - 2)]
        repeated_trigrams = len(trigrams) - len(set(trigrams))
        repetition = cfg.repeat_factor ** (n - m) * cfg.reuse_factor ** (reused
                                                                          + repeated_trigrams)
        punctuation = 1.0 if completion.rstrip().endswith(_FINAL) else 0.85

        penalty = length * vocabulary * topic * density * repetition * punctuation
        reward = p * penalty if cfg.penalties else p
        return {"valence": s, "sentiment": p, "length": length, "vocabulary": vocabulary,
                "topic": topic, "density": density, "repetition": repetition,
                "punctuation": punctuation, "penalty": penalty,
                "reward": min(1.0, max(0.0, reward))}

    def _valence(self, col: list[tuple[str, bool]]) -> float:
        words = [w for w, _ in col]
        contrast_at = next((i for i, w in enumerate(words) if w in CONTRAST), None)
        total = 0.0
        for i, word in enumerate(words):
            v = VALENCE.get(word)
            if v is None:
                continue
            mult = 1.0
            for j in range(i - 1, max(-1, i - 1 - _MODIFIER_WINDOW), -1):
                prev, ends_clause = col[j]
                if ends_clause or prev in VALENCE or prev in CONTRAST:
                    break
                if _is_negator(prev):
                    mult *= self.config.negation
                elif prev in INTENSIFIERS:
                    mult *= INTENSIFIERS[prev]
                elif prev in DIMINISHERS:
                    mult *= DIMINISHERS[prev]
            if contrast_at is not None:
                mult *= 0.5 if i < contrast_at else 1.5
            total += v * mult
        return total


def _is_content(word: str) -> bool:
    return (word in VOCABULARY and word not in FUNCTION_WORDS and word not in VALENCE
            and word not in INTENSIFIERS and word not in DIMINISHERS
            and not _is_negator(word) and word not in CONTRAST)
