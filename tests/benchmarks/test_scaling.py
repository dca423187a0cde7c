"""benchmarks/scaling.py at one tiny configuration of each kind: the form of its rows
and the memory bookkeeping (no timing is asserted)."""

from __future__ import annotations

import json

import pytest
import torch

from script_module import load_script  # tests/ is on sys.path (conftest)

scaling = load_script("benchmarks/scaling.py")


@pytest.mark.slow  # two fresh processes that import torch
def test_each_configuration_runs_in_its_own_process(capsys):
    rows = scaling.main(["--grid", "2,16", "--steps", "1", "--threads",
                         str(torch.get_num_threads()), "--json"])
    assert json.loads(capsys.readouterr().out) == {"rows": rows}
    assert [(r["kind"], r["batch"]) for r in rows] == [("lm", 2), ("unet", 2)]
    assert rows[0]["length"] == 16 and rows[1]["size"] == 16
    for r in rows:
        assert r["step_ms"] > 0 and r["per_item_ms"] == pytest.approx(r["step_ms"] / 2)
        assert r["peak_rss_mb"] >= r["base_rss_mb"] > 0
        assert r["step_mb"] == pytest.approx(r["peak_rss_mb"] - r["base_rss_mb"])


def test_the_grids_cover_three_sizes_of_each_axis():
    assert sorted({b for b, _ in scaling.LM_GRID}) == [4, 8, 16]
    assert sorted({t for _, t in scaling.LM_GRID}) == [64, 128, 256]
    assert sorted({b for b, _ in scaling.UNET_GRID}) == [16, 32, 64]
    assert sorted({s for _, s in scaling.UNET_GRID}) == [8, 16, 32]


def test_an_unknown_kind_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exc:
        scaling.main(["vae"])
    assert exc.value.code == 2 and "unknown kind 'vae'" in capsys.readouterr().err
