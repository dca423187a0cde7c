"""Test-wide setup: a user's installed gaf plugins must not leak into the suite."""

import os

os.environ["GAF_DISABLE_PLUGIN_AUTOLOAD"] = "1"
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from hypothesis import settings  # noqa: E402

settings.register_profile("gaf", deadline=None, max_examples=50)
settings.load_profile("gaf")

import sys  # noqa: E402
from pathlib import Path  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent / "core"))  # toy_objective for the loop tests
sys.path.insert(0, str(Path(__file__).parent))  # example_install for the plugin tests

import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def _grad_mode_is_left_as_found():
    """A test (or a script's ``main`` it calls) that switches torch's grad mode off globally
    breaks every later training test far from the cause; fail the culprit instead."""
    yield
    torch = sys.modules.get("torch")
    if torch is not None and not torch.is_grad_enabled():
        torch.set_grad_enabled(True)
        pytest.fail("this test left torch's grad mode off (use a scoped torch.no_grad())")
