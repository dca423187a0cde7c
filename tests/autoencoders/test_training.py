"""The ``autoencoder`` objective: loss pieces against closed forms, the one-optimiser
GAN split, a short overfit, an end-to-end run and ``gaf eval``."""

from __future__ import annotations

import json
import math
import re

import pytest
import torch
from click.testing import CliRunner

import gaf
from gaf.cli import main
from gaf.config import OptionError
from gaf.plugins.autoencoders.losses import (adaptive_weight, frozen_call, hinge_d_loss,
                                                      hinge_g_loss, kl_per_pixel,
                                                      reconstruction_loss)
from gaf.plugins.autoencoders.training import (AutoencoderTraining,
                                                        AutoencoderTrainingConfig)
from gaf.plugins.autoencoders import PatchDiscriminator

TINY = {"base_channels": 8, "num_groups": 4, "num_res_blocks": 0}


def test_hinge_losses_closed_forms():
    real = torch.tensor([2.0, 0.5, -1.0, 0.0])
    fake = torch.tensor([-2.0, -0.5, 1.0, 0.0])
    # relu(1 - real) = [0, .5, 2, 1] -> mean .875; relu(1 + fake) = [0, .5, 2, 1] -> .875
    assert float(hinge_d_loss(real, fake)) == pytest.approx(0.5 * (0.875 + 0.875))
    assert float(hinge_d_loss(torch.full((3,), 5.0), torch.full((3,), -5.0))) == 0.0
    assert float(hinge_g_loss(fake)) == pytest.approx(0.375)  # -mean(fake) = 1.5 / 4
    x, y = torch.tensor([[1.0, -1.0]]), torch.tensor([[0.5, 0.0]])
    assert float(reconstruction_loss(x, y, "l1")) == pytest.approx(0.75)
    assert float(reconstruction_loss(x, y, "l2")) == pytest.approx((0.25 + 1.0) / 2)
    assert float(kl_per_pixel(torch.tensor([30.0, 90.0]), 3 * 4 * 5)) == pytest.approx(1.0)


def test_adaptive_weight_matches_a_direct_autograd_computation():
    torch.manual_seed(0)
    last = torch.nn.Conv2d(4, 3, 3, padding=1)
    disc = PatchDiscriminator(3, 8, n_layers=1)
    h, x = torch.randn(2, 4, 8, 8), torch.randn(2, 3, 8, 8)

    def losses():
        rec = last(h)
        return (rec - x).abs().mean(), hinge_g_loss(frozen_call(disc, rec))

    rec_loss, g_loss = losses()
    w = adaptive_weight(rec_loss, g_loss, last.weight)
    r, g = losses()
    (gr,) = torch.autograd.grad(r, last.weight)
    r, g = losses()
    (gg,) = torch.autograd.grad(g, last.weight)
    expected = gr.double().norm() / (gg.double().norm() + 1e-4)
    assert float(w) == pytest.approx(float(expected), rel=1e-5)
    assert not w.requires_grad
    # the graph survives for the real backward pass
    (rec_loss + w * g_loss).backward()
    assert last.weight.grad is not None
    # a GAN loss without gradient at the last layer hits the clamp
    zero = (last(h) * 0.0).sum()
    assert float(adaptive_weight(last(h).abs().mean(), zero, last.weight)) <= 1e4


def test_frozen_call_passes_gradient_to_the_input_only():
    disc = PatchDiscriminator(3, 8, n_layers=1)
    x = torch.randn(2, 3, 8, 8, requires_grad=True)
    out = frozen_call(disc, x)
    torch.testing.assert_close(out, disc(x))
    out.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert all(p.grad is None for p in disc.parameters())


def _objective(name: str, **options):
    obj = AutoencoderTraining(AutoencoderTrainingConfig(**options))
    torch.manual_seed(0)
    obj.autoencoder = gaf.create("autoencoder", name, **TINY)
    obj.discriminator = PatchDiscriminator(3, 8, n_layers=2)
    return obj


def _grads(modules):
    return {f"{i}.{n}": (p.grad.clone() if p.grad is not None else None)
            for i, m in enumerate(modules) for n, p in m.named_parameters()}


