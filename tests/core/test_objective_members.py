"""An Objective's optional members: declared on ObjectiveBase, read through objective_member.

An objective that declares none of them (and does not derive from ObjectiveBase) trains
with the defaults; one that derives from it overrides what it declares, and its hooks
are called.
"""

from __future__ import annotations

import json

import pytest

from gaf import checkpoint
from gaf.interfaces import Objective, ObjectiveBase, objective_member
from gaf.interfaces.training import OBJECTIVE_DEFAULTS
from gaf.launch import execute
from gaf.registry import Registry
from gaf.spec import resolve

from toy_objective import Toy, ToyConfig  # noqa: E402  (tests/core is on sys.path)


class _Delegating:
    """The required members, each handed to a wrapped Toy (no optional member)."""

    def setup(self, ctx):
        self._toy.setup(ctx)

    def modules(self):
        return self._toy.modules()

    def train_batch(self, index):
        return self._toy.train_batch(index)

    def loss(self, batch):
        return self._toy.loss(batch)

    def evaluate(self, ctx):
        return self._toy.evaluate(ctx)


class Bare(_Delegating):
    """Only the required members and a Config: no uses, train_defaults, unit, plot_keys
    or hooks."""

    Config = ToyConfig

    def __init__(self, config=None):
        self._toy = Toy(config)


class Counting(Toy, ObjectiveBase):
    """Derives from ObjectiveBase and defines the three optional methods."""

    unit = "rows"

    def __init__(self, config=None):
        super().__init__(config)
        self.steps_seen: list[int] = []
        self.loaded: dict | None = None

    def training_state(self):
        return {"seen": len(self.steps_seen)}

    def load_training_state(self, state):
        self.loaded = state

    def after_step(self, step):
        self.steps_seen.append(step)


def test_the_defaults_are_what_objective_base_declares():
    declared = set(ObjectiveBase.__annotations__)
    assert set(OBJECTIVE_DEFAULTS) == declared
    assert {"Config", "uses", "component_defaults", "train_defaults", "unit", "plot_keys",
            "training_state",
            "load_training_state", "after_step", "param_groups"} == declared
    for name in declared - {"Config"}:
        assert objective_member(Bare, name) == OBJECTIVE_DEFAULTS[name]
        assert ObjectiveBase.__dict__[name] is OBJECTIVE_DEFAULTS[name]
    with pytest.raises(KeyError):
        objective_member(Bare, "not_a_member")


def test_the_optional_members_are_not_required_by_the_protocol():
    assert isinstance(Bare(), Objective)
    assert objective_member(Counting, "unit") == "rows"
    assert objective_member(Counting, "uses") == Toy.uses  # Toy's, before ObjectiveBase's


def _run(objective, tmp_path, resume=None, steps=4):
    registry = Registry(catalogue=None, autoload=False)
    registry.add("objective", "o", objective)
    spec = resolve(objective="o", registry=registry, sets=[
        f"out_dir={json.dumps(str(tmp_path))}", "progress=false", f"train.steps={steps}",
        "train.batch_size=4", "train.save_every=2"])
    return execute(spec, registry=registry, resume=resume)


def _saved_state(run_dir):
    return json.loads((checkpoint.latest_checkpoint(run_dir / "checkpoints")
                       / "state.json").read_text())


def test_an_objective_without_optional_members_trains(tmp_path):
    run_dir, summary = _run(Bare, tmp_path)
    assert summary["status"] == "completed" and summary["steps"] == 4
    assert "objective" not in _saved_state(run_dir)["extra"]  # no training_state: none saved


def test_the_hooks_of_a_subclass_are_called(tmp_path, monkeypatch):
    built: list[Counting] = []
    monkeypatch.setattr(Counting, "__init__", _recording(Counting.__init__, built))
    run_dir, _ = _run(Counting, tmp_path)
    assert built[-1].steps_seen == [1, 2, 3, 4]
    assert _saved_state(run_dir)["extra"]["objective"] == {"seen": 4}
    _run(Counting, tmp_path, resume=run_dir, steps=6)  # a finished run resumes to train longer
    assert built[-1].loaded == {"seen": 4}


def _recording(init, built):
    def wrapper(self, config=None):
        init(self, config)
        built.append(self)
    return wrapper


class NoOptions(_Delegating):
    """No Config at all: built as NoOptions() and trained on its fixed options."""

    def __init__(self):
        self._toy = Toy(ToyConfig())


def test_an_objective_without_config_trains(tmp_path):
    assert objective_member(NoOptions, "Config") is None and isinstance(NoOptions(), Objective)
    run_dir, summary = _run(NoOptions, tmp_path)
    assert summary["status"] == "completed"
    _run(NoOptions, tmp_path, resume=run_dir, steps=6)  # config.toml reads back: [objective] is a name
