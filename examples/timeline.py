"""The text-to-image timeline in miniature (issue 15 §6): one row per registered baseline.

    python examples/timeline.py                       # train every baseline, evaluate, write
    python examples/timeline.py --reuse ldm=runs/ldm  # evaluate a finished run instead
    python examples/timeline.py --only ldm --set objective.eval_images=100

**Which objectives are baselines.** Every registered objective whose class declares a
``timeline`` attribute, a dict with at least ``year`` (of the method's paper) and
``method`` (a short name for the table), e.g. on :class:`gaf.plugins.t2i.ldm.LDM`::

    timeline = {"year": 2021, "method": "latent diffusion", "paper": "Rombach et al."}

A baseline that fine-tunes another's run (``diffusion-dpo`` fine-tunes ``ldm``'s)
names it as ``"init_run": "ldm"``; when it is trained here, the run of that baseline
(trained or reused in the same invocation, which runs it first since the years are in
order, or else ``RUNS_DIR/timeline-ldm`` from an earlier one) is passed as
``objective.init_run``. A third-party objective registered through an entry point
joins the table the same way. Objectives without the attribute are not baselines (an
import failure is reported and skipped).

**What runs.** For each baseline, in year order: with ``--reuse NAME=RUN_DIR`` its
finished run is re-evaluated on its saved weights (``gaf eval RUN_DIR``, i.e.
:func:`gaf.launch.evaluate_run`, so the figures come from the current evaluation
code); otherwise it is trained with its defaults (``gaf run --objective NAME``, its
``uses`` components and ``train_defaults``) into ``--runs-dir`` and its summary holds
the evaluation. Either way the figures are those of the one evaluation of every
generator, :func:`gaf.plugins.t2i.evaluation.evaluate_pipeline` (the objective's
``evaluate`` calls it). ``--set KEY=VALUE`` (repeatable) goes to every run (training
and re-evaluation alike); ``--set NAME:KEY=VALUE`` only to baseline ``NAME``.

**What is written.** (a) In ``DOCS/results.md``, everything between the markers
``<!-- timeline -->`` and ``<!-- /timeline -->`` is replaced by the table (one row per
baseline: year, trainable / frozen parameters, training time, network evaluations
and images/s, the evaluator's attributes and exact match on *unseen* captions with
their standard errors, FD and KID with their real-vs-real floors, diversity of the
unstated position and size beside the real data's) and a line naming the command and
commit; nothing outside the markers changes. Rows of baselines not run this time but
already in ``timeline.json`` are kept. (b) ``DOCS/timeline.json``: one object per
baseline keyed by the objective's registered name, with ``method``, ``year``,
``metrics`` (every figure of the evaluation that is not a floor or ceiling),
``floors`` (``floor_*``, ``ceiling_*``, ``fd_floor``, ``kid_floor``,
``kid_floor_se``, ``diversity_*_real``), ``train_s``, the parameter counts,
``run_dir``, ``commit`` and ``command`` (this script's command line) with
``run_command`` (the ``gaf`` command that trained or re-evaluated the run).

Training time is the evaluation's ``train_wall_s`` when the objective reports one
(``ldm``: the run's wall time from its start to its last step, a first stage trained
inside it included, plus a reused first stage's own run), else the run summary's
``setup_s + train_s``.
"""

from __future__ import annotations

import argparse
import json
import math
import shlex
import subprocess
import sys
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

START, END = "<!-- timeline -->", "<!-- /timeline -->"
ROOT = Path(__file__).resolve().parents[1]
#: the evaluator's attributes, in table order (scored on the unseen captions)
ATTRIBUTES = ("colour", "shape", "size", "position", "relation", "count", "exact")
FLOOR_KEYS = ("fd_floor", "kid_floor", "kid_floor_se")


def baselines(registry: Any = None) -> dict[str, dict[str, Any]]:
    """Registered objective name → its ``timeline`` dict, for every objective that
    declares one (sorted by year, then name)."""
    from gaf.errors import BadConfig

    if registry is None:
        from gaf.registry import REGISTRY as registry
    found = {}
    for name in registry.names("objective"):
        try:
            cls = registry.get("objective", name)
        except Exception as exc:  # a broken third-party objective must not stop the table
            warnings.warn(f"timeline: objective {name!r} could not be loaded ({exc}); skipped",
                          stacklevel=2)
            continue
        meta = getattr(cls, "timeline", None)
        if meta is None:
            continue
        if not isinstance(meta, Mapping) or "year" not in meta or "method" not in meta:
            raise BadConfig(f"objective {name!r}: its timeline attribute must be a dict with "
                            f"'year' and 'method', got {meta!r}")
        found[name] = dict(meta)
    return dict(sorted(found.items(), key=lambda kv: (int(kv[1]["year"]), kv[0])))


