"""``jsonl``: supervised examples from a JSONL file.

Each non-blank line is one JSON object, in one of two forms:

* ``{"prompt": "...", "completion": "..."}`` → ``SFTExample(prompt, completion)``;
* ``{"text": "..."}`` → ``SFTExample(prompt="", completion=text)``.

Other keys are ignored. Both values must be strings and the completion (or text)
must not be empty. A bad line raises :class:`~gaf.errors.BadData` naming the file,
the 1-based line number and, where one is at fault, the field: invalid JSON or UTF-8,
a line that is not an object, a record with neither form (or with both), a missing
``prompt`` or ``completion``, a value that is not a string. With
``on_error = "skip"`` such lines are dropped instead: :attr:`JsonlTask.skipped`
counts them and a warning names the count and the first problem. A missing or
unreadable file and a file without any example are errors in both modes.

Splits: ``eval_fraction`` of the examples (at least one when there are two or more)
are held out, chosen with ``seed``. Examples sharing a prompt stay together so that
the eval prompts are not train prompts; whole prompt groups are held out, up to the
target count (at least the smallest group). When every example has the same prompt
(e.g. a file of ``{"text"}`` records), single examples are held out instead. Both
splits keep file order; ``prompts(split)`` lists a split's distinct prompts in order
of first appearance. The task has no reward (``reward()`` is ``None``).

The file is read on first use, not when the task or its config is built, and cached.
"""

from __future__ import annotations

import json
import random
import warnings
from pathlib import Path
from typing import Any, Literal

import attrs

from gaf.config import option
from gaf.errors import BadConfig, BadData
from gaf.interfaces import SFTExample

__all__ = ["JsonlConfig", "JsonlTask", "read_jsonl"]

_SPLITS = ("train", "eval")
_ON_ERROR = ("raise", "skip")


@attrs.define
class JsonlConfig:
    """Options of the ``jsonl`` task (the ``[task]`` section)."""

    path: str = option("", "JSONL file of {prompt, completion} or {text} records (required)")
    eval_fraction: float = option(0.05, "fraction of the examples held out as the eval split")
    seed: int = option(0, "seed of the train/eval split")
    on_error: Literal["raise", "skip"] = option(
        "raise", "a bad line: 'raise' stops with its file and line, 'skip' drops it and warns")


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return "a string"


def _record(obj: Any, path: str, line: int) -> SFTExample:
    """The example of one parsed line (raises :class:`BadData`)."""
    if not isinstance(obj, dict):
        raise BadData(f"expected a JSON object, got {_json_type(obj)}", path=path, line=line)
    if "text" in obj and ("prompt" in obj or "completion" in obj):
        raise BadData('a record has either "text" or "prompt" and "completion", not both',
                      path=path, line=line, field="text")
    if "text" in obj:
        fields = ("text",)
    elif "prompt" in obj or "completion" in obj:
        fields = ("prompt", "completion")
    else:
        raise BadData('missing: a record needs "prompt" and "completion", or "text"',
                      path=path, line=line, field="text")
    values = []
    for name in fields:
        if name not in obj:
            raise BadData('missing: a record with "prompt" and "completion" needs both',
                          path=path, line=line, field=name)
        value = obj[name]
        if not isinstance(value, str):
            raise BadData(f"expected a string, got {_json_type(value)}", path=path, line=line,
                          field=name)
        if name != "prompt" and not value:
            raise BadData("empty string", path=path, line=line, field=name)
        values.append(value)
    if len(values) == 1:
        return SFTExample(prompt="", completion=values[0])
    return SFTExample(prompt=values[0], completion=values[1])


