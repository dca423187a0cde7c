"""Does ``torch.compile`` pay off for gaf's default steps and runs on this CPU?

    python benchmarks/compile_probe.py steady [CASE ...] [--rounds 4] [--steps 10]
    python benchmarks/compile_probe.py whole-run [--rounds 2] [-- GAF_RUN_ARGS ...]

Issue 23 allows ``torch.compile`` where its warm-up pays off within a realistic default
run, so this script measures both halves of that question, with the compiled code
installed from outside (gaf ships no compile switch: see docs/benchmarks.md § torch.compile):

* the GPT-2 blocks (``gaf.plugins.lm.gpt2.Block.forward``) are compiled per block with
  ``dynamic=True`` (sequence lengths vary from batch to batch), for every call without a
  key/value cache (training, reference and evaluation scoring; token-by-token sampling
  stays eager);
* the UNet (``gaf.plugins.diffusion.unet.UNet.forward``) is compiled whole, static shapes.

``steady``: for each case of ``benchmarks/step_profile.py`` (``dpo-train``,
``ldm-train``, ``ldm-sample``; default all three), the step built by that script's own
code, eager and compiled in one process, alternating blocks of ``--steps`` steps for
``--rounds`` rounds, the order swapped every round. Prints the first compiled step's
seconds (the compile time, roughly), the medians per step, their ratio (eager over
compiled: above 1 means compiled is faster) and how many rounds compiled won.

``whole-run``: the default ``gaf run`` (``--objective dpo --policy gpt2-tiny`` unless
arguments follow ``--``) in fresh processes, alternately eager and compiled, ``--rounds``
times each: the command's wall seconds, every stage's ``train_s`` / ``eval_s`` /
``peak_rss_mb`` from its ``summary.json``, and the headline metrics, so that the compile
cost, the steady-state gain and any change of result show together.

Measure on an otherwise idle machine; no test asserts a timing
(tests/benchmarks/test_compile_probe.py runs the steady case at a tiny size for its form).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

#: whether the patched ``forward`` methods take their compiled versions
ENABLED = {"on": False}
_INSTALLED: list[tuple[type, Callable]] = []


def install() -> None:
    """Patch ``Block.forward`` and ``UNet.forward`` to call a per-instance compiled copy
    while ``ENABLED["on"]``; :func:`uninstall` restores them."""
    from gaf.plugins.diffusion.unet.model import UNet
    from gaf.plugins.lm.gpt2 import Block

    _patch(Block, dynamic=True, use=lambda args, kw: (args[2] if len(args) > 2
                                                    else kw.get("past")) is None)
    _patch(UNet, dynamic=False, use=lambda args, kw: True)


def uninstall() -> None:
    while _INSTALLED:
        cls, forward = _INSTALLED.pop()
        cls.forward = forward


def _patch(cls: type, dynamic: bool, use: Callable[[tuple, dict], bool]) -> None:
    eager = cls.forward
    compiled: dict[int, Callable] = {}

    def forward(self, *args: Any, **kw: Any) -> Any:
        if not ENABLED["on"] or not use(args, kw):
            return eager(self, *args, **kw)
        fn = compiled.get(id(self))
        if fn is None:
            fn = compiled[id(self)] = torch.compile(eager.__get__(self), dynamic=dynamic)
        return fn(*args, **kw)

    _INSTALLED.append((cls, eager))
    cls.forward = forward


# ---------------------------------------------------------------------------- steady


def steady(step: Callable[[], None], rounds: int, block: int, inference: bool) -> dict:
    """Eager against compiled ``step``, alternating blocks of ``block`` steps."""
    mode = torch.inference_mode if inference else torch.enable_grad
    times: dict[str, list[float]] = {"eager": [], "compiled": []}
    with mode():
        ENABLED["on"] = False
        step()
        t0 = time.perf_counter()
        step()
        eager_first = time.perf_counter() - t0
        ENABLED["on"] = True
        t0 = time.perf_counter()
        step()
        compile_s = time.perf_counter() - t0 - eager_first
        step()
        for r in range(rounds):
            for side in (("eager", "compiled") if r % 2 == 0 else ("compiled", "eager")):
                ENABLED["on"] = side == "compiled"
                t0 = time.perf_counter()
                for _ in range(block):
                    step()
                times[side].append((time.perf_counter() - t0) / block)
    ENABLED["on"] = False
    eager, comp = (statistics.median(times[k]) for k in ("eager", "compiled"))
    return {"compile_s": compile_s, "eager_ms": 1e3 * eager, "compiled_ms": 1e3 * comp,
            "ratio": eager / comp, "compiled_faster_rounds":
            sum(c < e for e, c in zip(times["eager"], times["compiled"])), "rounds": rounds}


# ------------------------------------------------------------------------- whole run


def whole_run(rounds: int, run_args: Sequence[str]) -> list[dict]:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(rounds):
            for side in (("eager", "compiled") if r % 2 == 0 else ("compiled", "eager")):
                name = f"{side}{r}"
                cmd = [sys.executable, __file__, "_child", side, "--", *run_args,
                       "--out", tmp, "--name", name, "-q"]
                t0 = time.perf_counter()
                subprocess.run(cmd, check=True)
                row = {"side": side, "round": r, "wall_s": time.perf_counter() - t0,
                       "stages": _stages(Path(tmp) / name)}
                rows.append(row)
                print(json.dumps(row), flush=True)
    for side in ("eager", "compiled"):
        walls = [row["wall_s"] for row in rows if row["side"] == side]
        print(f"compile_probe whole_run side={side} median_wall_s={statistics.median(walls):.1f} "
              f"runs={len(walls)}")
    return rows


def _stages(run: Path) -> dict[str, dict]:
    out = {}
    for path in sorted(run.rglob("summary.json")):
        s = json.loads(path.read_text())
        keep = {k: s.get(k) for k in ("train_s", "eval_s", "wall_s", "peak_rss_mb")}
        keep.update({k: v for k, v in s.items() if isinstance(v, float) and (
            "win_rate" in k or "reward" in k or k.startswith("eval_"))})
        out[str(path.parent.relative_to(run)) or "."] = keep
    return out


def _child(side: str, run_args: list[str]) -> None:
    install()
    ENABLED["on"] = side == "compiled"
    from gaf.cli import main as gaf_main

    gaf_main(["run", *run_args], standalone_mode=True)


# ---------------------------------------------------------------------------- main


def main(argv: Sequence[str] | None = None) -> list[dict]:
    argv = list(sys.argv[1:] if argv is None else argv)
    run_args = ["--objective", "dpo", "--policy", "gpt2-tiny"]
    if "--" in argv:
        at = argv.index("--")
        argv, run_args = argv[:at], argv[at + 1:] or run_args
    if argv[:1] == ["_child"]:
        _child(argv[1], run_args)
        return []
    import step_profile

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("mode", choices=("steady", "whole-run"))
    p.add_argument("cases", nargs="*", metavar="CASE",
                   help="steady: any of dpo-train, ldm-train, ldm-sample (default: all)")
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--steps", type=int, default=10, help="steady: steps per block")
    p.add_argument("--json", action="store_true")
    p.add_argument("--tiny", action="store_true", help=argparse.SUPPRESS)  # tests
    args = p.parse_args(argv)
    if args.mode == "whole-run":
        return whole_run(args.rounds, run_args)
    cases = args.cases or ["dpo-train", "ldm-train", "ldm-sample"]
    for name in cases:
        if name not in ("dpo-train", "ldm-train", "ldm-sample"):
            p.error(f"unknown case {name!r}; the cases are dpo-train, ldm-train, ldm-sample")
    import gaf

    gaf.tune_malloc()  # as the gaf command
    rows = []
    install()
    try:
        for name in cases:
            with step_profile.CASES[name](args.tiny) as (step, what):
                row = {"case": name, "what": what,
                       **steady(step, args.rounds, args.steps, inference=name == "ldm-sample")}
            rows.append(row)
            print(json.dumps(row) if args.json else
                  f"compile_probe case={name} compile_s={row['compile_s']:.1f} "
                  f"eager_ms={row['eager_ms']:.1f} compiled_ms={row['compiled_ms']:.1f} "
                  f"ratio={row['ratio']:.3f} compiled_faster_rounds="
                  f"{row['compiled_faster_rounds']}/{row['rounds']} ({what})", flush=True)
    finally:
        uninstall()
    return rows


if __name__ == "__main__":
    main()
