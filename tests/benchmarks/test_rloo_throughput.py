"""benchmarks/rloo_throughput.py: the prompts it writes for TRL's RLOOTrainer are the prompts
its timed loop samples from, in order, with the ids gaf generates from; its settings line
is the ``rloo`` defaults and holds every setting the peer reads; both scripts define the
same reward; its output line has its fields, and its cost line counts the timed
iteration's FLOPs (no timing is asserted)."""

from __future__ import annotations

import ast
import json
import math
from pathlib import Path

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

import gaf
from gaf.plugins.lm.batching import prompt_ids
from gaf.plugins.rlhf.on_policy import OnPolicy
from gaf.plugins.rlhf.policy_gradient import RLOO, PolicyGradientConfig
from cost_pass import checked_cost_line  # tests/ is on sys.path (conftest)
from script_module import ROOT, load_script

rloo = load_script("benchmarks/rloo_throughput.py")
PEER = ROOT / "benchmarks" / "trl_rloo_peer.py"


def read(path: Path) -> tuple[dict, list[dict]]:
    lines = path.read_text().splitlines()
    return json.loads(lines[0])["settings"], [json.loads(line) for line in lines[1:]]


@pytest.fixture(autouse=True)
def keep_torch_threads():
    """The script sets torch's thread count (one thread here: sampling is many small
    matmuls); the rest of the session keeps its own."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def test_written_prompts_are_what_the_loop_samples_in_order(tmp_path, monkeypatch, capsys):
    path = tmp_path / "prompts.jsonl"
    argv = ["1", "2", "--k", "2", "--warmup", "1", "--threads", "1"]
    rloo.main([*argv, "--write-prompts", str(path)])
    settings, rows = read(path)
    sampled: list[list[str]] = []
    original = OnPolicy.sample

    def recording(self, prompts, draw):
        sampled.append(list(prompts))
        return original(self, prompts, draw)

    monkeypatch.setattr(OnPolicy, "sample", recording)
    rloo.main([*argv, "--no-cost"])
    assert sampled == [[r["prompt"] for r in rows[i:i + 2] for _ in range(2)] for i in (0, 2)]
    tok = gaf.create("policy", "gpt2-tiny").tokenizer
    assert [r["prompt_ids"] for r in rows] == [prompt_ids(tok, r["prompt"], 256) for r in rows]

    line = capsys.readouterr().out.strip()
    assert line.startswith("gaf_rloo ") and "\n" not in line
    fields = dict(f.split("=", 1) for f in line.split()[1:])
    assert float(fields["completions_per_s"]) > 0
    assert abs(float(fields["rollout_share"]) + float(fields["update_share"]) - 1) < 2e-3
    assert 1 <= float(fields["mean_completion_tokens"]) <= settings["max_new_tokens"]
    assert int(fields["prompt_tokens"]) == sum(len(r["prompt_ids"]) for r in rows[2:])
    for key in ("k", "prompts_per_step", "steps", "warmup", "max_new_tokens", "params",
                "tokenizer"):
        assert fields[key] == str(settings[key]), key


def test_the_settings_are_rloos_defaults_and_cover_what_the_peer_reads(tmp_path):
    path = tmp_path / "prompts.jsonl"
    rloo.main(["1", "--warmup", "0", "--threads", "1", "--write-prompts", str(path)])
    settings, rows = read(path)
    cfg = PolicyGradientConfig()
    assert (settings["k"], settings["max_new_tokens"], settings["beta"]) == (
        cfg.samples_per_prompt, cfg.max_new_tokens, cfg.beta)
    assert (settings["prompts_per_step"], settings["lr"], settings["max_grad_norm"]) == (
        RLOO.train_defaults["batch_size"], RLOO.train_defaults["lr"],
        RLOO.train_defaults["max_grad_norm"])
    assert settings["temperature"] == 1.0 and settings["tokenizer"] == "sentiment-bpe"
    assert (settings["d_model"], settings["n_layer"], settings["n_head"]) == (128, 4, 4)
    assert len(rows) == settings["prompts_per_step"]
    read_by_peer = {n.slice.value for n in ast.walk(ast.parse(PEER.read_text()))
                    if isinstance(n, ast.Subscript) and isinstance(n.value, ast.Name)
                    and n.value.id == "s" and isinstance(n.slice, ast.Constant)}
    assert read_by_peer and read_by_peer <= settings.keys()


def test_both_scripts_define_the_same_reward():
    def definitions(path: Path) -> tuple[object, str]:
        tree = ast.parse(path.read_text())
        target = next(n.value.value for n in tree.body if isinstance(n, ast.Assign)
                      and [t.id for t in n.targets] == ["TARGET"])
        fn = next(n for n in tree.body
                  if isinstance(n, ast.FunctionDef) and n.name == "target_fraction")
        fn.body = fn.body[1:]  # the docstring names the other file
        return target, ast.dump(fn)

    assert definitions(PEER) == definitions(ROOT / "benchmarks" / "rloo_throughput.py")
    assert rloo.target_fraction("bee") == 2 / 3 and rloo.target_fraction("") == 0.0


@pytest.mark.benchmark  # a long check of the script's cost line (thousands of small
# operators profiled): pytest -m benchmark
def test_the_cost_line_counts_the_timed_iteration(monkeypatch, capsys):
    """One timed iteration, then the cost pass: its unit (that iteration's prompts again)
    has the timed iteration's FLOPs, rollout and update both counted."""
    flops: list[int] = []
    seen: dict = {}

    def counted(fn):
        def wrapper(*args, **kwargs):
            if seen:  # the cost pass: counted by its own measure
                return fn(*args, **kwargs)
            with FlopCounterMode(display=False) as counter:
                out = fn(*args, **kwargs)
            flops.append(counter.get_total_flops())
            return out
        return wrapper

    measure = rloo.step_cost.measure

    def recording(unit, **kwargs):
        seen.update(kwargs, timed=sum(flops))  # the iterations so far: the timed one
        seen["cost"] = measure(unit, **kwargs)
        return seen["cost"]

    monkeypatch.setattr(RLOO, "train_batch", counted(RLOO.train_batch))
    monkeypatch.setattr(rloo, "update", counted(rloo.update))
    monkeypatch.setattr(rloo.step_cost, "measure", recording)
    rloo.main(["1", "1", "--k", "2", "--warmup", "0", "--threads", "1"])
    result, cost_line = capsys.readouterr().out.strip().splitlines()
    assert result.startswith("gaf_rloo ")
    checked_cost_line(cost_line, "gaf_rloo_cost", "iteration", rloo.step_cost.CATEGORIES)
    assert seen["units"] == 1 and not seen["inference"]
    assert seen["timed"] > 0 and math.isclose(
        seen["cost"]["gflop_per_unit"] * 1e9 * seen["units"], seen["timed"], rel_tol=1e-9)
