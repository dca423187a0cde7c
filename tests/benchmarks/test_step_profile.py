"""benchmarks/machine_peak.py and benchmarks/step_profile.py at a tiny size: the form of
their output, the FLOP count against a closed form, and the operator grouping (no
timing is asserted)."""

from __future__ import annotations

import json

import pytest
import torch

from script_module import load_script  # tests/ is on sys.path (conftest)

peak = load_script("benchmarks/machine_peak.py")
profile = load_script("benchmarks/step_profile.py")


def test_machine_peak_prints_its_rows(capsys):
    threads = str(torch.get_num_threads())
    result = peak.main(["--quick", "--repeats", "1", "--threads", threads, "--json"])
    assert json.loads(capsys.readouterr().out) == result
    ops = [r["op"] for r in result["rows"]]
    assert ops == ["matmul", "conv"] and all(r["gflops"] > 0 for r in result["rows"])
    assert result["peak_gflops"] == result["rows"][0]["gflops"]
    assert result["conv_peak_gflops"] == result["rows"][1]["gflops"]


def test_bf16_matmul_rows_are_listed_but_leave_the_float32_peaks_alone(capsys):
    threads = str(torch.get_num_threads())
    result = peak.main(["--quick", "--repeats", "1", "--threads", threads, "--bf16"])
    assert [r["op"] for r in result["rows"]] == ["matmul", "conv", "matmul_bf16"]
    assert result["peak_gflops"] == result["rows"][0]["gflops"]
    assert "matmul_bf16 threads=" in capsys.readouterr().out


def test_every_conv_shape_is_a_default_unet_shape():
    """The listed shapes are 3x3 convolutions the default UNets run (channel pairs)."""
    from gaf.plugins.t2i.imagen.objective import BASE_UNET
    from gaf.plugins.t2i.imagen.super_resolution import SR_UNET

    widths = {"imagen-base": set(BASE_UNET["channels"]), "imagen-sr": set(SR_UNET["channels"]),
              "ldm-train": {64, 128}, "ldm-sample": {64, 128}}
    for name, _, c_in, c_out, _ in peak.CONVS:
        if name != "large":
            assert c_out in widths[name], (name, c_out)
            # an input is a level's width, or a decoder concatenation of two widths
            assert c_in in widths[name] or any(c_in - a in widths[name]
                                               for a in widths[name]), (name, c_in)


@pytest.mark.parametrize("name, group", [
    ("aten::mkldnn_convolution", "conv"), ("aten::convolution_backward", "conv"),
    ("aten::addmm", "matmul"), ("aten::baddbmm", "matmul"), ("aten::mm", "matmul"),
    ("aten::_scaled_dot_product_flash_attention_for_cpu", "attention"),
    ("aten::_softmax", "attention"), ("aten::native_group_norm", "norm"),
    ("aten::_fused_adamw_", "optimizer"), ("aten::_foreach_norm", "optimizer"),
    ("aten::cat", "copies"), ("aten::copy_", "copies"), ("aten::silu_", "elementwise"),
    ("aten::gelu", "elementwise"), ("MmBackward0", None), ("Optimizer.step#AdamW.step", None),
])
def test_operator_groups(name, group):
    assert profile.group_of(name) == group


def test_flops_and_shares_of_a_known_step():
    """A step of one 64x64 @ 64x64 matmul: the counted FLOPs are 2·64³; shares sum to 1."""
    a, b = torch.randn(64, 64), torch.randn(64, 64)
    row = profile.measure(lambda: torch.mm(a, b), steps=3, warmup=1, inference=True)
    assert row["gflop_per_step"] == pytest.approx(2 * 64 ** 3 / 1e9)
    assert set(row["shares"]) == set(profile.CATEGORIES)
    assert sum(row["shares"].values()) == pytest.approx(1.0)
    assert row["shares"]["matmul"] > 0 and row["shares"]["conv"] == 0


@pytest.mark.benchmark  # builds every case's models (pytest -m benchmark); op_floor's
# test runs the ldm cases in the suite
def test_every_case_runs_tiny(capsys):
    threads = str(torch.get_num_threads())
    rows = profile.main(["--tiny", "--steps", "1", "--warmup", "1", "--threads", threads,
                         "--peak", "100", "--json"])
    out = json.loads(capsys.readouterr().out)
    assert [r["case"] for r in out["cases"]] == list(profile.CASES) == [r["case"] for r in rows]
    for r in rows:
        assert r["gflop_per_step"] > 0 and r["step_ms"] > 0
        assert r["peak_share"] == pytest.approx(r["gflops"] / 100)
        assert sum(r["shares"].values()) == pytest.approx(1.0)
        lm = r["case"] in ("dpo-train", "sft-train", "parti-sample")
        assert r["shares"]["matmul" if lm else "conv"] > 0


def test_an_unknown_case_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exc:
        profile.main(["ldm-trian"])
    assert exc.value.code == 2
    assert "unknown case 'ldm-trian'" in capsys.readouterr().err


def test_the_fused_attention_comparison_alternates_and_restores(capsys):
    from gaf.plugins.diffusion.unet import attention

    keys_max, seen = attention.KEYS_MAX, []
    rows = profile.main(["ldm-train", "--tiny", "--compare-fused-attention", "3",
                         "--steps", "1", "--threads", str(torch.get_num_threads())])
    assert attention.KEYS_MAX == keys_max
    (row,) = rows
    assert row["rounds"] == 3 and 0 <= row["short_faster_rounds"] <= 3
    assert row["ratio"] == pytest.approx(row["fused_ms"] / row["short_ms"])
    assert "fused_attention case=ldm-train" in capsys.readouterr().out
    # the step sees both settings, in swapped order
    profile_step = lambda: seen.append(attention.KEYS_MAX)  # noqa: E731
    profile.compare_fused_attention(profile_step, rounds=2, block=1, inference=True)
    assert seen[2:] == [keys_max, 0, 0, keys_max] and attention.KEYS_MAX == keys_max
