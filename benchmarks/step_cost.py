"""What a benchmark's unit of work costs: its FLOPs, the FLOP/s a timing achieved, and
where its time goes by operator group (issue 23 § 1).

Every throughput benchmark calls :func:`measure` after its timed region, on a callable
that does one *unit* of the timed work again (a training step, a sampling call, ...):

* once under ``torch.utils.flop_counter.FlopCounterMode``: the FLOPs of one unit
  (matrix products, convolutions and attention, forward and backward: the work that can
  approach the machine's peak; element-wise work is not counted);
* ``calls`` more times under ``torch.profiler``: the self CPU time of every ATen operator,
  grouped by :data:`GROUPS` (first match wins): ``conv``, ``attention`` (SDPA kernels,
  softmax), ``matmul``, ``norm`` (group and layer norm), ``optimizer`` (fused AdamW, the
  ``_foreach`` ops of clipping), ``copies`` (copies, ``cat``, indexing, padding,
  resampling), ``elementwise`` (every other ATen operator), and ``outside``: the profiled
  wall time inside no ATen operator (Python, dispatch, autograd's bookkeeping, and the
  profiler's own overhead). Shares are of the profiled wall time.

The achieved rate is ``gflop_per_unit * units / seconds`` with the benchmark's own
``units`` and ``seconds`` (the profiled calls are not timed for it), so it is the timed
run's rate. Those extra calls do change state (an optimiser steps again, a generator
draws again): call :func:`measure` only after everything the benchmark reports is taken.
``benchmarks/step_profile.py`` reports the same for each default step on its own, against
the machine's peak.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch
from torch.utils.flop_counter import FlopCounterMode

#: operator-name fragments (without ``aten::``) per group; first match wins
GROUPS = (
    ("conv", ("convolution",)),
    ("attention", ("scaled_dot_product", "flash_attention", "efficient_attention",
                   "softmax")),
    ("matmul", ("addmm", "baddbmm", "bmm", "mm", "linear", "matmul", "addmv")),
    ("norm", ("group_norm", "layer_norm")),
    ("optimizer", ("_fused_adam", "_foreach_")),
    ("copies", ("copy_", "_to_copy", "cat", "clone", "contiguous", "index", "gather",
                "scatter", "stack", "pad", "upsample", "embedding", "empty", "zeros",
                "fill_", "narrow", "select", "slice", "as_strided")),
)
CATEGORIES = tuple(g for g, _ in GROUPS) + ("elementwise", "outside")


def group_of(name: str) -> str | None:
    """The group of a profiler event, ``None`` for one that is not an ATen operator."""
    if not name.startswith("aten::"):
        return None
    op = name.removeprefix("aten::")
    for group, keys in GROUPS:
        if any(k in op for k in keys):
            return group
    return "elementwise"


def flop_count(unit: Callable[[], object], inference: bool) -> float:
    """The FLOPs of one call of ``unit`` (in grad mode unless ``inference``)."""
    mode = torch.inference_mode if inference else torch.enable_grad
    with mode(), FlopCounterMode(display=False) as counter:
        unit()
    return float(counter.get_total_flops())


def op_shares(unit: Callable[[], object], calls: int, inference: bool) -> tuple[dict, float]:
    """``(shares by category, profiled wall seconds)`` over ``calls`` calls of ``unit``."""
    mode = torch.inference_mode if inference else torch.enable_grad
    seconds = dict.fromkeys(CATEGORIES, 0.0)
    with mode(), torch.profiler.profile(
            activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        t0 = time.perf_counter()
        for _ in range(calls):
            unit()
        wall = time.perf_counter() - t0
    for event in prof.key_averages():
        group = group_of(event.key)
        if group is not None:
            seconds[group] += event.self_cpu_time_total / 1e6
    seconds["outside"] = max(0.0, wall - sum(seconds.values()))
    return {k: v / wall for k, v in seconds.items()}, wall


def measure(unit: Callable[[], object], *, units: float, seconds: float, inference: bool,
            calls: int = 2) -> dict:
    """The cost of a timed run of ``units`` units in ``seconds``: ``gflop_per_unit``,
    ``achieved_gflops`` (that run's rate) and ``shares`` (over ``calls`` profiled calls of
    ``unit``; see the module docstring)."""
    flop = flop_count(unit, inference)
    shares, _ = op_shares(unit, calls, inference)
    return {"gflop_per_unit": flop / 1e9,
            "achieved_gflops": flop * units / seconds / 1e9 if seconds > 0 else 0.0,
            "shares": shares}


def line(name: str, cost: dict, unit: str) -> str:
    """The benchmark's cost line: ``<name>_cost unit=… gflop_per_unit=… achieved_gflops=…
    conv=… matmul=… …`` (shares to 3 decimals)."""
    shares = " ".join(f"{k}={cost['shares'][k]:.3f}" for k in CATEGORIES)
    return (f"{name}_cost unit={unit} gflop_per_unit={cost['gflop_per_unit']:.4f} "
            f"achieved_gflops={cost['achieved_gflops']:.1f} {shares}")