def is_floor(key: str) -> bool:
    """Whether a metric is a reference point rather than a figure of the method."""
    return (key.startswith(("floor_", "ceiling_")) or key in FLOOR_KEYS
            or (key.startswith(("diversity_", "clip_")) and key.endswith("_real"))
            or (key.startswith("clip_") and "_floor" in key))


def entry(name: str, meta: Mapping[str, Any], metrics: Mapping[str, Any],
          summary: Mapping[str, Any] | None, *, run_dir: str, command: str,
          run_command: str, commit: str | None) -> dict[str, Any]:
    """The ``timeline.json`` object of one baseline."""
    numbers = {k: float(v) for k, v in metrics.items()
               if isinstance(v, (int, float)) and not isinstance(v, bool)}
    train_s = numbers.get("train_wall_s")
    if train_s is None and summary:
        train_s = float(summary.get("setup_s") or 0.0) + float(summary.get("train_s") or 0.0)
    return {
        "objective": name, "method": meta["method"], "year": int(meta["year"]),
        **{k: v for k, v in meta.items() if k not in ("method", "year")},
        "trainable_parameters": numbers.get("trainable_parameters"),
        "frozen_parameters": numbers.get("frozen_parameters"),
        "train_s": train_s,
        "metrics": {k: v for k, v in sorted(numbers.items()) if not is_floor(k)},
        "floors": {k: v for k, v in sorted(numbers.items()) if is_floor(k)},
        "run_dir": run_dir, "commit": commit, "command": command, "run_command": run_command,
    }


# ------------------------------------------------------------------ the table


def _num(x: Any, fmt: str = "{:.2f}") -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    return fmt.format(x)


def _with_se(m: Mapping[str, float], key: str) -> str:
    if key not in m:
        return "–"
    se = m.get(f"{key}_se")
    return _num(m[key]) + (f" ± {_num(se)}" if se is not None else "")


def _count(n: Any) -> str:
    if n is None:
        return "–"
    n = float(n)
    return f"{n / 1e6:.2f}M" if n >= 1e5 else f"{n / 1e3:.1f}k" if n >= 1e3 else f"{n:.0f}"


def _duration(s: Any) -> str:
    if s is None:
        return "–"
    s = float(s)
    return f"{s / 3600:.1f} h" if s >= 3600 else f"{s / 60:.1f} min" if s >= 60 else f"{s:.0f} s"


def _milli(x: Any, se: Any) -> str:
    """``x`` × 10³ with its standard error (KID is small and noisy at 200 images)."""
    if x is None:
        return "–"
    return f"{1e3 * x:.1f}" + (f" ± {1e3 * se:.1f}" if se is not None else "")


def _pair(a: Any, b: Any, fmt: str = "{:.2f}") -> str:
    return f"{_num(a, fmt)} ({_num(b, fmt)})"


HEADER = ("| method | year | parameters trainable / frozen | training | evaluations / image "
          "| images/s | " + " | ".join(ATTRIBUTES) + " | FD (floor) | KID ×10³ ± SE (floor) "
          "| diversity position / size (real) | CLIP score (floor / real) "
          "| CLIP R-precision (floor / real) |")


def table(entries: Mapping[str, Mapping[str, Any]]) -> str:
    """The markdown table, one row per ``timeline.json`` object, in year order."""
    rows = [HEADER, "|" + "---|" * (HEADER.count("|") - 1)]
    for name, e in sorted(entries.items(), key=lambda kv: (kv[1]["year"], kv[0])):
        m, f = e["metrics"], e["floors"]
        kid = m.get("kid")
        kid_floor = f.get("kid_floor")
        cells = [
            f"{e['method']} (`{name}`)", str(e["year"]),
            f"{_count(e.get('trainable_parameters'))} / {_count(e.get('frozen_parameters'))}",
            _duration(e.get("train_s")),
            _num(m.get("evaluations_per_image"), "{:.0f}"),
            _num(m.get("images_per_s"), "{:.1f}"),
            *[_with_se(m, f"unseen_{a}") for a in ATTRIBUTES],
            _pair(m.get("fd"), f.get("fd_floor"), "{:.2f}"),
            f"{_milli(kid, m.get('kid_se'))} ({_milli(kid_floor, f.get('kid_floor_se'))})",
            f"{_num(m.get('diversity_position'))} / {_num(m.get('diversity_size'))} "
            f"({_num(f.get('diversity_position_real'))} / {_num(f.get('diversity_size_real'))})",
            f"{_with_se(m, 'clip_score')} ({_num(f.get('clip_score_floor'))} / "
            f"{_num(f.get('clip_score_real'))})",
            f"{_with_se(m, 'clip_r_precision')} ({_num(f.get('clip_r_precision_floor'))} / "
            f"{_num(f.get('clip_r_precision_real'))})",
        ]
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)


