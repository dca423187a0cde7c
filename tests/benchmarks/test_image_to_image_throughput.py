"""benchmarks/image_to_image_throughput.py: the data it writes for the diffusers peer is
what its timed loop trains on and samples from, its first timed step's loss is its
printed check (the fresh UNet predicts zeros), its output line has its fields, its cost
lines count the timed work's FLOPs, and the
peer script's model, scheduler and training constants are the objective's defaults (the
peer itself needs the peer venv and is only read here; no timing is asserted)."""

from __future__ import annotations

import ast
import math
from pathlib import Path

import pytest
import torch

from gaf.plugins.t2i.image_to_image.objective import I2I_UNET, ImageToImage
from gaf.train import TrainConfig
from cost_pass import CostPass, cost_fields  # tests/ is on sys.path (conftest)
from script_module import ROOT, load_script  # tests/ is on sys.path (conftest)

bench = load_script("benchmarks/image_to_image_throughput.py")
PEER = ROOT / "benchmarks" / "image_to_image_diffusers_peer.py"
TINY = ["--batch", "2", "--sample-batch", "3", "--sample-steps", "1", "--threads",
        str(torch.get_num_threads())]  # leave the suite's thread count as it is


@pytest.fixture(scope="module")
def obj():
    return bench.build("inpainting", 2)


def test_the_written_data_is_what_the_loop_trains_on_and_samples(tmp_path, obj):
    path = tmp_path / "data.pt"
    assert bench.main([*TINY, "--train-steps", "2", "--warmup", "1",
                       "--write-data", str(path)]) == {}
    data = torch.load(path, weights_only=True)
    assert (data["task"], data["batch"], data["train_steps"], data["warmup"],
            data["sample_batch"], data["sample_steps"]) == ("inpainting", 2, 2, 1, 3, 1)
    assert data["shape"] == [3, 32, 32] and data["mask_kinds"] == ["box", "grid", "stroke"]
    assert data["params"] == bench.params(obj.noise_model)
    batches = bench.draw(obj, 3)  # the objective's own draws, warm-up included
    stored = data["batches"]
    assert stored["t"].shape == (3, 2)
    for i, batch in enumerate(batches):
        for key in ("z0", "t", "noise", "drop", "masks"):
            assert torch.equal(stored[key][i], batch[key]), (i, key)
        states = data["states"][stored["rows"][i]]
        assert torch.equal(states, obj.encode_conditions(batch["conditions"]))
    assert bool(stored["masks"].any()) and not bool(stored["masks"].all())
    source, masks, captions = bench.sampling_inputs(obj, 3)
    smp = data["sample"]
    assert torch.equal(smp["source"], source) and torch.equal(smp["masks"], masks)
    assert torch.equal(data["states"][smp["rows"]], obj.conditioner(captions))
    assert data["states"].shape[1:] == (24, 64)


def test_a_timed_run_prints_its_line_and_its_first_loss_is_its_check(capsys):
    result = bench.main([*TINY, "--train-steps", "1", "--warmup", "0", "--no-cost"])
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 1 and lines[0].startswith("gaf_i2i ")  # no cost lines
    fields = dict(f.split("=", 1) for f in lines[0].split()[1:])
    assert set(fields) == set(result)
    assert fields["params"] == "1248835" and fields["task"] == "inpainting"
    assert (fields["batch"], fields["sample_batch"], fields["train_steps"], fields["warmup"],
            fields["sample_steps"]) == ("2", "3", "1", "0", "1")
    assert float(fields["train_img_per_s"]) > 0 and float(fields["sample_img_per_s"]) > 0
    assert math.isclose(result["sample_img_per_s"], 3 / result["sample_s"])
    # one step from a fresh UNet (zero output): its loss is the zero prediction's
    assert math.isclose(result["last_loss"], result["check_loss"], rel_tol=1e-6)
    assert 0 < result["check_concat"] and 0 < result["check_context"]
    assert 0 < result["sample_abs"] <= 1 and result["tune_malloc"] is True