@pytest.mark.parametrize("name", ["kl-vae", "vqgan"])
def test_one_optimizer_gan_split(name):
    """The summed loss gives D exactly the hinge-loss gradient and the autoencoder
    exactly the gradient of rec + KL/VQ + lambda * GAN."""
    obj = _objective(name, disc_start=3, disc_weight=0.8,
                     **({"codebook_weight": 1.0} if name == "vqgan" else {}))
    if name == "vqgan":  # a trainable codebook, so the VQ term has codebook gradients too
        obj.autoencoder = gaf.create("autoencoder", "vqgan", ema=False, restart_after=0, **TINY)
    ae, d = obj.autoencoder, obj.discriminator
    x = torch.rand(4, 3, 16, 16) * 2 - 1
    batch = {"image": x, "step": 3}
    assert obj.gan_active(3) and not obj.gan_active(2)

    torch.manual_seed(5)
    loss, metrics = obj.loss(batch)
    loss.backward()
    total = _grads([ae, d])
    assert {"g_loss", "d_loss", "d_weight", "rec_loss"} <= set(metrics)
    ae.zero_grad(set_to_none=True)
    d.zero_grad(set_to_none=True)

    torch.manual_seed(5)  # the same posterior sample
    g_total, rec, g_metrics = obj.generator_loss(x, 3)
    g_total.backward()
    gen_only = _grads([ae, d])
    assert all(v is None for k, v in gen_only.items() if k.startswith("1."))  # D untouched
    # L_G = rec + reg + lambda * g_loss, lambda = disc_weight * adaptive ratio
    assert g_metrics["d_weight"] == pytest.approx(metrics["d_weight"], rel=1e-5)
    ae.zero_grad(set_to_none=True)

    d_loss, _ = obj.discriminator_loss(x, rec)
    d_loss.backward()
    disc_only = _grads([ae, d])
    assert all(v is None for k, v in disc_only.items() if k.startswith("0."))  # AE untouched
    for key, value in total.items():
        ref = gen_only[key] if key.startswith("0.") else disc_only[key]
        if ref is None:
            assert value is None or value.abs().max() == 0, key
        else:
            torch.testing.assert_close(value, ref, rtol=1e-4, atol=1e-7, msg=key)
    expected = metrics["rec_loss"] + metrics["d_weight"] * metrics["g_loss"] + metrics["d_loss"]
    if name == "kl-vae":
        expected += 1e-6 * metrics["kl"] / (3 * 16 * 16)
    else:
        expected += metrics["vq_loss"]
    assert loss.item() == pytest.approx(expected, rel=1e-5)


def test_before_disc_start_there_is_no_gan_term():
    obj = _objective("kl-vae", disc_start=10)
    x = torch.rand(2, 3, 8, 8) * 2 - 1
    loss, metrics = obj.loss({"image": x, "step": 9})
    assert "g_loss" not in metrics and "d_loss" not in metrics
    loss.backward()
    assert all(p.grad is None for p in obj.discriminator.parameters())


def test_thirty_steps_overfit_a_handful_of_images():
    obj = _objective("kl-vae", disc_start=10**6)
    torch.manual_seed(0)
    x = torch.rand(4, 3, 16, 16) * 2 - 1
    x = torch.nn.functional.avg_pool2d(x, 4).repeat_interleave(4, -1).repeat_interleave(4, -2)
    opt = torch.optim.Adam(obj.autoencoder.parameters(), lr=3e-3)
    first = None
    for step in range(30):
        loss, metrics = obj.loss({"image": x, "step": step})
        opt.zero_grad()
        loss.backward()
        opt.step()
        first = metrics["rec_loss"] if first is None else first
    assert metrics["rec_loss"] < 0.6 * first


def _run(tmp_path, name, *sets):
    return gaf.run("autoencoder", autoencoder=name, dataset="shapes", sets=[
        f"out_dir={tmp_path}", f"name={name}", "train.steps=4", "train.batch_size=4",
        "train.log_every=1", "objective.disc_start=2", "objective.eval_images=24",
        "objective.eval_batch_size=12", "objective.scale_images=16", "objective.grid_images=4",
        "dataset.resolution=16", "dataset.size=64",
        *(f"autoencoder.{k}={v}" for k, v in TINY.items()), *sets])


