"""benchmarks/sft_throughput.py: the rows it writes for TRL's SFTTrainer are the examples
its timed loop trains on, in order, and its output line has its fields (no timing is
asserted)."""

from __future__ import annotations

import json

import gaf
from script_module import load_script  # tests/ is on sys.path (conftest)

sft = load_script("benchmarks/sft_throughput.py")


def test_written_examples_are_the_loops_batches_in_order(tmp_path):
    path = tmp_path / "examples.jsonl"
    sft.main(["3", "4", "--warmup", "2", "--write-examples", str(path)])
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    train = gaf.create("task", "sentiment").sft_examples("train")
    assert rows == [{"prompt": e.prompt, "completion": e.completion} for e in train[:20]]


def test_a_timed_run_prints_its_fields(capsys):
    sft.main(["1", "2", "--warmup", "0", "--tokenizer", "byte"])
    line = capsys.readouterr().out.strip()
    fields = dict(f.split("=", 1) for f in line.split()[1:])
    assert line.startswith("gaf_sft ")
    assert fields["tokenizer"] == "byte" and fields["steps"] == "1" and fields["warmup"] == "0"
    assert float(fields["examples_per_s"]) > 0 and float(fields["last_loss"]) > 0
