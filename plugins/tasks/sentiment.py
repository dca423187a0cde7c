"""``sentiment``: the DPO paper's controlled-sentiment IMDb task, in miniature.

An embedded task (no download): prompts are openings of movie reviews
("I watched Night Train last night and"), the supervised examples continue them with
short reviews of mixed sentiment, and the ground-truth reward
:class:`~gaf.plugins.tasks.sentiment_reward.SentimentOracle` (registered as the reward
``sentiment-oracle``) scores how positive a continuation is, in ``[0, 1]``. A policy
is first fine-tuned on the examples (``sft``), then optimised towards positive
continuations from preferences labelled by the oracle.

Data (:mod:`gaf.plugins.tasks.sentiment_text` writes the text):

* The prompt space is every filling of the 31 prompt templates (about 10,700
  prompts). ``n_eval`` of them, drawn with the seed round-robin over the templates,
  are held out for the ``eval`` split (the headline figures); then ``n_validation``
  more, drawn the same way from the rest, for the ``validation`` split (choosing
  defaults, β, learning rates). Eval and validation together take at most half of a
  template's fillings. The three splits' prompts are disjoint, and the eval prompts
  do not depend on ``n_validation``.
* ``sft_examples("train")`` has ``n_train`` examples; each picks a template uniformly,
  then one of its fillings that is in neither held-out split. ``sft_examples("eval")``
  and ``sft_examples("validation")`` have one example per held-out prompt. The
  sentiment of each continuation is drawn with the weights ``positive``,
  ``negative``, ``neutral`` and ``mixed`` (both polarities joined by "but");
  :meth:`SentimentTask.labels` gives the drawn labels.
* A continuation starts with one space (``prompt + completion`` is the review), has
  ``min_words``..``max_words`` words and at most ``max_chars`` characters (so that a
  byte-level policy can finish it within 64 new tokens), ends with a period, and is
  kept only if the oracle finds nothing degenerate in it (penalty factor 1) and its
  valence agrees with the label (positive > +1, negative < -1, neutral = 0).
* ``prompts(split)`` lists the split's distinct prompts in order of first use.

Everything is a pure function of the config: each split has its own
``random.Random`` seeded from ``seed``, so ``n_train`` does not change the eval data.
"""

from __future__ import annotations

import random

import attrs

from gaf.config import option
from gaf.errors import BadConfig
from gaf.interfaces import SFTExample

from .sentiment_lexicon import NEGATIVE, POSITIVE
from .sentiment_reward import SentimentOracle, SentimentOracleConfig, tokenize
from .sentiment_text import LABELS, PROMPT_TEMPLATES, continuation, prompt_groups

__all__ = ["SentimentConfig", "SentimentTask", "SentimentOracle", "SentimentOracleConfig"]

_SPLITS = ("train", "validation", "eval")
_MAX_TRIES = 2000


@attrs.define
class SentimentConfig:
    """Options of the ``sentiment`` task (the ``[task]`` section)."""

    seed: int = option(0, "seed of the prompt split and of the generated examples")
    n_train: int = option(4000, "number of supervised training examples")
    n_eval: int = option(200, "number of held-out eval prompts (one example each): the "
                              "headline figures")
    n_validation: int = option(200, "number of held-out validation prompts (one example "
                                    "each), disjoint from eval: for tuning")
    positive: float = option(0.3, "relative weight of positive continuations")
    negative: float = option(0.3, "relative weight of negative continuations")
    neutral: float = option(0.2, "relative weight of neutral continuations (no sentiment)")
    mixed: float = option(0.2, "relative weight of mixed continuations ('... but ...')")
    min_words: int = option(6, "fewest words in a continuation")
    max_words: int = option(20, "most words in a continuation")
    max_chars: int = option(64, "most characters in a continuation, leading space included")


