"""Inpainting two ways on the same holes: a trained inpainter against RePaint.

    python examples/inpainting_compare.py INPAINTER_RUN GENERATOR_RUN
        [--split eval|validation] [--images 100] [--steps 50] [--guidance 1,3]
        [--jump-length 2] [--jump-n-sample 10] [--kinds box,grid,stroke] [--out DIR]

INPAINTER_RUN is an ``image-to-image`` run trained for ``inpainting`` (the model sees
the picture with its hole and the mask); GENERATOR_RUN any ``ldm`` run, pixel or latent
space, that never saw a hole: :meth:`DiffusionPipeline.inpaint
<gaf.plugins.t2i.diffusion_pipeline.DiffusionPipeline.inpaint>` fills the holes with
RePaint (:mod:`gaf.plugins.diffusion.repaint`). Nothing is trained.

Both fill the first ``--images`` items of ``--split`` (of INPAINTER_RUN's dataset) under
the same masks as the inpainter's own evaluation
(:func:`gaf.plugins.t2i.image_to_image.evaluation.evaluation_masks`: ``box`` over the
first object's cell, ``grid``, ``stroke``), image ``i`` seeded ``i``, and each row is
scored by the ``shapes`` evaluator against the item's caption (colour, shape, position,
exact, with binomial standard errors) and by PSNR against the real image:

* ``background`` — the hole filled with the background (the baseline);
* ``inpainter`` — the trained inpainter with the caption, and ``inpainter, no caption``;
* ``RePaint g=S`` — the generator with the caption at each guidance scale of
  ``--guidance`` (resampling ``--jump-length`` / ``--jump-n-sample``), and
  ``RePaint, no caption``;
* ``replacement`` — the generator with the known region pasted at every step but no
  resampling (``jump_n_sample = 1``), at the first guidance scale;
* ``real`` — the real images (the ceiling).

Each row also gives the denoiser evaluations per image and the seconds per image of its
sampling on this machine (one pass, not a benchmark). Writes ``inpainting.md`` and
``inpainting.json`` into ``--out`` (default ``INPAINTER_RUN/compare``) and prints the
table.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

ATTRIBUTES = ("colour", "shape", "position", "exact")


def numbers(text: str) -> list[float]:
    return [float(x) for x in text.split(",") if x.strip()]


def load_eval(run_dir: Path, split: str, n: int) -> tuple[Any, Any, list[str]]:
    """The run's evaluated split, its first ``n`` real images and their captions."""
    from gaf import config as gaf_config
    from gaf.plugins.images.batches import stack_images
    from gaf.plugins.t2i.evaluation import evaluation_splits
    from gaf.plugins.t2i.training_data import conditions_of
    from gaf.registry import REGISTRY
    from gaf.runs import RunContext
    from gaf.spec import resolve

    cfg = run_dir / "config.toml"
    spec = resolve(gaf_config.read_toml(cfg), registry=REGISTRY, where=str(cfg))
    ctx = RunContext(spec, run_dir, registry=REGISTRY)
    eval_ds, _, _ = evaluation_splits(ctx, split, ctx.component("dataset"))
    n = min(n, len(eval_ds))
    return eval_ds, stack_images(eval_ds, range(n)), conditions_of(eval_ds, "caption")[:n]


def score(evaluator: Any, real: Any, images: Any, captions: list[str]) -> dict[str, float]:
    from gaf.plugins.metrics.pixel import psnr
    from gaf.plugins.t2i.evaluation import attribute_scores

    scores = attribute_scores(evaluator, images, captions)
    out = {k: scores[k] for k in ATTRIBUTES if k in scores}
    out.update({f"{k}_se": scores[f"{k}_se"] for k in ATTRIBUTES if f"{k}_se" in scores})
    out["psnr"] = float(psnr(real, images).mean())
    return out


def in_batches(fill: Any, n: int, batch: int = 100) -> tuple[Any, float]:
    """``fill(picks)`` over ``range(n)`` in batches, and the seconds per image."""
    import torch

    t0 = time.perf_counter()
    out = torch.cat([fill(list(range(s, min(n, s + batch)))).float().cpu()
                     for s in range(0, n, batch)])
    return out, (time.perf_counter() - t0) / n


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("inpainter", type=Path)
    parser.add_argument("generator", type=Path)
    parser.add_argument("--split", choices=("eval", "validation"), default="eval")
    parser.add_argument("--images", type=int, default=100)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--guidance", type=numbers, default=[1.0, 3.0])
    parser.add_argument("--jump-length", type=int, default=None)
    parser.add_argument("--jump-n-sample", type=int, default=None)
    parser.add_argument("--kinds", default=None,
                        help="comma-separated mask kinds (default: the inpainter's)")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)

    import torch

    with torch.no_grad():  # scoped: callers (tests import main) keep their grad mode
        return compare(parser, args)


