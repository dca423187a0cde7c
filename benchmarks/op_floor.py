"""The floor of a step: its FLOP-carrying operators alone, each replayed at its own shape.

    python benchmarks/op_floor.py [CASE ...] [--steps 10] [--calls 9] [--threads 2]
        [--ops N] [--json]
    /tmp/gaf-peers/bin/python benchmarks/op_floor_diffusers_peer.py [CASE ...] [same options]

A speed goal against a peer that runs the same network is bounded by the operators both
sides must run. This script records every convolution, matrix product and attention
kernel that one step of a case dispatches (forward and backward: ``convolution`` and its
backward, ``mm``, ``addmm``, ``bmm``, ``baddbmm``, ``addmv``, the softmax of attention
that materialises its scores and the fused SDPA kernels that hide theirs, with their
backward; under ``torch.inference_mode`` the undecomposed ``conv2d``, ``linear``,
``matmul`` and ``scaled_dot_product_attention``; :data:`KINDS`), with the arguments of the
first call of each distinct signature (operator, and every tensor's shape, strides and
dtype) copied as they were, strides included. Each distinct call is then replayed alone
under ``torch.inference_mode``: 2 untimed calls, then the median of ``--calls`` timed
ones. The **floor** is the sum over the step's calls of those medians: what the step would
take if everything else (norms, element-wise work, copies, the optimiser, Python and
dispatch) cost nothing and every heavy operator ran as fast as it does alone with its
operands in cache, an optimistic bound that no implementation of the same operators at
the same shapes and layouts beats.

Per case it prints the step's own time in the same process (``step_ms``: the median of
``--steps`` timed steps after 3 untimed), the floor in total and by kind (``conv``,
``gemm``, ``attention``), the floor's share of the step, the GFLOP of the recorded calls
(``torch.utils.flop_counter`` on each replayed call) and the rate the floor implies.
``--ops N`` also lists the N distinct calls with the largest total time.

The gaf cases are ``benchmarks/step_profile.py``'s (built by each benchmark's own code).
Everything above ``main`` imports only torch, so the peer script reuses it in the peer
venv. Measure on an otherwise idle machine; no test asserts a timing
(``tests/benchmarks/test_op_floor.py`` checks the recording, the replay's arithmetic
and the output's form at a tiny size).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten, tree_map
from torch.utils.flop_counter import FlopCounterMode

#: operator packets (``aten.<name>``) recorded, per kind
KINDS = {
    "conv": ("convolution", "convolution_backward", "conv2d"),
    "gemm": ("mm", "addmm", "bmm", "baddbmm", "addmv", "linear", "matmul"),
    "attention": ("softmax", "_softmax", "_softmax_backward_data",
                  "scaled_dot_product_attention",
                  "_scaled_dot_product_flash_attention_for_cpu",
                  "_scaled_dot_product_flash_attention_for_cpu_backward",
                  "_scaled_dot_product_efficient_attention",
                  "_scaled_dot_product_efficient_attention_backward"),
}
_KIND_OF = {name: kind for kind, names in KINDS.items() for name in names}


def kind_of(func: Any) -> str | None:
    """The kind of an ATen operator overload, ``None`` for one that is not recorded."""
    return _KIND_OF.get(func.overloadpacket.__name__)


def _leaf_signature(x: Any) -> Any:
    if isinstance(x, torch.Tensor):
        return ("tensor", tuple(x.shape), tuple(x.stride()), str(x.dtype))
    return repr(x)


def _copy(x: Any) -> Any:
    """A tensor's values in fresh storage with the same shape and strides."""
    if not isinstance(x, torch.Tensor):
        return x
    out = torch.empty_strided(x.shape, x.stride(), dtype=x.dtype, device=x.device)
    with torch.no_grad():
        out.copy_(x.detach())
    return out


class Call:
    """One distinct recorded call: how often the step made it, and its first arguments;
    :func:`replay` fills ``ms`` (the median of the replays) and ``flop`` (per call)."""

    def __init__(self, kind: str, op: str, func: Any, args: tuple, kwargs: dict,
                 count: int = 1, ms: float = 0.0, flop: float = 0.0) -> None:
        self.kind, self.op, self.func, self.args, self.kwargs = kind, op, func, args, kwargs
        self.count, self.ms, self.flop = count, ms, flop

    def shapes(self) -> str:
        leaves, _ = tree_flatten((self.args, self.kwargs))
        return " ".join("x".join(map(str, t.shape)) for t in leaves
                        if isinstance(t, torch.Tensor))


