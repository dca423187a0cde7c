"""How a training step's time and memory grow with batch size and sequence length (the
language model) or resolution (the diffusion UNet).

    python benchmarks/scaling.py [lm] [unet] [--steps 4] [--threads 2] [--json]

Each configuration runs in a fresh Python process (this script with ``--one``), so that
its peak resident memory is its own:

* ``lm``: ``gpt2-tiny`` (the default policy: d 128, 4 layers, 4 heads, byte vocabulary),
  one training step of next-token cross-entropy on random tokens (forward over the whole
  ``(batch, T)`` block, backward, gaf's fused AdamW), for batch 4, 8, 16 and T 64, 128,
  256;
* ``unet``: the UNet of ``benchmarks/ldm_throughput.py`` (4 latent channels, channels 64
  and 128, attention at full resolution and in the middle), one ε-MSE training step with
  a 16-token context, for batch 16, 32, 64 and latents 8x8, 16x16, 32x32 (at 32x32 the
  full-resolution attention has 1,024 tokens).

Per configuration: two untimed steps, then the median of ``--steps`` timed steps
(``step_ms``), ``per_item_ms`` (step over batch), ``peak_rss_mb`` (``getrusage`` of the
process at the end), ``base_rss_mb`` (the same after building the model and optimiser,
before any step) and ``step_mb``, their difference: what the steps add, activations and
optimiser state. Memory is the process's resident set as the allocator keeps it (the
``gaf`` command's glibc settings, ``gaf.tune_malloc``, applied), not a tensor count.

Prints one line per configuration, or one JSON object with ``--json``. Measure on an
otherwise idle machine; no test asserts a timing (tests/benchmarks/test_scaling.py runs
one tiny configuration of each for the form).
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

LM_GRID = [(b, t) for t in (64, 128, 256) for b in (4, 8, 16)]
UNET_GRID = [(b, s) for s in (8, 16, 32) for b in (16, 32, 64)]


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def lm_step(batch: int, length: int) -> Callable[[], None]:
    import torch
    import torch.nn.functional as F

    import gaf
    from gaf.train import TrainConfig, make_optimizer

    torch.manual_seed(0)
    policy = gaf.create("policy", "gpt2-tiny").train()
    opt = make_optimizer(TrainConfig(lr=1e-4), policy.parameters())
    vocab = policy.config.vocab_size
    ids = torch.randint(0, vocab, (batch, length))

    def step() -> None:
        hidden = policy(ids)  # final hidden states (B, T, d)
        logits = policy.logits(hidden[:, :-1])
        loss = F.cross_entropy(logits.reshape(-1, vocab), ids[:, 1:].reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def unet_step(batch: int, size: int) -> Callable[[], None]:
    import torch
    import torch.nn.functional as F

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import ldm_throughput

    from gaf.train import TrainConfig, make_optimizer

    torch.manual_seed(0)
    unet = ldm_throughput.build().train()
    opt = make_optimizer(TrainConfig(lr=1e-4, weight_decay=0.01), unet.parameters())
    z, c = torch.randn(batch, 4, size, size), torch.randn(batch, 16, 64)

    def step() -> None:
        t = torch.randint(0, 1000, (batch,))
        noise = torch.randn_like(z)
        loss = F.mse_loss(unet(z + noise, t, c), noise)  # the cost of a step, not a schedule
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


BUILDERS = {"lm": lm_step, "unet": unet_step}


def one(kind: str, batch: int, size: int, steps: int, threads: int) -> dict:
    """One configuration, in this process."""
    import torch

    import gaf

    gaf.tune_malloc()
    torch.set_num_threads(threads)
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from step_profile import step_seconds

    step = BUILDERS[kind](batch, size)
    base = rss_mb()
    times = step_seconds(step, steps, warmup=2)
    peak = rss_mb()
    step_ms = 1e3 * statistics.median(times)
    return {"kind": kind, "batch": batch, ("length" if kind == "lm" else "size"): size,
            "step_ms": step_ms, "per_item_ms": step_ms / batch, "base_rss_mb": base,
            "peak_rss_mb": peak, "step_mb": peak - base, "threads": torch.get_num_threads()}


def main(argv: Sequence[str] | None = None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("kinds", nargs="*", metavar="KIND", help="lm, unet (default: both)")
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", action="store_true")
    p.add_argument("--grid", default="", help=argparse.SUPPRESS)  # tests: "B,S;B,S"
    p.add_argument("--one", default="", help=argparse.SUPPRESS)   # KIND,B,S: in-process
    args = p.parse_args(argv)
    if args.one:
        kind, b, s = args.one.split(",")
        print(json.dumps(one(kind, int(b), int(s), args.steps, args.threads)))
        return []
    for kind in args.kinds:
        if kind not in BUILDERS:
            p.error(f"unknown kind {kind!r}; the kinds are {', '.join(BUILDERS)}")
    grids = {"lm": LM_GRID, "unet": UNET_GRID}
    if args.grid:
        custom = [tuple(int(v) for v in cell.split(",")) for cell in args.grid.split(";")]
        grids = dict.fromkeys(grids, custom)
    rows = []
    for kind in args.kinds or list(BUILDERS):
        for b, s in grids[kind]:
            out = subprocess.run([sys.executable, __file__, "--one", f"{kind},{b},{s}",
                                  "--steps", str(args.steps), "--threads", str(args.threads)],
                                 capture_output=True, text=True, check=True)
            row = json.loads(out.stdout.strip().splitlines()[-1])
            rows.append(row)
            if not args.json:
                dim = f"length={row['length']}" if kind == "lm" else f"size={row['size']}"
                print(f"scaling kind={kind} batch={b} {dim} step_ms={row['step_ms']:.1f} "
                      f"per_item_ms={row['per_item_ms']:.2f} peak_rss_mb={row['peak_rss_mb']:.0f} "
                      f"base_rss_mb={row['base_rss_mb']:.0f} step_mb={row['step_mb']:.0f}",
                      flush=True)
    if args.json:
        print(json.dumps({"rows": rows}))
    return rows


if __name__ == "__main__":
    main()
