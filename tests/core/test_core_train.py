"""The shared training loop: run directory, exact resume, non-finite losses, LR schedule."""

from __future__ import annotations

import json
import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import gaf
from gaf import checkpoint
from gaf.atomic import load_tensors
from gaf.config import read_toml
from gaf.errors import BadData, NonFiniteLoss
from gaf.launch import execute
from gaf.registry import Registry
from gaf.spec import resolve
from gaf.train import TrainConfig, lr_factor

from toy_objective import Toy  # noqa: E402  (tests/core is on sys.path via conftest)


@pytest.fixture()
def registry():
    r = Registry(catalogue=None, autoload=False)
    r.add("objective", "toy", Toy)
    return r


def spec_for(registry, tmp_path, *sets):
    return resolve(objective="toy", sets=[f"out_dir={json.dumps(str(tmp_path))}", "progress=false",
                                          *sets], registry=registry)


def weights(run_dir):
    ckpt = checkpoint.latest_checkpoint(run_dir / "checkpoints")
    return load_tensors(ckpt / "modules.safetensors")


def test_run_directory_layout(registry, tmp_path):
    run_dir, summary = execute(spec_for(registry, tmp_path), registry=registry)
    for name in ("config.toml", "metrics.jsonl", "summary.json", "checkpoints/latest.json",
                 "plots/training.png"):
        assert (run_dir / name).is_file(), name
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == list(range(1, 21))
    assert sum(r["loss"] for r in records[-5:]) < sum(r["loss"] for r in records[:5]) / 2
    assert summary["status"] == "completed" and summary["final_mse"] < records[0]["loss"] / 2
    assert json.loads((run_dir / "summary.json").read_text())["steps"] == 20
    assert summary["examples_per_s"] > 0 and summary["wall_s"] >= summary["train_s"]
    import resource  # the process's own peak, in MiB (Linux reports KiB)

    assert summary["peak_rss_mb"] == pytest.approx(
        resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, abs=64)


def test_config_toml_reproduces_the_run(registry, tmp_path):
    spec = spec_for(registry, tmp_path, "train.lr=0.01", "objective.n=32", "seed=3")
    run_dir, _ = execute(spec, registry=registry)
    again = resolve(read_toml(run_dir / "config.toml"), registry=registry)
    assert again.to_dict() == spec.to_dict()
    again.name = "second"
    run2, _ = execute(again, registry=registry)
    assert torch.equal(weights(run_dir)["model.1.weight"], weights(run2)["model.1.weight"])


class Crash(Exception):
    pass


class CrashAt:
    def __init__(self, step):
        self.step = step

    @gaf.hookimpl
    def gaf_step_end(self, step):
        if step == self.step:
            raise Crash(step)


def test_resume_is_bit_identical(registry, tmp_path):
    full, _ = execute(spec_for(registry, tmp_path / "a", "train.save_every=5"), registry=registry)
    spec = spec_for(registry, tmp_path / "b", "train.save_every=5")
    crasher = CrashAt(13)
    gaf.hooks.register(crasher)
    try:
        with pytest.raises(Crash):
            execute(spec, registry=registry)
    finally:
        gaf.hooks.unregister(crasher)
    (interrupted,) = [p for p in (tmp_path / "b").iterdir() if not p.is_symlink()]
    assert json.loads((interrupted / "checkpoints/latest.json").read_text())["step"] == 10
    _, summary = execute(spec, resume=interrupted, registry=registry)
    a, b = weights(full), weights(interrupted)
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    steps = [json.loads(x)["step"] for x in (interrupted / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 21))  # records after the checkpoint were redone, not doubled
    assert summary["status"] == "completed"


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(registry, tmp_path):
    spec = spec_for(registry, tmp_path, "train.save_every=4", "objective.nan_from=9")
    with pytest.raises(NonFiniteLoss, match="step 10") as info:
        execute(spec, registry=registry)
    (run_dir,) = [p for p in tmp_path.iterdir() if not p.is_symlink()]
    assert "step-00000008" in str(info.value)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "failed"
    latest = checkpoint.latest_checkpoint(run_dir / "checkpoints")
    assert latest.name == "step-00000008"
    assert all(torch.isfinite(t).all() for t in weights(run_dir).values())


def test_grad_accumulation_matches_a_big_batch(registry, tmp_path):
    common = ("train.steps=3", "train.max_grad_norm=0", "objective.dropout=0.0")
    big, _ = execute(spec_for(registry, tmp_path / "a", "train.batch_size=16", *common),
                     registry=registry)
    acc, _ = execute(spec_for(registry, tmp_path / "b", "train.batch_size=8", "train.grad_accum=2",
                              *common), registry=registry)
    one, _ = execute(spec_for(registry, tmp_path / "c", "train.batch_size=8", *common),
                     registry=registry)
    a, b, c = weights(big), weights(acc), weights(one)
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-5, atol=1e-6)
    assert not torch.allclose(a["model.1.weight"], c["model.1.weight"])


