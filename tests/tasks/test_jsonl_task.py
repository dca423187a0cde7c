"""The ``jsonl`` task: reading records, error messages, skip mode and splits."""

from __future__ import annotations

import json
import warnings

import pytest

from gaf.errors import BadConfig, BadData
from gaf.interfaces import SFTExample, Task
from gaf.plugins.tasks.jsonl import JsonlConfig, JsonlTask


def write(tmp_path, lines, name="data.jsonl"):
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def task_for(path, **kw) -> JsonlTask:
    """The task without a validation split unless asked (these tests are about eval)."""
    return JsonlTask(JsonlConfig(path=str(path), **{"validation_fraction": 0.0, **kw}))


def pairs(n, prefix="p"):
    return [json.dumps({"prompt": f"{prefix}{i}", "completion": f" c{i}"}) for i in range(n)]


def all_examples(task):
    return task.sft_examples("train") + task.sft_examples("eval")


def test_reads_both_record_forms_ignoring_blank_lines_and_extra_keys(tmp_path):
    path = write(tmp_path, [json.dumps({"prompt": "Q: 1+1?", "completion": " 2", "id": 7}),
                            "", "   ",
                            json.dumps({"text": "just text"}),
                            json.dumps({"prompt": "", "completion": "x"})])
    task = task_for(path)
    assert isinstance(task, Task)
    assert sorted(all_examples(task), key=repr) == sorted(
        [SFTExample("Q: 1+1?", " 2"), SFTExample("", "just text"), SFTExample("", "x")],
        key=repr)
    assert task.reward() is None
    assert task.skipped == 0


def test_config_and_task_construction_do_not_touch_the_file(tmp_path):
    missing = tmp_path / "nope.jsonl"
    task = task_for(missing)  # no error yet
    with pytest.raises(BadData, match="nope.jsonl") as info:
        task.sft_examples("train")
    assert info.value.path == str(missing)
    assert "not found" in str(info.value)


def test_empty_path_is_an_error_at_use():
    task = JsonlTask(JsonlConfig())
    with pytest.raises(BadConfig, match="path"):
        task.prompts("train")


def test_file_is_read_once_and_cached(tmp_path):
    path = write(tmp_path, pairs(10))
    task = task_for(path)
    first = task.sft_examples("train")
    path.unlink()
    assert task.sft_examples("train") == first
    assert len(task.sft_examples("eval")) == 1


BAD_LINES = [
    ("invalid-json", '{"prompt": "a", "completion": ', None, "invalid JSON"),
    ("not-an-object", '["prompt", "completion"]', None, "object"),
    ("neither-form", '{"question": "a", "answer": "b"}', "text", "missing"),
    ("no-completion", '{"prompt": "a"}', "completion", "missing"),
    ("no-prompt", '{"completion": "b"}', "prompt", "missing"),
    ("prompt-not-string", '{"prompt": 3, "completion": "b"}', "prompt", "string"),
    ("completion-not-string", '{"prompt": "a", "completion": null}', "completion", "string"),
    ("text-not-string", '{"text": ["a"]}', "text", "string"),
    ("both-forms", '{"text": "a", "prompt": "b", "completion": "c"}', "text", "not both"),
    ("empty-completion", '{"prompt": "a", "completion": ""}', "completion", "empty"),
]


@pytest.mark.parametrize("case, bad, field, words", BAD_LINES, ids=[c[0] for c in BAD_LINES])
def test_bad_line_names_file_line_and_field(tmp_path, case, bad, field, words):
    path = write(tmp_path, pairs(2) + ["", bad] + pairs(2, "q"), name=f"{case}.jsonl")
    with pytest.raises(BadData) as info:
        task_for(path).sft_examples("train")
    message = str(info.value)
    assert f"{case}.jsonl" in message
    assert ":4" in message and info.value.line == 4  # 1-based, blank line counted
    assert words in message
    if field is not None:
        assert repr(field) in message and info.value.field == field


def test_invalid_utf8_names_the_line(tmp_path):
    path = tmp_path / "bytes.jsonl"
    path.write_bytes(b'{"text": "ok"}\n{"text": "\xff"}\n')
    with pytest.raises(BadData, match=r"bytes\.jsonl:2: .*UTF-8"):
        task_for(path).sft_examples("train")


