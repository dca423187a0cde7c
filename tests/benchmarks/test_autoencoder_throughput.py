"""benchmarks/autoencoder_throughput.py: the images it writes for the diffusers peer are
the default run's images, in the order its timed loop trains on them; its output line has
its fields (and, with ``--no-cost``, no other line); its cost lines count exactly the
timed work's FLOPs; and the peer (benchmarks/autoencoder_diffusers_peer.py, read as text:
the suite's venv has no diffusers) is configured as gaf's default ``kl-vae`` and
objective. No timing is asserted."""

from __future__ import annotations

import ast
import math

import torch

import gaf
from gaf.plugins.autoencoders import KLConfig
from gaf.plugins.images.batches import stack_images
from gaf.seeding import EpochOrder
from gaf.spec import resolve
from gaf.train import lr_factor
from cost_pass import CostPass, cost_fields  # tests/ is on sys.path (conftest)
from script_module import ROOT, load_script  # tests/ is on sys.path (conftest)

bench = load_script("benchmarks/autoencoder_throughput.py")
PEER = ROOT / "benchmarks/autoencoder_diffusers_peer.py"
TINY = ["2", "2", "--warmup", "0", "--eval-batch", "4", "--eval-steps", "1",
        "--threads", "1", "--system-malloc"]


def peer_names() -> dict:
    """The peer's module-level constants and its ``lr_factor`` (run from its source)."""
    tree = ast.parse(PEER.read_text())
    keep = [node for node in tree.body if isinstance(node, ast.FunctionDef)
            and node.name == "lr_factor" or isinstance(node, ast.Assign)]
    names: dict = {"math": math}
    exec(compile(ast.Module(keep, type_ignores=[]), str(PEER), "exec"), names)
    return names


def test_the_written_images_are_the_default_runs_and_the_loop_trains_on_them(
        tmp_path, capsys, monkeypatch):
    path = tmp_path / "images.pt"
    bench.main([*TINY, "--write-images", str(path)])
    data = torch.load(path, weights_only=True)
    assert data["train"].shape == (2, 2, 3, 32, 32) and data["eval"].shape == (4, 3, 32, 32)
    # the default run's dataset and order, rebuilt here without the script's code
    train_ds = gaf.create("dataset", "shapes")
    order = EpochOrder(len(train_ds), resolve(objective="autoencoder").seed,
                       "autoencoder-order")
    for i in range(2):
        assert torch.equal(data["train"][i], stack_images(train_ds, order.slice(2 * i, 2)))
    eval_ds = gaf.create("dataset", "shapes", split="eval")
    assert torch.equal(data["eval"], stack_images(eval_ds, range(4)))

    seen = []
    real_step = bench._step

    def recording_step(objective, ctx, opt, params, step, last_good):
        seen.append(objective.train_batch(step - 1)["image"])
        return real_step(objective, ctx, opt, params, step, last_good)

    monkeypatch.setattr(bench, "_step", recording_step)
    result = bench.main([*TINY, "--no-cost"])
    assert torch.equal(torch.stack(seen), data["train"])
    line = capsys.readouterr().out.strip()
    assert line.startswith("gaf_autoencoder ") and len(line.splitlines()) == 1  # no cost
    fields = dict(f.split("=", 1) for f in line.split()[1:])
    assert float(fields["images_sum"]) == round(
        float(data["train"].double().sum() + data["eval"].double().sum()), 4)
    assert (fields["steps"], fields["batch"], fields["warmup"]) == ("2", "2", "0")
    assert (fields["eval_steps"], fields["eval_batch"], fields["resolution"]) == ("1", "4", "32")
    assert float(fields["train_img_per_s"]) > 0 and float(fields["eval_img_per_s"]) > 0
    assert float(fields["last_loss"]) == float(f"{result['last_loss']:.6g}") > 0
    assert result["eval_l1"] > 0 and fields["params"] == "680143"
    assert fields["tune_malloc"] == "False"


def test_the_cost_lines_count_the_timed_work(capsys, monkeypatch):
    with CostPass(monkeypatch, bench) as cost:  # warm-up 0: only the timed work counts
        bench.main(TINY)
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3 and lines[0].startswith("gaf_autoencoder ")
    for line, name, unit in zip(lines[1:], ("train", "eval"), ("step", "call")):
        head, fields = cost_fields(line)
        assert head == f"gaf_autoencoder_{name}_cost" and fields["unit"] == unit
        assert set(fields) == {"unit", "gflop_per_unit", "achieved_gflops",
                               *bench.step_cost.CATEGORIES}
        assert float(fields["gflop_per_unit"]) > 0
    assert [c["units"] for c in cost.calls] == [2, 1]  # STEPS, --eval-steps
    # the 2 timed training steps and the 1 timed encode+decode, counted as they ran
    assert math.isclose(cost.timed_flops, cost.counted_flops(), rel_tol=1e-9)


def test_the_peer_is_configured_as_gafs_default_run():
    peer = peer_names()
    spec = resolve(objective="autoencoder")
    ae_cfg = KLConfig(**spec.components["autoencoder"].options)
    cfg = peer["CONFIG"]
    assert spec.components["autoencoder"].name == "kl-vae"
    assert cfg["block_out_channels"] == tuple(ae_cfg.base_channels * m for m in ae_cfg.mult)
    assert len(cfg["down_block_types"]) == len(cfg["up_block_types"]) == ae_cfg.levels
    assert cfg["layers_per_block"] == ae_cfg.num_res_blocks
    assert cfg["latent_channels"] == ae_cfg.latent_channels
    assert cfg["norm_num_groups"] == ae_cfg.num_groups
    assert cfg["mid_block_add_attention"] == ae_cfg.attention
    assert cfg["in_channels"] == cfg["out_channels"] == ae_cfg.in_channels
    assert cfg["sample_size"] == spec.components["dataset"].options["resolution"]
    assert ae_cfg.dropout == 0.0
    params = sum(p.numel() for p in gaf.create("autoencoder", "kl-vae").parameters())
    assert peer["PARAMS"] == params and f"{params:,}" in PEER.read_text()

    obj, train = spec.objective_config, spec.train
    assert (obj.rec_loss, obj.kl_weight, obj.disc_start) == ("l1", peer["KL_WEIGHT"],
                                                              peer["DISC_START"])
    assert train.optimizer == "adamw" and train.max_grad_norm == 0.0
    assert (train.lr, tuple(train.betas), train.weight_decay) == (
        peer["LR"], peer["BETAS"], peer["WEIGHT_DECAY"])
    assert (train.warmup_steps, train.steps, train.schedule) == (
        peer["WARMUP_STEPS"], peer["TOTAL_STEPS"], "cosine")
    for step in (0, 1, 19, 20, 21, 500, 1199, 1999, 2000):
        assert math.isclose(peer["lr_factor"](step), lr_factor(train, step), abs_tol=1e-12)
