"""The GAN-INT-CLS ablation (Reed et al. 2016, Table 1 in spirit) on ``shapes``.

    python examples/gan_ablation.py [OUT_DIR] [--only original|modern] [--set KEY=VALUE]
                                    [--split eval|validation]     # default OUT_DIR: runs/gan

Trains the four variants of the paper, each with the paper's loss
(``gan-int-cls``) and with the modern one (``gan-int-cls-modern``): eight runs,

* GAN: neither idea (``objective.cls=false objective.interpolate=false``);
* GAN-CLS: the matching-aware discriminator only;
* GAN-INT: the interpolated captions only;
* GAN-INT-CLS: both (the defaults),

every other option at its default. They share one frozen text CLIP (trained by the
first run, ``RUN/clip``, and named with ``conditioner.clip`` for the others) and one
evaluation CLIP (``OUT_DIR/evaluation_clip``), so they differ only in what is
ablated. Each is scored by the shared text-to-image evaluation on the split
``--split`` (``eval``, the held-out headline, by default): the evaluator's attributes
on 200 unseen captions with standard errors, FD against real images with its floor,
the diversity of the unstated position and size beside the real images' (a collapsed
generator draws the same position for every image of a caption), the CLIP score and
R-precision. Writes ``ablation.md`` and ``ablation.json`` into OUT_DIR and prints the
table; a run whose ``summary.json`` says it completed is reused.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

import gaf

VARIANTS = {"GAN": (False, False), "GAN-CLS": (True, False), "GAN-INT": (False, True),
            "GAN-INT-CLS": (True, True)}
LOSSES = {"original": "gan-int-cls", "modern": "gan-int-cls-modern"}
ATTRIBUTES = ("colour", "shape", "size", "position", "relation", "exact")


def run_one(out: Path, loss: str, variant: str, clip: Path | None, split: str,
            extra: list[str]) -> tuple[Path, dict[str, Any]]:
    name = f"{loss}-{variant.lower()}"
    run_dir = out / name
    summary = run_dir / "summary.json"
    if summary.is_file() and json.loads(summary.read_text()).get("status") == "completed":
        return run_dir, json.loads(summary.read_text())
    cls, interpolate = VARIANTS[variant]
    sets = [f"out_dir={json.dumps(str(out))}", f"name={json.dumps(name)}",
            f"objective.cls={str(cls).lower()}",
            f"objective.interpolate={str(interpolate).lower()}",
            f"objective.eval_split={json.dumps(split)}",
            f"objective.eval_clip_dir={json.dumps(str(out / 'evaluation_clip'))}", *extra]
    if clip is not None:
        sets.append(f"conditioner.clip={json.dumps(str(clip))}")
    return gaf.run(LOSSES[loss], sets=sets)


def cell(s: dict[str, Any], key: str) -> str:
    value, se = s.get(key), s.get(f"{key}_se")
    if value is None:
        return "–"
    return f"{value:.2f} ± {se:.2f}" if se is not None else f"{value:.2f}"


def table(rows: list[tuple[str, str, dict[str, Any]]]) -> str:
    head = ["loss", "variant", *ATTRIBUTES, "FD (floor)", "diversity position / size (real)",
            "CLIP score", "R-precision", "D acc. real / fake", "training"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for loss, variant, s in rows:
        div = (f"{s.get('diversity_position', math.nan):.2f} / "
               f"{s.get('diversity_size', math.nan):.2f} "
               f"({s.get('diversity_position_real', math.nan):.2f} / "
               f"{s.get('diversity_size_real', math.nan):.2f})")
        acc = f"{s.get('d_real_acc', math.nan):.2f} / {s.get('d_fake_acc', math.nan):.2f}"
        lines.append("| " + " | ".join([
            loss, variant, *(cell(s, f"unseen_{a}") for a in ATTRIBUTES),
            f"{s.get('fd', math.nan):.1f} ({s.get('fd_floor', math.nan):.1f})", div,
            cell(s, "clip_score"), cell(s, "clip_r_precision"), acc,
            f"{s.get('train_s', math.nan) / 60:.1f} min"]) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("out", nargs="?", default="runs/gan", help="output directory")
    parser.add_argument("--only", choices=tuple(LOSSES), help="one loss only")
    parser.add_argument("--split", choices=("eval", "validation"), default="eval")
    parser.add_argument("--set", dest="sets", action="append", default=[],
                        help="KEY=VALUE for every run (repeatable)")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    clip: Path | None = None
    rows = []
    for loss in ([args.only] if args.only else list(LOSSES)):
        for variant in VARIANTS:
            run_dir, summary = run_one(out, loss, variant, clip, args.split, args.sets)
            if clip is None:  # the first run trained the text CLIP: the others share it
                meta = json.loads((run_dir / "pipeline.json").read_text())
                clip = Path(meta["conditioner"]["options"]["clip"])
            log = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
            summary = {**{k: log[-1][k] for k in ("d_real_acc", "d_fake_acc") if k in log[-1]},
                       **summary}
            rows.append((loss, variant, summary))
    text = table(rows)
    (out / "ablation.md").write_text(text + "\n", encoding="utf-8")
    (out / "ablation.json").write_text(json.dumps(
        [{"loss": loss, "variant": v, "summary": s} for loss, v, s in rows], indent=2) + "\n",
        encoding="utf-8")
    print(text)


if __name__ == "__main__":
    main()
