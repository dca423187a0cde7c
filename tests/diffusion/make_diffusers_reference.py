"""Record diffusers' DDPM/DDIM outputs into ``diffusers_reference.json`` (next to this file).

gaf does not depend on diffusers; ``test_schedulers.py`` compares gaf's schedulers with
this fixture. Regenerate it with the peers venv (diffusers + torch)::

    /tmp/gaf-peers/bin/python tests/diffusion/make_diffusers_reference.py

(``bash /work/shared/peers/setup.sh`` creates that venv when it is missing.) It records:

* ``timesteps``: ``set_timesteps(N)`` for each spacing, several N and steps_offset, for
  T = 1000 and every N of T = 50 (diffusers' raw list, including its occasional extra
  ``-1`` for ``trailing``, which gaf drops);
* ``schedules``: β_t and ᾱ_t at a few t for each beta_schedule, zero-SNR rescaling and
  explicit trained_betas;
* ``noise``: ``add_noise`` and ``get_velocity`` for a batch of timesteps;
* ``noise_shapes``: the same for every timestep shape diffusers broadcasts: 0-d, (1,)
  and (B, 1) tensors over the batch of 2, and a (2,) tensor over a batch of 1 (which
  gives 2 outputs);
* ``steps``: one ``step`` per case for fixed inputs (stored here too): DDIM with η = 0
  and η = 1 (with explicit ``variance_noise``), DDPM with the noise its generator drew
  (recorded), for each prediction type, clipping / thresholding, both variance types,
  leading / trailing / linspace spacing, set_alpha_to_one and zero-SNR. DDIM cases use
  only spacings where diffusers' ``t - T//N`` previous timestep is right (N divides T).
"""

from __future__ import annotations

import json
from pathlib import Path

import diffusers
import torch
from diffusers import DDIMScheduler, DDPMScheduler
from diffusers.utils.torch_utils import randn_tensor

OUT = Path(__file__).with_name("diffusers_reference.json")
SHAPE = (2, 2, 3, 3)


def floats(x) -> list:
    """A tensor as (nested) lists of floats with 9 significant digits (float32-exact)."""
    return [float(f"{v:.9g}") for v in torch.as_tensor(x, dtype=torch.float64).flatten().tolist()]


def timesteps_cases() -> list[dict]:
    cases = []
    for spacing in ("leading", "trailing", "linspace"):
        for n in (1, 2, 3, 7, 10, 25, 48, 50, 61, 96, 100, 250, 1000):
            offsets = (0, 1) if spacing == "leading" and n < 1000 else (0,)
            for offset in offsets:
                s = DDPMScheduler(num_train_timesteps=1000, timestep_spacing=spacing,
                                  steps_offset=offset)
                s.set_timesteps(n)
                cases.append({"T": 1000, "spacing": spacing, "N": n, "steps_offset": offset,
                              "timesteps": s.timesteps.tolist()})
        for n in range(1, 51):
            s = DDIMScheduler(num_train_timesteps=50, timestep_spacing=spacing)
            s.set_timesteps(n)
            cases.append({"T": 50, "spacing": spacing, "N": n, "steps_offset": 0,
                          "timesteps": s.timesteps.tolist()})
    return cases


