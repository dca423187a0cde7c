"""Each default step's achieved FLOP/s against the machine's peak, and where its time goes.

    python benchmarks/step_profile.py [CASE ...] [--steps 10] [--threads 2] [--json]
    python benchmarks/step_profile.py [CASE ...] --compare-fused-attention ROUNDS [--steps 4]

Cases (default: all), each the step of a throughput benchmark, built by that benchmark's
own code:

* ``dpo-train``: one ``dpo`` training step of ``benchmarks/dpo_step_profile.py`` (the
  ``dpo_throughput`` shape: gpt2-tiny, 8 pairs, packed rows): ``train_batch``, loss,
  backward, gradient clipping, fused AdamW;
* ``ldm-train``: one training step of ``benchmarks/ldm_throughput.py``'s UNet (batch 64
  latents 4x8x8, ε-MSE, backward, fused AdamW);
* ``ldm-sample``: one DDIM step with classifier-free guidance of that benchmark (one UNet
  call on 32 rows with the cached context, the guidance, the scheduler step);
* ``imagen-cascade``: one call of the cascade of ``benchmarks/imagen_throughput.py`` (50
  captions) with 5 DDIM steps per stage instead of 25 (the same work per step);
* ``sft-train``: one step of ``benchmarks/sft_throughput.py`` (gpt2-tiny with its own
  ``sentiment-bpe`` vocabulary, 16 sentiment examples: ``prepare``, completion
  log-probs, the NLL, backward, fused AdamW);
* ``ae-train``: one trainer step of ``benchmarks/autoencoder_throughput.py`` (the default
  ``kl-vae``, 16 images, the step before the PatchGAN starts);
* ``i2i-train``: one trainer step of ``benchmarks/image_to_image_throughput.py``
  (inpainting, batch 32, fused AdamW, the EMA update);
* ``parti-sample``: one sampling call of ``benchmarks/parti_sampling.py`` (16 captions,
  64 image tokens, guidance 2, top-k 8).

For each case: ``--warmup`` untimed steps, then the median of ``--steps`` timed steps
(``step_ms``); the FLOPs of one step counted by ``torch.utils.flop_counter.FlopCounterMode``
(matrix products, convolutions and attention, forward and backward: the work that can
approach the peak; element-wise work is not counted); ``gflops`` = FLOPs over
``step_ms``; and ``peak_share``, that over the machine's fp32 peak (``--peak``, GFLOP/s,
or measured here as the best of ``benchmarks/machine_peak.py``'s large square matmuls and
large 3x3 convolutions: oneDNN's convolutions reach a higher rate than the square
``torch.mm``, so the peak is the better of the two).

Then a ``torch.profiler`` pass over ``--steps`` steps: the self CPU time of every ATen
operator, grouped (``step_cost.GROUPS``, first match wins): ``conv``, ``matmul``,
``attention`` (SDPA kernels, softmax), ``norm`` (group and layer norm), ``optimizer``
(fused AdamW, the ``_foreach`` ops of clipping), ``copies`` (copies, ``cat``, indexing,
padding, resampling), ``elementwise`` (every other ATen operator), and ``outside``: the
profiled wall time not inside any ATen operator (Python, dispatch, autograd's own
bookkeeping, and the profiler's overhead, which is why ``profiled_step_ms`` exceeds
``step_ms``). Shares are of the profiled wall time. Prints one line per case, or one
JSON object with ``--json``.

``--compare-fused-attention ROUNDS`` times, instead, the UNet cases (or those named) with
``attend``'s short-key paths (the default) against every attention through PyTorch's
fused kernel (``attention.KEYS_MAX = 0``), alternating blocks of ``--steps`` steps in one
process, the order swapped each round: the medians, their ratio (fused over short) and
the median paired difference, with the number of rounds the short paths won.

Measure on an otherwise idle machine; no test asserts a timing
(tests/benchmarks/test_step_profile.py runs it at a tiny size for its form; every case
at once only under ``pytest -m benchmark``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))

from step_cost import CATEGORIES, GROUPS, flop_count, group_of, op_shares  # noqa: E402,F401

# ------------------------------------------------------------------------- cases


@contextmanager
def dpo_train(tiny: bool) -> Iterator[tuple[Callable[[], None], str]]:
    import dpo_step_profile as dsp

    from gaf.train import make_optimizer

    with tempfile.TemporaryDirectory() as tmp:
        obj, spec, _ = dsp.build(60, tmp)
        params = [p for p in obj.policy.parameters() if p.requires_grad]
        opt = make_optimizer(spec.train, params)
        count = iter(range(10 ** 9))

        def step() -> None:
            batch = obj.train_batch(next(count) % 50)
            loss, _ = obj.loss(batch)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            opt.zero_grad(set_to_none=True)

        yield step, "gpt2-tiny DPO, 8 pairs"


@contextmanager
def ldm_train(tiny: bool) -> Iterator[tuple[Callable[[], None], str]]:
    import ldm_throughput as lt

    from gaf.plugins.diffusion.schedulers import DDIMScheduler, SchedulerConfig
    from gaf.train import TrainConfig, make_optimizer

    torch.manual_seed(0)
    unet = lt.build().train()
    opt = make_optimizer(TrainConfig(lr=1e-4, weight_decay=0.01), unet.parameters())
    sched = DDIMScheduler(SchedulerConfig(beta_schedule="linear", clip_sample=False))
    bt = 4 if tiny else 64
    z, c = torch.randn(bt, 4, 8, 8), torch.randn(bt, 16, 64)

    def step() -> None:
        t = torch.randint(0, 1000, (bt,))
        noise = torch.randn_like(z)
        loss = F.mse_loss(unet(sched.add_noise(z, noise, t), t, c), noise)
        opt.zero_grad()
        loss.backward()
        opt.step()

    yield step, f"ldm UNet train, batch {bt}"


@contextmanager
def ldm_sample(tiny: bool) -> Iterator[tuple[Callable[[], None], str]]:
    import ldm_throughput as lt

    from gaf.plugins.diffusion.schedulers import DDIMScheduler, SchedulerConfig

    torch.manual_seed(0)
    unet = lt.build().eval()
    sched = DDIMScheduler(SchedulerConfig(beta_schedule="linear", clip_sample=False))
    sched.set_timesteps(50)
    b = 2 if tiny else 16
    ctx, null = torch.randn(b, 16, 64), torch.zeros(b, 16, 64)
    with torch.inference_mode():
        cache = unet.cache_context(torch.cat([null, ctx]))
        state = {"x": torch.randn(b, 4, 8, 8)}
        t = sched.timesteps[10]

        def step() -> None:
            x = state["x"]
            e_u, e_c = unet(torch.cat([x, x]), t, cache).chunk(2)
            state["x"] = sched.step(e_u + 3.0 * (e_c - e_u), t, x)

        yield step, f"ldm UNet DDIM+CFG step, batch {b} (x2 rows)"


@contextmanager
def imagen_cascade(tiny: bool) -> Iterator[tuple[Callable[[], None], str]]:
    import imagen_throughput as it

    batch = 2 if tiny else 50
    pipe, _ = it.build(batch)
    caps = it.captions(batch)
    steps = 2 if tiny else 5
    options = {**it.CALL, "steps": steps, "sr_steps": steps}

    def step() -> None:
        pipe(caps, seed=0, **options)

    yield step, f"imagen cascade, {batch} captions, DDIM {steps}+{steps}"


@contextmanager
def sft_train(tiny: bool) -> Iterator[tuple[Callable[[], None], str]]:
    import sft_throughput

    import gaf
    from gaf.train import TrainConfig, make_optimizer

    torch.manual_seed(0)
    examples = gaf.create("task", "sentiment").sft_examples("train")
    policy = gaf.create("policy", "gpt2-tiny")
    opt = make_optimizer(TrainConfig(lr=1e-3), policy.parameters())
    batch = 2 if tiny else 16
    count = iter(range(10 ** 9))

    def step() -> None:
        i = next(count) % 50
        sft_throughput.step(policy, opt, examples[i * batch:(i + 1) * batch])

    yield step, f"gpt2-tiny SFT, {batch} examples"


@contextmanager
def ae_train(tiny: bool) -> Iterator[tuple[Callable[[], None], str]]:
    import autoencoder_throughput as at

    from gaf.train import _step

    batch = 2 if tiny else 16
    with tempfile.TemporaryDirectory() as tmp:
        objective, ctx = at.build(batch, Path(tmp))
        train = [objective.train_batch(i) for i in range(8)]
        opt, params, sched = at.trainer(objective, ctx)
        objective.train_batch = lambda i: train[i % len(train)]
        count = iter(range(1, 10 ** 9))

        def step() -> None:
            _step(objective, ctx, opt, params, next(count), None)
            sched.step()

        yield step, f"kl-vae training step before the GAN, {batch} images"


@contextmanager
def i2i_train(tiny: bool) -> Iterator[tuple[Callable[[], None], str]]:
    import image_to_image_throughput as it

    from gaf.train import _step

    batch = 2 if tiny else 32
    obj = it.build("inpainting", batch)
    batches = it.draw(obj, 8)
    opt, params, sched, ctx = it.trainer(obj)
    obj.train_batch = lambda i: batches[i % len(batches)]
    count = iter(range(1, 10 ** 9))

    def step() -> None:
        _step(obj, ctx, opt, params, next(count), None)
        sched.step()

    yield step, f"image-to-image (inpainting) training step, batch {batch}"


@contextmanager
def parti_sample(tiny: bool) -> Iterator[tuple[Callable[[], None], str]]:
    import parti_sampling as ps

    from gaf.plugins.lm.samplers import TopK, TopKConfig
    from gaf.plugins.t2i.tokens.sampling import sample_codes

    model = ps.build().requires_grad_(False)  # (FlopCounterMode's module hooks need it)
    captions = ps.captions()[:2 if tiny else ps.BATCH]
    text = model.tokenize(captions)
    sampler = TopK(TopKConfig(k=ps.TOP_K))

    def step() -> None:
        gens = [torch.Generator().manual_seed(i) for i in range(len(captions))]
        sample_codes(model, text, sampler=sampler, guidance=ps.GUIDANCE, generators=gens)

    yield step, f"parti sampling, {len(captions)} captions x {model.image_tokens} tokens"


CASES = {"dpo-train": dpo_train, "ldm-train": ldm_train, "ldm-sample": ldm_sample,
         "imagen-cascade": imagen_cascade, "sft-train": sft_train, "ae-train": ae_train,
         "i2i-train": i2i_train, "parti-sample": parti_sample}
#: the cases that run without autograd
INFERENCE = ("ldm-sample", "imagen-cascade", "parti-sample")
#: the cases whose model is the UNet (``--compare-fused-attention``'s default)
UNET_CASES = ("ldm-train", "ldm-sample", "imagen-cascade", "i2i-train")


# ------------------------------------------------------------------------- measuring


def step_seconds(step: Callable[[], None], steps: int, warmup: int) -> list[float]:
    """The seconds of each of ``steps`` timed calls of ``step``, after ``warmup`` untimed."""
    for _ in range(warmup):
        step()
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    return times


def measure(step: Callable[[], None], steps: int, warmup: int, inference: bool) -> dict:
    mode = torch.inference_mode if inference else torch.enable_grad
    with mode():
        times = step_seconds(step, steps, warmup)
    flops = flop_count(step, inference)
    shares, wall = op_shares(step, steps, inference)
    step_s = statistics.median(times)
    return {"step_ms": 1e3 * step_s, "gflop_per_step": flops / 1e9,
            "gflops": flops / step_s / 1e9, "profiled_step_ms": 1e3 * wall / steps,
            "shares": shares}


def compare_fused_attention(step: Callable[[], None], rounds: int, block: int,
                            inference: bool) -> dict:
    """The same step with ``attend``'s short-key paths and with every attention through
    the fused kernel (``attention.KEYS_MAX = 0``), alternating blocks of ``block`` steps
    in this one process, the order swapped every round: medians of each side's per-step
    times and the median of the rounds' paired differences."""
    from gaf.plugins.diffusion.unet import attention

    keys_max = attention.KEYS_MAX
    times: dict[str, list[float]] = {"short": [], "fused": []}
    mode = torch.inference_mode if inference else torch.enable_grad
    try:
        with mode():
            for _ in range(2):
                step()
            for r in range(rounds):
                for side in (("short", "fused") if r % 2 == 0 else ("fused", "short")):
                    attention.KEYS_MAX = keys_max if side == "short" else 0
                    t0 = time.perf_counter()
                    for _ in range(block):
                        step()
                    times[side].append((time.perf_counter() - t0) / block)
    finally:
        attention.KEYS_MAX = keys_max
    short, fused = (statistics.median(times[k]) for k in ("short", "fused"))
    diffs = [a - b for a, b in zip(times["short"], times["fused"])]
    return {"short_ms": 1e3 * short, "fused_ms": 1e3 * fused, "ratio": fused / short,
            "paired_diff_ms": 1e3 * statistics.median(diffs),
            "short_faster_rounds": sum(d < 0 for d in diffs), "rounds": rounds}


