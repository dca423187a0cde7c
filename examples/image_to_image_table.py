"""The figures of finished ``image-to-image`` runs as markdown tables.

    python examples/image_to_image_table.py RUN_DIR [RUN_DIR ...] [--metrics eval.json]

Nothing is sampled: each run's evaluation (``summary.json``, written by
:func:`gaf.plugins.t2i.image_to_image.evaluation.image_to_image_figures` on the split
its ``objective.eval_split`` names; or, with ``--metrics FILE``, that file of the run
directory, e.g. the ``eval.json`` of a ``gaf eval RUN_DIR --set …`` re-evaluation)
becomes one table, a row per setting (mask kind,
``sr`` or ``colour``) and fill (the baseline, the model without a caption, with it,
and the real images), with the ``shapes`` evaluator's colour, shape, position and exact
match (± binomial standard errors), PSNR, SSIM and, for the captioned outputs, the
in-domain FD and its real-vs-real floor.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

ATTRIBUTES = ("colour", "shape", "position", "exact")
FILLS = (("baseline", "baseline"), ("null", "model, no caption"),
         ("caption", "model, caption"))


def cell(summary: dict[str, Any], key: str, digits: int = 2) -> str:
    value = summary.get(key)
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    se = summary.get(f"{key}_se")
    return f"{value:.{digits}f}" + (f" ± {se:.{digits}f}" if se is not None else "")


def settings(summary: dict[str, Any]) -> list[str]:
    """The run's settings, in the order its evaluation wrote them."""
    out = []
    for key in summary:
        if key.endswith("_caption_psnr"):
            out.append(key.removesuffix("_caption_psnr"))
    return out


def table(run_dir: Path, metrics: str = "summary.json") -> str:
    summary = json.loads((run_dir / metrics).read_text(encoding="utf-8"))
    config = (run_dir / "config.toml").read_text(encoding="utf-8")
    task = next((line.split("=", 1)[1].strip().strip('"') for line in config.splitlines()
                 if line.startswith("task =")), "?")
    n = int(summary.get("eval_images", 0))
    lines = [f"**{run_dir.name}** ({task}; {n} items of the evaluated split)\n",
             "| setting | fill | colour | shape | position | exact | PSNR | SSIM | FD (floor) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for s in settings(summary):
        for key, name in FILLS:
            prefix = f"{s}_{key}"
            if f"{prefix}_psnr" not in summary:
                continue
            fd = "—"
            if key == "caption" and f"{s}_fd" in summary:
                fd = f"{summary[f'{s}_fd']:.2f} ({summary.get(f'{s}_fd_floor', float('nan')):.2f})"
            lines.append(f"| {s} | {name} | " + " | ".join(
                cell(summary, f"{prefix}_{a}") for a in ATTRIBUTES)
                + f" | {cell(summary, prefix + '_psnr', 1)} | {cell(summary, prefix + '_ssim', 3)}"
                + f" | {fd} |")
    lines.append("| — | real images | " + " | ".join(cell(summary, f"real_{a}")
                                                    for a in ATTRIBUTES) + " | — | — | — |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("runs", type=Path, nargs="+")
    parser.add_argument("--metrics", default="summary.json",
                        help="the metrics file in each run directory (default: summary.json)")
    args = parser.parse_args(argv)
    print("\n".join(table(run, args.metrics) for run in args.runs))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