class SentimentTask:
    """The embedded movie-review task (see the module docstring)."""

    Config = SentimentConfig

    def __init__(self, config: SentimentConfig | None = None):
        cfg = config if config is not None else SentimentConfig()
        self.config = cfg
        pairs = [(g, form) for g, (_, form) in zip(prompt_groups(), PROMPT_TEMPLATES) if g]
        self._groups = [g for g, _ in pairs]
        self._forms = [form for _, form in pairs]
        most = sum(len(g) // 2 for g in self._groups)
        if cfg.n_train < 1:
            raise BadConfig(f"task sentiment: n_train must be >= 1, got {cfg.n_train}")
        if not 1 <= cfg.n_eval <= most:
            raise BadConfig(f"task sentiment: n_eval must be in 1..{most}, got {cfg.n_eval}")
        if not 0 <= cfg.n_validation <= most - cfg.n_eval:
            raise BadConfig(f"task sentiment: n_validation must be in 0..{most - cfg.n_eval} "
                            f"(n_eval + n_validation <= {most}), got {cfg.n_validation}")
        weights = self._weights()
        if any(w < 0 for w in weights) or sum(weights) <= 0:
            raise BadConfig("task sentiment: positive, negative, neutral and mixed must be "
                            f">= 0 with a positive sum, got {weights}")
        if not 1 <= cfg.min_words <= cfg.max_words:
            raise BadConfig("task sentiment: need 1 <= min_words <= max_words, got "
                            f"{cfg.min_words} and {cfg.max_words}")
        if cfg.max_chars < 1:
            raise BadConfig(f"task sentiment: max_chars must be >= 1, got {cfg.max_chars}")
        self._oracle = SentimentOracle()
        self._data: dict[str, tuple[list[SFTExample], list[str]]] = {}

    # ------------------------------------------------------------------ Task API

    def sft_examples(self, split: str) -> list[SFTExample]:
        """The supervised examples of ``split`` ("train", "validation" or "eval")."""
        return list(self._split(split)[0])

    def labels(self, split: str) -> list[str]:
        """The sentiment label drawn for each example of ``split`` (same order)."""
        return list(self._split(split)[1])

    def prompts(self, split: str) -> list[str]:
        """The distinct prompts of ``split``'s examples, in order of first use."""
        return list(dict.fromkeys(e.prompt for e in self._split(split)[0]))

    def reward(self) -> SentimentOracle:
        """The ground-truth reward (the oracle with its default options)."""
        return SentimentOracle()

    # ------------------------------------------------------------------ internals

    def _weights(self) -> tuple[float, float, float, float]:
        c = self.config
        return (c.positive, c.negative, c.neutral, c.mixed)

    def _split(self, split: str) -> tuple[list[SFTExample], list[str]]:
        if split not in _SPLITS:
            raise BadConfig(f"task sentiment: unknown split {split!r}; "
                            f"valid splits: {', '.join(_SPLITS)}")
        if split not in self._data:
            self._data[split] = self._build(split)
        return self._data[split]

    def _held_out(self) -> tuple[dict[str, list[tuple[str, str]]], list[list[tuple[str, str]]]]:
        """({"eval": prompts, "validation": prompts}, per-template pools of train prompts).

        Round-robin over the templates in a seeded order: eval first, then validation
        from each template's fillings that eval left (so eval does not depend on
        ``n_validation``); together they take at most half of a template's fillings,
        so the held-out prompts cover every template with more than one filling and
        every template keeps train prompts."""
        rng = random.Random(f"sentiment/{self.config.seed}/split")
        groups = [list(g) for g in self._groups]
        for group in groups:
            rng.shuffle(group)
        order = list(range(len(groups)))
        rng.shuffle(order)
        taken = [0] * len(groups)
        held: dict[str, list[tuple[str, str]]] = {}
        for split, n in (("eval", self.config.n_eval), ("validation", self.config.n_validation)):
            chosen: list[tuple[str, str]] = []
            while len(chosen) < n:
                for t in order:
                    if len(chosen) < n and taken[t] < len(groups[t]) // 2:
                        chosen.append((groups[t][taken[t]], self._forms[t]))
                        taken[t] += 1
            held[split] = chosen
        pools = [[(p, self._forms[t]) for p in g[taken[t]:]] for t, g in enumerate(groups)]
        return held, pools

    def _build(self, split: str) -> tuple[list[SFTExample], list[str]]:
        cfg = self.config
        held_out, pools = self._held_out()
        rng = random.Random(f"sentiment/{cfg.seed}/{split}")
        if split in held_out:
            prompts = held_out[split]
        else:  # a template uniformly, then one of its train fillings
            prompts = [rng.choice(pools[rng.randrange(len(pools))]) for _ in range(cfg.n_train)]
        labels = rng.choices(LABELS, weights=self._weights(), k=len(prompts))
        examples = [SFTExample(prompt, self._continuation(rng, form, label))
                    for (prompt, form), label in zip(prompts, labels)]
        return examples, labels

    def _continuation(self, rng: random.Random, form: str, label: str) -> str:
        cfg = self.config
        for _ in range(_MAX_TRIES):
            text = continuation(rng, form, label)
            if not cfg.min_words <= len(text.split()) <= cfg.max_words:
                continue
            if len(text) > cfg.max_chars:
                continue
            if self._acceptable(text, label):
                return text
        raise BadConfig(f"task sentiment: no {label} continuation fits min_words="
                        f"{cfg.min_words}, max_words={cfg.max_words}, "
                        f"max_chars={cfg.max_chars}")

    def _acceptable(self, text: str, label: str) -> bool:
        parts = self._oracle.components("", text)
        if parts["penalty"] != 1.0:
            return False
        s = parts["valence"]
        words = {w for w, _ in tokenize(text)}
        if label == "positive":
            return s > 1.0
        if label == "negative":
            return s < -1.0
        if label == "neutral":
            return not words & (POSITIVE.keys() | NEGATIVE.keys())
        return bool(words & POSITIVE.keys()) and bool(words & NEGATIVE.keys())
