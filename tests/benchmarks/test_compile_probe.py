"""benchmarks/compile_probe.py without compiling (CI cannot afford inductor's minutes):
``torch.compile`` is replaced by a recorder, so the tests check which calls the patch
sends to the compiled copy, that results are unchanged, that the patch comes off, the
alternation of ``steady`` and the whole-run summary reading. No timing is asserted."""

from __future__ import annotations

import json

import pytest
import torch

import gaf
from script_module import load_script  # tests/ is on sys.path (conftest)

probe = load_script("benchmarks/compile_probe.py")


@pytest.fixture
def recorded(monkeypatch):
    """``torch.compile`` as the probe sees it: returns the function itself, counting
    how often each compiled copy is made and called."""
    calls = {"made": 0, "called": 0}

    def fake_compile(fn, dynamic=None):
        calls["made"] += 1
        calls["dynamic"] = dynamic

        def compiled(*args, **kw):
            calls["called"] += 1
            return fn(*args, **kw)
        return compiled

    monkeypatch.setattr(probe.torch, "compile", fake_compile)
    probe.install()
    yield calls
    probe.uninstall()
    probe.ENABLED["on"] = False


def tiny_policy():
    torch.manual_seed(0)
    return gaf.create("policy", "gpt2-tiny", n_layer=2, n_head=2, d_model=16,
                      n_positions=32, tokenizer="byte").eval()


def test_blocks_take_the_compiled_copy_only_when_enabled_and_without_a_cache(recorded):
    policy = tiny_policy()
    ids = torch.randint(1, 200, (2, 7))
    with torch.no_grad():
        eager = policy(ids)
        assert recorded["called"] == 0
        probe.ENABLED["on"] = True
        assert torch.equal(policy(ids), eager)
        assert (recorded["made"], recorded["called"]) == (2, 2)  # one copy per block
        assert recorded["dynamic"] is True
        policy(ids[:, :5])
        assert (recorded["made"], recorded["called"]) == (2, 4)  # copies are reused
        _, cache = policy(ids[:, :6], use_cache=True)
        assert recorded["called"] == 6
        step = policy(ids[:, 6:], past_key_values=cache)  # token by token: eager
        assert recorded["called"] == 6
    assert torch.allclose(step[:, -1], eager[:, -1], atol=1e-5)


def test_the_unet_is_compiled_whole_with_static_shapes(recorded):
    from gaf.plugins.diffusion.unet import UNet, UNetConfig

    torch.manual_seed(0)
    unet = UNet(UNetConfig(in_channels=4, channels=(32,), layers_per_level=1,
                           attention_levels=(), mid_attention=False, context_dim=8,
                           norm_groups=8)).eval()
    x, t, c = torch.randn(2, 4, 8, 8), torch.tensor([3, 500]), torch.randn(2, 3, 8)
    with torch.no_grad():
        eager = unet(x, t, c)
        probe.ENABLED["on"] = True
        assert torch.equal(unet(x, t, c), eager)
    assert (recorded["made"], recorded["called"], recorded["dynamic"]) == (1, 1, False)


def test_uninstall_restores_the_classes():
    from gaf.plugins.diffusion.unet.model import UNet
    from gaf.plugins.lm.gpt2 import Block

    before = (Block.forward, UNet.forward)
    probe.install()
    assert (Block.forward, UNet.forward) != before
    probe.uninstall()
    assert (Block.forward, UNet.forward) == before


def test_steady_alternates_sides_and_swaps_the_order():
    sides = []
    row = probe.steady(lambda: sides.append(probe.ENABLED["on"]), rounds=2, block=3,
                       inference=False)
    # two eager warm-ups, two compiled (the first one the compile), then the rounds
    expected = [False, False, True, True] + [False] * 3 + [True] * 6 + [False] * 3
    assert sides == expected
    assert probe.ENABLED["on"] is False
    assert set(row) == {"compile_s", "eager_ms", "compiled_ms", "ratio",
                        "compiled_faster_rounds", "rounds"}
    assert row["rounds"] == 2 and 0 <= row["compiled_faster_rounds"] <= 2


def test_whole_run_reads_every_stage_summary(tmp_path):
    for rel, data in {".": {"train_s": 3.0, "eval_s": 1.0, "wall_s": 5.0, "peak_rss_mb": 9.5,
                            "win_rate": 0.75, "steps": 10},
                      "sft": {"train_s": 1.0, "eval_s": 0.0, "wall_s": 1.5,
                              "peak_rss_mb": 8.0, "mean_reward": 0.5}}.items():
        (tmp_path / rel).mkdir(exist_ok=True)
        (tmp_path / rel / "summary.json").write_text(json.dumps(data))
    stages = probe._stages(tmp_path)
    assert stages == {
        ".": {"train_s": 3.0, "eval_s": 1.0, "wall_s": 5.0, "peak_rss_mb": 9.5,
              "win_rate": 0.75},
        "sft": {"train_s": 1.0, "eval_s": 0.0, "wall_s": 1.5, "peak_rss_mb": 8.0,
                "mean_reward": 0.5}}
