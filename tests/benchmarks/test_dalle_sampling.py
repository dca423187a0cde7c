"""benchmarks/dalle_sampling.py: its result line, and its cost line counts a timed call's
FLOPs, at 2 captions (no timing is asserted)."""

from __future__ import annotations

import math

import pytest
from torch.utils.flop_counter import FlopCounterMode

from cost_pass import CostPass, cost_fields  # tests/ is on sys.path (conftest)
from script_module import load_script

dalle = load_script("benchmarks/dalle_sampling.py")


@pytest.mark.benchmark  # a long check of the script's cost line: pytest -m benchmark
def test_the_cost_line_counts_a_timed_call(monkeypatch, capsys):
    flops: list[int] = []
    cost = CostPass(monkeypatch, dalle)  # records the cost pass (counts nothing itself)
    sample_codes = dalle.sample_codes

    def counted(*args, **kwargs):
        if cost.calls:  # the cost pass: counted by its own measure
            return sample_codes(*args, **kwargs)
        with FlopCounterMode(display=False) as counter:
            out = sample_codes(*args, **kwargs)
        flops.append(counter.get_total_flops())
        return out

    monkeypatch.setattr(dalle, "BATCH", 2)
    monkeypatch.setattr(dalle, "sample_codes", counted)
    dalle.main(["1"])
    result, cost_line = capsys.readouterr().out.strip().splitlines()
    assert result.startswith("gaf_dalle image_tokens_per_s=")
    name, fields = cost_fields(cost_line)
    assert name == "gaf_dalle_cost" and fields["unit"] == "call"
    assert float(fields["gflop_per_unit"]) > 0
    assert set(dalle.step_cost.CATEGORIES) <= fields.keys()
    (seen,) = cost.calls
    assert len(flops) == 2 and seen["units"] == 1 and seen["inference"]  # warm-up, timed
    assert math.isclose(cost.counted_flops(), flops[1], rel_tol=1e-9)


def test_no_cost_prints_the_result_line_only(monkeypatch, capsys):
    monkeypatch.setattr(dalle, "BATCH", 1)
    dalle.main(["1", "--no-cost"])
    line = capsys.readouterr().out.strip()
    assert line.startswith("gaf_dalle image_tokens_per_s=") and "\n" not in line
