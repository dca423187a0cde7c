"""A tuning script cannot read the eval split: every sweep and comparison script runs
its objectives on the validation split and draws its own prompts from it. Each script
is run here with the sentiment task's eval split booby-trapped and ``gaf.run``
replaced by a stub that resolves the real spec and records its split."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import pytest
import torch

import gaf
from gaf.plugins.alignment.tuning import TUNING_SPLIT, tuning_sets
from gaf.plugins.tasks.sentiment import SentimentTask
from gaf.spec import resolve

ROOT = Path(__file__).resolve().parents[2]


def script(relative: str):
    path = ROOT / relative
    spec = importlib.util.spec_from_file_location(path.stem + "_under_test", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture()
def no_eval(monkeypatch):
    """The sentiment task refuses to hand out its eval split."""
    original = SentimentTask._split

    def guarded(self, split):
        if split == "eval":
            raise AssertionError("a tuning script read the eval split")
        return original(self, split)

    monkeypatch.setattr(SentimentTask, "_split", guarded)


@pytest.fixture()
def runs(monkeypatch, tmp_path):
    """``gaf.run`` resolved but not trained: records (objective, eval_split)."""
    seen = []

    def fake_run(objective, *, sets=(), **components):
        spec = resolve(objective=objective, components=components, sets=list(sets))
        seen.append((objective, spec.objective_config.eval_split))
        run_dir = tmp_path / f"run{len(seen)}"
        (run_dir / "policy").mkdir(parents=True)
        return run_dir, {"kl": 1.0, "mean_reward": 0.5, "win_rate": 0.5,
                         "reference_mean_reward": 0.4, "wall_s": 1.0}

    monkeypatch.setattr(gaf, "run", fake_run)
    return seen


def test_the_beta_sweep_runs_on_validation(no_eval, runs, tmp_path):
    script("benchmarks/dpo_beta_sweep.py").main(str(tmp_path), str(tmp_path / "sweep.png"))
    assert runs and all(split == TUNING_SPLIT for _, split in runs)
    assert {objective for objective, _ in runs} == {"dpo"}


def test_the_frontier_runs_on_validation(no_eval, runs, tmp_path):
    script("examples/frontier.py").main(str(tmp_path / "frontier"), smoke=True)
    assert {objective for objective, _ in runs} == {"sft", "dpo", "reward", "ppo"}
    assert all(split == TUNING_SPLIT for _, split in runs)


@pytest.fixture()
def tiny_policies(tmp_path):
    torch.manual_seed(0)
    paths = []
    for name in ("a", "b"):
        policy = gaf.create("policy", "gpt2-tiny", n_layer=1, d_model=32, n_head=2)
        gaf.save(policy, tmp_path / name / "policy")
        paths.append(tmp_path / name)
    return paths


def test_win_rate_judges_validation_prompts_unless_told(no_eval, tiny_policies):
    a, b = (str(p / "policy") for p in tiny_policies)
    out = script("benchmarks/win_rate.py").main(a, b, 1, 2)
    assert math.isfinite(out["win_rate"])
    with pytest.raises(AssertionError, match="eval split"):
        script("benchmarks/win_rate.py").main(a, b, 1, 2, split="eval")


def test_the_swap_components_example_uses_validation_prompts(no_eval, tiny_policies, capsys):
    script("examples/swap_components.py").main(str(tiny_policies[0]))
    assert "mean reward" in capsys.readouterr().out


def test_a_tuning_run_cannot_be_pointed_at_eval():
    assert tuning_sets(["train.steps=3"])[-1] == 'objective.eval_split="validation"'
    with pytest.raises(ValueError, match="validation"):
        tuning_sets(['objective.eval_split="eval"'])