def compare(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    """The comparison itself, run by :func:`main` with gradients off."""
    import torch

    import gaf
    from gaf.plugins.diffusion import repaint
    from gaf.plugins.images.grid import save_grid
    from gaf.plugins.t2i.image_to_image.evaluation import baseline, evaluation_masks

    jump_length = args.jump_length or repaint.JUMP_LENGTH
    jump_n = args.jump_n_sample or repaint.JUMP_N_SAMPLE
    inpainter = gaf.REGISTRY.get("pipeline", "image-to-image").from_run(args.inpainter,
                                                                       scheduler="ddpm")
    generator = gaf.REGISTRY.get("pipeline", "diffusion").from_run(args.generator,
                                                                  scheduler="ddim")
    eval_ds, real, captions = load_eval(args.inpainter, args.split, args.images)
    n = len(real)
    evaluator = eval_ds.evaluator()
    masks_of = evaluation_masks("inpainting", tuple(inpainter.task.mask_kinds), eval_ds, n,
                                tuple(real.shape[-2:]), seed=0)
    if args.kinds:
        wanted = [k.strip() for k in args.kinds.split(",") if k.strip()]
        unknown = [k for k in wanted if k not in masks_of]
        if unknown:
            parser.error(f"--kinds {','.join(unknown)}: the inpainter's kinds are "
                         f"{', '.join(masks_of)}")
        masks_of = {k: masks_of[k] for k in wanted}

    def gens(picks: list[int]) -> list[torch.Generator]:
        return [torch.Generator().manual_seed(i) for i in picks]

    results: dict[str, Any] = {"split": args.split, "images": n, "steps": args.steps,
                               "jump_length": jump_length, "jump_n_sample": jump_n,
                               "inpainter": str(args.inpainter),
                               "generator": str(args.generator), "rows": {}}
    out_dir = args.out or args.inpainter / "compare"
    out_dir.mkdir(parents=True, exist_ok=True)
    for kind, masks in masks_of.items():
        rows: dict[str, dict[str, float]] = {}
        shown = []

        def add(name: str, images: Any, seconds: float | None, evaluations: float | None
                ) -> None:
            rows[name] = {**score(evaluator, real, images, captions),
                          "s_per_image": seconds, "evaluations_per_image": evaluations}
            shown.append(images[:8])

        add("background", baseline("inpainting", real, real, masks, shape=real.shape[1:]),
            None, None)
        for label, caps in (("inpainter", captions), ("inpainter, no caption", None)):
            images, sec = in_batches(lambda p, caps=caps: inpainter(
                None if caps is None else [caps[i] for i in p], images=real[p],
                masks=masks[p], steps=args.steps, generators=gens(p)), n)
            add(label, images, sec, inpainter.evaluations_per_image(steps=args.steps))
        settings = [(f"RePaint g={g:g}", captions, g, jump_n) for g in args.guidance]
        settings += [("RePaint, no caption", None, 1.0, jump_n),
                     ("replacement", captions, args.guidance[0], 1)]
        for label, caps, g, r in settings:
            images, sec = in_batches(lambda p, caps=caps, g=g, r=r: generator.inpaint(
                [None] * len(p) if caps is None else [caps[i] for i in p], real[p], masks[p],
                steps=args.steps, guidance=g, jump_length=jump_length, jump_n_sample=r,
                generators=gens(p)), n)
            evaluations = generator.inpaint_evaluations_per_image(
                steps=args.steps, guidance=g if caps is not None else 1.0,
                jump_length=jump_length, jump_n_sample=r)
            add(label, images, sec, evaluations)
        add("real", real, None, None)
        results["rows"][kind] = rows
        save_grid(torch.stack(shown), out_dir / f"grid_{kind}.png")
        print(f"{kind} masks done", flush=True)
    (out_dir / "inpainting.json").write_text(json.dumps(results, indent=2) + "\n")
    table = markdown(results)
    (out_dir / "inpainting.md").write_text(table)
    print(table)
    return 0


def markdown(results: dict[str, Any]) -> str:
    lines = [f"{results['images']} {results['split']} items, {results['steps']} DDIM steps, "
             f"RePaint jump length {results['jump_length']}, "
             f"{results['jump_n_sample']} resamplings\n"]
    for kind, rows in results["rows"].items():
        lines += [f"\n**{kind} masks**\n",
                  "| fill | colour | shape | position | exact | PSNR | evaluations / image "
                  "| s / image |", "|---|---|---|---|---|---|---|---|"]
        for name, r in rows.items():
            cells = [f"{r[k]:.2f} ± {r[k + '_se']:.2f}" if k in r else "—" for k in ATTRIBUTES]
            ev = "—" if r["evaluations_per_image"] is None else f"{r['evaluations_per_image']:g}"
            sec = "—" if r["s_per_image"] is None else f"{r['s_per_image']:.3f}"
            lines.append(f"| {name} | " + " | ".join(cells) + f" | {r['psnr']:.1f} | {ev} | "
                         f"{sec} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
