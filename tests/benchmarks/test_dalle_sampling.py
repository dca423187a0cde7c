"""benchmarks/dalle_sampling.py: its result line, and its cost line counts a timed call's
FLOPs, at 2 captions (no timing is asserted)."""

from __future__ import annotations

import math

import pytest

from cost_pass import CostPass, checked_cost_line, count_each_call  # tests/ on sys.path
from script_module import load_script

dalle = load_script("benchmarks/dalle_sampling.py")


@pytest.mark.benchmark  # a long check of the script's cost line: pytest -m benchmark
def test_the_cost_line_counts_a_timed_call(monkeypatch, capsys):
    cost = CostPass(monkeypatch, dalle)  # records the cost pass (counts nothing itself)
    flops = count_each_call(monkeypatch, dalle, "sample_codes", cost)
    monkeypatch.setattr(dalle, "BATCH", 2)
    dalle.main(["1"])
    result, cost_line = capsys.readouterr().out.strip().splitlines()
    assert result.startswith("gaf_dalle image_tokens_per_s=")
    checked_cost_line(cost_line, "gaf_dalle_cost", "call", dalle.step_cost.CATEGORIES)
    (seen,) = cost.calls
    assert len(flops) == 2 and seen["units"] == 1 and seen["inference"]  # warm-up, timed
    assert math.isclose(cost.counted_flops(), flops[1], rel_tol=1e-9)


def test_no_cost_prints_the_result_line_only(monkeypatch, capsys):
    monkeypatch.setattr(dalle, "BATCH", 1)
    dalle.main(["1", "--no-cost"])
    line = capsys.readouterr().out.strip()
    assert line.startswith("gaf_dalle image_tokens_per_s=") and "\n" not in line
