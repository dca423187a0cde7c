"""benchmarks/sft_throughput.py: the rows it writes for TRL's SFTTrainer are the examples
its timed loop trains on, in order, its output line has its fields, and its cost line
counts the FLOPs of the timed step (no timing is asserted)."""

from __future__ import annotations

import json
import math

import torch

import gaf
from gaf.train import TrainConfig, make_optimizer
from cost_pass import checked_cost_line  # tests/ is on sys.path (conftest)
from script_module import load_script

sft = load_script("benchmarks/sft_throughput.py")
step_cost = load_script("benchmarks/step_cost.py")


def test_written_examples_are_the_loops_batches_in_order(tmp_path):
    path = tmp_path / "examples.jsonl"
    sft.main(["3", "4", "--warmup", "2", "--write-examples", str(path)])
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    train = gaf.create("task", "sentiment").sft_examples("train")
    assert rows == [{"prompt": e.prompt, "completion": e.completion} for e in train[:20]]


def test_a_timed_run_prints_its_fields(capsys):
    sft.main(["1", "2", "--warmup", "0", "--tokenizer", "byte", "--no-cost"])
    line = capsys.readouterr().out.strip()  # one line: --no-cost prints no cost line
    fields = dict(f.split("=", 1) for f in line.split()[1:])
    assert line.startswith("gaf_sft ")
    assert fields["tokenizer"] == "byte" and fields["steps"] == "1" and fields["warmup"] == "0"
    assert float(fields["examples_per_s"]) > 0 and float(fields["last_loss"]) > 0


def test_the_cost_line_counts_the_timed_steps_flops(capsys):
    sft.main(["1", "2", "--warmup", "1", "--tokenizer", "byte"])
    result, line = capsys.readouterr().out.strip().splitlines()
    assert result.startswith("gaf_sft ") and line.startswith("gaf_sft_cost unit=step ")
    fields = checked_cost_line(line, "gaf_sft_cost", "step", step_cost.CATEGORIES)
    gflop = float(fields["gflop_per_unit"])
    # the timed work, the one step on the second batch (after the warm-up's), counted alone
    torch.manual_seed(0)
    policy = gaf.create("policy", "gpt2-tiny", tokenizer="byte")
    opt = make_optimizer(TrainConfig(lr=1e-3), policy.parameters())
    batch = gaf.create("task", "sentiment").sft_examples("train")[2:4]
    flop = step_cost.flop_count(lambda: sft.step(policy, opt, batch), inference=False)
    assert math.isclose(gflop * 1, flop / 1e9, abs_tol=5e-5)  # units = STEPS = 1
