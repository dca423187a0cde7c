"""Per-module optimiser settings: ``Objective.param_groups()`` and the trainer applying it.

A two-module objective gives each module its own learning rate, Adam betas and weight
decay. Checked: one AdamW step of each group against the float64 closed form; the
groups' learning rates follow the schedule (each group's own peak times
``lr_factor``); a run with two groups resumes bit-identically; a single group that
sets nothing trains exactly like an objective without ``param_groups``; bad groups are
BadConfig naming the parameter, the key or the module.
"""

from __future__ import annotations

import json

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import gaf
import gaf.train
from gaf import checkpoint
from gaf.atomic import load_tensors
from gaf.errors import BadConfig
from gaf.interfaces import ObjectiveBase
from gaf.launch import execute
from gaf.registry import Registry
from gaf.spec import resolve
from gaf.train import TrainConfig, lr_factor, make_optimizer, resolve_param_groups

from toy_objective import Toy  # noqa: E402  (tests/core is on sys.path)

LR_A, LR_B = 0.05, 0.3


class TwoPlayers(Toy, ObjectiveBase):
    """Toy regression through two modules, "a" (4 → 3) and "b" (3 → 1), with dropout
    (so resuming must restore the RNG) and each module's own optimiser settings."""

    groups = staticmethod(lambda self: [
        {"params": "a", "lr": LR_A, "betas": (0.5, 0.9)},
        {"params": list(self.b.parameters()), "lr": LR_B, "weight_decay": 0.1}])

    def setup(self, ctx):
        super().setup(ctx)
        torch.manual_seed(0)
        self.a = nn.Sequential(nn.Dropout(self.config.dropout), nn.Linear(4, 3))
        self.b = nn.Linear(3, 1)

    def modules(self):
        return {"a": self.a, "b": self.b}

    def param_groups(self):
        return type(self).groups(self)

    def loss(self, batch):
        _, x, y = batch
        loss = ((self.b(torch.tanh(self.a(x))).squeeze(-1) - y) ** 2).mean()
        return loss, {"mse": loss.item()}

    def evaluate(self, ctx):
        return {}


class OneGroup(TwoPlayers):
    """Every parameter in one group that sets nothing: today's optimiser."""

    groups = staticmethod(lambda self: [
        {"params": [*self.a.parameters(), *self.b.parameters()]}])


class NoGroups(TwoPlayers):
    param_groups = None


def _spec(objective, tmp_path, *sets):
    registry = Registry(catalogue=None, autoload=False)
    registry.add("objective", "o", objective)
    spec = resolve(objective="o", registry=registry, sets=[
        f"out_dir={json.dumps(str(tmp_path))}", "progress=false", "train.steps=12",
        "train.batch_size=8", "train.warmup_steps=3", "train.schedule=cosine", *sets])
    return spec, registry


def _execute(objective, tmp_path, *sets):
    spec, registry = _spec(objective, tmp_path, *sets)
    return execute(spec, registry=registry)


def _weights(run_dir):
    return load_tensors(checkpoint.latest_checkpoint(run_dir / "checkpoints")
                        / "modules.safetensors")


def _two_modules():
    torch.manual_seed(0)
    return {"a": nn.Linear(4, 3), "b": nn.Linear(3, 1)}


def test_one_adamw_step_per_group_is_the_closed_form():
    """First AdamW step: p ← p·(1 − lr·wd) − lr·g/(|g| + eps) (bias-corrected m̂ = g,
    v̂ = g²), with each group's lr and weight decay; betas cancel in step one, so a
    second step checks them: m = β1 m + (1 − β1) g, v = β2 v + (1 − β2) g²."""
    mods = _two_modules()
    cfg = TrainConfig(lr=0.01, weight_decay=0.02, betas=(0.9, 0.999))
    groups = resolve_param_groups(cfg, [{"params": "a", "lr": 0.1, "betas": (0.5, 0.8)},
                                        {"params": "b", "weight_decay": 0.3}], mods)
    opt = make_optimizer(cfg, groups)
    settings_of = {"a": (0.1, (0.5, 0.8), 0.02), "b": (0.01, (0.9, 0.999), 0.3)}
    ref = {(m, n): p.detach().double().clone() for m in mods for n, p in mods[m].named_parameters()}
    state = {k: (torch.zeros_like(v), torch.zeros_like(v)) for k, v in ref.items()}
    gen = torch.Generator().manual_seed(5)
    for t in (1, 2):
        grads = {k: torch.randn(v.shape, generator=gen, dtype=torch.float64) for k, v in ref.items()}
        for (m, n), p in ((k, dict(mods[k[0]].named_parameters())[k[1]]) for k in ref):
            p.grad = grads[(m, n)].float()
        opt.step()
        for k, p in ref.items():
            lr, (b1, b2), wd = settings_of[k[0]]
            m_, v_ = state[k]
            m_ = b1 * m_ + (1 - b1) * grads[k]
            v_ = b2 * v_ + (1 - b2) * grads[k] ** 2
            state[k] = (m_, v_)
            p.mul_(1 - lr * wd)
            p.sub_(lr * (m_ / (1 - b1 ** t)) / ((v_ / (1 - b2 ** t)).sqrt() + 1e-8))
    for (m, n), want in ref.items():
        got = dict(mods[m].named_parameters())[n].detach().double()
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


