"""``jsonl``: supervised examples or preference data from a JSONL file.

Each non-blank line is one JSON object. Other keys than the ones named here are
ignored. A file holds one of two families of records.

SFT records:

* ``{"prompt": "...", "completion": "..."}`` → ``SFTExample(prompt, completion)``;
* ``{"text": "..."}`` → ``SFTExample(prompt="", completion=text)``.

Preference records (the three forms may be mixed in one file):

* ``{"prompt", "chosen", "rejected"}`` (a TRL pair) →
  ``PreferenceGroup(prompt, (chosen, rejected), ((0, 1),), ranked=True)``;
* ``{"prompt", "responses": [...], "ranking": [...]}`` (a ranked list): ``ranking``
  lists indices into ``responses`` from best to worst, a permutation of
  ``0 .. n-1``, ``n >= 2``; the group holds the responses reordered best first,
  ``ranked=True`` and every pair ``(i, j)`` with ``i < j``;
* ``{"prompt", "completion", "label": bool}`` (TRL unpaired, for KTO) →
  ``PreferenceGroup(prompt, (completion,), (), ranked=False, labels=(label,))``.
  The ``"label"`` key is what makes such a record preference data rather than the
  SFT form ``{"prompt", "completion"}``.

Every group's ``source`` is ``"path:line"``. Values must be strings (``label`` a
boolean, ``responses`` an array of strings, ``ranking`` an array of integers); only
the prompt may be empty. A bad line raises :class:`~gaf.errors.BadData` naming the
file, the 1-based line number and, where one is at fault, the field: invalid JSON or
UTF-8, a line that is not an object, a record with no form or with two, a missing
field, a value of the wrong type, an empty completion or response, ``chosen`` equal
to ``rejected``, duplicate ``responses`` or fewer than two, a ``ranking`` that is
not a permutation of the response indices, and a record of the other family than the
file's (the family of its first good record). With ``on_error = "skip"`` such lines
are dropped instead: :attr:`JsonlTask.skipped` counts them and a warning names the
count and the first problem. A missing or unreadable file and a file without any
good record are errors in both modes.

Splits: ``eval_fraction`` of the records (at least one when there are two or more
and the fraction is not 0) are held out as the ``eval`` split (headline figures),
chosen with ``seed``; then ``validation_fraction`` of the records, from the rest and
the same way, as the ``validation`` split (tuning). Records sharing a prompt stay
together so that held-out prompts are not train prompts; whole prompt groups are held
out, up to the target count (at least the smallest group). When every record has the
same prompt (e.g. a file of ``{"text"}`` records), single records are held out
instead. The eval records do not depend on ``validation_fraction``; a fraction of 0
leaves its split empty (``--data`` then trains on every record, as a TRL user
expects). Every split keeps file order.

Methods, per split (``"train"``, ``"validation"`` or ``"eval"``):

* ``sft_examples(split)`` — an SFT file's examples; for a preference file the best
  response of each group (the chosen or first-ranked one) and the completions of
  unpaired records labelled True (with no SFT model at hand, fine-tune on the
  preferred completions, as in the DPO paper);
* ``preference_groups(split)`` — a preference file's groups in file order (unpaired
  records are not merged: one group per line); ``[]`` for an SFT file;
* ``prompts(split)`` — the split's distinct prompts in order of first appearance.

The task has no reward (``reward()`` is ``None``). The file is read on first use,
not when the task or its config is built, and cached.
"""

from __future__ import annotations

import itertools
import json
import random
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal, Protocol

import attrs

from gaf.config import option
from gaf.errors import BadConfig, BadData
from gaf.interfaces import PreferenceGroup, SFTExample

__all__ = ["JsonlConfig", "JsonlTask", "read_jsonl"]

_SPLITS = ("train", "validation", "eval")
_ON_ERROR = ("raise", "skip")

Record = SFTExample | PreferenceGroup