@pytest.mark.filterwarnings("ignore:FD from 24 samples")  # tiny sample: singular covariances
def test_end_to_end_run_writes_the_run_directory_and_metrics(tmp_path):
    run_dir, summary = _run(tmp_path, "kl-vae", "objective.fd_epochs=1",
                            "objective.fd_train_images=64")
    assert summary["status"] == "completed"
    for key in ("psnr", "ssim", "eval_l1", "scale_factor", "latent_std", "rfd", "rfd_floor",
                "feature_accuracy", "autoencoder_parameters", "discriminator_parameters"):
        assert key in summary, key
    assert (run_dir / "samples" / "reconstructions.png").is_file()
    assert (run_dir / "features" / "feature_net.json").is_file()
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert "d_loss" not in records[1] and "d_loss" in records[2]  # GAN from step index 2
    ae = gaf.load("autoencoder", run_dir)
    assert ae.scale_factor_fitted and ae.scale_factor == pytest.approx(summary["scale_factor"])

    # gaf eval re-runs the evaluation on the saved model
    result = CliRunner().invoke(main, ["eval", str(run_dir), "--json"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    again = json.loads(result.output.strip().splitlines()[-1])
    assert again["psnr"] == pytest.approx(summary["psnr"], rel=1e-6)
    assert again["rfd"] == pytest.approx(summary["rfd"], rel=1e-6)
    assert again["scale_factor"] == pytest.approx(summary["scale_factor"])
    assert json.loads((run_dir / "eval.json").read_text())["psnr"] == again["psnr"]


def test_end_to_end_vqgan_reports_codebook_usage(tmp_path):
    run_dir, summary = _run(tmp_path, "vqgan", "objective.fd=false", "autoencoder.n_embed=16")
    assert 0 < summary["codebook_usage"] <= 1 and 1 <= summary["perplexity"] <= 16
    assert "rfd" not in summary and summary["psnr"] > 0
    assert gaf.load("autoencoder", run_dir).scale_factor_fitted


@pytest.mark.parametrize("options, message", [
    ({"kl_weight": -1.0}, "kl_weight must be >= 0, got -1"),
    ({"disc_weight": math.nan}, "disc_weight must be >= 0, got nan"),
    ({"disc_factor": math.inf}, "disc_factor must be finite, got inf"),
    ({"disc_start": -1}, "disc_start must be >= 0, got -1"),
    ({"disc_layers": 0}, "disc_layers must be >= 1, got 0"),
    ({"fd_epochs": 0}, "fd_epochs must be >= 1, got 0"),
    ({"grid_images": -1}, "grid_images must be >= 0, got -1"),
    ({"rec_loss": "l3"}, "rec_loss must be one of: l1, l2, got 'l3'"),
])
def test_autoencoder_options_are_declared(options, message):
    with pytest.raises(OptionError, match=f"^{re.escape(message)}$"):
        AutoencoderTrainingConfig(**options)


def test_a_bad_option_exits_2_from_the_cli():
    result = CliRunner().invoke(main, ["run", "--objective", "autoencoder",
                                       "--set", "objective.kl_weight=nan"])
    assert result.exit_code == 2, result.output
    assert "objective autoencoder: kl_weight must be >= 0, got nan" in result.output
    assert "Traceback" not in result.output


def test_gaf_eval_usage_errors(tmp_path):
    runner = CliRunner()
    result = runner.invoke(main, ["eval", str(tmp_path / "missing")])
    assert result.exit_code == 2 and "not a run directory" in result.output
    (tmp_path / "run").mkdir()
    result = runner.invoke(main, ["eval", str(tmp_path / "run")])
    assert result.exit_code == 2 and "no config.toml" in result.output


def test_gaf_eval_help_does_not_import_torch():
    import subprocess
    import sys

    code = ("import sys\nfrom gaf.cli import main\ntry:\n    main(['eval', '--help'])\n"
            "except SystemExit as exc:\n    assert not exc.code, exc.code\n"
            "assert 'torch' not in sys.modules\nprint('TORCH-FREE')\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "TORCH-FREE" in out.stdout and "RUN_DIR" in out.stdout


@pytest.mark.filterwarnings("ignore:FD from 24 samples")  # tiny sample: singular covariances
def test_rfd_feature_net_variant_is_an_option(tmp_path):
    # default: the layout net of the text-to-image evaluation; pooled: the version-1 net
    # of the rFD figures measured before issue 15
    assert AutoencoderTrainingConfig().fd_features == "layout"
    with pytest.raises(OptionError, match="fd_features"):
        AutoencoderTrainingConfig(fd_features="pool")
    run_dir, summary = _run(tmp_path, "kl-vae", "objective.fd_epochs=1",
                            "objective.fd_train_images=64", "objective.fd_features=pooled")
    meta = json.loads((run_dir / "features" / "feature_net.json").read_text())
    assert meta["config"]["variant"] == "pooled" and math.isfinite(summary["rfd"])
