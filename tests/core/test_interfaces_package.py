"""gaf.interfaces is a package split by side, and re-exports every public name."""

from __future__ import annotations

import importlib
import inspect
import subprocess
import sys

import pytest

import gaf.interfaces as interfaces

SIDES = ("data", "lm", "images", "t2i", "loading", "training")
#: the names gaf.interfaces exported when it was one module: they must keep working
BEFORE_THE_SPLIT = {
    "Autoencoder", "CompletionLogProbs", "Conditioner", "Dataset", "Metric", "NoiseModel",
    "Objective", "Policy", "PreferenceGroup", "PreferenceObjective", "RewardFn", "Rollout",
    "RolloutPolicy", "SFTExample", "Sampler", "Scheduler", "SequenceLogProbs", "Task",
    "Tokenizer", "batched",
}


@pytest.mark.parametrize("side", SIDES)
def test_every_public_name_of_a_side_is_re_exported(side):
    module = importlib.import_module(f"gaf.interfaces.{side}")
    defined = {name for name, obj in vars(module).items()
               if not name.startswith("_") and getattr(obj, "__module__", module.__name__)
               == module.__name__ and (inspect.isclass(obj) or inspect.isfunction(obj))}
    assert defined <= set(module.__all__), defined - set(module.__all__)
    for name in module.__all__:
        assert name in interfaces.__all__ and getattr(interfaces, name) is getattr(module, name)


def test_the_package_exports_exactly_its_sides():
    sides = [n for side in SIDES for n in importlib.import_module(f"gaf.interfaces.{side}").__all__]
    assert sorted(sides) == sorted(interfaces.__all__) and len(set(sides)) == len(sides)
    assert BEFORE_THE_SPLIT <= set(interfaces.__all__)


def test_every_protocol_is_runtime_checkable():
    for name in interfaces.__all__:
        obj = getattr(interfaces, name)
        if getattr(obj, "_is_protocol", False):
            assert getattr(obj, "_is_runtime_protocol", False), name


def test_importing_the_interfaces_does_not_import_torch():
    code = ("import sys, gaf.interfaces, gaf.interfaces.images, gaf.interfaces.training; "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "False", out.stderr
