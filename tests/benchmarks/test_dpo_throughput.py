"""benchmarks/dpo_throughput.py's cost units (the run itself is gaf.run at the peer's size,
too slow for a test): a training step, and that step after the setup's reference pass
over its pairs, which adds the reference's forward FLOPs alone (no timing is asserted)."""

from __future__ import annotations

from script_module import load_script  # tests/ is on sys.path (conftest)

dpo = load_script("benchmarks/dpo_throughput.py")
step_cost = load_script("benchmarks/step_cost.py")


def test_the_cost_units_count_a_step_and_its_reference_pass(tmp_path):
    step, with_reference = dpo.cost_units(str(tmp_path))
    train = step_cost.flop_count(step, inference=False)
    whole = step_cost.flop_count(with_reference, inference=False)
    assert train > 0
    # the reference's forward over the step's completions, against the policy's forward
    # and backward (about three forwards) over the same completions, packed differently
    assert 0.2 * train < whole - train < 0.5 * train
