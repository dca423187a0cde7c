"""The tables of the autoregressive text-to-image models (issue 18) from trained runs.

    python examples/token_tables.py DALLE_RUN [--parti PARTI_RUN] [--rerank-clip CLIP_RUN]
        [--split eval|validation] [--guidance 1,2,3,5] [--top-k 8,32,256]
        [--candidates 1,4,16] [--out DIR]

Nothing is trained: each table cell loads the run's ``tokens`` pipeline
(:meth:`~gaf.plugins.t2i.tokens.pipeline.TokenPipeline.from_run`) with the cell's sampler
and options, and scores it with the one evaluation of every text-to-image generator
(:func:`gaf.plugins.t2i.evaluation.evaluate_pipeline`) on the split ``--split`` (the
held-out ``eval`` by default; ``validation`` when choosing defaults), with the same
captions, seeds, feature net and evaluation CLIP for every cell:

* **guidance × top-k** (DALLE_RUN): ``top-k`` sampling with each k of ``--top-k`` (k equal
  to the codebook size is plain sampling) at each classifier-free guidance scale of
  ``--guidance``;
* **reranking** (DALLE_RUN, with ``--rerank-clip``, a *generation* CLIP run, never the
  evaluation CLIP): N candidates per caption for each N of ``--candidates``, the one
  the generation CLIP puts closest to its caption kept, at the run's own guidance and
  sampler;
* **dalle against parti** (with ``--parti``): both at their runs' own guidance and
  sampler.

Under each table, the tokenizer's ceiling: the evaluator's reading of the real images'
codes decoded (DALLE_RUN's first stage), what a token model that drew exactly the
right codes would score.

Writes ``tables.md`` and ``tables.json`` into ``--out`` (default ``DALLE_RUN/tables``)
and one grid per table (``grid_guidance_topk.png``, ``grid_rerank.png``,
``grid_models.png``: a row per cell, the first 8 unseen captions as columns, each
column's caption listed in the ``.txt`` beside it); prints the tables.
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

ATTRIBUTES = ("colour", "shape", "size", "position", "relation", "exact")


def numbers(text: str, kind: Callable[[str], Any]) -> list[Any]:
    return [kind(x) for x in text.split(",") if x.strip()]


class Judge:
    """The evaluation shared by every cell: the run's datasets, one feature net and one
    evaluation CLIP (cached in the first run's directory unless ``clip_dir`` is given)."""

    def __init__(self, run_dir: Path, split: str, clip_dir: Path | None, n: int):
        from gaf import config as gaf_config
        from gaf.plugins.t2i.evaluation import caption_sets, evaluation_splits
        from gaf.plugins.t2i.training_data import conditions_of
        from gaf.registry import REGISTRY
        from gaf.runs import RunContext
        from gaf.spec import resolve

        cfg = run_dir / "config.toml"
        spec = resolve(gaf_config.read_toml(cfg), registry=REGISTRY, where=str(cfg))
        ctx = RunContext(spec, run_dir, registry=REGISTRY)
        self.train_ds = ctx.component("dataset")
        self.eval_ds, _, _ = evaluation_splits(ctx, split, self.train_ds)
        options = spec.objective_config
        self.clip_dir = clip_dir or Path(options.eval_clip_dir or run_dir / "evaluation_clip")
        self.clip_steps = int(options.eval_clip_steps)
        self.features_dir = run_dir / "features"
        self.n = n
        self.captions = conditions_of(self.eval_ds, "caption")
        #: the headline set: the first ``n`` eval items whose caption is unseen in training
        self.head = caption_sets(conditions_of(self.train_ds, "caption"), self.captions,
                                 n)["unseen"]

    def __call__(self, pipe: Any, options: dict[str, Any]) -> dict[str, float]:
        from gaf.plugins.t2i.evaluation import evaluate_pipeline

        return evaluate_pipeline(
            pipe, options, train_ds=self.train_ds, eval_ds=self.eval_ds, swapped_ds=None,
            condition_key="caption", n_captions=self.n, fd_images=self.n,
            features_dir=self.features_dir, clip_dir=self.clip_dir,
            clip_steps=self.clip_steps, batch_size=100, throughput_batch=0,
            grid_prompts=0, out_dir=None, seed=0, log=lambda _m: None)

    def tokenizer(self, pipe: Any) -> dict[str, float]:
        """The first stage's ceiling on the real images of the unseen set
        (:func:`~gaf.plugins.t2i.tokens.objective.tokenizer_quality`)."""
        from gaf.plugins.images.batches import stack_images
        from gaf.plugins.t2i.tokens.objective import tokenizer_quality

        return tokenizer_quality(pipe.autoencoder,
                                 stack_images(self.eval_ds, self.head).to(pipe.device),
                                 [self.captions[i] for i in self.head],
                                 self.eval_ds.evaluator())

    def grid(self, cells: Sequence[tuple[str, Any, dict[str, Any]]], path: Path) -> None:
        """A row per cell (its pipeline at its options), the first 8 unseen captions."""
        import torch

        from gaf.plugins.images.grid import save_grid
        from gaf.plugins.t2i.evaluation import sample_in_batches

        picks = self.head[:8]
        rows = torch.stack([sample_in_batches(pipe, [self.captions[i] for i in picks],
                                              list(picks), batch_size=100, **options)
                            for _, pipe, options in cells])
        save_grid(rows, path)
        path.with_suffix(".txt").write_text(
            "rows: " + ", ".join(name for name, _, _ in cells) + "\n"
            + "".join(f"column {j + 1}: {self.captions[i]}\n" for j, i in enumerate(picks)),
            encoding="utf-8")


def cell(s: dict[str, Any], key: str) -> str:
    value, se = s.get(key), s.get(f"{key}_se")
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:.2f} ± {se:.2f}" if se is not None else f"{value:.2f}"


