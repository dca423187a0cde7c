"""Peak resident memory of every objective's default run (issue 23 § 4).

    python benchmarks/default_run_memory.py [OBJECTIVE ...] [--short N] [--out DIR] [--json]

Runs ``gaf run --objective OBJECTIVE`` with nothing else (every objective the registry
lists, in :data:`ORDER`, unless some are named), each in a fresh process, one after
the other, and prints per run:

* ``maxrss_mb``: the process's peak resident set (``ru_maxrss`` from ``os.wait4``: the
  whole command, import, every stage, training and evaluation);
* ``stages``: each ``summary.json`` under the run (the run and its sub-runs: ``sft/``,
  ``first_stage/``, ...), with its ``steps`` and its ``peak_rss_mb`` (the process's
  peak so far when that stage ended), ``train_s`` and ``eval_s``;
* ``wall_s``: the command's wall seconds (not a speed figure unless the machine was
  idle), and ``exit``, the command's exit status (a failed run is reported and the
  sweep goes on).

``diffusion-dpo`` fine-tunes a trained ``ldm`` run: it gets ``--set
objective.init_run=`` the ``ldm`` run of the same sweep (run ``ldm`` first, or name it).

``--short N`` shortens every training stage to ``N`` steps (``train.steps`` and each
objective option in :data:`STAGE_STEPS`) and keeps the evaluation as it is: the run's
working set (models, optimiser state, one step's activations, the evaluation's
batches) without its length. docs/benchmarks.md § Memory says which rows are shortened
and compares a shortened run with the full one.

Memory does not depend on the machine's load, so this can run beside other work; its
wall times then mean nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

#: the language-model half first (fast), then the image half; diffusion-dpo after ldm
ORDER = ("sft", "reward", "dpo", "cdpo", "robust", "hinge", "ipo", "kto", "orpo",
         "simpo", "ranking-dpo", "reinforce", "rloo", "ppo",
         "autoencoder", "clip", "gan-int-cls", "gan-int-cls-modern", "dalle", "parti",
         "ldm", "diffusion-dpo", "unclip", "imagen", "imagen-sr", "image-to-image")
#: objective options that count the training steps of a stage (shortened by --short)
STAGE_STEPS = ("sft_steps", "first_stage_steps", "clip_steps", "eval_clip_steps",
               "text_encoder_steps", "sr_steps", "reward_clip_steps")
#: objective options that count sampling steps (never shortened: evaluation stays as is)
SAMPLING_STEPS = ("eval_steps", "sample_steps", "eval_sr_steps", "eval_prior_steps")


def command(name: str, out: Path, short: int, done: dict[str, Path]) -> list[str]:
    """The ``gaf run`` arguments of ``name``'s default run in ``out``."""
    args = ["run", "--objective", name, "--out", str(out), "--name", name, "-q"]
    if name == "diffusion-dpo":
        if "ldm" not in done:
            raise LookupError("diffusion-dpo needs the sweep's ldm run (name ldm before it)")
        args += ["--set", f'objective.init_run="{done["ldm"]}"']
    if short:
        args += ["--set", f"train.steps={short}"]
        args += [a for key in stage_options(name) for a in ("--set", f"objective.{key}={short}")]
    return args


def stage_options(name: str) -> list[str]:
    """The options of ``STAGE_STEPS`` that objective ``name`` has."""
    from gaf import config
    from gaf.registry import REGISTRY

    options = config.to_dict(REGISTRY.default_config("objective", name))
    return [key for key in STAGE_STEPS if key in options]


def run(name: str, out: Path, short: int, done: dict[str, Path]) -> dict:
    cmd = [sys.executable, "-m", "gaf", *command(name, out, short, done)]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - t0
    row = {"objective": name, "short": short, "maxrss_mb": round(usage.ru_maxrss / 1024, 1),
           "wall_s": round(wall, 1), "exit": proc.returncode, "stages": {}}
    if proc.returncode:  # reported, and the sweep goes on
        return row
    run_dir = out / name
    done[name] = run_dir
    stages = {}
    for path in sorted(run_dir.rglob("summary.json")):
        s = json.loads(path.read_text())
        rel = path.parent.relative_to(run_dir)
        stages["run" if rel == Path(".") else str(rel)] = {
            k: s.get(k) for k in ("steps", "peak_rss_mb", "train_s", "eval_s")}
    row["stages"] = stages
    return row


def main(argv: Sequence[str] | None = None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("objectives", nargs="*", metavar="OBJECTIVE")
    p.add_argument("--short", type=int, default=0, metavar="N",
                   help="shorten every training stage to N steps (evaluation unchanged)")
    p.add_argument("--out", type=Path, default=None, help="keep the runs here")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    from gaf.registry import REGISTRY

    known = REGISTRY.names("objective")
    names = args.objectives or [n for n in ORDER if n in known]
    for n in names:
        if n not in known:
            p.error(f"unknown objective {n!r}")
    if "diffusion-dpo" in names and "ldm" not in names[:names.index("diffusion-dpo")]:
        p.error("diffusion-dpo fine-tunes the sweep's ldm run: name ldm before it")
    rows: list[dict] = []
    done: dict[str, Path] = {}
    with tempfile.TemporaryDirectory() as tmp:
        out = args.out or Path(tmp)
        for name in names:
            try:
                row = run(name, out, args.short, done)
            except LookupError as e:  # its ldm run failed
                row = {"objective": name, "short": args.short, "maxrss_mb": None,
                       "wall_s": 0.0, "exit": f"skipped: {e}", "stages": {}}
            rows.append(row)
            if args.json:
                print(json.dumps(row), flush=True)
            else:
                stages = " ".join(f"{k}:{v['steps']}@{v['peak_rss_mb']}"
                                  for k, v in row["stages"].items())
                print(f"default_run_memory objective={name} exit={row['exit']} "
                      f"maxrss_mb={row['maxrss_mb']} wall_s={row['wall_s']} short={args.short} "
                      f"stages={stages}", flush=True)
    return rows


if __name__ == "__main__":
    main()
