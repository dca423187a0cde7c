"""The ``jsonl`` task on preference files: the three record forms, bad lines, splits."""

from __future__ import annotations

import itertools
import json
import warnings

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gaf.errors import BadData
from gaf.interfaces import PreferenceGroup, SFTExample
from gaf.plugins.tasks.jsonl import JsonlConfig, JsonlTask, read_jsonl


def write(tmp_path, lines, name="prefs.jsonl"):
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def task_for(path, **kw) -> JsonlTask:
    """The task without a validation split unless asked (these tests are about eval)."""
    return JsonlTask(JsonlConfig(path=str(path), **{"validation_fraction": 0.0, **kw}))


def line(**record) -> str:
    return json.dumps(record)


def paired(n, prefix="p"):
    return [line(prompt=f"{prefix}{i}", chosen=f" good{i}", rejected=f" bad{i}")
            for i in range(n)]


def all_groups(task):
    return (task.preference_groups("train") + task.preference_groups("validation")
            + task.preference_groups("eval"))


# ------------------------------------------------------------------ the three forms


def test_each_form_becomes_its_group_with_source(tmp_path):
    path = write(tmp_path, [
        line(prompt="Q1", chosen=" yes", rejected=" no", id=3),
        "",
        line(prompt="Q2", responses=["b", "c", "a"], ranking=[2, 0, 1], score=[1, 2, 3]),
        line(prompt="Q3", completion=" fine", label=True),
        line(prompt="", completion=" awful", label=False),
    ])
    groups, errors = read_jsonl(str(path))
    assert errors == []
    p = str(path)
    assert groups == [
        PreferenceGroup("Q1", (" yes", " no"), ((0, 1),), ranked=True, source=f"{p}:1"),
        PreferenceGroup("Q2", ("a", "b", "c"), ((0, 1), (0, 2), (1, 2)), ranked=True,
                        source=f"{p}:3"),
        PreferenceGroup("Q3", (" fine",), (), ranked=False, labels=(True,), source=f"{p}:4"),
        PreferenceGroup("", (" awful",), (), ranked=False, labels=(False,),
                        source=f"{p}:5"),
    ]
    assert groups[1].desirable() == (True, None, False)


def test_task_returns_all_groups_in_file_order_and_no_reward(tmp_path):
    lines = paired(20) + [line(prompt="k", responses=["x", "y"], ranking=[1, 0])]
    task = task_for(write(tmp_path, lines))
    groups = all_groups(task)
    assert len(groups) == 21 and task.skipped == 0 and task.reward() is None
    for split in ("train", "eval"):
        lines_of = [int(g.source.rsplit(":", 1)[1]) for g in task.preference_groups(split)]
        assert lines_of == sorted(lines_of)
    assert PreferenceGroup("k", ("y", "x"), ((0, 1),), ranked=True,
                           source=f"{tmp_path / 'prefs.jsonl'}:21") in groups


def test_unpaired_records_with_one_prompt_are_not_merged(tmp_path):
    lines = [line(prompt="same", completion=f" c{i}", label=i % 2 == 0) for i in range(4)]
    groups, _ = read_jsonl(str(write(tmp_path, lines)))
    assert [g.responses for g in groups] == [(" c0",), (" c1",), (" c2",), (" c3",)]
    assert [g.labels for g in groups] == [(True,), (False,), (True,), (False,)]


def test_an_sft_file_has_no_preference_groups(tmp_path):
    path = write(tmp_path, [line(prompt="a", completion=" b"), line(text="t")])
    task = task_for(path)
    assert task.preference_groups("train") == [] and task.preference_groups("eval") == []
    assert len(task.sft_examples("train") + task.sft_examples("eval")) == 2
    records, _ = read_jsonl(str(path))  # read_jsonl still returns SFT examples
    assert records == [SFTExample("a", " b"), SFTExample("", "t")]


def test_sft_examples_of_a_preference_file_are_the_preferred_responses(tmp_path):
    lines = [line(prompt="A", chosen=" good", rejected=" bad"),
             line(prompt="B", responses=["2nd", "1st", "3rd"], ranking=[1, 0, 2]),
             line(prompt="C", completion=" liked", label=True),
             line(prompt="D", completion=" disliked", label=False),
             line(prompt="C", completion=" also liked", label=True)]
    task = task_for(write(tmp_path, lines), eval_fraction=0.01)  # one prompt held out
    examples = task.sft_examples("train") + task.sft_examples("eval")
    assert sorted(examples, key=repr) == sorted(
        [SFTExample("A", " good"), SFTExample("B", "1st"), SFTExample("C", " liked"),
         SFTExample("C", " also liked")], key=repr)
    for split in ("train", "eval"):  # derived from the split's own groups
        expected = {g.prompt for g in task.preference_groups(split)} - {"D"}
        assert {e.prompt for e in task.sft_examples(split)} == expected