@pytest.mark.parametrize("content", ["", "\n\n  \n"])
def test_file_without_examples_is_an_error(tmp_path, content):
    path = tmp_path / "empty.jsonl"
    path.write_text(content)
    with pytest.raises(BadData, match=r"empty\.jsonl: no examples"):
        task_for(path).sft_examples("train")


def test_skip_mode_drops_and_counts_bad_lines(tmp_path):
    lines = pairs(5) + ["{oops", "[1]", '{"prompt": 1, "completion": "x"}']
    path = write(tmp_path, lines)
    task = task_for(path, on_error="skip")
    with pytest.warns(UserWarning, match=r"skipped 3 bad line\(s\).*:6"):
        examples = all_examples(task)
    assert len(examples) == 5 and task.skipped == 3
    with warnings.catch_warnings():  # cached: no second warning
        warnings.simplefilter("error")
        assert task.skipped == 3
    with pytest.raises(BadData, match=":6"):  # the default mode raises at the first one
        task_for(path).sft_examples("train")


def test_skip_mode_with_only_bad_lines_is_an_error(tmp_path):
    path = write(tmp_path, ["{oops", "7"])
    with pytest.warns(UserWarning), pytest.raises(BadData, match="no examples .2 bad"):
        task_for(path, on_error="skip").sft_examples("train")


def test_eval_split_is_a_deterministic_held_out_fraction(tmp_path):
    path = write(tmp_path, pairs(100))
    a, b, c = task_for(path, seed=1), task_for(path, seed=1), task_for(path, seed=2)
    assert len(a.sft_examples("eval")) == 5 and len(a.sft_examples("train")) == 95
    assert a.sft_examples("eval") == b.sft_examples("eval")
    assert a.sft_examples("eval") != c.sft_examples("eval")
    assert not set(a.prompts("eval")) & set(a.prompts("train"))
    # file order is kept inside each split
    order = [int(e.prompt[1:]) for e in a.sft_examples("train")]
    assert order == sorted(order)
    assert len(task_for(path, eval_fraction=0.2).sft_examples("eval")) == 20


@pytest.mark.parametrize("n, n_eval", [(1, 0), (2, 1), (3, 1), (40, 2)])
def test_eval_split_has_at_least_one_example_from_two(tmp_path, n, n_eval):
    task = task_for(write(tmp_path, pairs(n)))
    assert len(task.sft_examples("eval")) == n_eval
    assert len(task.sft_examples("train")) == n - n_eval


def test_examples_sharing_a_prompt_stay_in_one_split(tmp_path):
    lines = [json.dumps({"prompt": f"p{i % 10}", "completion": f" c{i}"}) for i in range(30)]
    task = task_for(write(tmp_path, lines), eval_fraction=0.2)
    assert len(task.sft_examples("eval")) == 6
    assert len(task.prompts("eval")) == 2
    assert not set(task.prompts("eval")) & set(task.prompts("train"))
    assert len(task.prompts("train")) == 8  # distinct prompts only


def test_text_only_files_split_by_example(tmp_path):
    lines = [json.dumps({"text": f"line {i}"}) for i in range(40)]
    task = task_for(write(tmp_path, lines))
    assert len(task.sft_examples("eval")) == 2 and len(task.sft_examples("train")) == 38
    assert task.prompts("eval") == [""]


@pytest.mark.parametrize("changes", [{"on_error": "ignore"}, {"eval_fraction": -0.1},
                                     {"eval_fraction": 1.0}, {"validation_fraction": 1.0},
                                     {"eval_fraction": 0.5, "validation_fraction": 0.5}])
def test_bad_options_are_bad_config(changes):
    with pytest.raises(BadConfig):
        JsonlTask(JsonlConfig(path="x.jsonl", **changes))


def test_unknown_split_is_bad_config(tmp_path):
    with pytest.raises(BadConfig, match="valid splits"):
        task_for(write(tmp_path, pairs(3))).sft_examples("test")
