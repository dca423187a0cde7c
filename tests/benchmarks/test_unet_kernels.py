"""benchmarks/unet_kernels.py times the UNet's GroupNorm and attention paths against
PyTorch's ops; here one tiny shape of each, for the output's form (no timing is
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
    norm, attn = rows
    assert norm["kind"] == "group_norm" and (norm["batch"], norm["channels"]) == (2, 32)
    assert norm["per_group"] == 2 and norm["side"] == 8 and norm["taken"] is True
    assert attn["kind"] == "attention" and attn["taken"] is True
    assert (attn["queries"], attn["keys"], attn["head_dim"]) == (16, 8, 4)
    for row in rows:
        times = [v for k, v in row.items() if k.endswith("_us")]
        assert len(times) >= 2 and all(t > 0 for t in times)
        assert row["ratio"] > 0


def test_the_grid_covers_both_sides_of_each_rule():
    """The full run's shapes include ones where each path is and is not taken."""
    a = bench.attention
    taken = [k <= a.KEYS_MAX and b * n * k * 4 <= a.SCORES_MAX_BYTES
             for b, _, n, k, _ in bench.ATTENTION]
    assert any(taken) and not all(taken)
    assert any(k > a.KEYS_MAX for *_, k, _ in bench.ATTENTION)
    assert 8 in bench.PER_GROUP and 2 in bench.PER_GROUP
    assert 4 in bench.SIDES and 32 in bench.SIDES
