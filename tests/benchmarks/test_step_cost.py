"""benchmarks/step_cost.py: the FLOP count against closed forms, the achieved rate's
arithmetic, the shares' form and the cost line (no timing is asserted)."""

from __future__ import annotations

import math

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from script_module import load_script  # tests/ is on sys.path (conftest)

cost = load_script("benchmarks/step_cost.py")


def test_the_flops_of_a_matrix_product_and_a_convolution():
    a, b = torch.randn(6, 5), torch.randn(5, 7)
    assert cost.flop_count(lambda: a @ b, inference=True) == 2 * 6 * 5 * 7
    x, w = torch.randn(2, 3, 8, 8), torch.randn(4, 3, 3, 3)
    conv = 2 * 2 * 4 * 8 * 8 * 3 * 3 * 3   # batch, out channels, positions, taps
    assert cost.flop_count(lambda: torch.conv2d(x, w, padding=1), inference=True) == conv


def test_a_training_unit_counts_its_backward():
    w = torch.randn(5, 7, requires_grad=True)
    a = torch.randn(6, 5)

    def unit():
        (a @ w).sum().backward()

    # forward a·w, then the weight's gradient aᵀ·g (a needs none): twice the forward
    assert cost.flop_count(unit, inference=False) == 2 * (2 * 6 * 5 * 7)


@settings(max_examples=10, deadline=None)
@given(units=st.floats(1, 1e4), seconds=st.floats(1e-3, 1e3))
def test_the_achieved_rate_is_the_timed_runs(units, seconds):
    a, b = torch.randn(4, 3), torch.randn(3, 2)
    row = cost.measure(lambda: a @ b, units=units, seconds=seconds, inference=True, calls=1)
    flop = 2 * 4 * 3 * 2
    assert math.isclose(row["gflop_per_unit"], flop / 1e9)
    assert math.isclose(row["achieved_gflops"], flop * units / seconds / 1e9)
    assert set(row["shares"]) == set(cost.CATEGORIES)
    assert all(v >= 0 for v in row["shares"].values())
    assert sum(row["shares"].values()) <= 1.0 + 1e-9


def test_the_matmul_dominates_a_unit_that_is_one_big_product():
    a = torch.randn(256, 256)
    shares, wall = cost.op_shares(lambda: a @ a, calls=3, inference=True)
    assert wall > 0 and shares["matmul"] == max(shares.values())


def test_the_cost_line():
    row = {"gflop_per_unit": 1.23456, "achieved_gflops": 78.91,
           "shares": dict.fromkeys(cost.CATEGORIES, 0.125)}
    line = cost.line("gaf_x", row, "step")
    assert line.startswith("gaf_x_cost unit=step gflop_per_unit=1.2346 achieved_gflops=78.9 ")
    assert line.endswith(" ".join(f"{k}=0.125" for k in cost.CATEGORIES))
