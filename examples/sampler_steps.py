"""The DDIM paper's table in miniature: sample quality against the number of steps.

Samples one trained ``ldm`` run with DDIM (η = 0) at 10, 20, 50 and 100 steps and with
DDPM (ancestral) at 1000 steps, plus any other installed scheduler named with
``--also`` (e.g. the example plugin ``dpm-solver++``), and measures each setting with
the one evaluation of every text-to-image generator,
:func:`gaf.plugins.t2i.evaluation.evaluate_pipeline`: the shapes evaluator's
attributes and exact match on the split's unseen captions (with standard errors),
FD and KID of the samples against a disjoint real set (with their floors), the
network evaluations per image and the sampling time::

    python examples/sampler_steps.py RUN_DIR [--split validation] [--images 200]
        [--guidance 3] [--also dpm-solver++:10,20,50] [--out docs/results.md]

The split defaults to ``validation``: the table chooses the evaluation's number of
steps, and choices are made on validation, never on ``eval``. Every setting samples
item ``i`` from the generator seeded ``i`` (the same initial noise), so the rows
differ only by the sampler. The feature net of FD/KID is the run's own
(``RUN_DIR/features``, trained there on the run's training split when absent). The
table (Markdown) is printed and, with ``--out``, written between
``<!-- sampler-steps -->`` markers in that file.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from gaf.config import read_toml
from gaf.plugins.t2i.diffusion_pipeline import DiffusionPipeline
from gaf.plugins.t2i.evaluation import evaluate_pipeline

import gaf

DEFAULT = [("ddim", 10), ("ddim", 20), ("ddim", 50), ("ddim", 100), ("ddpm", 1000)]
KEYS = ("colour", "shape", "size", "position", "relation", "count")


def settings(also: list[str], rows: list[str] | None = None) -> list[tuple[str, int]]:
    """The default rows (or those of ``rows`` instead), then each ``--also``; an item is
    ``NAME[:STEPS,STEPS…]`` (steps 10, 20, 50 when omitted)."""
    out = [] if rows else list(DEFAULT)
    for item in [*(rows or []), *also]:
        name, _, steps = item.partition(":")
        out += [(name, int(s)) for s in (steps or "10,20,50").split(",")]
    return out


def datasets(run_dir: Path, split: str) -> tuple[object, object]:
    """The run's training dataset (as its config.toml built it) and its ``split``."""
    config = read_toml(run_dir / "config.toml")
    options = {k: v for k, v in config["dataset"].items() if k != "name"}
    name = config["dataset"]["name"]
    train = gaf.create("dataset", name, **options)
    return train, gaf.create("dataset", name, **{**options, "split": split})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--split", default="validation", choices=("validation", "eval"))
    parser.add_argument("--images", type=int, default=200,
                        help="captions per set (and real images in each FD set)")
    parser.add_argument("--guidance", type=float, default=3.0)
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--also", action="append", default=[],
                        help="NAME[:STEPS,STEPS…] another scheduler to compare")
    parser.add_argument("--rows", action="append", default=None,
                        help="NAME[:STEPS,STEPS…] instead of the default rows (repeatable)")
    parser.add_argument("--fd", action=argparse.BooleanOptionalAction, default=True,
                        help="measure FD and KID (--no-fd: the evaluator's scores only)")
    parser.add_argument("--out", type=Path, help="Markdown file with <!-- sampler-steps --> "
                                                 "markers to fill")
    args = parser.parse_args(argv)
    rows = measure(args)
    table = render(rows, args)
    print(table)
    if args.out:
        fill(args.out, table)
    return 0


def measure(args: argparse.Namespace) -> list[dict]:
    """One :func:`evaluate_pipeline` per setting: ``{"scheduler", "steps", **scores}``."""
    train_ds, eval_ds = datasets(args.run_dir, args.split)
    rows = []
    for name, steps in settings(args.also, args.rows):
        pipe = DiffusionPipeline.from_run(args.run_dir, scheduler=name)
        scores = evaluate_pipeline(
            pipe, {"steps": steps, "guidance": args.guidance}, train_ds=train_ds,
            eval_ds=eval_ds, n_captions=args.images, fd_images=args.images if args.fd else 0,
            features_dir=args.run_dir / "features",
            batch_size=args.batch_size, throughput_batch=0, seed=args.seed,
            log=lambda msg: print(msg, file=sys.stderr, flush=True))
        row = {"scheduler": name, "steps": steps, **scores}
        rows.append(row)
        print(json.dumps(row), file=sys.stderr, flush=True)
    return rows


def render(rows: list[dict], args: argparse.Namespace) -> str:
    """The Markdown table: one row per setting, then the floors and what was sampled."""
    head = ("| sampler | steps | evaluations / image | "
            + " | ".join(KEYS) + " | exact (± SE) | FD | KID (± SE) | sampling s / 100 images |\n"
            + "|---" * (len(KEYS) + 7) + "|\n")

    def fmt(r: dict, key: str) -> str:
        return f"{r[key]:.3f}" if key in r else "–"

    body = "".join(
        f"| {r['scheduler']} | {r['steps']} | {r['evaluations_per_image']:g} | "
        + " | ".join(fmt(r, f"unseen_{k}") for k in KEYS)
        + f" | {fmt(r, 'unseen_exact')} ± {fmt(r, 'unseen_exact_se')}"
        + f" | {fmt(r, 'fd')} | {fmt(r, 'kid')} ± {fmt(r, 'kid_se')}"
        + f" | {100 * r['sampling_s'] / r['sampled_n']:.1f} |\n"
        for r in rows)
    first = rows[0]
    floors = " | ".join(fmt(first, f"floor_{k}") for k in KEYS)
    body += (f"| shuffled-caption floor (first row's samples) | | | {floors} | "
             f"{fmt(first, 'floor_exact')} | {fmt(first, 'fd_floor')} | "
             f"{fmt(first, 'kid_floor')} ± {fmt(first, 'kid_floor_se')} | |\n")
    note = (f"\nThe first {args.images} {args.split}-split captions never seen word for word "
            f"in training, guidance {args.guidance:g}, seed {args.seed} (item i from the "
            f"generator seeded {args.seed} + i in every row); FD and KID of the samples for "
            f"the first {args.images} {args.split} items against the real images of the next "
            f"{args.images}, the floor row comparing the real images of the two sets. "
            f"Sampling time: the {first['sampled_n']:.0f} distinct images of the sets in "
            f"batches of {args.batch_size}, decoding included, per 100 images.\n")
    return head + body + note


def fill(path: Path, table: str) -> None:
    """Replace what lies between ``<!-- sampler-steps -->`` markers in ``path``."""
    text = path.read_text(encoding="utf-8")
    start, end = "<!-- sampler-steps -->", "<!-- /sampler-steps -->"
    if start not in text or end not in text:
        raise SystemExit(f"{path} has no {start} … {end} markers")
    head, rest = text.split(start, 1)
    _, tail = rest.split(end, 1)
    path.write_text(f"{head}{start}\n{table}{end}{tail}", encoding="utf-8")


if __name__ == "__main__":
    torch.set_grad_enabled(False)
    sys.exit(main())