_SFT, _PREF = "SFT", "preference"
# form name -> (family, the keys that mark it)
_FORMS: dict[str, tuple[str, tuple[str, ...]]] = {
    "text": (_SFT, ("text",)),
    "completion": (_SFT, ()),  # "prompt"/"completion" with none of the marker keys
    "paired": (_PREF, ("chosen", "rejected")),
    "ranked": (_PREF, ("responses", "ranking")),
    "unpaired": (_PREF, ("label",)),
}
_EXPECTED = {
    _SFT: '"prompt"/"completion" or "text"',
    _PREF: '"chosen"/"rejected", "responses"/"ranking" or "completion"/"label"',
}
_NEEDS = {
    "completion": 'a record with "prompt" and "completion" needs both',
    "paired": 'a "chosen"/"rejected" record needs "prompt", "chosen" and "rejected"',
    "ranked": 'a "responses"/"ranking" record needs "prompt", "responses" and "ranking"',
    "unpaired": 'a "completion"/"label" record needs "prompt", "completion" and "label"',
}


@attrs.define
class JsonlConfig:
    """Options of the ``jsonl`` task (the ``[task]`` section)."""

    path: str = option("", "JSONL file of SFT records ({prompt, completion} or {text}) or "
                           "preference records ({prompt, chosen, rejected}, "
                           "{prompt, responses, ranking} or {prompt, completion, label}) "
                           "(required)")
    eval_fraction: float = option(0.05, "fraction of the records held out as the eval split "
                                        "(0 = none)")
    validation_fraction: float = option(0.05, "fraction of the records held out as the "
                                              "validation split, disjoint from eval (0 = none)")
    seed: int = option(0, "seed of the train/validation/eval split")
    on_error: Literal["raise", "skip"] = option(
        "raise", "a bad line: 'raise' stops with its file and line, 'skip' drops it and warns")


# ------------------------------------------------------------------ reading records


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


class _Where:
    """A line of a file: raises :class:`BadData` there."""

    def __init__(self, path: str, line: int):
        self.path, self.line = path, line

    def error(self, message: str, field: str | None = None) -> BadData:
        return BadData(message, path=self.path, line=self.line, field=field)

    @property
    def source(self) -> str:
        return f"{self.path}:{self.line}"


def _form(obj: Any, family: tuple[str, int] | None, at: _Where) -> str:
    """The form of a parsed line (a key of ``_FORMS``); checks that it fits the file."""
    if not isinstance(obj, dict):
        raise at.error(f"expected a JSON object, got {_json_type(obj)}")
    # form -> its first marker key in obj, forms in _FORMS order
    found: dict[str, str] = {}
    for form, (_, keys) in _FORMS.items():
        present = [key for key in keys if key in obj]
        if present:
            found[form] = present[0]
    if "text" in found and ("prompt" in obj or "completion" in obj):
        raise at.error('a record has either "text" or "prompt" and "completion", not both',
                       field="text")
    if len(found) > 1:
        (first, _), (second, key) = list(found.items())[:2]
        raise at.error(f"a record has one form; this one mixes {_describe(first)} "
                       f"with {_describe(second)}", field=key)
    if found:
        form = next(iter(found))
    elif "prompt" in obj or "completion" in obj:
        form = "completion"
    else:
        expected = (_EXPECTED[family[0]] if family else
                    f"{_EXPECTED[_SFT]} (SFT), or {_EXPECTED[_PREF]} (preferences)")
        raise at.error(f"missing: a record needs {expected}",
                       field="chosen" if family and family[0] == _PREF else "text")
    if family is not None and _FORMS[form][0] != family[0]:
        name, line = family
        key = found.get(form, "label")  # an SFT "prompt"/"completion" record lacks "label"
        raise at.error(f"this file holds {name} records (from line {line}); "
                       f"expected {_EXPECTED[name]}", field=key)
    return form


def _describe(form: str) -> str:
    return "/".join(f'"{key}"' for key in _FORMS[form][1])


