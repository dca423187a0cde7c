"""benchmarks/clip_throughput.py runs and prints its two one-line results, and their cost
lines count the timed steps' FLOPs; it draws the peer script's batch."""

from __future__ import annotations

import math
import re

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from cost_pass import checked_cost_line  # tests/ is on sys.path (conftest)
from script_module import load_script

bench = load_script("benchmarks/clip_throughput.py")


def test_the_benchmark_prints_both_figures(capsys):
    bench.main(["1", "--no-cost"])
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2
    assert re.match(r"gaf_clip train_img_per_s=[\d.]+ params=339969 ", lines[0])
    assert re.match(r"gaf_clip_cnn train_img_per_s=[\d.]+ params=\d+ ", lines[1])


@pytest.mark.benchmark  # two models' steps, counted and profiled: a long check of
# the script's cost lines (pytest -m benchmark)
def test_the_cost_lines_count_the_timed_steps(monkeypatch, capsys):
    """At batch 8, 2 timed steps: each cost line's unit has a timed step's FLOPs."""
    flops: list[list[int]] = []   # per model, per step
    seen: list[dict] = []

    def make_step(config):
        step, params = original(config)
        mine: list[int] = []
        flops.append(mine)

        def counted():
            if seen:  # the cost pass: counted by its own measure
                return step()
            with FlopCounterMode(display=False) as counter:
                step()
            mine.append(counter.get_total_flops())

        return counted, params

    def recording(unit, **kwargs):
        seen.append(kwargs)
        kwargs["cost"] = measure(unit, **kwargs)
        return kwargs["cost"]

    original, measure = bench.make_step, bench.step_cost.measure
    monkeypatch.setattr(bench, "BATCH", 8)
    monkeypatch.setattr(bench, "make_step", make_step)
    monkeypatch.setattr(bench.step_cost, "measure", recording)
    bench.main(["2"])
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == ["gaf_clip", "gaf_clip_cnn", "gaf_clip_cost",
                                                   "gaf_clip_cnn_cost"]
    for line, name, model, row in zip(lines[2:], ("gaf_clip_cost", "gaf_clip_cnn_cost"),
                                      flops, seen):
        checked_cost_line(line, name, "step", bench.step_cost.CATEGORIES)
        assert row["units"] == 2 and not row["inference"] and len(model) == bench.WARMUP + 2
        assert math.isclose(row["cost"]["gflop_per_unit"] * 1e9 * row["units"],
                            sum(model[bench.WARMUP:]), rel_tol=1e-9)


def test_the_batch_is_the_peer_scripts():
    images, ids, mask = bench.batch()
    peer = load_script("benchmarks/clip_transformers_peer.py").batch \
        if _has_transformers() else None
    assert images.shape == (128, 3, 32, 32) and float(images.abs().max()) <= 1
    lengths = mask.sum(dim=1)
    assert int(lengths.min()) >= 3 and int(lengths.max()) <= 15
    assert bool((mask == (torch.arange(24) < lengths[:, None])).all())  # real tokens first
    assert bool((ids[torch.arange(128), lengths - 1] == bench.EOS).all())
    if peer is not None:
        for a, b in zip((images, ids, mask), peer()):
            assert torch.equal(a, b)


def _has_transformers() -> bool:
    try:
        import transformers  # noqa: F401
    except ImportError:
        return False
    return True
