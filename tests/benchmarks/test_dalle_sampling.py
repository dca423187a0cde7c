"""benchmarks/dalle_sampling.py: its result line, and its cost line counts a timed call's
FLOPs, at 2 captions (no timing is asserted)."""

from __future__ import annotations

import math

from torch.utils.flop_counter import FlopCounterMode

from script_module import load_script  # tests/ is on sys.path (conftest)

dalle = load_script("benchmarks/dalle_sampling.py")


def test_the_cost_line_counts_a_timed_call(monkeypatch, capsys):
    flops: list[int] = []
    seen: dict = {}

    def counted(*args, **kwargs):
        if seen:  # the cost pass: counted by its own measure
            return sample_codes(*args, **kwargs)
        with FlopCounterMode(display=False) as counter:
            out = sample_codes(*args, **kwargs)
        flops.append(counter.get_total_flops())
        return out

    def recording(unit, **kwargs):
        seen.update(kwargs)
        seen["cost"] = measure(unit, **kwargs)
        return seen["cost"]

    sample_codes, measure = dalle.sample_codes, dalle.step_cost.measure
    monkeypatch.setattr(dalle, "BATCH", 2)
    monkeypatch.setattr(dalle, "sample_codes", counted)
    monkeypatch.setattr(dalle.step_cost, "measure", recording)
    dalle.main(["1"])
    result, cost_line = capsys.readouterr().out.strip().splitlines()
    assert result.startswith("gaf_dalle image_tokens_per_s=")
    name, *fields = cost_line.split()
    fields = dict(f.split("=", 1) for f in fields)
    assert name == "gaf_dalle_cost" and fields["unit"] == "call"
    assert float(fields["gflop_per_unit"]) > 0
    assert set(dalle.step_cost.CATEGORIES) <= fields.keys()
    assert len(flops) == 2 and seen["units"] == 1 and seen["inference"]  # warm-up, timed
    assert math.isclose(seen["cost"]["gflop_per_unit"] * 1e9 * seen["units"], flops[1],
                        rel_tol=1e-9)


def test_no_cost_prints_the_result_line_only(monkeypatch, capsys):
    monkeypatch.setattr(dalle, "BATCH", 1)
    dalle.main(["1", "--no-cost"])
    line = capsys.readouterr().out.strip()
    assert line.startswith("gaf_dalle image_tokens_per_s=") and "\n" not in line