@given(warmup=st.integers(0, 50), steps=st.integers(51, 500), step=st.integers(0, 600))
def test_lr_schedule_closed_forms(warmup, steps, step):
    for schedule in ("constant", "linear", "cosine"):
        cfg = TrainConfig(steps=steps, warmup_steps=warmup, schedule=schedule)
        f = lr_factor(cfg, step)
        assert 0.0 <= f <= 1.0
        if step < warmup:
            assert f == pytest.approx((step + 1) / warmup)
        elif schedule == "constant":
            assert f == 1.0
        else:
            progress = min(1.0, (step - warmup) / (steps - warmup))
            want = 1 - progress if schedule == "linear" else 0.5 * (1 + math.cos(math.pi * progress))
            assert f == pytest.approx(want)


def test_a_run_that_fails_before_training_leaves_no_directory(registry, tmp_path):
    class Broken(Toy):
        def setup(self, ctx):
            raise BadData("no examples", path="data.jsonl", line=3, field="prompt")

    registry.add("objective", "broken", Broken)
    spec = resolve(objective="broken", sets=[f"out_dir={json.dumps(str(tmp_path))}",
                                             "progress=false"], registry=registry)
    with pytest.raises(BadData, match="data.jsonl:3: field 'prompt': no examples"):
        execute(spec, registry=registry)
    assert list(tmp_path.iterdir()) == []


def test_resume_records_set_changes(registry, tmp_path):
    run_dir, _ = execute(spec_for(registry, tmp_path, "train.steps=4"), registry=registry)
    from gaf.launch import load_run_spec

    spec = load_run_spec(run_dir, ("train.steps=6",), registry=registry)
    _, summary = execute(spec, resume=run_dir, registry=registry)
    assert summary["steps"] == 6
    assert read_toml(run_dir / "config.toml")["train"]["steps"] == 6
    assert "name" not in read_toml(run_dir / "config.toml")


def test_resumed_optimizer_state_takes_the_layout_of_channels_last_parameters(tmp_path):
    """Checkpoints hold contiguous tensors; fused AdamW on a channels-last weight with
    contiguous state computes a wrong step unless the state is given the weight's layout."""
    from gaf.train import make_optimizer

    def build():
        torch.manual_seed(0)
        conv = torch.nn.Conv2d(3, 4, 3)
        conv.weight.data = conv.weight.data.contiguous(memory_format=torch.channels_last)
        return conv, make_optimizer(TrainConfig(lr=1e-2), list(conv.parameters()))

    x = torch.randn(2, 3, 6, 6)

    def step(conv, opt):
        opt.zero_grad()
        conv(x).pow(2).mean().backward()
        opt.step()

    conv, opt = build()
    assert opt.param_groups[0]["fused"]
    step(conv, opt)
    ckpt = checkpoint.save_training_state(tmp_path, 1, {"m": conv}, opt, None)
    step(conv, opt)
    again, opt2 = build()
    checkpoint.load_module_weights(ckpt, {"m": again})
    opt2.load_state_dict(checkpoint.read_optimizer_state(ckpt))
    assert opt2.state[again.weight]["exp_avg"].is_contiguous()  # as stored
    checkpoint.match_state_layout(opt2)
    assert opt2.state[again.weight]["exp_avg"].stride() == again.weight.stride()
    step(again, opt2)
    assert torch.equal(conv.weight, again.weight) and torch.equal(conv.bias, again.bias)


@pytest.mark.parametrize("precision, on", [("auto", False), ("fp32", False), ("bf16", True)])
def test_precision_bf16_runs_the_loss_under_autocast_on_cpu_too(registry, tmp_path,
                                                                monkeypatch, precision, on):
    seen = []
    loss = Toy.loss

    def spy(self, batch):
        seen.append((torch.is_autocast_enabled("cpu"), torch.get_autocast_dtype("cpu")))
        return loss(self, batch)

    monkeypatch.setattr(Toy, "loss", spy)
    _, summary = execute(spec_for(registry, tmp_path, 'device="cpu"',
                                  f'train.precision="{precision}"', "train.steps=3"),
                         registry=registry)
    assert summary["status"] == "completed" and len(seen) == 3
    assert all(enabled == on for enabled, _ in seen)
    if on:
        assert all(dtype == torch.bfloat16 for _, dtype in seen)
