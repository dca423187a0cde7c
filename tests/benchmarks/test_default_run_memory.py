"""benchmarks/default_run_memory.py: every stage-length option is known, the commands it
builds, and one real shortened run read back (no timing is asserted)."""

from __future__ import annotations

import pytest

from gaf import config
from gaf.registry import REGISTRY
from script_module import load_script  # tests/ is on sys.path (conftest)

memory = load_script("benchmarks/default_run_memory.py")


def test_every_steps_option_is_a_stage_length_or_a_sampling_length():
    """--short must shorten every training stage: an objective option counting steps that
    neither list names would leave a stage at full length (or shorten a sampler)."""
    assert not set(memory.STAGE_STEPS) & set(memory.SAMPLING_STEPS)
    for name in REGISTRY.names("objective"):
        options = config.to_dict(REGISTRY.default_config("objective", name))
        unknown = [k for k in options if k.endswith("_steps")
                   and k not in memory.STAGE_STEPS + memory.SAMPLING_STEPS]
        assert not unknown, (name, unknown)


def test_every_registered_objective_is_in_the_sweep_order():
    assert sorted(memory.ORDER) == sorted(REGISTRY.names("objective"))
    assert memory.ORDER.index("ldm") < memory.ORDER.index("diffusion-dpo")


def test_short_sets_the_run_and_every_stage(tmp_path):
    args = memory.command("imagen", tmp_path, 7, {})
    assert args[:8] == ["run", "--objective", "imagen", "--out", str(tmp_path), "--name",
                        "imagen", "-q"]
    sets = {args[i + 1] for i, a in enumerate(args) if a == "--set"}
    assert sets == {"train.steps=7", "objective.first_stage_steps=7",
                    "objective.eval_clip_steps=7", "objective.text_encoder_steps=7",
                    "objective.clip_steps=7", "objective.sr_steps=7"}
    assert "--set" not in memory.command("imagen", tmp_path, 0, {})


def test_diffusion_dpo_fine_tunes_the_sweeps_ldm_run(tmp_path):
    with pytest.raises(LookupError):
        memory.command("diffusion-dpo", tmp_path, 0, {})
    args = memory.command("diffusion-dpo", tmp_path, 0, {"ldm": tmp_path / "ldm"})
    assert args[-2:] == ["--set", f'objective.init_run="{tmp_path / "ldm"}"']
    with pytest.raises(SystemExit):  # ordered wrongly: refused before anything runs
        memory.main(["diffusion-dpo", "ldm"])


def test_a_shortened_sft_run_reports_its_peak(tmp_path, capsys):
    (row,) = memory.main(["sft", "--short", "1", "--out", str(tmp_path), "--json"])
    assert row["exit"] == 0 and row["objective"] == "sft"
    assert set(row["stages"]) == {"run"} and row["stages"]["run"]["steps"] == 1
    # the whole process's peak is at least the peak the run saw when it wrote its summary
    assert row["maxrss_mb"] >= row["stages"]["run"]["peak_rss_mb"] > 50
    assert '"objective": "sft"' in capsys.readouterr().out