def table(first: Sequence[str], rows: Sequence[tuple[Sequence[str], dict[str, Any]]]) -> str:
    head = [*first, *ATTRIBUTES, "FD (floor)", "diversity position / size (real)",
            "CLIP score", "R-precision", "evaluations / image"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for labels, s in rows:
        div = (f"{s.get('diversity_position', math.nan):.2f} / "
               f"{s.get('diversity_size', math.nan):.2f} "
               f"({s.get('diversity_position_real', math.nan):.2f} / "
               f"{s.get('diversity_size_real', math.nan):.2f})")
        lines.append("| " + " | ".join([
            *labels, *(cell(s, f"unseen_{a}") for a in ATTRIBUTES),
            f"{s.get('fd', math.nan):.2f} ({s.get('fd_floor', math.nan):.2f})", div,
            cell(s, "clip_score"), cell(s, "clip_r_precision"),
            f"{s.get('evaluations_per_image', math.nan):.0f}"]) + " |")
    return "\n".join(lines)


def ceiling_row(width: int, s: dict[str, Any]) -> str:
    """The table row of the tokenizer's ceiling (attributes only)."""
    cells = ["the real images' codes, decoded", *[""] * (width - 1),
             *(cell(s, f"tokenizer_{a}") for a in ATTRIBUTES), "", "", "", "", ""]
    return "| " + " | ".join(cells) + " |"


def floors(s: dict[str, Any]) -> str:
    """The line of floors and ceilings under a table (the same for every cell)."""
    parts = [f"{a} {s[f'floor_{a}']:.2f}" for a in ATTRIBUTES if f"floor_{a}" in s]
    reals = [f"{a} {s[f'ceiling_{a}']:.2f}" for a in ATTRIBUTES if f"ceiling_{a}" in s]
    return (f"Floors (samples against shuffled captions, first row): {', '.join(parts)}; "
            f"real images: {', '.join(reals)}; CLIP score of real images "
            f"{s.get('clip_score_real', math.nan):.2f}, R-precision "
            f"{s.get('clip_r_precision_real', math.nan):.2f} (chance "
            f"{s.get('clip_r_precision_floor', math.nan):.2f}).")


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    from gaf.plugins.t2i.tokens.pipeline import TokenPipeline

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run", type=Path, help="a trained dalle run")
    parser.add_argument("--parti", type=Path, help="a trained parti run")
    parser.add_argument("--rerank-clip", type=Path, help="the generation CLIP (a clip run)")
    parser.add_argument("--split", choices=("eval", "validation"), default="eval")
    parser.add_argument("--guidance", default="1,2,3,5")
    parser.add_argument("--top-k", default="8,32,256")
    parser.add_argument("--candidates", default="1,4,16")
    parser.add_argument("--captions", type=int, default=200, help="captions per set")
    parser.add_argument("--clip-dir", type=Path, help="the evaluation CLIP's directory")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    out = args.out or args.run / "tables"
    out.mkdir(parents=True, exist_ok=True)
    judge = Judge(args.run, args.split, args.clip_dir, args.captions)
    results: dict[str, Any] = {"split": args.split, "run": str(args.run)}
    sections = []
    ceiling = judge.tokenizer(TokenPipeline.from_run(args.run))
    results["tokenizer"] = ceiling

    rows, cells = [], []
    for k in numbers(args.top_k, int):
        pipe = TokenPipeline.from_run(args.run, sampler="top-k", sampler_options={"k": k})
        for g in numbers(args.guidance, float):
            s = judge(pipe, {"guidance": g})
            rows.append(((str(k), f"{g:g}"), s))
            cells.append((f"k={k} s={g:g}", pipe, {"guidance": g}))
            print(f"top-k {k} guidance {g:g}: exact {s.get('unseen_exact', math.nan):.3f} "
                  f"fd {s.get('fd', math.nan):.2f}", flush=True)
    results["guidance_topk"] = [{"k": int(r[0][0]), "guidance": float(r[0][1]), **r[1]}
                                for r in rows]
    judge.grid(cells, out / "grid_guidance_topk.png")
    sections.append("### guidance × top-k\n\n" + table(("top-k", "guidance"), rows)
                    + "\n" + ceiling_row(2, ceiling) + "\n\n" + floors(rows[0][1]))

    if args.rerank_clip:
        from gaf.plugins.clip.frozen import load_clip

        pipe = TokenPipeline.from_run(args.run)
        pipe.reranker = load_clip(args.rerank_clip, who="--rerank-clip")
        rows, cells = [], []
        for n in numbers(args.candidates, int):
            s = judge(pipe, {"candidates": n})
            rows.append(((str(n),), s))
            cells.append((f"N={n}", pipe, {"candidates": n}))
            print(f"candidates {n}: exact {s.get('unseen_exact', math.nan):.3f}", flush=True)
        results["rerank"] = [{"candidates": int(r[0][0]), **r[1]} for r in rows]
        judge.grid(cells, out / "grid_rerank.png")
        sections.append("### reranking by the generation CLIP\n\n"
                        + table(("candidates N",), rows) + "\n" + ceiling_row(1, ceiling)
                        + "\n\n" + floors(rows[0][1]))

    if args.parti:
        rows, cells = [], []
        for name, run in (("dalle", args.run), ("parti", args.parti)):
            pipe = TokenPipeline.from_run(run)
            s = judge(pipe, {})
            params = sum(p.numel() for p in pipe.model.parameters())
            rows.append(((name, f"{params / 1e6:.2f}M", f"{pipe.default_guidance:g}"), s))
            cells.append((name, pipe, {}))
        results["models"] = [{"model": r[0][0], **r[1]} for r in rows]
        judge.grid(cells, out / "grid_models.png")
        sections.append("### dalle against parti\n\n"
                        + table(("model", "parameters", "guidance"), rows)
                        + "\n" + ceiling_row(3, ceiling) + "\n\n" + floors(rows[0][1]))

    text = "\n\n".join(sections)
    (out / "tables.md").write_text(text + "\n", encoding="utf-8")
    (out / "tables.json").write_text(json.dumps(results, indent=2, default=float) + "\n",
                                     encoding="utf-8")
    print(text)
    return results


if __name__ == "__main__":
    main()