def _value(obj: dict, name: str, form: str, at: _Where) -> Any:
    if name not in obj:
        raise at.error(f"missing: {_NEEDS[form]}", field=name)
    return obj[name]


def _string(obj: dict, name: str, form: str, at: _Where, *, empty_ok: bool = False) -> str:
    value = _value(obj, name, form, at)
    if not isinstance(value, str):
        raise at.error(f"expected a string, got {_json_type(value)}", field=name)
    if not value and not empty_ok:
        raise at.error("empty string", field=name)
    return value


def _text(obj: dict, at: _Where) -> SFTExample:
    return SFTExample(prompt="", completion=_string(obj, "text", "text", at))


def _completion(obj: dict, at: _Where) -> SFTExample:
    prompt = _string(obj, "prompt", "completion", at, empty_ok=True)
    return SFTExample(prompt=prompt, completion=_string(obj, "completion", "completion", at))


def _paired(obj: dict, at: _Where) -> PreferenceGroup:
    prompt = _string(obj, "prompt", "paired", at, empty_ok=True)
    chosen = _string(obj, "chosen", "paired", at)
    rejected = _string(obj, "rejected", "paired", at)
    if chosen == rejected:
        raise at.error("chosen and rejected are identical", field="rejected")
    return PreferenceGroup(prompt, (chosen, rejected), ((0, 1),), ranked=True,
                           source=at.source)


def _responses(obj: dict, at: _Where) -> list[str]:
    value = _value(obj, "responses", "ranked", at)
    if not isinstance(value, list):
        raise at.error(f"expected an array of strings, got {_json_type(value)}",
                       field="responses")
    if len(value) < 2:
        raise at.error(f"a ranked list needs at least 2 responses, got {len(value)}",
                       field="responses")
    first: dict[str, int] = {}
    for i, item in enumerate(value):
        if not isinstance(item, str):
            raise at.error(f"responses[{i}]: expected a string, got {_json_type(item)}",
                           field="responses")
        if not item:
            raise at.error(f"responses[{i}]: empty string", field="responses")
        if item in first:
            raise at.error(f"responses[{first[item]}] and responses[{i}] are identical",
                           field="responses")
        first[item] = i
    return value


def _ranking(obj: dict, n: int, at: _Where) -> list[int]:
    value = _value(obj, "ranking", "ranked", at)
    if not isinstance(value, list):
        raise at.error(f"expected an array of integers, got {_json_type(value)}",
                       field="ranking")
    for i, item in enumerate(value):
        if isinstance(item, bool) or not isinstance(item, int):
            got = repr(item) if isinstance(item, float) else _json_type(item)
            raise at.error(f"ranking[{i}]: expected an integer, got {got}", field="ranking")
    if len(value) != n:
        raise at.error(f"expected {n} indices (one per response), got {len(value)}",
                       field="ranking")
    seen: set[int] = set()
    for i, index in enumerate(value):
        if not 0 <= index < n:
            raise at.error(f"ranking[{i}]: {index} is not an index of responses "
                           f"(0 to {n - 1})", field="ranking")
        if index in seen:
            raise at.error(f"ranking[{i}]: {index} is listed twice; the ranking must "
                           f"list each of 0 to {n - 1} once", field="ranking")
        seen.add(index)
    return value


def _ranked(obj: dict, at: _Where) -> PreferenceGroup:
    prompt = _string(obj, "prompt", "ranked", at, empty_ok=True)
    responses = _responses(obj, at)
    ranking = _ranking(obj, len(responses), at)
    return PreferenceGroup(prompt, tuple(responses[k] for k in ranking),
                           tuple(itertools.combinations(range(len(responses)), 2)),
                           ranked=True, source=at.source)