def section(entries: Mapping[str, Mapping[str, Any]]) -> str:
    """What goes between the markers: the table and where it came from."""
    commands = sorted({(e.get("commit") or "?", e["command"]) for e in entries.values()})
    made = "; ".join(f"`{cmd}` at commit `{commit}`" for commit, cmd in commands)
    return (f"{table(entries)}\n\nAttributes are the analytic evaluator's scores on the "
            f"eval captions never seen in training (± binomial standard error); FD and KID "
            f"compare the samples for one set of eval captions with the real images of a "
            f"disjoint set, the floor being the same distance between the two real sets; "
            f"diversity is the entropy (bits) of the unstated attribute's reading; CLIP "
            f"score (2.5·max(cos, 0)) and R-precision (the own caption above all its "
            f"one-attribute swaps) come from the evaluation CLIP, which no method generates, "
            f"guides or reranks with, its floors being the samples against shuffled captions "
            f"and chance, its ceilings the real images. Each row "
            f"is one training run (seed 0 unless its command says otherwise) measured once on "
            f"the held-out eval split, sampled with the settings its objective's evaluation "
            f"defaults to (chosen on the validation split). Made by "
            f"{made}; every figure, with the floors and ceilings, is in `docs/timeline.json`.")


def check_docs(docs: Path) -> str:
    """The text of ``docs/results.md``, checked to hold one pair of markers (done before
    any training, so a wrong ``--docs`` fails at once)."""
    from gaf.errors import BadData

    results = docs / "results.md"
    if not results.is_file():
        raise BadData(f"{results}: no such file (--docs names the folder of results.md)")
    text = results.read_text(encoding="utf-8")
    if text.count(START) != 1 or text.count(END) != 1 or text.index(START) > text.index(END):
        raise BadData(f"{results}: expected one {START} … {END} pair of markers "
                      f"(the timeline section)")
    return text


