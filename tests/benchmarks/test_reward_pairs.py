"""benchmarks/reward_model_throughput.py --write-pairs: the TRL peer's data, the pairs of
K ranked completions per prompt, step by step (the peer itself needs the peer venv); and
its timed run's cost lines (no timing is asserted)."""

from __future__ import annotations

import itertools
import json

import pytest

from cost_pass import checked_cost_line  # tests/ is on sys.path (conftest)
from script_module import load_script

bench = load_script("benchmarks/reward_model_throughput.py")
step_cost = load_script("benchmarks/step_cost.py")


def test_write_pairs_writes_every_pair_of_each_ranked_prompt(tmp_path):
    out = tmp_path / "pairs.jsonl"
    bench.main(steps=2, k=3, per_step=4, write_pairs=str(out))
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 2 * 4 * 3  # steps x prompts x C(3, 2)
    assert all(set(r) == {"prompt", "chosen", "rejected"} for r in rows)
    for group in (rows[i:i + 3] for i in range(0, len(rows), 3)):
        assert len({r["prompt"] for r in group}) == 1
        # the C(3, 2) pairs (i < j) of three distinct completions ranked y0 > y1 > y2
        ys = [group[0]["chosen"], group[0]["rejected"], group[1]["rejected"]]
        assert len(set(ys)) == 3
        assert [(r["chosen"], r["rejected"]) for r in group] == list(
            itertools.combinations(ys, 2))
    again = tmp_path / "again.jsonl"
    bench.main(steps=2, k=3, per_step=4, write_pairs=str(again))
    assert again.read_text() == out.read_text()  # seeded: the same file every time


@pytest.mark.benchmark  # a long check of the script's cost line: pytest -m benchmark
def test_a_timed_run_prints_the_cost_of_each_way(capsys):
    bench.main(steps=1, k=3, per_step=1)
    result, *lines = capsys.readouterr().out.strip().splitlines()
    assert result.startswith("reward_model ranked_pairs_per_s=")
    assert [line.split()[:2] for line in lines] == [["reward_model_ranked_cost", "unit=step"],
                                                   ["reward_model_pairwise_cost", "unit=step"]]
    ranked, pairwise = (checked_cost_line(line, f"reward_model_{way}_cost", "step",
                                          step_cost.CATEGORIES)
                        for line, way in zip(lines, ("ranked", "pairwise")))
    # a pairwise step scores 2·C(3, 2) = 6 sequences a prompt, a ranked one 3
    assert float(pairwise["gflop_per_unit"]) > 1.5 * float(ranked["gflop_per_unit"])
    bench.main(steps=1, k=2, per_step=1, cost=False)
    assert len(capsys.readouterr().out.strip().splitlines()) == 1
