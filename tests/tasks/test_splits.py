"""Validation is not test: every task has train, validation and eval splits whose
prompts are pairwise disjoint, the eval split does not depend on the validation
option, and the splits are pure functions of the config."""

from __future__ import annotations

import hashlib
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gaf.errors import BadConfig
from gaf.plugins.tasks.jsonl import JsonlConfig, JsonlTask
from gaf.plugins.tasks.sentiment import SentimentConfig, SentimentTask

SPLITS = ("train", "validation", "eval")


def sentiment(**kw) -> SentimentTask:
    return SentimentTask(SentimentConfig(**{"n_train": 200, **kw}))


@settings(max_examples=15, deadline=None)
@given(st.integers(0, 2**16), st.integers(1, 300), st.integers(0, 300))
def test_sentiment_splits_are_disjoint_and_sized(seed, n_eval, n_validation):
    task = sentiment(seed=seed, n_eval=n_eval, n_validation=n_validation)
    prompts = {s: set(task.prompts(s)) for s in SPLITS}
    assert len(prompts["eval"]) == n_eval and len(prompts["validation"]) == n_validation
    assert len(task.sft_examples("validation")) == n_validation
    assert not prompts["train"] & prompts["eval"]
    assert not prompts["train"] & prompts["validation"]
    assert not prompts["validation"] & prompts["eval"]


@settings(max_examples=10, deadline=None)
@given(st.integers(0, 2**16), st.integers(0, 400))
def test_sentiment_eval_does_not_depend_on_the_validation_split(seed, n_validation):
    a, b = sentiment(seed=seed, n_validation=0), sentiment(seed=seed, n_validation=n_validation)
    assert a.sft_examples("eval") == b.sft_examples("eval")
    assert a.labels("eval") == b.labels("eval")


def test_sentiment_default_sizes_and_determinism():
    a, b = SentimentTask(), SentimentTask()
    assert (len(a.prompts("eval")), len(a.prompts("validation"))) == (200, 200)
    for s in SPLITS:
        assert a.sft_examples(s) == b.sft_examples(s)
    assert a.sft_examples("validation") != a.sft_examples("eval")


def test_sentiment_eval_split_is_the_one_every_headline_was_measured_on():
    # the default eval examples before the validation split existed (commit baeee9d^):
    # old and new headline figures are comparable only while this holds
    eval_text = "\n".join(e.prompt + "\t" + e.completion
                          for e in SentimentTask().sft_examples("eval"))
    assert hashlib.sha256(eval_text.encode()).hexdigest() == (
        "325b827a5adfcacb079bc56c7e12a645cfc76d0321cb877772cbf66d543da3bb")


def test_sentiment_held_out_splits_cannot_exceed_half_of_every_template():
    most = sum(len(g) // 2 for g in SentimentTask()._groups)
    with pytest.raises(BadConfig, match="n_validation"):
        SentimentTask(SentimentConfig(n_eval=200, n_validation=most))
    with pytest.raises(BadConfig, match="n_validation"):
        SentimentTask(SentimentConfig(n_validation=-1))


def _jsonl(tmp_path, rows, **kw) -> JsonlTask:
    path = tmp_path / "data.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return JsonlTask(JsonlConfig(path=str(path), **kw))


@settings(max_examples=25, deadline=None)
@given(st.lists(st.integers(0, 30), min_size=2, max_size=80), st.integers(0, 100),
       st.sampled_from([0.0, 0.05, 0.2]), st.sampled_from([0.0, 0.05, 0.3]))
def test_jsonl_splits_are_disjoint_keep_prompts_together_and_cover_the_file(
        tmp_path_factory, prompt_ids, seed, eval_fraction, validation_fraction):
    rows = [{"prompt": f"p{k}", "chosen": f" a{i}", "rejected": f" b{i}"}
            for i, k in enumerate(prompt_ids)]
    task = _jsonl(tmp_path_factory.mktemp("j"), rows, seed=seed, eval_fraction=eval_fraction,
                  validation_fraction=validation_fraction)
    groups = {s: task.preference_groups(s) for s in SPLITS}
    assert sum(len(g) for g in groups.values()) == len(rows)
    sources = [g.source for s in SPLITS for g in groups[s]]
    assert len(set(sources)) == len(rows)
    prompts = {s: set(task.prompts(s)) for s in SPLITS}
    if len(set(prompt_ids)) > 1:  # with one prompt only, single records are held out
        for x, y in (("train", "eval"), ("train", "validation"), ("validation", "eval")):
            assert not prompts[x] & prompts[y], (x, y)
    assert groups["train"]
    if validation_fraction == 0:
        assert groups["validation"] == []
    if eval_fraction == 0:
        assert groups["eval"] == []
    # eval is the same whatever the validation fraction
    other = _jsonl(tmp_path_factory.mktemp("j"), rows, seed=seed, eval_fraction=eval_fraction,
                   validation_fraction=0.0)
    assert [g.prompt for g in other.preference_groups("eval")] == [g.prompt for g in
                                                                    groups["eval"]]


def test_jsonl_default_holds_out_five_percent_each(tmp_path):
    rows = [{"prompt": f"p{i}", "completion": f" c{i}"} for i in range(100)]
    task = _jsonl(tmp_path, rows)
    assert [len(task.sft_examples(s)) for s in SPLITS] == [90, 5, 5]


def test_a_misspelt_split_names_the_three(tmp_path):
    rows = [{"prompt": f"p{i}", "completion": f" c{i}"} for i in range(20)]
    for task in (sentiment(), _jsonl(tmp_path, rows)):
        for method in ("prompts", "sft_examples"):
            with pytest.raises(BadConfig, match="'val'.*train, validation, eval"):
                getattr(task, method)("val")
