"""benchmarks/preference_throughput.py and its TRL peer: the pairs the gaf script writes
are the pairs its loop trains on, in order (for kto: the completions and labels, once the
peer's ``kto_rows`` has unpaired them); the peer's loss options, lr, length, batch and
warm-up are gaf's; the printed line parses, and the cost line counts the FLOPs of the
timed step. The peer needs TRL, so it is read (its
``CONFIGS``, ``kto_rows`` and argument defaults), not imported. No timing is asserted."""

from __future__ import annotations

import ast
import json
import math
from pathlib import Path

import pytest

from gaf.spec import resolve
from gaf.train import make_optimizer
from cost_pass import checked_cost_line  # tests/ is on sys.path (conftest)
from script_module import load_script

pt = load_script("benchmarks/preference_throughput.py")
step_cost = load_script("benchmarks/step_cost.py")
PEER = Path(__file__).resolve().parents[2] / "benchmarks" / "trl_preference_peer.py"
TREE = ast.parse(PEER.read_text())


def peer_constant(name: str):
    for node in TREE.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == name
                                                for t in node.targets):
            return ast.literal_eval(node.value)
    raise AssertionError(f"{PEER.name} has no constant {name}")


def peer_function(name: str):
    fn = next(n for n in TREE.body if isinstance(n, ast.FunctionDef) and n.name == name)
    namespace: dict = {}
    exec(compile(ast.Module([fn], type_ignores=[]), str(PEER), "exec"), namespace)
    return namespace[name]


def arg_default(tree: ast.AST, flag: str):
    """The ``default=`` of a script's ``add_argument(flag, ...)``."""
    for node in ast.walk(tree):
        if (isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "add_argument"
                and node.args and getattr(node.args[0], "value", None) == flag):
            return next(ast.literal_eval(k.value) for k in node.keywords if k.arg == "default")
    raise AssertionError(f"no argument {flag}")


def loop_units(objective: str, steps: int, batch: int, tmp: Path) -> list[list[tuple]]:
    """What each step of the loop trains on, straight from the objective's batches."""
    obj, _ = pt.build(objective, steps * batch, batch, str(tmp))
    out = []
    for i in range(steps):
        scored = obj.train_batch(i)[0]
        g = obj.groups
        if objective == "kto":
            out.append([(g[k].prompt, g[k].responses[r], flag) for k, (r, flag) in scored.units])
        else:
            out.append([(g[k].prompt, g[k].responses[a], g[k].responses[b])
                        for k, (a, b) in scored.units])
    return out


@pytest.mark.parametrize("objective", ["kto", "simpo"])
def test_written_pairs_are_the_loops_steps_in_order(objective, tmp_path):
    path = tmp_path / "pairs.jsonl"
    pt.main(["--objective", objective, "2", "4", "--warmup", "1", "--write-pairs", str(path)])
    pairs = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(pairs) == 3 * 4  # warm-up step included
    # the DPO peer benchmark's pairs, in the loop's (shuffled) order
    key = lambda r: json.dumps(r, sort_keys=True)  # noqa: E731
    assert sorted(map(key, pairs)) == sorted(map(key, pt.rows(12)))
    (tmp_path / "run").mkdir()
    steps = loop_units(objective, 3, 4, tmp_path / "run")
    if objective == "kto":  # the peer's unpaired rows, 2 * 4 a step, are the loop's units
        rows = peer_function("kto_rows")(pairs)
        written = [[(r["prompt"], r["completion"], r["label"]) for r in rows[i * 8:(i + 1) * 8]]
                   for i in range(3)]
    else:
        written = [[(p["prompt"], p["chosen"], p["rejected"]) for p in pairs[i * 4:(i + 1) * 4]]
                   for i in range(3)]
    assert written == steps


def test_the_peer_uses_gafs_defaults():
    configs = peer_constant("CONFIGS")
    kto = resolve(objective="kto", components={}, sets=[]).objective_config
    orpo = resolve(objective="orpo", components={}, sets=[]).objective_config
    simpo = resolve(objective="simpo", components={}, sets=[]).objective_config
    assert kto.unpair == "trl"  # what kto_rows reproduces
    assert configs["kto"] == {"beta": kto.beta, "desirable_weight": kto.desirable_weight,
                              "undesirable_weight": kto.undesirable_weight,
                              "loss_type": "kto", "precompute_ref_log_probs": True}
    assert orpo.rpo_alpha == 0.0 and configs["orpo"] == {"beta": orpo.beta}
    assert simpo.rpo_alpha == 0.0
    assert configs["simpo"] == {"loss_type": "simpo", "beta": simpo.beta,
                                "simpo_gamma": simpo.gamma, "cpo_alpha": 0.0}
    assert peer_constant("LR") == pt.LR
    gaf = ast.parse(Path(pt.__file__).read_text())
    for flag in ("--batch", "--warmup", "--threads"):  # gaf's batch is positional
        ours = pt.BATCH if flag == "--batch" else arg_default(gaf, flag)
        assert arg_default(TREE, flag) == ours, flag


def test_a_timed_run_prints_its_fields(capsys):
    pt.main(["--objective", "orpo", "1", "2", "--warmup", "0", "--no-cost"])
    line = capsys.readouterr().out.strip()  # one line: --no-cost prints no cost line
    fields = dict(f.split("=", 1) for f in line.split()[1:])
    assert line.startswith("gaf_orpo ")
    assert fields["steps"] == "1" and fields["warmup"] == "0" and fields["batch"] == "2"
    assert fields["completions_per_step"] == "4" and fields["beta"] == "0.1"
    assert float(fields["pairs_per_s"]) > 0 and float(fields["mean_loss"]) > 0
    # the parameter count both docstrings promise (gpt2-tiny, byte vocabulary)
    assert f"{int(fields['params']):,}" in PEER.read_text()
    assert f"{int(fields['params']):,}" in Path(pt.__file__).read_text()


def test_the_cost_line_counts_the_timed_steps_flops(capsys, tmp_path):
    pt.main(["--objective", "simpo", "1", "2", "--warmup", "1"])
    result, line = capsys.readouterr().out.strip().splitlines()
    assert result.startswith("gaf_simpo ") and line.startswith("gaf_simpo_cost unit=step ")
    fields = checked_cost_line(line, "gaf_simpo_cost", "step", step_cost.CATEGORIES)
    gflop = float(fields["gflop_per_unit"])
    # the timed work, the one step on batch 1 (after the warm-up's), counted alone
    obj, spec = pt.build("simpo", 2 * 2, 2, str(tmp_path))
    params = [q for q in obj.policy.parameters() if q.requires_grad]
    opt = make_optimizer(spec.train, params)
    flop = step_cost.flop_count(lambda: pt.step(obj, opt, params, 1), inference=False)
    assert math.isclose(gflop * 1, flop / 1e9, abs_tol=5e-5)  # units = STEPS = 1