def main(argv: Sequence[str] | None = None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("cases", nargs="*", metavar="CASE",
                   help=f"any of {', '.join(CASES)} (default: all)")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--peak", type=float, default=0.0,
                   help="the fp32 matmul peak in GFLOP/s (default: measure it)")
    p.add_argument("--compare-fused-attention", type=int, default=0, metavar="ROUNDS",
                   help="instead of profiling, time the UNet cases with attend's short-key "
                        "paths against the fused kernel, alternating, ROUNDS rounds")
    p.add_argument("--json", action="store_true")
    p.add_argument("--tiny", action="store_true", help=argparse.SUPPRESS)  # tests
    args = p.parse_args(argv)
    for name in args.cases:
        if name not in CASES:
            p.error(f"unknown case {name!r}; the cases are {', '.join(CASES)}")
    torch.set_num_threads(args.threads)
    import gaf

    gaf.tune_malloc()  # as the gaf command
    if args.compare_fused_attention:
        rows = []
        for name in args.cases or UNET_CASES:
            with CASES[name](args.tiny) as (step, what):
                row = {"case": name, "what": what, **compare_fused_attention(
                    step, args.compare_fused_attention, args.steps,
                    inference=name in INFERENCE)}
            rows.append(row)
            print(json.dumps(row) if args.json else
                  f"fused_attention case={name} short_ms={row['short_ms']:.1f} "
                  f"fused_ms={row['fused_ms']:.1f} ratio={row['ratio']:.3f} "
                  f"paired_diff_ms={row['paired_diff_ms']:.1f} short_faster_rounds="
                  f"{row['short_faster_rounds']}/{row['rounds']} ({what})")
        return rows
    peak = args.peak
    if peak <= 0:
        import machine_peak

        with torch.inference_mode():
            rows = [machine_peak.matmul(s, 5) for s in ((512,) if args.tiny else (2048, 4096))]
            rows += [machine_peak.conv(*c, 5) for c in machine_peak.CONVS[:1 if args.tiny else 2]]
        peak = max(r["gflops"] for r in rows)
    rows = []
    for name in args.cases or list(CASES):
        with CASES[name](args.tiny) as (step, what):
            row = {"case": name, "what": what,
                   **measure(step, args.steps, args.warmup,
                             inference=name in INFERENCE)}
        row["peak_gflops"] = peak
        row["peak_share"] = row["gflops"] / peak
        rows.append(row)
        if not args.json:
            shares = " ".join(f"{k}={v:.3f}" for k, v in row["shares"].items())
            print(f"step_profile case={name} step_ms={row['step_ms']:.1f} "
                  f"gflop_per_step={row['gflop_per_step']:.3f} gflops={row['gflops']:.1f} "
                  f"peak_gflops={peak:.1f} peak_share={row['peak_share']:.3f} "
                  f"profiled_step_ms={row['profiled_step_ms']:.1f} {shares} ({what})")
    if args.json:
        print(json.dumps({"threads": torch.get_num_threads(), "torch": torch.__version__,
                          "cases": rows}))
    return rows


if __name__ == "__main__":
    main()
