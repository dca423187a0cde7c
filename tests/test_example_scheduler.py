"""The example scheduler package (examples/gaf-dpm-solver): DPM-Solver++(2M).

* the maths, importing the package from its source tree (no install): the first step
  is DDIM with η = 0; a step matches the paper's formula written with exp/log; on a
  Gaussian data distribution, whose probability-flow ODE is solved in closed form, the
  error falls ≈4× per doubling of the steps (second order) where DDIM's falls ≈2×;
  stateless use is first order; separate states make interleaved and threaded runs
  independent; configs from a ``ddpm`` run load;
* agreement with diffusers' ``DPMSolverMultistepScheduler(algorithm_type="dpmsolver++")``
  step by step (``tests/data/dpm_solver_reference.json``; the script that wrote it is
  stored in it under ``"script"``, with the command that regenerates it);
* packaging (slow): ``pip install --target`` and the CLI lists and shows the entry point.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch

from gaf.config import to_dict
from gaf.errors import BadConfig
from gaf.interfaces import Scheduler
from gaf.plugins.diffusion.schedulers import DDIMScheduler, DDPMScheduler, SchedulerConfig
from gaf.registry import Registry
from example_install import gaf_cli, install  # tests/ is on sys.path (conftest)

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "examples" / "gaf-dpm-solver"
REFERENCE = ROOT / "tests" / "data" / "dpm_solver_reference.json"
sys.path.insert(0, str(PACKAGE / "src"))

from gaf_dpm_solver import DPMSolverConfig, DPMSolverPlusPlus2M  # noqa: E402

F64 = torch.float64
PREDICTIONS = ("epsilon", "v_prediction", "sample")


def randn(*shape, seed=0, dtype=F64):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def dpm(**options) -> DPMSolverPlusPlus2M:
    return DPMSolverPlusPlus2M(DPMSolverConfig(**options))


# ------------------------------------------------- a Gaussian data distribution (exact)

MU, VAR = 0.5, 1.0  # x0 ~ N(MU, VAR·I)


def gaussian_x0(x: torch.Tensor, ab: float) -> torch.Tensor:
    """E[x0 | x_t = x] for x0 ~ N(MU, VAR): x_t ~ N(√ᾱ·MU, ᾱ·VAR + 1 − ᾱ), jointly Gaussian."""
    a = math.sqrt(ab)
    return MU + a * VAR / (ab * VAR + 1 - ab) * (x - a * MU)


def oracle(scheduler, x: torch.Tensor, t: int) -> torch.Tensor:
    """The exact model output (for the scheduler's prediction_type) at x_t = x."""
    ab = scheduler.alpha_bar(t)
    a, s = math.sqrt(ab), math.sqrt(1 - ab)
    x0 = gaussian_x0(x, ab)
    eps = (x - a * x0) / s
    kind = scheduler.config.prediction_type
    return eps if kind == "epsilon" else a * eps - s * x0 if kind == "v_prediction" else x0


def ode_solution(x: torch.Tensor, ab_from: float, ab_to: float) -> torch.Tensor:
    """The probability-flow ODE from ᾱ_from to ᾱ_to, exactly. With y = x/√ᾱ and
    s = √((1−ᾱ)/ᾱ) the ODE is dy/ds = ε̂ = s·(y − MU)/(VAR + s²), so
    y − MU ∝ √(VAR + s²)."""
    s2_from, s2_to = (1 - ab_from) / ab_from, (1 - ab_to) / ab_to
    y = x / math.sqrt(ab_from)
    return math.sqrt(ab_to) * (MU + (y - MU) * math.sqrt((VAR + s2_to) / (VAR + s2_from)))


def sample_run(scheduler, x: torch.Tensor, state: dict | None = None) -> torch.Tensor:
    extra = {} if state is None else {"state": state}  # DDIM takes no state
    for t in scheduler.timesteps.tolist():
        x = scheduler.step(oracle(scheduler, x, t), t, x, **extra)
    return x


def ode_error(cls, n: int) -> float:
    """RMS error of the final sample against the exact ODE solution, with n uniform steps
    960 → 0 on the cosine schedule. The final step goes to ᾱ_0 (set_alpha_to_one=False),
    here a zero-length step, so the error is the ODE solver's alone; with ᾱ = 1 the
    last step returns x̂0 for every solver, which would add the same floor to both."""
    cfg = dict(beta_schedule="squaredcos_cap_v2", clip_sample=False, set_alpha_to_one=False)
    s = cls.from_config(cfg)
    s.set_timesteps(timesteps=list(range(960, -1, -960 // n)))
    ab0 = s.alpha_bar(960)
    x = math.sqrt(ab0) * MU + math.sqrt(ab0 * VAR + 1 - ab0) * randn(4096, seed=1)
    out = sample_run(s, x.clone(), s.new_state() if hasattr(s, "new_state") else None)
    exact = ode_solution(x, ab0, s.final_alpha_cumprod)
    return (out - exact).pow(2).mean().sqrt().item()


def test_second_order_convergence_on_a_gaussian():
    steps = (10, 20, 40)
    ddim = [ode_error(DDIMScheduler, n) for n in steps]
    dpmpp = [ode_error(DPMSolverPlusPlus2M, n) for n in steps]
    # measured: DDIM 0.106, 0.054, 0.027 (×1.95, ×1.97); DPM++ 0.092, 0.024, 0.0055 (×3.9, ×4.3)
    for coarse, fine in zip(ddim, ddim[1:]):
        assert 1.7 < coarse / fine < 2.3, ddim
    for coarse, fine in zip(dpmpp, dpmpp[1:]):
        assert 3.3 < coarse / fine < 5.0, dpmpp
    assert dpmpp[0] < ddim[0] and dpmpp[1] < ddim[1] / 2, (ddim, dpmpp)


def test_the_oracle_is_exact():
    """The convergence test's reference: fine runs approach the closed form (measured:
    DDIM at 960 steps 1.2e-3, DPM++ at 160 steps 3.0e-4)."""
    assert ode_error(DDIMScheduler, 960) < 2e-3
    assert ode_error(DPMSolverPlusPlus2M, 160) < 5e-4


# --------------------------------------------------------------------- the update itself


@pytest.mark.parametrize("prediction", PREDICTIONS)
@pytest.mark.parametrize("spacing", ("leading", "trailing", "linspace"))
def test_first_step_is_ddim_eta_zero(prediction, spacing):
    cfg = dict(prediction_type=prediction, timestep_spacing=spacing, clip_sample=False)
    ours, ddim = dpm(**cfg), DDIMScheduler(SchedulerConfig(**cfg))
    for s in (ours, ddim):
        s.set_timesteps(10)
    t = int(ours.timesteps[0])
    x, out = randn(2, 3, 4, 4), randn(2, 3, 4, 4, seed=1)
    got = ours.step(out, t, x, state=ours.new_state())
    assert torch.allclose(got, ddim.step(out, t, x), rtol=1e-12, atol=1e-12)


def test_stateless_steps_are_ddim_throughout():
    """state=None: every step is first order, i.e. a whole run equals DDIM η=0, up to the
    final step to ᾱ = 1 (x̂0); with state the second step already differs."""
    ours, ddim = dpm(clip_sample=False), DDIMScheduler(SchedulerConfig(clip_sample=False))
    for s in (ours, ddim):
        s.set_timesteps(8)
    x = randn(64, seed=2)
    a, b = sample_run(ours, x), sample_run(ddim, x)
    assert torch.allclose(a, b, rtol=1e-10, atol=1e-12)
    first_order = dpm(clip_sample=False, solver_order=1)
    first_order.set_timesteps(8)
    assert torch.allclose(sample_run(first_order, x, first_order.new_state()), a,
                          rtol=1e-10, atol=1e-12)
    assert not torch.allclose(sample_run(ours, x, ours.new_state()), a, atol=1e-4)


def paper_step(ab_t, ab_prev, ab_before, x, x0, x0_before):
    """DPM-Solver++(2M), Lu et al. 2022 Algorithm 2, written with λ and exp as printed."""
    lam = lambda ab: math.log(math.sqrt(ab) / math.sqrt(1 - ab))  # noqa: E731
    h = lam(ab_prev) - lam(ab_t)
    r = (lam(ab_t) - lam(ab_before)) / h
    d = (1 + 1 / (2 * r)) * x0 - 1 / (2 * r) * x0_before
    return (math.sqrt(1 - ab_prev) / math.sqrt(1 - ab_t) * x
            - math.sqrt(ab_prev) * (math.exp(-h) - 1) * d)


@pytest.mark.parametrize("prediction", PREDICTIONS)
def test_second_step_is_the_papers_formula(prediction):
    s = dpm(prediction_type=prediction, clip_sample=False, beta_schedule="scaled_linear",
            beta_start=0.00085, beta_end=0.012)
    s.set_timesteps(timesteps=[900, 650, 300, 40])
    state = s.new_state()
    x, out1, out2 = randn(3, 5), randn(3, 5, seed=1), randn(3, 5, seed=2)
    x1 = s.step(out1, 900, x, state=state)
    x2 = s.step(out2, 650, x1, state=state)
    x0_900 = s.pred_original_sample(out1, 900, x)
    x0_650 = s.pred_original_sample(out2, 650, x1)
    want = paper_step(s.alpha_bar(650), s.alpha_bar(300), s.alpha_bar(900), x1, x0_650, x0_900)
    assert torch.allclose(x2, want, rtol=1e-10, atol=1e-12)


def test_final_step():
    """To ᾱ = 1 the last step returns x̂0 (always first order); to ᾱ_0 it is second order
    unless lower_order_final and fewer than 15 timesteps."""
    x, out = randn(4, seed=3), randn(4, seed=4)
    plan = [700, 400, 100]

    def last_step(plan=plan, **options):
        s = dpm(clip_sample=False, **options)
        s.set_timesteps(timesteps=plan)
        state = s.new_state()
        for t in plan[:-1]:
            s.step(out, t, x, state=state)
        return s, s.step(out, plan[-1], x, state=state)

    s, got = last_step()
    assert torch.allclose(got, s.pred_original_sample(out, 100, x), rtol=1e-12, atol=1e-12)
    s, got = last_step(set_alpha_to_one=False)
    ddim = DDIMScheduler(SchedulerConfig(clip_sample=False, set_alpha_to_one=False))
    ddim.set_timesteps(timesteps=plan)
    assert torch.allclose(got, ddim.step(out, 100, x), rtol=1e-12, atol=1e-12)
    s, got = last_step(set_alpha_to_one=False, lower_order_final=False)
    want = paper_step(s.alpha_bar(100), s.alpha_bar(0), s.alpha_bar(400), x,
                      s.pred_original_sample(out, 100, x), s.pred_original_sample(out, 400, x))
    assert torch.allclose(got, want, rtol=1e-10, atol=1e-12)
    # [700, 400, 0] then t = 0 → ᾱ_0 is a zero-length step, second order or not
    for lower_order_final in (True, False):
        assert torch.equal(last_step([700, 400, 0], set_alpha_to_one=False,
                                     lower_order_final=lower_order_final)[1], x)


def test_clipping_and_thresholding_follow_the_config():
    x, out = 3 * randn(2, 1, 4, 4), randn(2, 1, 4, 4, seed=1)  # x̂0 well beyond ±1
    for options, bound in (({"clip_sample": True}, 1.0),
                           ({"clip_sample": True, "clip_sample_range": 2.0}, 2.0),
                           ({"thresholding": True, "sample_max_value": 1.0}, 1.0)):
        s = dpm(**options)
        s.set_timesteps(timesteps=[500, 200])
        state = s.new_state()
        s.step(out, 500, x, state=state)
        got = s.step(out, 200, x, state=state)  # the final step returns the processed x̂0
        assert got.abs().max() <= bound + 1e-12 and got.abs().max() > bound - 0.1, options


def test_zero_terminal_snr():
    """ᾱ_{T−1} = 0 (λ = −∞): v-prediction steps stay finite; ε-prediction is refused."""
    s = dpm(rescale_betas_zero_snr=True, prediction_type="v_prediction",
            timestep_spacing="trailing", clip_sample=False)
    s.set_timesteps(5)
    assert s.alpha_bar(int(s.timesteps[0])) == 0.0
    out = sample_run(s, randn(16, seed=5), s.new_state())
    assert torch.isfinite(out).all()
    eps = dpm(rescale_betas_zero_snr=True, timestep_spacing="trailing")
    eps.set_timesteps(5)
    with pytest.raises(ValueError, match="v_prediction"):
        eps.step(randn(4), 999, randn(4), state=eps.new_state())


# ----------------------------------------------------------- state, threads, no counter


def test_interleaved_runs_with_separate_states_match_separate_runs():
    s = dpm(clip_sample=False)
    s.set_timesteps(12)
    xa, xb = randn(32, seed=6), 2 * randn(32, seed=7)
    alone_a, alone_b = sample_run(s, xa, s.new_state()), sample_run(s, xb, s.new_state())
    sa, sb = s.new_state(), s.new_state()
    a, b = xa, xb
    for t in s.timesteps.tolist():
        a = s.step(oracle(s, a, t), t, a, state=sa)
        b = s.step(oracle(s, b, t), t, b, state=sb)
    assert torch.equal(a, alone_a) and torch.equal(b, alone_b)
    # one state shared by both runs mixes their histories: the test above can fail
    shared = s.new_state()
    a, b = xa, xb
    for t in s.timesteps.tolist():
        a = s.step(oracle(s, a, t), t, a, state=shared)
        b = s.step(oracle(s, b, t), t, b, state=shared)
    assert not torch.allclose(a, alone_a, atol=1e-6)


def test_threads_share_one_scheduler():
    s = dpm(clip_sample=False)
    s.set_timesteps(20)
    inputs = [randn(256, seed=10 + i) * (1 + i) for i in range(4)]
    alone = [sample_run(s, x, s.new_state()) for x in inputs]
    results, barrier = [None] * 4, threading.Barrier(4)

    def work(i):
        barrier.wait()
        results[i] = sample_run(s, inputs[i], s.new_state())

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert all(torch.equal(r, a) for r, a in zip(results, alone))


def test_a_state_reused_for_a_new_run_starts_afresh():
    """The history records where its step went, so a stale state is never extrapolated
    from: reusing one equals a fresh state; the scheduler itself is never modified."""
    s = dpm(clip_sample=False)
    s.set_timesteps(10)
    state = s.new_state()
    sample_run(s, randn(8, seed=8), state)
    assert state  # the history lives in the state …
    before = dict(vars(s))
    again = sample_run(s, randn(8, seed=9), state)
    assert torch.equal(again, sample_run(s, randn(8, seed=9), s.new_state()))
    assert vars(s).keys() == before.keys() and all(vars(s)[k] is v for k, v in before.items())


def test_step_looks_the_previous_timestep_up():
    s = dpm()
    with pytest.raises(RuntimeError, match="set_timesteps"):
        s.step(randn(4), 500, randn(4))
    s.set_timesteps(10)
    with pytest.raises(ValueError, match="not one of the scheduler's timesteps"):
        s.step(randn(4), 555, randn(4))
    with pytest.raises(ValueError, match="same shape"):
        s.step(randn(4), 900, randn(5))
    t = torch.tensor(int(s.timesteps[0]))  # a 0-d tensor works like an int
    g = torch.Generator().manual_seed(0)  # accepted, unused (deterministic)
    assert torch.equal(s.step(randn(4), t, randn(4), generator=g), s.step(randn(4), int(t), randn(4)))
    assert g.initial_seed() == 0 and torch.equal(g.get_state(), torch.Generator().manual_seed(0).get_state())


# ------------------------------------------------------------------------------ config


def test_is_a_scheduler_and_loads_a_ddpm_run_config():
    ddpm = DDPMScheduler(SchedulerConfig(beta_schedule="scaled_linear", beta_start=0.00085,
                                         beta_end=0.012, prediction_type="v_prediction"))
    saved = {**to_dict(ddpm.config), "_class_name": "DDPMScheduler", "skip_prk_steps": True}
    s = DPMSolverPlusPlus2M.from_config(saved)
    assert isinstance(s, Scheduler) and isinstance(s.config, DPMSolverConfig)
    assert s.config.prediction_type == "v_prediction" and s.config.solver_order == 2
    assert torch.equal(s.alphas_cumprod, ddpm.alphas_cumprod)
    assert DPMSolverPlusPlus2M(ddpm.config).config == s.config  # a plain config object too
    assert DPMSolverPlusPlus2M.from_config(saved, solver_order=1).config.solver_order == 1
    assert DPMSolverPlusPlus2M.from_config(s.config).config == s.config
    with pytest.raises(BadConfig, match="solver_order must be one of: 1, 2, got 3"):
        DPMSolverConfig(solver_order=3)
    with pytest.raises(BadConfig, match="solver_order must be 1 or 2, not a bool"):
        DPMSolverConfig(solver_order=True)


def test_builds_through_a_registry():
    registry = Registry(catalogue=None, autoload=False)
    registry.add("scheduler", "dpm-solver++", "gaf_dpm_solver:DPMSolverPlusPlus2M",
                 source="gaf-dpm-solver")
    s = registry.create("scheduler", "dpm-solver++", solver_order=1, lower_order_final=False)
    assert isinstance(s, DPMSolverPlusPlus2M) and s.gaf_name == "dpm-solver++"
    assert s.config.solver_order == 1 and not s.config.lower_order_final
    s.set_timesteps(4)
    assert s.timesteps.tolist() == [750, 500, 250, 0]


# -------------------------------------------------------------------- diffusers agreement


def test_matches_diffusers_dpm_solver_plus_plus():
    """Replays diffusers 0.42.1's recorded steps: each of our steps is given diffusers'
    input sample and model output (our state carries our own history) and must land on
    diffusers' prev_sample within 1e-5. Exception: steps from t = 0, where diffusers'
    float32 ᾱ_0 = 1 − 1e-4 keeps only ~4 digits of σ_0² = 1 − ᾱ_0 (measured: 2.3e-5
    apart; 6e-8 when x̂0 uses diffusers' float32 ᾱ_0), are held to 5e-5."""
    ref = json.loads(REFERENCE.read_text())
    shape = ref["shape"]
    assert "DPMSolverMultistepScheduler" in ref["script"] and len(ref["cases"]) >= 8

    def tensor(values):
        return torch.tensor(values, dtype=torch.float32).reshape(shape)

    kinds = set()
    for case in ref["cases"]:
        s = DPMSolverPlusPlus2M.from_config(case["gaf_config"])
        s.set_timesteps(timesteps=case["timesteps"])
        state = s.new_state()
        for k, t in enumerate(case["timesteps"]):
            got = s.step(tensor(case["model_outputs"][k]), t, tensor(case["samples"][k]),
                         state=state)
            tol = 1e-5 if t > 0 else 5e-5
            want = tensor(case["samples"][k + 1])
            assert torch.allclose(got, want, rtol=1e-5, atol=tol), (case["name"], t,
                                                                     (got - want).abs().max())
        kinds.add(s.config.prediction_type)
    assert kinds == set(PREDICTIONS)


# ----------------------------------------------------------------------- packaging (slow)


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    return install(PACKAGE, tmp_path_factory.mktemp("site"))


@pytest.mark.slow
def test_installed_plugin_is_listed_and_shown(site, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")  # option names unwrapped next to the allowed column
    out = gaf_cli(site, "list", "scheduler", "--json")
    assert out.returncode == 0, out.stderr
    rows = {r["name"]: r for r in map(json.loads, out.stdout.splitlines())}
    assert rows["dpm-solver++"]["package"] == "gaf-dpm-solver"
    assert "DPM-Solver++(2M)" in rows["dpm-solver++"]["summary"]
    assert rows["ddim"]["package"] == "gaf"
    shown = gaf_cli(site, "show", "scheduler", "dpm-solver++")
    assert shown.returncode == 0, shown.stderr
    assert "gaf_dpm_solver:DPMSolverPlusPlus2M" in shown.stdout
    assert "solver_order" in shown.stdout and "lower_order_final" in shown.stdout


@pytest.mark.slow
def test_installed_plugin_builds_by_name(site):
    env = {k: v for k, v in os.environ.items() if k != "GAF_DISABLE_PLUGIN_AUTOLOAD"}
    env["PYTHONPATH"] = str(site)
    code = ("import gaf, torch; s = gaf.create('scheduler', 'dpm-solver++', solver_order=1); "
            "s.set_timesteps(5); x = torch.zeros(2); st = s.new_state(); "
            "[x := s.step(torch.ones(2), t, x, state=st) for t in s.timesteps]; "
            "print(type(s).__module__, s.config.solver_order, bool(torch.isfinite(x).all()))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                         timeout=300, cwd=site)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["gaf_dpm_solver.solver", "1", "True"]


@pytest.mark.slow
def test_installed_plugin_samples_a_run_trained_with_ddpm(site, tmp_path):
    """``gaf sample --pipeline RUN --scheduler dpm-solver++`` on a toy pixel-space ldm run
    (trained with the default ``ddpm`` scheduler): the plugin is built from_config of
    the run's ddpm config and driven with new_state() by the pipeline."""
    import gaf

    tiny = ["dataset.resolution=16", "dataset.size=32", "noise-model.channels=[8, 16]",
            "noise-model.norm_groups=4", "noise-model.heads=2", "noise-model.context_dim=16",
            "noise-model.in_channels=3", "conditioner.width=16", "conditioner.layers=1",
            "conditioner.heads=2", "train.steps=2", "train.batch_size=4",
            "train.warmup_steps=0", "objective.eval_images=2", "objective.eval_steps=2",
            "objective.eval_batch_size=2", "objective.fd=false", "objective.grid_prompts=1",
            "objective.eval_clip_steps=0"]
    run_dir, _ = gaf.run("ldm", autoencoder="none",
                         sets=[f"out_dir={json.dumps(str(tmp_path))}", "name=tiny", *tiny])
    assert json.loads((run_dir / "pipeline.json").read_text())["scheduler"]["name"] == "ddpm"
    args = ["sample", "--pipeline", str(run_dir), "--prompt", "a red circle", "--scheduler",
            "dpm-solver++", "--steps", "5", "-q"]
    out = gaf_cli(site, *args, "--out", str(tmp_path / "grid.png"))
    assert out.returncode == 0, out.stderr
    assert "1 image(s) written" in out.stdout and (tmp_path / "grid.png").is_file()
    bad = gaf_cli(site, *args, "--set", "solver_order=3", "--out", str(tmp_path / "bad.png"))
    assert bad.returncode == 2 and "solver_order must be one of: 1, 2" in bad.stderr