def test_groups_follow_the_schedule(tmp_path, monkeypatch):
    """After ``s`` scheduler steps each group's lr is its own peak × lr_factor(cfg, s)."""
    seen: list[list[float]] = []
    built = []
    real = gaf.train.make_optimizer
    monkeypatch.setattr(gaf.train, "make_optimizer",
                        lambda cfg, params: built.append(real(cfg, params)) or built[-1])

    class Recording(TwoPlayers):
        def after_step(self, step):
            seen.append([g["lr"] for g in built[-1].param_groups])

    spec, registry = _spec(Recording, tmp_path)
    run_dir, _ = execute(spec, registry=registry)
    cfg = spec.train
    assert len(seen) == cfg.steps
    for s, lrs in enumerate(seen):  # step s + 1 ran after s scheduler steps
        assert lrs == pytest.approx([LR_A * lr_factor(cfg, s), LR_B * lr_factor(cfg, s)])
    logged = [json.loads(x)["lr"] for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert logged[-1] == pytest.approx(LR_A * lr_factor(cfg, cfg.steps - 1))  # the first group's


def test_two_groups_resume_bit_identically(tmp_path):
    spec, registry = _spec(TwoPlayers, tmp_path / "a", "train.save_every=5")
    full, _ = execute(spec, registry=registry)
    saved = json.loads((checkpoint.latest_checkpoint(full / "checkpoints") / "state.json")
                       .read_text())["optimizer"]["param_groups"]
    assert [g["initial_lr"] for g in saved] == [LR_A, LR_B]
    assert [g["betas"] for g in saved] == [[0.5, 0.9], [0.9, 0.999]]

    class Crash(Exception):
        """The simulated kill."""

    class CrashAt:
        @gaf.hookimpl
        def gaf_step_end(self, step):
            if step == 8:
                raise Crash

    spec, registry = _spec(TwoPlayers, tmp_path / "b", "train.save_every=5")
    crasher = CrashAt()
    gaf.hooks.register(crasher)
    try:
        with pytest.raises(Crash):
            execute(spec, registry=registry)
    finally:
        gaf.hooks.unregister(crasher)
    (interrupted,) = [p for p in (tmp_path / "b").iterdir() if not p.is_symlink()]
    execute(spec, resume=interrupted, registry=registry)
    a, b = _weights(full), _weights(interrupted)
    assert a.keys() == b.keys() == {"a.1.weight", "a.1.bias", "b.weight", "b.bias"}
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_a_group_that_sets_nothing_is_todays_optimiser(tmp_path):
    one, _ = _execute(OneGroup, tmp_path / "one")
    none, _ = _execute(NoGroups, tmp_path / "none")
    two, _ = _execute(TwoPlayers, tmp_path / "two")
    a, b, c = _weights(one), _weights(none), _weights(two)
    for key in a:
        assert torch.equal(a[key], b[key]), key
    assert not torch.equal(a["b.weight"], c["b.weight"])  # the settings do act


@pytest.mark.parametrize("groups, match", [
    ([{"params": "a"}, {"params": "b"}, {"params": "a"}], r"parameter a\.weight is in two"),
    ([{"params": "a"}], r"trainable parameter b\.weight is in no parameter group \(and 1 more"),
    ([{"params": "a"}, {"params": "b", "weight_decy": 0.1}],
     r"unknown key 'weight_decy'.*did you mean 'weight_decay'"),
    ([{"params": "aa"}, {"params": "b"}], r"names no module 'aa'.*did you mean 'a'"),
    ([{"lr": 0.1}], r"param_groups\(\)\[0\] has no 'params'"),
    ([{"params": "a", "lr": 0}, {"params": "b"}], r"'lr' must be a number > 0"),
    ([{"params": "a", "betas": (0.9,)}, {"params": "b"}], r"'betas' must be two numbers"),
    ([{"params": "a", "betas": (0.9, 1.0)}, {"params": "b"}], r"'betas' must lie in \[0, 1\)"),
    ([{"params": "a", "weight_decay": -1}, {"params": "b"}], r"'weight_decay' must be"),
    ([{"params": [torch.nn.Parameter(torch.zeros(2, 5))]}], r"shape \(2, 5\) that is not a"),
    ([{"params": []}, {"params": "a"}, {"params": "b"}], r"\[0\] has no trainable parameters"),
    (["a"], r"must be a dict"),
])
def test_bad_groups_are_bad_config(groups, match):
    with pytest.raises(BadConfig, match=match):
        resolve_param_groups(TrainConfig(), groups, _two_modules())


def test_betas_need_an_adam_optimiser():
    with pytest.raises(BadConfig, match="train.optimizer = 'sgd' has none"):
        resolve_param_groups(TrainConfig(optimizer="sgd"),
                             [{"params": "a", "betas": (0.5, 0.9)}, {"params": "b"}],
                             _two_modules())


def test_frozen_parameters_need_no_group():
    mods = _two_modules()
    mods["b"].requires_grad_(False)
    (group,) = resolve_param_groups(TrainConfig(), [{"params": "a"}], mods)
    assert group["params"] == list(mods["a"].parameters())
    with pytest.raises(BadConfig, match="not a trainable parameter"):
        resolve_param_groups(TrainConfig(), [{"params": [*mods["a"].parameters(),
                                                         mods["b"].weight]}], mods)


def test_a_bad_group_stops_the_run_before_training(tmp_path):
    class Overlapping(TwoPlayers):
        groups = staticmethod(lambda self: [{"params": "a"}, {"params": "b"},
                                            {"params": [self.b.bias]}])

    with pytest.raises(BadConfig, match=r"b\.bias is in two parameter groups"):
        _execute(Overlapping, tmp_path)


@settings(max_examples=40, deadline=None)
@given(labels=st.lists(st.integers(0, 3), min_size=4, max_size=4), extra=st.integers(0, 3))
def test_any_partition_resolves_and_any_overlap_fails(labels, extra):
    """Four parameters split into groups by ``labels``: each lands in exactly its own
    group, in order; adding any one of them to a second group is a BadConfig."""
    mods = _two_modules()
    params = [*mods["a"].parameters(), *mods["b"].parameters()]
    used = sorted(set(labels))
    groups = [{"params": [p for p, lab in zip(params, labels) if lab == g], "lr": 0.1 * (g + 1)}
              for g in used]
    out = resolve_param_groups(TrainConfig(), groups, mods)
    assert [[id(p) for p in g["params"]] for g in out] == \
        [[id(p) for p in g["params"]] for g in groups]
    assert [g["lr"] for g in out] == [0.1 * (g + 1) for g in used]
    dup = params[extra]
    other = next((i for i, g in enumerate(used) if g != labels[extra]), None)
    bad = [dict(g) for g in groups]
    if other is None:
        bad.append({"params": [dup]})
    else:
        bad[other]["params"] = [*bad[other]["params"], dup]
    with pytest.raises(BadConfig, match="is in two parameter groups"):
        resolve_param_groups(TrainConfig(), bad, mods)



# Two gloo ranks: the groups name the original parameters, which the trainer maps to the
# tensors DDP steps (the same) or FSDP steps (its sharded copies, by name).
DIST_SCRIPT = '''
import json, sys
from pathlib import Path
import torch
from safetensors.torch import save_file
sys.path.insert(0, sys.argv[3])
from test_param_groups import TwoPlayers
from gaf.runs import RunContext
from gaf.spec import resolve
from gaf.registry import Registry
from gaf.train import train

torch.set_num_threads(1)
out, sets = Path(sys.argv[1]), json.loads(sys.argv[2])
registry = Registry(catalogue=None, autoload=False)
registry.add("objective", "o", TwoPlayers)
spec = resolve(objective="o", registry=registry, sets=sets)
obj = TwoPlayers(spec.objective_config)
(out / "run").mkdir(parents=True, exist_ok=True)
ctx = RunContext(spec, out / "run", registry=registry)
train(obj, ctx)
state = {f"{n}.{k}": v.detach().contiguous() for n, m in obj.modules().items()
         for k, v in m.state_dict().items()}
save_file(state, str(out / f"rank{ctx.world.rank}.safetensors"))
if ctx.world.enabled:
    from gaf.distributed import _leave
    _leave()
'''


@pytest.mark.slow
# (ddp as a benchmark, to keep the suite's time: fsdp, which shards the groups, is the
# harder case)
@pytest.mark.parametrize("parallel", [pytest.param("ddp", marks=pytest.mark.benchmark),
                                      "fsdp"])
def test_groups_under_two_ranks_equal_one_process(tmp_path, parallel):
    from pathlib import Path

    from safetensors.torch import load_file
    from torchrun_launch import run_script  # tests/ is on sys.path here, not in the ranks

    script = tmp_path / "script.py"
    script.write_text(DIST_SCRIPT)
    sets = ["progress=false", 'device="cpu"', "train.steps=4", "train.batch_size=8",
            "objective.dropout=0.0", "train.log_every=1", f"train.parallel={parallel}"]
    here = str(Path(__file__).parent)
    runs = {}
    for name, nproc in (("two", 2), ("one", 1)):
        done = run_script(script, [str(tmp_path / name), json.dumps(sets), here], nproc,
                          env={"OMP_NUM_THREADS": "1"})
        assert done.returncode == 0, done.stderr[-3000:]
        runs[name] = [load_file(str(tmp_path / name / f"rank{r}.safetensors"))
                      for r in range(nproc)]
    (r0, r1), (single,) = runs["two"], runs["one"]
    for k in single:
        assert torch.equal(r0[k], r1[k]), k
        assert torch.allclose(r0[k], single[k], atol=1e-5, rtol=0), k
    saved = json.loads((checkpoint.latest_checkpoint(tmp_path / "two" / "run" / "checkpoints")
                        / "state.json").read_text())["optimizer"]["param_groups"]
    assert [g["initial_lr"] for g in saved] == [LR_A, LR_B]