def _unpaired(obj: dict, at: _Where) -> PreferenceGroup:
    prompt = _string(obj, "prompt", "unpaired", at, empty_ok=True)
    completion = _string(obj, "completion", "unpaired", at)
    label = _value(obj, "label", "unpaired", at)
    if not isinstance(label, bool):
        raise at.error(f"expected a boolean (true or false), got {_json_type(label)}",
                       field="label")
    return PreferenceGroup(prompt, (completion,), (), ranked=False, labels=(label,),
                           source=at.source)


_READERS: dict[str, Callable[[dict, _Where], Record]] = {
    "text": _text, "completion": _completion,
    "paired": _paired, "ranked": _ranked, "unpaired": _unpaired,
}

_BLANK = object()


def _parse(raw: bytes, at: _Where) -> Any:
    """The JSON value of one line, or ``_BLANK`` for a blank line."""
    try:
        text = raw.decode("utf-8-sig" if at.line == 1 else "utf-8")
    except UnicodeDecodeError as exc:
        raise at.error(f"not valid UTF-8 (byte {exc.start + 1})") from None
    if not text.strip():
        return _BLANK
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise at.error(f"invalid JSON: {exc.msg} (column {exc.colno})") from None
    except RecursionError:
        raise at.error("invalid JSON: nested too deeply") from None


def read_jsonl(path: str, *, skip_errors: bool = False) -> tuple[list[Record], list[BadData]]:
    """Read the records of a JSONL file; returns ``(records, skipped line errors)``.

    The records are all :class:`SFTExample` (an SFT file) or all
    :class:`PreferenceGroup` (a preference file), in file order; the family is that
    of the first good record. Raises :class:`BadData` for a missing or unreadable file
    and, unless ``skip_errors``, for the first bad line. An empty result is not an
    error here.
    """
    try:
        data = Path(path).expanduser().read_bytes()
    except FileNotFoundError:
        raise BadData("file not found", path=path) from None
    except OSError as exc:
        raise BadData(f"cannot read the file: {exc.strerror or exc}", path=path) from None
    records: list[Record] = []
    errors: list[BadData] = []
    family: tuple[str, int] | None = None  # (family, line of the first good record)
    for number, raw in enumerate(data.split(b"\n"), start=1):
        at = _Where(path, number)
        try:
            obj = _parse(raw, at)
            if obj is _BLANK:
                continue
            form = _form(obj, family, at)
            record = _READERS[form](obj, at)
        except BadData as exc:
            if not skip_errors:
                raise
            errors.append(exc)
            continue
        if family is None:
            family = (_FORMS[form][0], number)
        records.append(record)
    return records, errors


def _preferred(group: PreferenceGroup) -> list[SFTExample]:
    """The SFT examples of a group: its best response, or its desirable ones."""
    if group.labels is not None:
        return [SFTExample(group.prompt, response)
                for response, good in zip(group.responses, group.labels) if good]
    return [SFTExample(group.prompt, group.responses[0])]


# ------------------------------------------------------------------------- the task