class Recorder(TorchDispatchMode):
    """Counts the step's recorded calls by signature and keeps the first one's operands."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: dict[tuple, Call] = {}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001
        kwargs = kwargs or {}
        kind = kind_of(func)
        if kind is not None:
            leaves, spec = tree_flatten((args, kwargs))
            key = (str(func), str(spec), tuple(_leaf_signature(x) for x in leaves))
            call = self.calls.get(key)
            if call is None:
                self.calls[key] = Call(kind, func.overloadpacket.__name__, func,
                                       tree_map(_copy, args), tree_map(_copy, kwargs))
            else:
                call.count += 1
        return func(*args, **kwargs)


def record(step: Callable[[], None], inference: bool) -> list[Call]:
    """The distinct recorded calls of one call of ``step`` (in grad mode unless
    ``inference``)."""
    mode = torch.inference_mode if inference else torch.enable_grad
    with mode(), Recorder() as rec:
        step()
    return list(rec.calls.values())


def replay(calls: list[Call], repeats: int) -> None:
    """Time each call alone (2 untimed, then the median of ``repeats``) and count its
    FLOPs; fills ``ms`` and ``flop``."""
    with torch.inference_mode():
        for call in calls:
            with FlopCounterMode(display=False) as counter:
                call.func(*call.args, **call.kwargs)
            call.flop = float(counter.get_total_flops())
            for _ in range(2):
                call.func(*call.args, **call.kwargs)
            times = []
            for _ in range(repeats):
                t0 = time.perf_counter()
                call.func(*call.args, **call.kwargs)
                times.append(time.perf_counter() - t0)
            call.ms = 1e3 * statistics.median(times)


def step_ms(step: Callable[[], None], steps: int, inference: bool, warmup: int = 3) -> float:
    """The median milliseconds of ``steps`` timed calls of ``step`` after ``warmup``."""
    mode = torch.inference_mode if inference else torch.enable_grad
    with mode():
        for _ in range(warmup):
            step()
        times = []
        for _ in range(steps):
            t0 = time.perf_counter()
            step()
            times.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(times)


def summarise(calls: list[Call], step: float) -> dict:
    """The floor of recorded and replayed ``calls`` against a step of ``step`` ms."""
    floor = {kind: sum(c.count * c.ms for c in calls if c.kind == kind) for kind in KINDS}
    total = sum(floor.values())
    flop = sum(c.count * c.flop for c in calls)
    return {"step_ms": step, "floor_ms": total,
            **{f"{kind}_ms": ms for kind, ms in floor.items()},
            "floor_share": total / step if step else 0.0, "gflop": flop / 1e9,
            "floor_gflops": flop / total / 1e6 if total else 0.0,
            "distinct_calls": len(calls), "calls": sum(c.count for c in calls)}


def floor_of(step: Callable[[], None], inference: bool, steps: int, repeats: int,
             top: int = 0) -> dict:
    """Time ``step``, record one call of it, replay the record: :func:`summarise`'s
    dict, with the ``top`` costliest distinct calls under ``"top"``."""
    measured = step_ms(step, steps, inference)
    calls = record(step, inference)
    replay(calls, repeats)
    row = summarise(calls, measured)
    ranked = sorted(calls, key=lambda c: c.count * c.ms, reverse=True)[:top]
    row["top"] = [{"op": c.op, "shapes": c.shapes(), "count": c.count,
                   "ms_each": c.ms, "ms": c.count * c.ms,
                   "gflops": c.flop / c.ms / 1e6 if c.ms else 0.0} for c in ranked]
    return row


def print_row(prefix: str, name: str, what: str, row: dict, as_json: bool) -> None:
    if as_json:
        print(json.dumps({"case": name, "what": what, **row}), flush=True)
        return
    kinds = " ".join(f"{kind}_ms={row[f'{kind}_ms']:.1f}" for kind in KINDS)
    print(f"{prefix} case={name} step_ms={row['step_ms']:.1f} floor_ms={row['floor_ms']:.1f} "
          f"{kinds} floor_share={row['floor_share']:.3f} gflop={row['gflop']:.2f} "
          f"floor_gflops={row['floor_gflops']:.1f} distinct_calls={row['distinct_calls']} "
          f"calls={row['calls']} ({what})", flush=True)
    for op in row["top"]:
        print(f"  {op['op']} [{op['shapes']}] x{op['count']} ms_each={op['ms_each']:.3f} "
              f"ms={op['ms']:.1f} gflops={op['gflops']:.1f}", flush=True)


def arguments(description: str, cases: Sequence[str]) -> argparse.ArgumentParser:
    """The options both sides share."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("cases", nargs="*", metavar="CASE",
                   help=f"any of {', '.join(cases)} (default: all)")
    p.add_argument("--steps", type=int, default=10, help="timed steps of the step itself")
    p.add_argument("--calls", type=int, default=9, help="timed replays of each distinct call")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--ops", type=int, default=0, metavar="N",
                   help="also list the N distinct calls with the largest total time")
    p.add_argument("--json", action="store_true")
    p.add_argument("--tiny", action="store_true", help=argparse.SUPPRESS)  # tests
    return p


def main(argv: Sequence[str] | None = None) -> list[dict]:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import step_profile

    cases = ("ldm-train", "ldm-sample", "imagen-cascade", "dpo-train")
    p = arguments(__doc__.splitlines()[0], cases)
    args = p.parse_args(argv)
    for name in args.cases:
        if name not in cases:
            p.error(f"unknown case {name!r}; the cases are {', '.join(cases)}")
    torch.set_num_threads(args.threads)
    import gaf

    gaf.tune_malloc()  # as the gaf command
    rows = []
    for name in args.cases or cases:
        with step_profile.CASES[name](args.tiny) as (step, what):
            row = floor_of(step, name in step_profile.INFERENCE, args.steps, args.calls,
                           args.ops)
        rows.append({"case": name, **row})
        print_row("op_floor", name, what, row, args.json)
    return rows


if __name__ == "__main__":
    main()
