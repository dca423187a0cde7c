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