def read_jsonl(path: str, *, skip_errors: bool = False) -> tuple[list[SFTExample],
                                                                   list[BadData]]:
    """Read the examples of a JSONL file; returns ``(examples, skipped line errors)``.

    Raises :class:`BadData` for a missing or unreadable file and, unless
    ``skip_errors``, for the first bad line. An empty result is not an error here.
    """
    try:
        data = Path(path).expanduser().read_bytes()
    except FileNotFoundError:
        raise BadData("file not found", path=path) from None
    except OSError as exc:
        raise BadData(f"cannot read the file: {exc.strerror or exc}", path=path) from None
    examples: list[SFTExample] = []
    errors: list[BadData] = []
    for number, raw in enumerate(data.split(b"\n"), start=1):
        try:
            try:
                text = raw.decode("utf-8-sig" if number == 1 else "utf-8")
            except UnicodeDecodeError as exc:
                raise BadData(f"not valid UTF-8 (byte {exc.start + 1})", path=path,
                              line=number) from None
            if not text.strip():
                continue
            try:
                obj = json.loads(text)
            except json.JSONDecodeError as exc:
                raise BadData(f"invalid JSON: {exc.msg} (column {exc.colno})", path=path,
                              line=number) from None
            except RecursionError:
                raise BadData("invalid JSON: nested too deeply", path=path,
                              line=number) from None
            examples.append(_record(obj, path, number))
        except BadData as exc:
            if not skip_errors:
                raise
            errors.append(exc)
    return examples, errors


class JsonlTask:
    """Supervised examples from a JSONL file (see the module docstring)."""

    Config = JsonlConfig

    def __init__(self, config: JsonlConfig | None = None):
        cfg = config if config is not None else JsonlConfig()
        if cfg.on_error not in _ON_ERROR:
            raise BadConfig("task jsonl: on_error must be 'raise' or 'skip', "
                            f"got {cfg.on_error!r}")
        if not 0.0 < cfg.eval_fraction < 1.0:
            raise BadConfig("task jsonl: eval_fraction must be in (0, 1), "
                            f"got {cfg.eval_fraction}")
        self.config = cfg
        self._splits: dict[str, list[SFTExample]] | None = None
        self._skipped = 0

    # ------------------------------------------------------------------ Task API

    def sft_examples(self, split: str) -> list[SFTExample]:
        """The examples of ``split`` ("train" or "eval"), in file order."""
        return list(self._split(split))

    def prompts(self, split: str) -> list[str]:
        """The distinct prompts of ``split``, in order of first appearance."""
        return list(dict.fromkeys(e.prompt for e in self._split(split)))

    def reward(self) -> None:
        """A JSONL file has no ground-truth reward."""
        return None

    @property
    def skipped(self) -> int:
        """How many bad lines were skipped (``on_error = "skip"``; reads the file)."""
        self._load()
        return self._skipped

    # ------------------------------------------------------------------ internals

    def _split(self, split: str) -> list[SFTExample]:
        if split not in _SPLITS:
            raise BadConfig(f"task jsonl: unknown split {split!r}; "
                            f"valid splits: {', '.join(_SPLITS)}")
        return self._load()[split]

    def _load(self) -> dict[str, list[SFTExample]]:
        if self._splits is not None:
            return self._splits
        cfg = self.config
        if not cfg.path:
            raise BadConfig("task jsonl: the option 'path' is required "
                            "(the JSONL file to read)")
        examples, errors = read_jsonl(cfg.path, skip_errors=cfg.on_error == "skip")
        if errors:
            warnings.warn(f"{cfg.path}: skipped {len(errors)} bad line(s); "
                          f"the first: {errors[0]}", stacklevel=3)
        if not examples:
            extra = f" ({len(errors)} bad line(s) skipped)" if errors else ""
            raise BadData(f"no examples{extra}", path=cfg.path)
        held = set(_held_out(examples, cfg.eval_fraction, random.Random(cfg.seed)))
        self._splits = {
            "train": [e for i, e in enumerate(examples) if i not in held],
            "eval": [e for i, e in enumerate(examples) if i in held],
        }
        self._skipped = len(errors)
        return self._splits


def _held_out(examples: list[SFTExample], fraction: float, rng: random.Random) -> list[int]:
    """Indices of the eval examples (see the module docstring)."""
    n = len(examples)
    if n < 2:
        return []
    target = min(n - 1, max(1, round(n * fraction)))
    groups: dict[str, list[int]] = {}
    for i, e in enumerate(examples):
        groups.setdefault(e.prompt, []).append(i)
    if len(groups) < 2:
        order = list(range(n))
        rng.shuffle(order)
        return order[:target]
    keys = list(groups)
    rng.shuffle(keys)
    held: list[str] = []
    count = 0
    for key in keys:
        if len(held) < len(keys) - 1 and count + len(groups[key]) <= target:
            held.append(key)
            count += len(groups[key])
    if not held:
        held.append(min(keys, key=lambda k: len(groups[k])))
    return [i for key in held for i in groups[key]]