SCHEDULES = [
    {},
    {"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012},
    {"beta_schedule": "squaredcos_cap_v2"},
    {"rescale_betas_zero_snr": True},
    {"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012,
     "rescale_betas_zero_snr": True},
    {"num_train_timesteps": 8, "trained_betas": [0.01, 0.02, 0.05, 0.1, 0.15, 0.2, 0.3, 0.5]},
]
INDICES = [0, 1, 2, 5, 10, 50, 100, 250, 500, 750, 900, 990, 998, 999]


def schedule_cases() -> list[dict]:
    cases = []
    for cfg in SCHEDULES:
        s = DDPMScheduler.from_config(cfg)
        T = s.config.num_train_timesteps
        idx = [i for i in INDICES if i < T]
        cases.append({"config": cfg, "t": idx, "betas": floats(s.betas[idx]),
                      "alphas_cumprod": floats(s.alphas_cumprod[idx])})
    return cases


def noise_cases(x0, noise) -> list[dict]:
    cases = []
    t = torch.tensor([10, 500])
    for cfg in SCHEDULES[:3]:
        s = DDPMScheduler.from_config(cfg)
        cases.append({"config": cfg, "t": t.tolist(),
                      "add_noise": floats(s.add_noise(x0, noise, t)),
                      "velocity": floats(s.get_velocity(x0, noise, t))})
    return cases


NOISE_SHAPES = (  # (timesteps, how many samples of x0/noise)
    (torch.tensor(10), 2), (torch.tensor([500]), 2), (torch.tensor([[10], [500]]), 2),
    (torch.tensor([10, 500]), 1))


def noise_shape_cases(x0, noise) -> list[dict]:
    s = DDPMScheduler()
    cases = []
    for t, batch in NOISE_SHAPES:
        out = s.add_noise(x0[:batch], noise[:batch], t)
        cases.append({"t": t.tolist(), "batch": batch, "out_shape": list(out.shape),
                      "add_noise": floats(out),
                      "velocity": floats(s.get_velocity(x0[:batch], noise[:batch], t))})
    return cases


def step_cases(sample, model_output, variance_noise) -> list[dict]:
    cases = []

    def ddim(cfg, n, which, eta=0.0):
        s = DDIMScheduler.from_config(cfg)
        s.set_timesteps(n)
        for i in which:
            t = int(s.timesteps[i])
            kwargs = {"variance_noise": variance_noise} if eta > 0 else {}
            out = s.step(model_output, t, sample, eta=eta, **kwargs)
            cases.append({"scheduler": "ddim", "config": cfg, "N": n, "t": t, "eta": eta,
                          "prev_sample": floats(out.prev_sample),
                          "pred_original_sample": floats(out.pred_original_sample)})

    def ddpm(cfg, n, which, seed=0):
        s = DDPMScheduler.from_config(cfg)
        s.set_timesteps(n)
        for i in which:
            t = int(s.timesteps[i])
            out = s.step(model_output, t, sample, generator=torch.Generator().manual_seed(seed))
            z = randn_tensor(SHAPE, generator=torch.Generator().manual_seed(seed))
            cases.append({"scheduler": "ddpm", "config": cfg, "N": n, "t": t,
                          "variance_noise": floats(z),
                          "prev_sample": floats(out.prev_sample),
                          "pred_original_sample": floats(out.pred_original_sample)})

    first_mid_last = (0, 4, 9)
    for pred in ("epsilon", "v_prediction", "sample"):
        for clip in (True, False):
            cfg = {"prediction_type": pred, "clip_sample": clip}
            ddim(cfg, 10, first_mid_last)
            ddpm(cfg, 10, first_mid_last)
        ddim({"prediction_type": pred, "clip_sample": False, "timestep_spacing": "trailing"},
             10, first_mid_last)
        ddim({"prediction_type": pred, "clip_sample": False}, 10, (2, 9), eta=1.0)
        ddpm({"prediction_type": pred, "clip_sample": False, "variance_type": "fixed_large"},
             10, (0, 4))
        ddpm({"prediction_type": pred, "clip_sample": False, "timestep_spacing": "linspace"},
             7, (0, 3, 6))
    sd = {"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012,
          "clip_sample": False, "set_alpha_to_one": False, "steps_offset": 1}
    ddim(sd, 50, (0, 25, 49))
    ddim({**sd, "prediction_type": "v_prediction"}, 50, (49,), eta=0.5)
    ddpm({**sd, "timestep_spacing": "trailing"}, 20, (0, 10, 19))
    zsnr = {"rescale_betas_zero_snr": True, "prediction_type": "v_prediction",
            "timestep_spacing": "trailing", "clip_sample": False}
    ddim(zsnr, 10, first_mid_last)
    ddpm(zsnr, 10, (0, 5))
    thr = {"thresholding": True, "sample_max_value": 1.5, "prediction_type": "sample"}
    ddim(thr, 10, (0, 9))
    ddpm({**thr, "dynamic_thresholding_ratio": 0.9}, 10, (3,))
    ddim({"beta_schedule": "squaredcos_cap_v2", "clip_sample_range": 0.8}, 25, (0, 12, 24))
    return cases


def main() -> None:
    g = torch.Generator().manual_seed(1234)
    sample = torch.randn(SHAPE, generator=g)
    model_output = 1.5 * torch.randn(SHAPE, generator=g)
    variance_noise = torch.randn(SHAPE, generator=g)
    x0 = torch.randn(SHAPE, generator=g).clamp(-1, 1)
    noise = torch.randn(SHAPE, generator=g)
    data = {
        "about": "diffusers reference outputs; regenerate with "
                 "/tmp/gaf-peers/bin/python tests/diffusion/make_diffusers_reference.py",
        "diffusers": diffusers.__version__, "torch": torch.__version__,
        "shape": list(SHAPE),
        "inputs": {"sample": floats(sample), "model_output": floats(model_output),
                   "variance_noise": floats(variance_noise), "x0": floats(x0),
                   "noise": floats(noise)},
        "timesteps": timesteps_cases(),
        "schedules": schedule_cases(),
        "noise": noise_cases(x0, noise),
        "noise_shapes": noise_shape_cases(x0, noise),
        "steps": step_cases(sample, model_output, variance_noise),
    }
    OUT.write_text(json.dumps(data, separators=(",", ":")) + "\n")
    print(f"wrote {OUT} ({OUT.stat().st_size / 1024:.0f} KB, {len(data['steps'])} steps)")


if __name__ == "__main__":
    main()
