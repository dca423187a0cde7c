"""The ``sentiment-oracle`` reward: sanity targets, penalties and properties."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from gaf.errors import BadConfig
from gaf.interfaces import RewardFn
from gaf.plugins.tasks.sentiment import SentimentConfig, SentimentOracle, SentimentTask
from gaf.plugins.tasks.sentiment_lexicon import (ASPECTS, NEGATIVE_ADJECTIVES,
                                                 POSITIVE_ADJECTIVES, VOCABULARY)
from gaf.plugins.tasks.sentiment_reward import SentimentOracleConfig, tokenize

ORACLE = SentimentOracle()
PROPERTY = settings(max_examples=150, deadline=None)


def score(text: str) -> float:
    return ORACLE.score_one("The acting in Night Train", text)


@pytest.fixture(scope="module")
def corpus():
    task = SentimentTask(SentimentConfig(n_train=1500))
    examples = task.sft_examples("train")
    rewards = ORACLE([e.prompt for e in examples], [e.completion for e in examples]).tolist()
    return task.labels("train"), rewards


def mean(xs):
    xs = list(xs)
    return sum(xs) / len(xs)


# ------------------------------------------------------------------ sanity targets


def test_corpus_reward_is_middling(corpus):
    _, rewards = corpus
    assert 0.4 < mean(rewards) < 0.6


def test_positive_and_negative_continuations_are_separated(corpus):
    labels, rewards = corpus
    assert mean(r for lab, r in zip(labels, rewards) if lab == "positive") > 0.7
    assert mean(r for lab, r in zip(labels, rewards) if lab == "negative") < 0.3
    assert mean(r for lab, r in zip(labels, rewards) if lab == "neutral") == pytest.approx(0.5)


@pytest.mark.parametrize("text", [
    " The acting was superb and the story kept me hooked until the very end.",
    " I loved this film, the cast was wonderful and the script was clever.",
])
def test_fluent_positive_review_scores_high(text):
    assert score(text) > 0.8


@pytest.mark.parametrize("text", [
    " The plot was dull and the acting was truly awful.",
    " I would not recommend this movie to anyone.",
])
def test_fluent_negative_review_scores_low(text):
    assert score(text) < 0.2


@pytest.mark.parametrize("text", [
    "great great great great great.",            # one word repeated
    "great wonderful brilliant superb excellent.",  # adjective salad, off topic
    "the film was great. the film was great. the film was great.",  # repeated sentence
    "great film.",                                # too short
    "asdf qwer zxcv.",                            # gibberish
    "the acting was qwzx xyzzy blorf frobnicate wonderful.",  # mostly non-words
])
def test_degenerate_text_scores_low(text):
    assert score(text) < 0.3


@pytest.mark.parametrize("text", ["", "   ", " . . !"])
def test_empty_completion_scores_zero(text):
    assert score(text) == 0.0


def test_each_penalty_lowers_a_good_review():
    good = " the acting was superb and the story was moving."
    base = score(good)
    assert base > 0.9
    assert score(good[:-1]) < base                                   # no final period
    assert score(" the acting was superb superb and the story was moving.") < base  # stutter
    assert score(" i loved it so much and it was wonderful.") < 0.75 * base  # off topic
    assert score(good + " the acting was superb" * 8 + ".") < 0.3 * base   # too long, repeats
    assert score(" the acting was superb and the stroy was moving.") < base  # typo: non-word


def test_negation_intensifiers_and_contrast():
    assert ORACLE.valence("the film was not good.") < 0 < ORACLE.valence("the film was good.")
    assert ORACLE.valence("the film was not bad.") > 0
    assert ORACLE.valence("the film wasn't good.") < 0
    assert ORACLE.valence("the film was very good.") > ORACLE.valence("the film was good.")
    assert ORACLE.valence("the film was slightly good.") < ORACLE.valence("the film was good.")
    # the clause after "but" decides
    assert ORACLE.valence("the plot was great but the acting was bad.") < 0
    assert ORACLE.valence("the plot was bad but the acting was great.") > 0
    # a negation reaches the next sentiment word only
    assert ORACLE.valence("the film was not bad and boring.") == pytest.approx(
        ORACLE.valence("the film was not bad.") + ORACLE.valence("boring"))


def test_batch_call_returns_float32_vector():
    assert isinstance(ORACLE, RewardFn)
    prompts, completions = ["a", "b", "c"], [" the film was good.", "", " the plot was dull."]
    out = ORACLE(prompts, completions)
    assert out.dtype == torch.float32 and out.shape == (3,)
    assert out.tolist() == pytest.approx([ORACLE.score_one(p, c)
                                          for p, c in zip(prompts, completions)])
    assert ORACLE([], []).shape == (0,)
    with pytest.raises(ValueError):
        ORACLE(["a"], [])


def test_components_multiply_to_reward():
    parts = ORACLE.components("", " the acting was good but the film is a bit slow")
    product = math.prod(parts[k] for k in ("length", "vocabulary", "topic", "density",
                                           "repetition", "punctuation"))
    assert parts["penalty"] == pytest.approx(product)
    assert parts["reward"] == pytest.approx(parts["sentiment"] * product)
    assert parts["punctuation"] < 1


def test_penalties_can_be_switched_off():
    raw = SentimentOracle(SentimentOracleConfig(penalties=False))
    assert raw.score_one("", "great great great") == pytest.approx(
        ORACLE.components("", "great great great")["sentiment"])


@pytest.mark.parametrize("changes", [{"repeat_factor": 1.0}, {"repeat_factor": 0.0},
                                     {"scale": 0.0}, {"negation": 0.5},
                                     {"min_words": 5, "max_words": 4},
                                     {"reuse_factor": 0.0}, {"unknown_power": -1.0}])
def test_bad_oracle_options_are_bad_config(changes):
    with pytest.raises(BadConfig):
        SentimentOracle(SentimentOracleConfig(**changes))


# ----------------------------------------------------------------------- properties

_WORDS = sorted(VOCABULARY)
review_words = st.lists(st.sampled_from(_WORDS + [".", ",", "not", "but", "film"]),
                        min_size=1, max_size=25).map(" ".join)
any_text = st.one_of(st.text(), review_words,
                     st.tuples(review_words, st.sampled_from(["", ".", "!", "?"]))
                     .map("".join))


@PROPERTY
@given(prompt=st.text(max_size=20), completion=any_text)
def test_reward_is_finite_and_in_unit_interval(prompt, completion):
    r = ORACLE.score_one(prompt, completion)
    assert math.isfinite(r) and 0.0 <= r <= 1.0
    t = ORACLE([prompt], [completion])
    assert bool(torch.isfinite(t).all()) and 0.0 <= float(t[0]) <= 1.0


@PROPERTY
@given(completion=any_text, copies=st.integers(1, 20))
def test_repeating_the_last_word_never_increases_reward(completion, copies):
    words = completion.split()
    if not words:
        return
    longer = completion + (" " + words[-1]) * copies
    before, after = ORACLE.score_one("", completion), ORACLE.score_one("", longer)
    assert after <= before
    if before > 1e-12 and tokenize(words[-1]):  # a real word, not punctuation only
        assert after < before


@PROPERTY
@given(word=st.sampled_from(sorted(POSITIVE_ADJECTIVES) + sorted(NEGATIVE_ADJECTIVES)),
       aspect=st.sampled_from([a for a, plural in ASPECTS if not plural]),
       intensifier=st.sampled_from(["", "very ", "really ", "truly "]),
       negator=st.sampled_from(["was not", "wasn't", "was never"]))
def test_negation_flips_the_sign(word, aspect, intensifier, negator):
    plain = f" the {aspect} was {intensifier}{word}."
    negated = f" the {aspect} {negator} {intensifier}{word}."
    v, vn = ORACLE.valence(plain), ORACLE.valence(negated)
    assert v != 0 and math.copysign(1, v) == -math.copysign(1, vn)
    r, rn = ORACLE.score_one("", plain), ORACLE.score_one("", negated)
    if word in POSITIVE_ADJECTIVES:
        assert r > 0.5 > rn
    else:
        assert r < 0.5 < rn
