"""benchmarks/op_floor.py: what it records of a step, the replay's arithmetic, and its
output at a tiny size (no timing is asserted). The diffusers side
(benchmarks/op_floor_diffusers_peer.py) needs the peer venv and is not run here."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.utils.flop_counter import FlopCounterMode

from script_module import load_script  # tests/ is on sys.path (conftest)

floor = load_script("benchmarks/op_floor.py")


def tiny_step():
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(3, 8, 3, padding=1)
    lin = torch.nn.Linear(8, 5)
    x = torch.randn(2, 3, 6, 6)

    def step():
        h = conv(x).mean((2, 3))
        out = lin(h) + lin(2 * h)     # the same product twice: one distinct call, count 2
        out.square().sum().backward()

    return step


def test_a_training_step_records_every_heavy_call_and_only_those():
    calls = floor.record(tiny_step(), inference=False)
    by_op = {}
    for c in calls:
        by_op[c.op] = by_op.get(c.op, 0) + c.count
    # forward: one convolution, two addmm; backward: one convolution_backward, and for
    # each linear call an input-gradient and a weight-gradient mm
    assert by_op == {"convolution": 1, "addmm": 2, "convolution_backward": 1, "mm": 4}
    addmm = [c for c in calls if c.op == "addmm"]
    assert len(addmm) == 1 and addmm[0].count == 2 and addmm[0].kind == "gemm"
    assert {c.kind for c in calls if c.op.startswith("conv")} == {"conv"}


def test_the_recorded_flops_are_the_steps_flops():
    """Every FLOP the counter sees in a step is in a recorded call (the replay counts
    them call by call)."""
    step = tiny_step()
    with FlopCounterMode(display=False) as counter:
        step()
    calls = floor.record(step, inference=False)
    floor.replay(calls, repeats=1)
    assert sum(c.count * c.flop for c in calls) == counter.get_total_flops() > 0


def test_inference_records_the_undecomposed_ops_and_attention():
    q = torch.randn(2, 4, 16, 8)
    w = torch.randn(8, 8)

    def step():
        a = F.scaled_dot_product_attention(q, q, q)
        b = torch.softmax(q @ q.transpose(-1, -2), -1)
        F.linear(a, w) + b.sum()

    calls = floor.record(step, inference=True)
    assert {(c.op, c.kind) for c in calls} == {
        ("scaled_dot_product_attention", "attention"), ("matmul", "gemm"),
        ("softmax", "attention"), ("linear", "gemm")}


def test_a_recorded_operand_keeps_its_values_and_strides():
    a = torch.randn(6, 4)
    b = torch.randn(6, 5)[:, 1:4]          # a strided view with a storage offset

    def step():
        torch.mm(a.t(), b)

    (call,) = floor.record(step, inference=True)
    x, y = call.args
    assert x.stride() == a.t().stride() and y.stride() == b.stride()
    assert torch.equal(x, a.t()) and torch.equal(y, b)
    assert x.data_ptr() != a.data_ptr()   # a copy: the step's tensors may change later


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(tuple(floor.KINDS)), st.integers(1, 50),
                          st.floats(0.001, 10.0), st.floats(1e3, 1e9)),
                min_size=1, max_size=8),
       st.floats(1.0, 1e4))
def test_the_floor_is_the_count_weighted_sum_of_the_replays(rows, step_ms):
    calls = [floor.Call(kind, "op", None, (), {}, count=n, ms=ms, flop=flop)
             for kind, n, ms, flop in rows]
    row = floor.summarise(calls, step_ms)
    total = math.fsum(n * ms for _, n, ms, _ in rows)
    assert math.isclose(row["floor_ms"], total, rel_tol=1e-9)
    assert math.isclose(math.fsum(row[f"{k}_ms"] for k in floor.KINDS), total, rel_tol=1e-9)
    for kind in floor.KINDS:
        assert math.isclose(row[f"{kind}_ms"],
                            math.fsum(n * ms for k, n, ms, _ in rows if k == kind),
                            rel_tol=1e-9, abs_tol=1e-12)
    flop = math.fsum(n * f for _, n, _, f in rows)
    assert math.isclose(row["gflop"], flop / 1e9, rel_tol=1e-9)
    assert math.isclose(row["floor_gflops"], flop / (total / 1e3) / 1e9, rel_tol=1e-9)
    assert math.isclose(row["floor_share"], total / step_ms, rel_tol=1e-9)
    assert row["calls"] == sum(n for _, n, _, _ in rows)
    assert row["distinct_calls"] == len(rows)


@pytest.mark.parametrize("case", ["ldm-sample", "ldm-train"])
def test_the_script_prints_one_json_line_per_case(case, capsys):
    threads = str(torch.get_num_threads())  # leave the suite's thread count as it is
    (row,) = floor.main([case, "--tiny", "--steps", "1", "--calls", "1", "--ops", "3",
                         "--threads", threads, "--json"])
    (line,) = capsys.readouterr().out.splitlines()
    printed = json.loads(line)
    assert printed["case"] == case and printed["floor_ms"] == row["floor_ms"]
    assert row["conv_ms"] > 0 and row["gemm_ms"] > 0 and row["gflop"] > 0
    assert row["step_ms"] > 0 and len(row["top"]) == 3
    assert row["calls"] >= row["distinct_calls"] > 3


def test_an_unknown_case_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exc:
        floor.main(["ldm-smaple"])
    assert exc.value.code == 2 and "unknown case 'ldm-smaple'" in capsys.readouterr().err
