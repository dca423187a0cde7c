"""benchmarks/unet_kernels.py times the UNet's GroupNorm and attention paths and the
thresholding quantile against PyTorch's ops; here one tiny shape of each, for the output's form (no timing is
asserted) and for what it says about which path the UNet takes."""

from __future__ import annotations

import json

import torch

from script_module import load_script  # tests/ is on sys.path (conftest)

bench = load_script("benchmarks/unet_kernels.py")


def test_one_json_line_per_shape(capsys):
    threads = str(torch.get_num_threads())
    rows = bench.main(["--tiny", "--repeats", "1", "--calls", "2", "--threads", threads])
    lines = capsys.readouterr().out.splitlines()
    assert [json.loads(line) for line in lines] == rows
    norm, attn, quantile = rows
    assert quantile["kind"] == "quantile" and (quantile["rows"], quantile["values"]) == (2, 48)
    assert quantile["level"] == 0.995
    assert norm["kind"] == "group_norm" and (norm["batch"], norm["channels"]) == (2, 32)
    assert norm["per_group"] == 2 and norm["side"] == 8 and norm["taken"] is True
    assert attn["kind"] == "attention" and attn["taken"] is True
    assert (attn["queries"], attn["keys"], attn["head_dim"]) == (16, 8, 4)
    for row in rows:
        times = [v for k, v in row.items() if k.endswith("_us")]
        assert len(times) >= 2 and all(t > 0 for t in times)
        assert row["ratio"] > 0


def test_only_times_the_kinds_named(capsys):
    threads = str(torch.get_num_threads())
    rows = bench.main(["--tiny", "--repeats", "1", "--calls", "2", "--threads", threads,
                       "--only", "quantile", "--only", "group_norm"])
    assert [row["kind"] for row in rows] == ["group_norm", "quantile"]


def test_the_grid_covers_both_sides_of_each_rule():
    """The full run's shapes include ones where each path is and is not taken."""
    a = bench.attention
    taken = [k <= a.KEYS_MAX and b * n * k * 4 <= a.SCORES_MAX_BYTES
             for b, _, n, k, _ in bench.ATTENTION]
    assert any(taken) and not all(taken)
    assert any(k > a.KEYS_MAX for *_, k, _ in bench.ATTENTION)
    assert 8 in bench.PER_GROUP and 2 in bench.PER_GROUP
    assert 4 in bench.SIDES and 32 in bench.SIDES


def test_the_quantile_rows_are_the_cascades_thresholding():
    """The level is the schedulers' default and the shapes imagen_throughput.py's stages."""
    from gaf.plugins.diffusion.scheduler_config import SchedulerConfig

    imagen = load_script("benchmarks/imagen_throughput.py")
    assert bench.QUANTILE_LEVEL == SchedulerConfig().dynamic_thresholding_ratio
    batch = 50  # imagen_throughput.py's default --batch
    assert list(bench.QUANTILE) == [(batch, torch.Size(s).numel())
                                    for s in (imagen.BASE_SHAPE, imagen.SR_SHAPE)]