@pytest.mark.benchmark  # a long check of the script's cost line: pytest -m benchmark
def test_the_cost_lines_count_the_timed_work(capsys, monkeypatch):
    counted, real_train = [], bench.train

    def recording_train(*args):
        counted.append(cost.flops())
        out = real_train(*args)
        counted.append(cost.flops())
        return out

    monkeypatch.setattr(bench, "train", recording_train)
    with CostPass(monkeypatch, bench) as cost:  # warm-up 0: only timed work after the start
        bench.main([*TINY, "--train-steps", "2", "--warmup", "0", "--sample-steps", "3"])
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3 and lines[0].startswith("gaf_i2i ")
    for line, name, unit in zip(lines[1:], ("train", "sample"), ("step", "call_1_step")):
        head, fields = cost_fields(line)
        assert head == f"gaf_i2i_{name}_cost" and fields["unit"] == unit
        assert set(fields) == {"unit", "gflop_per_unit", "achieved_gflops",
                               *bench.step_cost.CATEGORIES}
        assert float(fields["gflop_per_unit"]) > 0
    assert [c["units"] for c in cost.calls] == [2, 3]
    before, after = counted
    train, sample = (c["units"] * r["gflop_per_unit"] * 1e9
                     for c, r in zip(cost.calls, cost.costs))
    assert math.isclose(after - before, train, rel_tol=1e-9)  # the 2 timed steps: exact
    # the timed 3-step call: over by the call's own work the 2 more units repeat
    sampled = cost.timed_flops - after
    assert sampled < sample < 1.02 * sampled


def _constants(path: Path) -> dict:
    tree = ast.parse(path.read_text())
    imports = [a.name for node in ast.walk(tree) if isinstance(node, ast.Import)
               for a in node.names]
    imports += [node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)]
    assert not any(name.split(".")[0] == "gaf" for name in imports)  # the peer venv has none
    return {node.targets[0].id: ast.literal_eval(node.value) for node in tree.body
            if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name)
            and node.targets[0].id in ("UNET", "SCHEDULE", "TRAIN")}


def test_the_peer_builds_the_objectives_defaults(obj):
    peer = _constants(PEER)
    unet, sched = peer["UNET"], peer["SCHEDULE"]
    nm = obj.noise_model.config
    assert unet["block_out_channels"] == I2I_UNET["channels"] == nm.channels
    assert unet["in_channels"] == nm.in_channels + nm.concat_channels == 7
    assert unet["out_channels"] == nm.in_channels and unet["sample_size"] == 32
    assert unet["layers_per_block"] == nm.layers_per_level and not nm.level_layers
    levels = range(len(nm.channels))
    assert unet["down_block_types"] == tuple(
        "CrossAttnDownBlock2D" if i in nm.attention_levels else "DownBlock2D" for i in levels)
    assert unet["up_block_types"] == tuple(
        "CrossAttnUpBlock2D" if i in nm.attention_levels else "UpBlock2D"
        for i in reversed(levels))
    assert (unet["attention_head_dim"], unet["norm_num_groups"],
            unet["cross_attention_dim"]) == (nm.heads, nm.norm_groups, nm.context_dim)
    assert nm.mid_attention and nm.skip_scale == 1.0 and nm.time_embed_mult == 4
    for key, value in sched.items():
        assert getattr(obj.scheduler.config, key) == value, key
    tcfg = TrainConfig(**ImageToImage.train_defaults)
    assert peer["TRAIN"] == {"lr": tcfg.lr, "betas": tuple(tcfg.betas),
                             "weight_decay": tcfg.weight_decay,
                             "max_grad_norm": tcfg.max_grad_norm,
                             "warmup_steps": tcfg.warmup_steps, "steps": tcfg.steps,
                             "schedule": tcfg.schedule, "ema_decay": obj.config.ema_decay}
    count = f"{bench.params(obj.noise_model):,}"
    assert count in PEER.read_text() and count in bench.__doc__