def test_prompts_are_distinct_in_order_of_first_appearance(tmp_path):
    lines = [line(prompt=p, completion=f" {i}", label=True)
             for i, p in enumerate("abacbd")]
    task = task_for(write(tmp_path, lines), eval_fraction=0.01)
    train, held = task.prompts("train"), task.prompts("eval")
    assert len(held) == 1 and held[0] not in train
    assert train == [p for p in "abcd" if p != held[0]]


def test_preference_file_is_read_lazily_once(tmp_path):
    missing = tmp_path / "later.jsonl"
    task = task_for(missing)  # no error yet
    missing.write_text("\n".join(paired(10)) + "\n")
    first = task.preference_groups("train")
    missing.unlink()
    assert task.preference_groups("train") == first and len(first) == 9
    assert len(task.preference_groups("eval")) == 1


# ------------------------------------------------------------------------ bad lines

BAD = [
    # case, bad line, field, words in the message
    ("invalid-json", '{"prompt": "a", "chosen": ', None, "invalid JSON"),
    ("not-an-object", '"chosen"', None, "object"),
    ("no-rejected", line(prompt="a", chosen="x"), "rejected", "missing"),
    ("no-chosen", line(prompt="a", rejected="x"), "chosen", "missing"),
    ("no-prompt-paired", line(chosen="x", rejected="y"), "prompt", "missing"),
    ("prompt-not-string", line(prompt=["a"], chosen="x", rejected="y"), "prompt",
     "string"),
    ("chosen-not-string", line(prompt="a", chosen=1, rejected="y"), "chosen", "string"),
    ("rejected-null", line(prompt="a", chosen="x", rejected=None), "rejected", "string"),
    ("empty-chosen", line(prompt="a", chosen="", rejected="y"), "chosen", "empty"),
    ("empty-rejected", line(prompt="a", chosen="x", rejected=""), "rejected", "empty"),
    ("identical", line(prompt="a", chosen="same", rejected="same"), "rejected",
     "chosen and rejected are identical"),
    ("no-ranking", line(prompt="a", responses=["x", "y"]), "ranking", "missing"),
    ("no-responses", line(prompt="a", ranking=[0, 1]), "responses", "missing"),
    ("no-prompt-ranked", line(responses=["x", "y"], ranking=[0, 1]), "prompt", "missing"),
    ("responses-not-array", line(prompt="a", responses="xy", ranking=[0, 1]), "responses",
     "array"),
    ("response-not-string", line(prompt="a", responses=["x", 2], ranking=[0, 1]),
     "responses", "responses[1]: expected a string"),
    ("empty-response", line(prompt="a", responses=["x", "", "z"], ranking=[0, 1, 2]),
     "responses", "responses[1]: empty string"),
    ("duplicate-responses", line(prompt="a", responses=["x", "y", "x"], ranking=[0, 1, 2]),
     "responses", "responses[0] and responses[2] are identical"),
    ("one-response", line(prompt="a", responses=["x"], ranking=[0]), "responses",
     "at least 2"),
    ("no-response", line(prompt="a", responses=[], ranking=[]), "responses", "at least 2"),
    ("ranking-not-array", line(prompt="a", responses=["x", "y"], ranking="01"), "ranking",
     "array"),
    ("ranking-too-short", line(prompt="a", responses=["x", "y", "z"], ranking=[0, 1]),
     "ranking", "expected 3 indices"),
    ("ranking-too-long", line(prompt="a", responses=["x", "y"], ranking=[0, 1, 1]),
     "ranking", "expected 2 indices"),
    ("ranking-repeats", line(prompt="a", responses=["x", "y", "z"], ranking=[0, 2, 0]),
     "ranking", "listed twice"),
    ("ranking-out-of-range", line(prompt="a", responses=["x", "y"], ranking=[0, 2]),
     "ranking", "not an index"),
    ("ranking-negative", line(prompt="a", responses=["x", "y"], ranking=[-1, 0]),
     "ranking", "not an index"),
    ("ranking-float", line(prompt="a", responses=["x", "y"], ranking=[0, 1.0]), "ranking",
     "ranking[1]: expected an integer, got 1.0"),
    ("ranking-string", line(prompt="a", responses=["x", "y"], ranking=["0", "1"]),
     "ranking", "expected an integer, got a string"),
    ("ranking-boolean", line(prompt="a", responses=["x", "y"], ranking=[True, False]),
     "ranking", "expected an integer, got a boolean"),
    ("no-completion", line(prompt="a", label=True), "completion", "missing"),
    ("no-prompt-unpaired", line(completion="c", label=True), "prompt", "missing"),
    ("empty-completion", line(prompt="a", completion="", label=True), "completion",
     "empty"),
    ("label-number", line(prompt="a", completion="c", label=1), "label", "boolean"),
    ("label-string", line(prompt="a", completion="c", label="true"), "label", "boolean"),
    ("label-null", line(prompt="a", completion="c", label=None), "label", "boolean"),
    ("two-forms", line(prompt="a", chosen="x", rejected="y", responses=["x", "y"],
                       ranking=[0, 1]), "responses", "mixes"),
    ("paired-and-label", line(prompt="a", chosen="x", rejected="y", label=True), "label",
     "mixes"),
    ("text-and-chosen", line(text="a", chosen="x"), "chosen", "mixes"),
    ("no-form", line(question="a", answer="b"), "chosen", "missing"),
    ("sft-completion", line(prompt="a", completion=" b"), "label",
     "this file holds preference records (from line 1); expected \"chosen\"/\"rejected\", "
     "\"responses\"/\"ranking\" or \"completion\"/\"label\""),
    ("sft-text", line(text="plain"), "text", "this file holds preference records"),
]


