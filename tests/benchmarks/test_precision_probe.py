"""benchmarks/precision_probe.py at step_profile's tiny sizes: every side runs its
blocks in the alternating order, bf16 runs under autocast and float32 without, and the
printed line has its fields (no timing is asserted)."""

from __future__ import annotations

import torch

from script_module import load_script  # tests/ is on sys.path (conftest)

probe = load_script("benchmarks/precision_probe.py")


def test_blocks_alternate_and_only_the_bf16_side_runs_under_autocast():
    seen = []

    def step():
        seen.append(torch.is_autocast_enabled("cpu"))

    row = probe.alternate(step, rounds=3, block=2, inference=False)
    # one untimed step per side, then fp32 bf16 | bf16 fp32 | fp32 bf16, two steps a block
    assert seen == [False, True] + [False] * 2 + [True] * 4 + [False] * 4 + [True] * 2
    assert row["rounds"] == 3 and 0 <= row["bf16_faster_rounds"] <= 3
    assert row["ratio"] == row["fp32_ms"] / row["bf16_ms"]


def test_a_tiny_ldm_sampling_case_prints_its_fields(capsys):
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        rows = probe.main(["ldm-sample", "--tiny", "--rounds", "2", "--steps", "1"])
    finally:
        torch.set_num_threads(threads)
    line = capsys.readouterr().out.strip().splitlines()[-1]
    fields = dict(f.split("=", 1) for f in line.split()[1:])
    assert line.startswith("precision ") and fields["case"] == "ldm-sample"
    assert fields["bf16_faster_rounds"].endswith("/2") and float(fields["ratio"]) > 0
    assert rows[0]["cpu_bf16"] in (True, False)