class JsonlTask:
    """Supervised examples or preference data from a JSONL file (see the module docstring)."""

    Config = JsonlConfig

    def __init__(self, config: JsonlConfig | None = None):
        cfg = config if config is not None else JsonlConfig()
        if cfg.on_error not in _ON_ERROR:
            raise BadConfig("task jsonl: on_error must be 'raise' or 'skip', "
                            f"got {cfg.on_error!r}")
        for name in ("eval_fraction", "validation_fraction"):
            if not 0.0 <= getattr(cfg, name) < 1.0:
                raise BadConfig(f"task jsonl: {name} must be in [0, 1), "
                                f"got {getattr(cfg, name)}")
        if cfg.eval_fraction + cfg.validation_fraction >= 1.0:
            raise BadConfig("task jsonl: eval_fraction + validation_fraction must be < 1, got "
                            f"{cfg.eval_fraction} + {cfg.validation_fraction}")
        self.config = cfg
        self._splits: dict[str, list[Record]] | None = None
        self._examples: dict[str, list[SFTExample]] = {}
        self._preference = False
        self._skipped = 0

    # ------------------------------------------------------------------ Task API

    def sft_examples(self, split: str) -> list[SFTExample]:
        """The SFT examples of ``split`` ("train", "validation" or "eval"), in file order.

        For a preference file: the best response of each group, and the completions
        of unpaired records labelled True.
        """
        self._split(split)
        return list(self._examples[split])

    def preference_groups(self, split: str) -> list[PreferenceGroup]:
        """The preference groups of ``split``, in file order (``[]`` for an SFT file)."""
        records = self._split(split)
        return list(records) if self._preference else []  # type: ignore[arg-type]

    def prompts(self, split: str) -> list[str]:
        """The distinct prompts of ``split``, in order of first appearance."""
        return list(dict.fromkeys(r.prompt for r in self._split(split)))

    def reward(self) -> None:
        """A JSONL file has no ground-truth reward."""
        return None

    @property
    def skipped(self) -> int:
        """How many bad lines were skipped (``on_error = "skip"``; reads the file)."""
        self._load()
        return self._skipped

    # ------------------------------------------------------------------ internals

    def _split(self, split: str) -> list[Record]:
        if split not in _SPLITS:
            raise BadConfig(f"task jsonl: unknown split {split!r}; "
                            f"valid splits: {', '.join(_SPLITS)}")
        return self._load()[split]

    def _load(self) -> dict[str, list[Record]]:
        if self._splits is not None:
            return self._splits
        cfg = self.config
        if not cfg.path:
            raise BadConfig("task jsonl: the option 'path' is required "
                            "(the JSONL file to read)")
        records, errors = read_jsonl(cfg.path, skip_errors=cfg.on_error == "skip")
        if errors:
            warnings.warn(f"{cfg.path}: skipped {len(errors)} bad line(s); "
                          f"the first: {errors[0]}", stacklevel=3)
        if not records:
            extra = f" ({len(errors)} bad line(s) skipped)" if errors else ""
            raise BadData(f"no examples{extra}", path=cfg.path)
        held = set(_held_out(records, cfg.eval_fraction, random.Random(cfg.seed)))
        rest = [i for i in range(len(records)) if i not in held]
        target = round(len(records) * cfg.validation_fraction)
        # single records of one prompt are held out only when the whole file has one
        # prompt: otherwise validation prompts must not be train prompts
        one_prompt = len({r.prompt for r in records}) < 2
        picked = _held_out([records[i] for i in rest], target / max(len(rest), 1),
                           random.Random(f"{cfg.seed}/validation"), split_prompts=one_prompt)
        validation = {rest[k] for k in picked} if target else set()
        splits = {
            "train": [r for i, r in enumerate(records) if i not in held and i not in validation],
            "validation": [r for i, r in enumerate(records) if i in validation],
            "eval": [r for i, r in enumerate(records) if i in held],
        }
        self._preference = isinstance(records[0], PreferenceGroup)
        self._examples = {
            name: ([e for g in split for e in _preferred(g)]  # type: ignore[arg-type]
                   if self._preference else list(split))  # type: ignore[arg-type]
            for name, split in splits.items()}
        self._skipped = len(errors)
        self._splits = splits
        return splits


class _HasPrompt(Protocol):
    @property
    def prompt(self) -> str: ...


def _held_out(items: Sequence[_HasPrompt], fraction: float, rng: random.Random, *,
              split_prompts: bool = True) -> list[int]:
    """Indices of the held-out items (see the module docstring); items sharing a prompt
    stay together. When all items share one prompt, single items are held out if
    ``split_prompts``, else none."""
    n = len(items)
    if n < 2 or fraction <= 0:
        return []
    target = min(n - 1, max(1, round(n * fraction)))
    groups: dict[str, list[int]] = {}
    for i, item in enumerate(items):
        groups.setdefault(item.prompt, []).append(i)
    if len(groups) < 2:
        if not split_prompts:
            return []
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