@pytest.mark.parametrize("case, bad, field, words", BAD, ids=[c[0] for c in BAD])
def test_bad_line_names_file_line_and_field(tmp_path, case, bad, field, words):
    path = write(tmp_path, paired(2) + ["", bad] + paired(2, "q"), name=f"{case}.jsonl")
    with pytest.raises(BadData) as info:
        task_for(path).preference_groups("train")
    message = str(info.value)
    assert message.startswith(f"{path}:4: ")  # 1-based, blank line counted
    assert info.value.path == str(path) and info.value.line == 4
    assert words in message
    assert info.value.field == field
    if field is not None:
        assert f"field {field!r}" in message


@pytest.mark.parametrize("case, bad, field, words", BAD, ids=[c[0] for c in BAD])
def test_skip_mode_drops_each_bad_line_and_keeps_the_good(tmp_path, case, bad, field,
                                                          words):
    good = paired(3) + paired(3, "q")
    path = write(tmp_path, good[:3] + [bad, bad] + good[3:], name=f"{case}.jsonl")
    task = task_for(path, on_error="skip")
    with pytest.warns(UserWarning, match=rf"skipped 2 bad line\(s\); the first: .*:4: "):
        groups = all_groups(task)
    assert task.skipped == 2
    assert sorted(g.prompt for g in groups) == ["p0", "p1", "p2", "q0", "q1", "q2"]
    with warnings.catch_warnings():  # cached: no second warning
        warnings.simplefilter("error")
        assert task.skipped == 2


def test_skip_mode_counts_several_kinds_of_bad_lines(tmp_path):
    lines = [line(prompt="a", chosen="x", rejected="x"),   # identical: skipped
             line(prompt="b", responses=["x", "y"], ranking=[1, 0]),  # family from here
             "{oops",
             line(prompt="c", completion=" c", label=True),
             line(text="sft"),
             line(prompt="d", responses=["x", "x"], ranking=[0, 1]),
             line(prompt="e", completion=" e", label="yes"),
             line(prompt="f", chosen="1", rejected="2")]
    task = task_for(write(tmp_path, lines), on_error="skip")
    with pytest.warns(UserWarning, match=r"skipped 5 bad line\(s\).*:1: .*identical"):
        groups = all_groups(task)
    assert sorted(g.prompt for g in groups) == ["b", "c", "f"] and task.skipped == 5


def test_skip_mode_family_is_set_by_the_first_good_record(tmp_path):
    lines = [line(prompt="a", chosen="", rejected="x")] + [
        line(prompt=f"p{i}", completion=f" {i}") for i in range(3)]
    path = write(tmp_path, lines)
    task = task_for(path, on_error="skip")
    with pytest.warns(UserWarning, match="skipped 1"):
        assert len(task.sft_examples("train") + task.sft_examples("eval")) == 3
    assert task.preference_groups("train") == []


# ------------------------------------------------------------------ mixing families


def test_a_preference_record_in_an_sft_file_is_a_bad_line(tmp_path):
    lines = ["", line(prompt="a", completion=" b"), line(text="t"),
             line(prompt="c", chosen="x", rejected="y")]
    path = write(tmp_path, lines)
    with pytest.raises(BadData) as info:
        task_for(path).sft_examples("train")
    assert info.value.line == 4 and info.value.field == "chosen"
    assert ("this file holds SFT records (from line 2); "
            "expected \"prompt\"/\"completion\" or \"text\"") in str(info.value)


