"""The embedded ``sentiment`` task: determinism, splits, balance and text format."""

from __future__ import annotations

import collections
import importlib
import random

import pytest

from gaf.errors import BadConfig
from gaf.interfaces import SFTExample, Task
from gaf.plugins.tasks.sentiment import SentimentConfig, SentimentOracle, SentimentTask
from gaf.plugins.tasks.sentiment_lexicon import VOCABULARY
from gaf.plugins.tasks.sentiment_reward import tokenize
from gaf.plugins.tasks.sentiment_text import LABELS, PROMPT_TEMPLATES, prompt_groups


@pytest.fixture(scope="module")
def task() -> SentimentTask:
    return SentimentTask(SentimentConfig())


def small(**kw) -> SentimentTask:
    return SentimentTask(SentimentConfig(**{"n_train": 300, "n_eval": 40, **kw}))


def test_registry_targets_import():
    for target, attr in [("gaf.plugins.tasks.sentiment", "SentimentTask"),
                         ("gaf.plugins.tasks.sentiment", "SentimentOracle"),
                         ("gaf.plugins.tasks.jsonl", "JsonlTask")]:
        obj = getattr(importlib.import_module(target), attr)
        assert hasattr(obj, "Config")
        obj.Config()  # every option has a default


def test_task_protocol_and_sizes(task):
    assert isinstance(task, Task)
    train, held = task.sft_examples("train"), task.sft_examples("eval")
    assert len(train) == 4000 and len(held) == 200
    assert all(isinstance(e, SFTExample) for e in train + held)
    assert task.prompts("eval") == [e.prompt for e in held]
    assert len(set(task.prompts("eval"))) == 200
    assert isinstance(task.reward(), SentimentOracle)


def test_same_seed_same_data_and_different_seed_different_data():
    a, b, c = small(seed=3), small(seed=3), small(seed=4)
    for split in ("train", "eval"):
        assert a.sft_examples(split) == b.sft_examples(split)
        assert a.labels(split) == b.labels(split)
        assert a.sft_examples(split) != c.sft_examples(split)
    assert set(a.prompts("eval")) != set(c.prompts("eval"))


def test_global_random_state_is_neither_used_nor_changed():
    random.seed(1)
    state = random.getstate()
    a = small().sft_examples("train")
    assert random.getstate() == state
    random.seed(2)
    assert small().sft_examples("train") == a


def test_eval_data_does_not_depend_on_n_train():
    assert small(n_train=10).sft_examples("eval") == small(n_train=500).sft_examples("eval")


def test_train_and_eval_prompts_are_disjoint(task):
    train_prompts = {e.prompt for e in task.sft_examples("train")}
    assert train_prompts == set(task.prompts("train"))
    assert not train_prompts & set(task.prompts("eval"))


def test_eval_prompts_cover_every_template_with_several_fillings(task):
    held = set(task.prompts("eval"))
    groups = [g for g in prompt_groups() if len(g) >= 2]
    assert len(groups) == sum(1 for t, _ in PROMPT_TEMPLATES if "{" in t)
    for group in groups:
        assert held & set(group), group[0]
        assert set(group) - held, group[0]  # and keeps train prompts


def test_sentiment_labels_are_balanced(task):
    counts = collections.Counter(task.labels("train"))
    assert set(counts) == set(LABELS)
    for label, share in {"positive": .3, "negative": .3, "neutral": .2, "mixed": .2}.items():
        assert abs(counts[label] / 4000 - share) < 0.04, counts


def test_oracle_agrees_with_balance(task):
    examples = task.sft_examples("train")
    rewards = task.reward()([e.prompt for e in examples], [e.completion for e in examples])
    rewards = rewards.tolist()
    high = sum(r > 0.7 for r in rewards) / len(rewards)
    low = sum(r < 0.3 for r in rewards) / len(rewards)
    assert 0.25 < high < 0.5 and 0.25 < low < 0.5, (high, low)


def test_label_weights_are_used():
    t = small(positive=1.0, negative=0.0, neutral=0.0, mixed=0.0)
    assert set(t.labels("train")) == {"positive"}
    oracle = t.reward()
    assert min(oracle.score_one(e.prompt, e.completion) for e in t.sft_examples("train")) > 0.7


def test_text_format_and_vocabulary(task):
    examples = task.sft_examples("train") + task.sft_examples("eval")
    for e in examples:
        c = e.completion
        assert c.isascii() and e.prompt.isascii()
        assert c.startswith(" ") and not c.startswith("  ") and c.endswith(".")
        assert 6 <= len(c.split()) <= 20 and len(c) <= 64
        for word, _ in tokenize(e.prompt + c):
            assert word in VOCABULARY, (word, e)


def test_vocabulary_is_moderate_and_continuations_vary(task):
    completions = [e.completion for e in task.sft_examples("train")]
    assert len(set(completions)) >= 500
    used = {w for c in completions for w, _ in tokenize(c)}
    assert 100 <= len(used) <= 250  # compact enough for a tiny byte-level model
    assert len(VOCABULARY) <= 800


@pytest.mark.parametrize("method", ["sft_examples", "prompts", "labels"])
def test_unknown_split_is_bad_config(method):
    with pytest.raises(BadConfig, match="test"):
        getattr(small(), method)("test")


@pytest.mark.parametrize("changes", [{"n_eval": 0}, {"n_eval": 10**6}, {"n_train": 0},
                                     {"positive": -1.0},
                                     {"positive": 0.0, "negative": 0.0, "neutral": 0.0,
                                      "mixed": 0.0},
                                     {"min_words": 9, "max_words": 8}])
def test_bad_options_are_bad_config(changes):
    with pytest.raises(BadConfig):
        SentimentTask(SentimentConfig(**changes))


def test_impossible_length_limits_are_bad_config():
    with pytest.raises(BadConfig, match="max_chars"):
        small(max_chars=10).sft_examples("train")
