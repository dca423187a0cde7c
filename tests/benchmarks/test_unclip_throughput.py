"""benchmarks/unclip_throughput.py: its cost lines, one per stage, and what their units
leave out of a stage's FLOPs: exactly its one ``cache_context`` call (no timing is
asserted)."""

from __future__ import annotations

import math

import pytest
from torch.utils.flop_counter import FlopCounterMode

from cost_pass import checked_cost_line  # tests/ is on sys.path (conftest)
from script_module import load_script

unclip = load_script("benchmarks/unclip_throughput.py")
PARTS = ("prior_context", "prior_step", "decoder_context", "decoder_step")


@pytest.mark.benchmark  # the full-size prior and UNet, counted and profiled: a long
# check of the script's cost lines (pytest -m benchmark)
def test_the_cost_lines_and_what_their_units_leave_out(monkeypatch, capsys):
    flops = dict.fromkeys(PARTS, 0)
    seen: list[dict] = []

    def counted(name, fn):
        def wrapper(*args, **kwargs):
            if seen:  # the cost pass: counted by its own measure
                return fn(*args, **kwargs)
            args[0].requires_grad_(False)  # the model (FlopCounterMode's module hooks)
            with FlopCounterMode(display=False) as counter:
                out = fn(*args, **kwargs)
            flops[name] += counter.get_total_flops()
            return out
        return wrapper

    def recording(unit, **kwargs):
        seen.append(kwargs)
        kwargs["cost"] = measure(unit, **kwargs)
        return kwargs["cost"]

    measure = unclip.step_cost.measure
    for name in PARTS:
        monkeypatch.setattr(unclip, name, counted(name, getattr(unclip, name)))
    monkeypatch.setattr(unclip.step_cost, "measure", recording)
    unclip.main(["2"])
    lines = capsys.readouterr().out.strip().splitlines()
    assert [line.split()[0] for line in lines] == [
        "gaf_unclip", "gaf_unclip_prior_cost", "gaf_unclip_decoder_cost"]
    for line, row, stage in zip(lines[1:], seen, ("prior", "decoder")):
        checked_cost_line(line, f"gaf_unclip_{stage}_cost", "step", unclip.step_cost.CATEGORIES)
        assert row["units"] == 2 and row["inference"]
        assert math.isclose(row["cost"]["gflop_per_unit"] * 1e9 * row["units"],
                            flops[f"{stage}_step"], rel_tol=1e-9)
        assert flops[f"{stage}_context"] > 0  # what the identity leaves out


def test_no_cost_prints_the_result_line_only(capsys):
    unclip.main(["1", "--no-cost"])
    line = capsys.readouterr().out.strip()
    assert line.startswith("gaf_unclip prior_samples_per_s=") and "\n" not in line