def test_a_label_makes_a_completion_record_preference_data(tmp_path):
    lines = [line(prompt="a", completion=" b"), line(prompt="c", completion=" d", label=True)]
    with pytest.raises(BadData, match=r":2: field 'label': this file holds SFT records"):
        task_for(write(tmp_path, lines)).sft_examples("train")
    lines = [line(prompt="c", completion=" d", label=True), line(prompt="a", completion=" b")]
    with pytest.raises(BadData, match=r":2: field 'label': this file holds preference"):
        task_for(write(tmp_path, lines)).sft_examples("train")


def test_skip_mode_drops_records_of_the_other_family(tmp_path):
    lines = paired(4) + [line(prompt="x", completion=" y"), line(text="z")]
    task = task_for(write(tmp_path, lines), on_error="skip")
    with pytest.warns(UserWarning, match=r"skipped 2 bad line\(s\).*:5: .*preference"):
        assert len(all_groups(task)) == 4


@pytest.mark.parametrize("content", ["", "\n \n"])
def test_file_without_records_is_an_error(tmp_path, content):
    path = tmp_path / "empty.jsonl"
    path.write_text(content)
    with pytest.raises(BadData, match=r"empty\.jsonl: no examples"):
        task_for(path).preference_groups("train")


def test_skip_mode_with_only_bad_preference_lines_is_an_error(tmp_path):
    path = write(tmp_path, [line(prompt="a", chosen="x", rejected="x"),
                            line(prompt="a", responses=["x"], ranking=[0])])
    with pytest.warns(UserWarning), pytest.raises(BadData, match="no examples .2 bad"):
        task_for(path, on_error="skip").preference_groups("train")


# --------------------------------------------------------------------------- splits


def test_split_keeps_prompts_together_and_is_deterministic(tmp_path):
    lines = []
    for i in range(60):  # 10 prompts, each in all three forms
        p = f"p{i % 10}"
        lines.append([line(prompt=p, chosen=f" c{i}", rejected=f" r{i}"),
                      line(prompt=p, responses=[f"a{i}", f"b{i}"], ranking=[1, 0]),
                      line(prompt=p, completion=f" u{i}", label=i % 2 == 0)][i % 3])
    path = write(tmp_path, lines)
    a, b = task_for(path, eval_fraction=0.2), task_for(path, eval_fraction=0.2)
    c = task_for(path, eval_fraction=0.2, seed=5)
    held = a.preference_groups("eval")
    assert len(held) == 12 and len(a.preference_groups("train")) == 48
    assert len(a.prompts("eval")) == 2 and len(a.prompts("train")) == 8
    assert not set(a.prompts("eval")) & set(a.prompts("train"))
    assert held == b.preference_groups("eval") and held != c.preference_groups("eval")
    for task in (a, c):  # file order inside each split
        order = [int(g.source.rsplit(":", 1)[1]) for g in task.preference_groups("train")]
        assert order == sorted(order)
    assert not {e.prompt for e in a.sft_examples("eval")} & set(a.prompts("train"))


def test_one_prompt_file_splits_by_group(tmp_path):
    lines = [line(prompt="", chosen=f"c{i}", rejected=f"r{i}") for i in range(40)]
    task = task_for(write(tmp_path, lines))
    assert len(task.preference_groups("eval")) == 2
    assert len(task.preference_groups("train")) == 38
    assert task.prompts("eval") == task.prompts("train") == [""]


# ---------------------------------------------------------------- ranked: property


@settings(max_examples=60, deadline=None)
@given(data=st.data(),
       responses=st.lists(st.text(min_size=1, max_size=12), min_size=2, max_size=8,
                          unique=True))
def test_ranked_list_is_reordered_best_first(tmp_path_factory, data, responses):
    ranking = data.draw(st.permutations(range(len(responses))), label="ranking")
    path = tmp_path_factory.mktemp("ranked") / "r.jsonl"
    path.write_text(line(prompt="q", responses=responses, ranking=list(ranking)) + "\n")
    (group,), errors = read_jsonl(str(path))
    assert errors == []
    assert group.responses == tuple(responses[k] for k in ranking)
    assert group.pairs == tuple((i, j) for i in range(len(responses))
                                for j in range(i + 1, len(responses)))
    assert group.ranked and group.labels is None
    # the best response wins every pair and the worst loses every pair
    assert group.desirable()[0] is True and group.desirable()[-1] is False
    assert list(itertools.chain.from_iterable(group.pairs)).count(0) == len(responses) - 1
