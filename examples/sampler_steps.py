"""The DDIM paper's table in miniature: sample quality against the number of steps.

Samples the same eval-split captions from one trained ``ldm`` run with DDIM (η = 0)
at 10, 20, 50 and 100 steps and with DDPM (ancestral) at 1000 steps, plus any other
installed scheduler named with ``--also`` (e.g. the example plugin ``dpm-solver++``),
and reports for each: the shapes evaluator's attribute accuracies, the in-domain FD
against real eval images (with its real-vs-real floor) and the sampling time::

    python examples/sampler_steps.py RUN_DIR [--images 200] [--guidance 3]
        [--also dpm-solver++:10,20] [--out docs/results.md]

Every setting starts from the same initial noise (image ``i`` from seed ``i``), so the
rows differ only by the sampler. The table (Markdown) is printed and, with ``--out``,
written between ``<!-- sampler-steps -->`` markers in that file.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from gaf.config import read_toml
from gaf.plugins.images.batches import stack_images
from gaf.plugins.metrics.features import FeatureNet, cached_feature_net
from gaf.plugins.metrics.frechet import InDomainFD
from gaf.plugins.t2i.evaluation import sample_in_batches
from gaf.plugins.t2i.diffusion_pipeline import DiffusionPipeline

import gaf

DEFAULT = [("ddim", 10), ("ddim", 20), ("ddim", 50), ("ddim", 100), ("ddpm", 1000)]
KEYS = ("colour", "shape", "position", "exact")


def settings(also: list[str]) -> list[tuple[str, int]]:
    out = list(DEFAULT)
    for item in also:
        name, _, steps = item.partition(":")
        out += [(name, int(s)) for s in (steps or "10,20,50").split(",")]
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--guidance", type=float, default=3.0)
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--also", action="append", default=[],
                        help="NAME[:STEPS,STEPS…] another scheduler to compare")
    parser.add_argument("--out", type=Path, help="Markdown file with <!-- sampler-steps --> "
                                                 "markers to fill")
    args = parser.parse_args(argv)

    config = read_toml(args.run_dir / "config.toml")
    ds_options = {k: v for k, v in config["dataset"].items() if k != "name"}
    eval_ds = gaf.create("dataset", config["dataset"]["name"], **{**ds_options, "split": "eval"})
    train_ds = gaf.create("dataset", config["dataset"]["name"], **ds_options)
    n = args.images
    captions = eval_ds.captions()[:n]
    real = stack_images(eval_ds, range(n))
    real2 = stack_images(eval_ds, range(n, 2 * n))
    evaluator = eval_ds.evaluator()
    features = args.run_dir / "first_stage" / "features"
    net = (FeatureNet.load(features) if (features / "feature_net.json").is_file() else
           cached_feature_net(args.run_dir / "features", train_ds, eval_ds, max_train=5000,
                              max_eval=2 * n, compute_floor=False))
    fd = InDomainFD(net=net)
    rows = []
    for name, steps in settings(args.also):
        pipe = DiffusionPipeline.from_run(args.run_dir, scheduler=name)
        t0 = time.perf_counter()
        images = sample_in_batches(pipe, captions, 0, batch_size=args.batch_size,
                                   guidance=args.guidance, steps=steps)
        seconds = time.perf_counter() - t0
        scores = evaluator.score(images, captions)
        dist = fd(real, images, real2)
        row = {"scheduler": name, "steps": steps, **{k: scores[k] for k in KEYS},
               "fd": dist["fd"], "fd_floor": dist["fd_floor"], "seconds": seconds}
        rows.append(row)
        print(json.dumps(row), file=sys.stderr, flush=True)
    table = render(rows, args, n)
    print(table)
    if args.out:
        fill(args.out, table)
    return 0


def render(rows: list[dict], args: argparse.Namespace, n: int) -> str:
    head = ("| sampler | steps | colour | shape | position | exact | in-domain FD | "
            "time (s) |\n|---|---|---|---|---|---|---|---|\n")
    body = "".join(
        f"| {r['scheduler']} | {r['steps']} | {r['colour']:.3f} | {r['shape']:.3f} | "
        f"{r['position']:.3f} | {r['exact']:.3f} | {r['fd']:.3f} | {r['seconds']:.0f} |\n"
        for r in rows)
    note = (f"\n{n} eval-split captions, guidance {args.guidance:g}, the same initial noise "
            f"in every row; FD floor (real vs real, {n} images each): "
            f"{rows[0]['fd_floor']:.3f}.\n")
    return head + body + note


def fill(path: Path, table: str) -> None:
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