def write_docs(docs: Path, new: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """Merge ``new`` into ``docs/timeline.json`` and rewrite the marked part of
    ``docs/results.md``; returns the merged objects."""
    from gaf.atomic import atomic_write_text

    results = docs / "results.md"
    text = check_docs(docs)
    path = docs / "timeline.json"
    merged = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    merged.update(new)
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    atomic_write_text(results, f"{head}{START}\n{section(merged)}\n{END}{tail}")
    atomic_write_text(path, json.dumps(merged, indent=2, sort_keys=True) + "\n")
    return merged


# ------------------------------------------------------------------ running


def _commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                             capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return None
    return out.stdout.strip() or None


def _sets_for(name: str, sets: Sequence[str]) -> list[str]:
    out = []
    for s in sets:
        head, eq, _ = s.partition("=")
        if ":" in head and eq:
            target, _, rest = s.partition(":")
            if target == name:
                out.append(rest)
        else:
            out.append(s)
    return out


def _parse_reuse(items: Sequence[str], known: Sequence[str]) -> dict[str, Path]:
    from gaf.errors import BadConfig, did_you_mean

    out = {}
    for item in items:
        name, eq, path = item.partition("=")
        if not eq or not name or not path:
            raise BadConfig(f"--reuse {item!r}: expected OBJECTIVE=RUN_DIR")
        if name not in known:
            raise BadConfig(f"--reuse {item!r}: {name!r} is not a timeline baseline "
                            f"(baselines: {', '.join(known) or 'none'}){did_you_mean(name, known)}")
        out[name] = Path(path)
    return out


def init_run(name: str, meta: Mapping[str, Any], made: Mapping[str, Path],
             runs_dir: Path) -> Path:
    """The run that baseline ``name`` fine-tunes (its ``timeline["init_run"]`` names the
    baseline): the one trained or reused in this invocation, else the one a previous
    invocation trained in ``runs_dir``."""
    from gaf.errors import BadConfig

    base = str(meta["init_run"])
    if base in made:
        return Path(made[base]).resolve()
    previous = runs_dir / f"timeline-{base}"
    if (previous / "pipeline.json").is_file():
        return previous.resolve()
    raise BadConfig(f"baseline {name!r} fine-tunes a {base!r} run: run that baseline too "
                    f"(--only {base}), pass --reuse {base}=RUN_DIR, or --reuse {name}=RUN_DIR")


def run_baseline(name: str, *, reuse: Path | None, sets: Sequence[str], runs_dir: Path,
                 device: str | None) -> tuple[dict[str, Any], dict[str, Any] | None, Path, str]:
    """Train or re-evaluate one baseline → (metrics, summary, run_dir, gaf command)."""
    import gaf
    from gaf.launch import evaluate_run

    quoted = " ".join(f"--set {shlex.quote(s)}" for s in sets)
    if reuse is not None:
        metrics = evaluate_run(reuse, tuple(sets), device=device)
        summary_path = reuse / "summary.json"
        summary = (json.loads(summary_path.read_text(encoding="utf-8"))
                   if summary_path.is_file() else None)
        cmd = f"gaf eval {shlex.quote(str(reuse))}" + (f" {quoted}" if quoted else "")
        return metrics, summary, reuse, cmd
    run_sets = [f"out_dir={json.dumps(str(runs_dir))}", f"name=timeline-{name}", *sets]
    if device:
        run_sets.append(f"device={json.dumps(device)}")
    run_dir, summary = gaf.run(name, sets=run_sets)
    cmd = (f"gaf run --objective {name} --set out_dir={shlex.quote(str(runs_dir))} "
           f"--set name=timeline-{name}" + (f" {quoted}" if quoted else ""))
    return dict(summary), dict(summary), Path(run_dir), cmd


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reuse", action="append", default=[], metavar="OBJECTIVE=RUN_DIR",
                        help="evaluate this finished run instead of training the baseline")
    parser.add_argument("--only", action="append", default=[], metavar="OBJECTIVE",
                        help="run only these baselines (repeatable; default all)")
    parser.add_argument("--set", dest="sets", action="append", default=[],
                        metavar="[OBJECTIVE:]KEY=VALUE", help="option for every run (or one)")
    parser.add_argument("--runs-dir", type=Path, default=ROOT / "runs" / "timeline")
    parser.add_argument("--docs", type=Path, default=ROOT / "docs",
                        help="folder holding results.md and timeline.json")
    parser.add_argument("--device", default=None)
    args = parser.parse_args(argv)
    from gaf.errors import BadConfig, did_you_mean

    found = baselines()
    for name in args.only:
        if name not in found:
            raise BadConfig(f"--only {name!r} is not a timeline baseline (baselines: "
                            f"{', '.join(found) or 'none'}){did_you_mean(name, list(found))}")
    reuse = _parse_reuse(args.reuse, list(found))
    for name, path in reuse.items():
        if not (path / "config.toml").is_file():
            raise BadConfig(f"--reuse {name}={path}: not a run directory (no config.toml)")
    check_docs(args.docs)
    command = "python examples/timeline.py " + " ".join(
        shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv))
    commit = _commit()
    new: dict[str, Any] = {}
    made: dict[str, Path] = dict(reuse)
    for name, meta in found.items():
        if args.only and name not in args.only:
            continue
        print(f"timeline: {name} ({meta['method']}, {meta['year']})", flush=True)
        sets = _sets_for(name, args.sets)
        if reuse.get(name) is None and meta.get("init_run"):
            base = init_run(name, meta, made, args.runs_dir)
            sets = [f"objective.init_run={json.dumps(str(base))}", *sets]
        metrics, summary, run_dir, run_cmd = run_baseline(
            name, reuse=reuse.get(name), sets=sets, runs_dir=args.runs_dir, device=args.device)
        made[name] = run_dir
        new[name] = entry(name, meta, metrics, summary, run_dir=str(run_dir),
                          command=command.strip(), run_command=run_cmd, commit=commit)
    merged = write_docs(args.docs, new)
    print(table(merged))
    return merged


if __name__ == "__main__":
    from gaf.errors import GafError

    try:
        main()
    except GafError as exc:
        sys.exit(f"error: {exc}")
