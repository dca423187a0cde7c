"""Test-wide setup: a user's installed gaf plugins must not leak into the suite; each
pytest-xdist worker runs torch on one thread; every test and fixture starts from global
random states seeded by its own name, whatever ran before it on its worker."""

import os

os.environ["GAF_DISABLE_PLUGIN_AUTOLOAD"] = "1"
if os.environ.get("PYTEST_XDIST_WORKER"):
    # pyproject's addopts run two workers, which fill two cores; two torch threads in
    # each leave OpenMP's threads spinning against each other's. Before torch's import,
    # so the subprocesses a test starts inherit it too.
    os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from hypothesis import settings  # noqa: E402

settings.register_profile("gaf", deadline=None, max_examples=50)
settings.load_profile("gaf")

import sys  # noqa: E402
from pathlib import Path  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent / "core"))  # toy_objective for the loop tests
sys.path.insert(0, str(Path(__file__).parent))  # example_install for the plugin tests

import random  # noqa: E402
import zlib  # noqa: E402

import pytest  # noqa: E402

if os.environ.get("PYTEST_XDIST_WORKER") and "torch" in sys.modules:  # imported by a plugin
    sys.modules["torch"].set_num_threads(int(os.environ["OMP_NUM_THREADS"]))


def seed_global_rngs(key: str) -> int:
    """Seed Python's, numpy's (if imported) and torch's (if imported) global generators
    with the CRC-32 of ``key``; returns the seed. Which tests share a worker, and in
    what order, varies from run to run under pytest-xdist: without this a test drawing
    from a global generator would see whatever its predecessors left."""
    seed = zlib.crc32(key.encode())
    random.seed(seed)
    if (np := sys.modules.get("numpy")) is not None:
        np.random.seed(seed)
    if (torch := sys.modules.get("torch")) is not None:
        torch.manual_seed(seed)
    return seed


@pytest.hookimpl(hookwrapper=True)
def pytest_fixture_setup(fixturedef, request):
    """Every fixture builds from its own seed: a session or module fixture is the same
    whichever test happens to build it first."""
    seed_global_rngs(f"fixture {fixturedef.argname}")
    yield


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item):
    """Every test body starts from the seed of its node id, not its fixtures' seeds."""
    seed_global_rngs(item.nodeid)
    yield


@pytest.fixture(autouse=True)
def _grad_mode_is_left_as_found():
    """A test (or a script's ``main`` it calls) that switches torch's grad mode off globally
    breaks every later training test far from the cause; fail the culprit instead."""
    yield
    torch = sys.modules.get("torch")
    if torch is not None and not torch.is_grad_enabled():
        torch.set_grad_enabled(True)
        pytest.fail("this test left torch's grad mode off (use a scoped torch.no_grad())")


@pytest.fixture(autouse=True)
def _torch_threads_are_restored():
    """A benchmark script's ``main`` sets torch's thread count for its own run; the next
    test on the worker gets the count back (one thread per xdist worker, see above)."""
    torch = sys.modules.get("torch")
    before = torch.get_num_threads() if torch is not None else None
    yield
    if before is not None and torch.get_num_threads() != before:
        torch.set_num_threads(before)
