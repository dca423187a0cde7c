"""Is ``train.precision=bf16`` (bf16 autocast) faster than float32 on this CPU?

    python benchmarks/precision_probe.py [CASE ...] [--rounds 4] [--steps 5] [--tiny]

Issue 23 § 2 lists bf16 autocast as a lever "on CPUs that have it". ``gaf run`` offers
it as ``--set train.precision=bf16``: the trainer wraps each loss (forward; the
backward follows autocast's casts) in ``torch.autocast(device_type, torch.bfloat16)``,
on CPU too; ``auto``, the default, is bf16 on CUDA and float32 on CPU. Sampling and
evaluation run in float32 whatever the option.

For each case of ``benchmarks/step_profile.py`` (``dpo-train``, ``ldm-train``,
``ldm-sample``; default all three), the step built by that script's own code runs in one
process under float32 and under bf16 autocast, alternating blocks of ``--steps`` steps
for ``--rounds`` rounds (the order swapped every round, one untimed step of each first).
Prints per case the median seconds per step of each side, their ratio (float32 over
bf16: above 1 means bf16 is faster) and how many rounds bf16 won::

    precision case=… fp32_ms=… bf16_ms=… ratio=… bf16_faster_rounds=…/… cpu_bf16=…

``cpu_bf16`` says whether the CPU reports native bf16 instructions (``avx512_bf16`` or
``amx_bf16`` in /proc/cpuinfo); without them bf16 matmuls are emulated.

bf16 changes results beyond float32 tolerance, so it can only ever be an option, never
a default: tests/diffusion/test_unet.py checks the UNet stays within bf16 rounding of
its float32 output under autocast and tests/core/test_core_train.py that the option
reaches the loss. Measure on an otherwise idle machine; no test asserts a timing
(tests/benchmarks/test_precision_probe.py runs ``--tiny`` for its form).
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import step_profile  # noqa: E402  (this folder)

SIDES = ("fp32", "bf16")
DEFAULT_CASES = ("dpo-train", "ldm-train", "ldm-sample")


def cpu_has_bf16() -> bool:
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return " avx512_bf16" in flags or " amx_bf16" in flags


def precision(side: str) -> contextlib.AbstractContextManager[None]:
    if side == "bf16":
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def alternate(step: Callable[[], None], rounds: int, block: int, inference: bool) -> dict:
    """float32 against bf16 autocast, alternating blocks of ``block`` steps."""
    times: dict[str, list[float]] = {side: [] for side in SIDES}
    mode = torch.inference_mode if inference else torch.enable_grad
    with mode():
        for side in SIDES:
            with precision(side):
                step()
        for r in range(rounds):
            for side in (SIDES if r % 2 == 0 else SIDES[::-1]):
                with precision(side):
                    t0 = time.perf_counter()
                    for _ in range(block):
                        step()
                    times[side].append((time.perf_counter() - t0) / block)
    fp32, bf16 = (statistics.median(times[s]) for s in SIDES)
    return {"fp32_ms": 1e3 * fp32, "bf16_ms": 1e3 * bf16, "ratio": fp32 / bf16,
            "bf16_faster_rounds": sum(b < f for f, b in zip(times["fp32"], times["bf16"])),
            "rounds": rounds}


def main(argv: Sequence[str] | None = None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("cases", nargs="*", metavar="CASE",
                   help=f"any of {', '.join(step_profile.CASES)} "
                        f"(default: {', '.join(DEFAULT_CASES)})")
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--steps", type=int, default=5, help="steps per block")
    p.add_argument("--tiny", action="store_true", help="step_profile's tiny sizes (tests)")
    args = p.parse_args(argv)
    unknown = [c for c in args.cases if c not in step_profile.CASES]
    if unknown:
        p.error(f"unknown case {unknown[0]!r}; the cases are {', '.join(step_profile.CASES)}")
    rows = []
    for case in args.cases or DEFAULT_CASES:
        with step_profile.CASES[case](args.tiny) as (step, _label):
            row = {"case": case, **alternate(step, args.rounds, args.steps,
                                             inference=case.endswith("sample"))}
        row["cpu_bf16"] = cpu_has_bf16()
        rows.append(row)
        print(f"precision case={case} fp32_ms={row['fp32_ms']:.2f} "
              f"bf16_ms={row['bf16_ms']:.2f} ratio={row['ratio']:.3f} "
              f"bf16_faster_rounds={row['bf16_faster_rounds']}/{row['rounds']} "
              f"cpu_bf16={row['cpu_bf16']}", flush=True)
    return rows


if __name__ == "__main__":
    main()
