"""What tests/conftest.py promises every test: global generators seeded by the test's
own node id (its fixtures by their names), whatever ran before on the worker, and one
torch thread per pytest-xdist worker."""

import os
import random
import zlib

import pytest
import torch


@pytest.fixture(scope="module")
def module_draws():
    return torch.rand(4), random.random()


def test_the_body_starts_from_the_seed_of_its_node_id(request):
    drawn, py = torch.rand(4), random.random()
    seed = zlib.crc32(request.node.nodeid.encode())
    torch.manual_seed(seed)
    random.seed(seed)
    assert torch.equal(drawn, torch.rand(4)) and py == random.random()


@pytest.mark.parametrize("first", [True, False])
def test_a_module_fixture_starts_from_the_seed_of_its_name(module_draws, first):
    torch.rand(100)  # whatever the test draws, the (shared) fixture's values stay
    torch.manual_seed(zlib.crc32(b"fixture module_draws"))
    random.seed(zlib.crc32(b"fixture module_draws"))
    assert torch.equal(module_draws[0], torch.rand(4)) and module_draws[1] == random.random()


def test_two_tests_draw_differently(request):
    torch.manual_seed(zlib.crc32(request.node.nodeid.encode()))
    mine = torch.rand(4)
    torch.manual_seed(zlib.crc32(b"tests/test_conftest.py::another"))
    assert not torch.equal(mine, torch.rand(4))


@pytest.mark.skipif(not os.environ.get("PYTEST_XDIST_WORKER"), reason="not an xdist worker")
def test_an_xdist_worker_runs_torch_on_its_thread_setting():
    assert torch.get_num_threads() == int(os.environ["OMP_NUM_THREADS"])


def test_a_thread_count_a_test_sets_is_undone_afterwards_part_1():
    test_a_thread_count_a_test_sets_is_undone_afterwards_part_1.before = torch.get_num_threads()
    torch.set_num_threads(3)


def test_a_thread_count_a_test_sets_is_undone_afterwards_part_2():
    before = getattr(test_a_thread_count_a_test_sets_is_undone_afterwards_part_1, "before", None)
    if before is None:
        pytest.skip("part 1 did not run first in this process")
    assert torch.get_num_threads() == before
