"""Neural style transfer on ``shapes`` scenes with procedural textures (Gatys et al. 2016),
one feature network against another.

    python examples/style_transfer.py [OUT_DIR] [--split eval|validation] [--scenes N]
        [--textures stripes,checks,...] [--features random-cnn,feature-net,clip-image]
        [--steps N] [--seed S] [--style-weights B1,B2,...] [--tag TAG]
                                                                 # default OUT_DIR: runs/style

The content images are the first ``--scenes`` scenes of the ``shapes`` split
``--split`` at 32×32 (``eval``, the held-out headline, by default; ``validation`` for
choosing weights); the styles are the ``textures`` dataset's textures, one per name,
drawn with ``--seed``. Each scene is stylised with each texture by ``gatys`` (L-BFGS,
``--steps`` iterations, started from the content image) through each feature network:

* ``random-cnn``: the untrained multi-scale CNN (nothing to train);
* ``feature-net``: the project's in-domain classifier, trained here on the ``shapes``
  training split (held-out accuracy on ``validation``; saved in OUT_DIR/feature_net and
  reused);
* ``clip-image``: the CNN image tower of a small CLIP trained here
  (``gaf run --objective clip``, 400 steps of 64 pairs, saved in OUT_DIR/clip and
  reused).

Reported per network, with standard errors over the scenes (each scene's textures
averaged first, as they share its content): the style loss
reached as a fraction of its starting value (the content image's), the content loss,
and the ``shapes`` evaluator's shape and position accuracy against the captions
(content preservation; colour is the texture's to change); each network's losses are in
its own units, so a cross table also reads every network's outputs with every other
network's style loss. Baselines on the same pairs: the content images (the ceiling),
the texture itself and Gaussian noise (floors). ``--style-weights`` sweeps β (α = 1)
instead of using each network's default: the table that chose the defaults (run it on
``validation``). ``--synthesis`` runs Gatys' texture synthesis instead (no content: α = 0,
β = 1, from three noise starts per texture) and judges each network's textures with every
network's style loss (``style-synthesis.md``, ``grid-synthesis.png``). Writes ``style.json``, ``style.md`` and ``grid.png`` (``style-TAG.json``
… with ``--tag TAG``) into OUT_DIR and prints the table.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

import gaf
from gaf.plugins.images.grid import save_grid
from gaf.plugins.images.shapes import ShapesDataset, ShapesConfig
from gaf.plugins.metrics.features import cached_feature_net
from gaf.plugins.style.extractors import resolve_features
from gaf.plugins.style.textures import TEXTURES, texture
from gaf.plugins.style.transfer import Gatys, GatysConfig
from gaf.seeding import torch_generator

RESOLUTION = 32
NETWORKS = ("random-cnn", "feature-net", "clip-image")
CLIP_SETS = ["train.steps=400", "train.batch_size=64", "train.warmup_steps=40",
             "objective.eval_pairs=200", 'objective.eval_split="validation"']


def feature_net_dir(out: Path) -> Path:
    """The in-domain feature net, trained on ``shapes``' training split once."""
    train = ShapesDataset(ShapesConfig(resolution=RESOLUTION, split="train", size=3000))
    held = ShapesDataset(ShapesConfig(resolution=RESOLUTION, split="validation", size=500))
    cached_feature_net(out / "feature_net", train, held, epochs=8, compute_floor=False,
                       num_threads=1, seed=0)
    return out / "feature_net"


def clip_dir(out: Path) -> Path:
    """A small CLIP trained with the project's own objective, once."""
    run = out / "clip"
    summary = run / "summary.json"
    if not (summary.is_file() and json.loads(summary.read_text()).get("status") == "completed"):
        gaf.run("clip", sets=[f"out_dir={json.dumps(str(out))}", 'name="clip"', *CLIP_SETS,
                              "seed=0"])
    return run


def networks(out: Path, names: list[str]) -> dict[str, Any]:
    paths = {"random-cnn": lambda: "random-cnn", "feature-net": lambda: str(feature_net_dir(out)),
             "clip-image": lambda: str(clip_dir(out))}
    return {name: resolve_features(paths[name]()) for name in names}


def mean_se(values: list[float], scenes: list[int]) -> tuple[float, float]:
    """The mean of ``values`` and its standard error with the scenes as clusters: the
    textures of one scene share its content, so the per-scene means are what is
    independent."""
    a = np.asarray(values, dtype=np.float64)
    keys = sorted(set(scenes))
    per_scene = np.array([a[[k == s for s in scenes]].mean() for k in keys])
    se = float(per_scene.std(ddof=1) / math.sqrt(len(keys))) if len(keys) > 1 else 0.0
    return float(a.mean()), se


def summarise(rows: list[dict[str, Any]], evaluator: Any, captions: list[str],
              scenes: list[int]) -> dict[str, Any]:
    """Per row, the fraction of its caption's stated objects whose shape / position the
    evaluator reads right, and the losses; their means with clustered standard errors."""
    out: dict[str, Any] = {"n": len(rows)}
    for key in ("shape", "position"):
        values, where = [], []
        for row, caption, scene in zip(rows, captions, scenes, strict=True):
            checked = evaluator.check(row["image"], caption)
            if key in checked:
                values.append(float(np.mean(checked[key])))
                where.append(scene)
        out[key], out[f"{key}_se"] = mean_se(values, where)
        out[f"{key}_n"] = len(values)
    for key in ("style_fraction", "content_loss", "style_loss"):
        if key in rows[0]:
            out[key], out[f"{key}_se"] = mean_se([r[key] for r in rows], scenes)
    if "judged" in rows[0]:
        out["judged"] = {j: mean_se([r["judged"][j] for r in rows], scenes)[0]
                         for j in rows[0]["judged"]}
    return out


def judge(nets: dict[str, Any], image: torch.Tensor, content: torch.Tensor,
          style: torch.Tensor, starts: dict[str, float]) -> dict[str, float]:
    """Every network's style loss of ``image`` as a fraction of the content image's."""
    out = {}
    for name, net in nets.items():
        loss = Gatys(GatysConfig(), features=net).losses(image, content, style)["style_loss"]
        out[name] = loss / starts[name] if starts[name] else 0.0
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", nargs="?", default="runs/style")
    ap.add_argument("--split", choices=["eval", "validation"], default="eval")
    ap.add_argument("--scenes", type=int, default=20)
    ap.add_argument("--textures", default=",".join(TEXTURES))
    ap.add_argument("--features", default=",".join(NETWORKS))
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--tag", default="", help="suffix of the output files (style-TAG.md …)")
    ap.add_argument("--synthesis", action="store_true",
                    help="texture synthesis instead: each texture from noise, style loss only")
    ap.add_argument("--style-weights", default="",
                    help="comma-separated betas to sweep (alpha = 1); default: each "
                         "network's own alpha and beta")
    args = ap.parse_args()
    torch.set_num_threads(1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    names = [n for n in args.features.split(",") if n]
    textures = [t for t in args.textures.split(",") if t]
    nets = networks(out, names)
    if args.synthesis:
        synthesis(out, nets, textures, args)
        return
    ds = ShapesDataset(ShapesConfig(resolution=RESOLUTION, split=args.split,
                                    size=args.scenes, seed=0))
    evaluator = ds.evaluator()
    pairs = [(i, t) for t in textures for i in range(args.scenes)]
    contents = {i: ds[i]["image"] for i in range(args.scenes)}
    styles = {t: texture(t, RESOLUTION, args.seed, TEXTURES.index(t)) for t in textures}
    captions = [ds.caption(i) for i, _ in pairs]
    gen = torch_generator(args.seed, "style-noise-floor")
    noise = [(torch.randn(3, RESOLUTION, RESOLUTION, generator=gen) * 0.5).clamp(-1, 1)
             for _ in pairs]
    starts = {(name, t, i): Gatys(GatysConfig(), features=net).losses(
        contents[i], contents[i], styles[t])["style_loss"]
        for name, net in nets.items() for i, t in pairs}
    baselines = {
        "content images (ceiling)": [{"image": contents[i], "style_fraction": 1.0}
                                     for i, _ in pairs],
        "texture alone (floor)": [{"image": styles[t], "style_fraction": 0.0} for _, t in pairs],
        "noise (floor)": [{"image": n} for n in noise],
    }
    for rows in baselines.values():
        for row, (i, t) in zip(rows, pairs, strict=True):
            row["judged"] = judge(nets, row["image"], contents[i], styles[t],
                                  {n: starts[(n, t, i)] for n in nets})
    scenes = [i for i, _ in pairs]
    table: dict[str, Any] = {k: summarise(v, evaluator, captions, scenes)
                             for k, v in baselines.items()}
    sweep = [float(b) for b in args.style_weights.split(",") if b] or [None]
    results: dict[str, list[dict[str, Any]]] = {}
    for name, net in nets.items():
        for beta in sweep:
            options = {"steps": args.steps}
            if beta is not None:
                options.update(content_weight=1.0, style_weight=beta)
            gatys = Gatys(GatysConfig(**options), features=net)
            label = f"{name} (α {gatys.content_weight:g}, β {gatys.style_weight:g})"
            start = time.perf_counter()
            rows = []
            for i, t in pairs:
                r = gatys(contents[i], styles[t], seed=args.seed)
                rows.append({"image": r.image, "style_fraction": r.style_fraction,
                             "style_loss": r.style_loss, "content_loss": r.content_loss,
                             "judged": judge(nets, r.image, contents[i], styles[t],
                                             {n: starts[(n, t, i)] for n in nets})})
            results[label] = rows
            table[label] = summarise(rows, evaluator, captions, scenes)
            table[label]["seconds"] = round(time.perf_counter() - start, 1)
            print(f"{label}: {fmt_row(table[label], list(nets))}", flush=True)
    meta = {"split": args.split, "scenes": args.scenes, "textures": textures,
            "texture_seed": args.seed, "steps": args.steps, "resolution": RESOLUTION,
            "pairs": len(pairs), "networks": names}
    tag = f"-{args.tag}" if args.tag else ""
    (out / f"style{tag}.json").write_text(json.dumps({"meta": meta, "rows": table}, indent=2)
                                          + "\n")
    text = markdown(table, list(nets), meta)
    (out / f"style{tag}.md").write_text(text)
    write_grid(out / f"grid{tag}.png", pairs, contents, styles, results, textures)
    print(text)


def synthesis(out: Path, nets: dict[str, Any], textures: list[str], args: Any) -> None:
    """Gatys' texture synthesis (α = 0, β = 1, from noise) with each network, each
    texture's result then judged by every network: its style loss as a fraction of the
    noise start's; three noise starts per texture (seeds ``--seed`` … ``--seed + 2``)."""
    seeds = range(args.seed, args.seed + 3)
    table: dict[str, dict[str, list[float]]] = {}
    images: dict[str, list[torch.Tensor]] = {}
    for name, net in nets.items():
        gatys = Gatys(GatysConfig(steps=args.steps, content_weight=0.0, style_weight=1.0,
                                  init="noise"), features=net)
        table[name] = {j: [] for j in nets}
        images[name] = []
        for t in textures:
            style = texture(t, RESOLUTION, args.seed, TEXTURES.index(t))
            for seed in seeds:
                r = gatys(style, style, seed=seed)
                start = (torch.randn(style.shape, generator=torch_generator(seed, "stylize-init"))
                         * 0.5).clamp(-1, 1)
                for j, judge_net in nets.items():
                    g = Gatys(GatysConfig(), features=judge_net)
                    before = g.losses(start, style, style)["style_loss"]
                    after = g.losses(r.image, style, style)["style_loss"]
                    table[name][j].append(after / before)
                if seed == seeds[0]:
                    images[name].append(r.image)
    head = ["synthesised with", *[f"style loss / noise's ({j})" for j in nets]]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, judged in table.items():
        cells = [name]
        for j in nets:
            a = np.asarray(judged[j])
            cells.append(f"{a.mean():.4f} ± {a.std(ddof=1) / math.sqrt(len(a)):.4f}")
        lines.append("| " + " | ".join(cells) + " |")
    text = "\n".join(lines) + (f"\n\n{len(textures)} textures × {len(seeds)} noise seeds, "
                               f"{args.steps} L-BFGS iterations, {RESOLUTION} px.\n")
    (out / "style-synthesis.md").write_text(text)
    (out / "style-synthesis.json").write_text(json.dumps(table, indent=2) + "\n")
    rows = [torch.stack([texture(t, RESOLUTION, args.seed, TEXTURES.index(t)),
                         *[images[n][k] for n in nets]]) for k, t in enumerate(textures)]
    save_grid(torch.stack(rows), out / "grid-synthesis.png")
    print(text)


def fmt(s: dict[str, Any], key: str, digits: int = 2) -> str:
    if key not in s:
        return "–"
    return f"{s[key]:.{digits}f} ± {s[f'{key}_se']:.{digits}f}"


def fmt_row(s: dict[str, Any], judges: list[str]) -> str:
    judged = " / ".join(f"{s['judged'][j]:.3f}" for j in judges) if "judged" in s else "–"
    return (f"shape {fmt(s, 'shape')} | position {fmt(s, 'position')} | style loss / start "
            f"{fmt(s, 'style_fraction', 3)} | judged {judged}")


def markdown(table: dict[str, Any], judges: list[str], meta: dict[str, Any]) -> str:
    head = ["images", "shape", "position", "style loss / start (own network)",
            *[f"style loss / start ({j})" for j in judges], "content loss", "time"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for label, s in table.items():
        cells = [label, fmt(s, "shape"), fmt(s, "position"), fmt(s, "style_fraction", 3),
                 *[f"{s['judged'][j]:.3f}" if "judged" in s else "–" for j in judges],
                 f"{s['content_loss']:.3g}" if "content_loss" in s else "–",
                 f"{s['seconds']:.0f} s" if "seconds" in s else "–"]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    lines.append(f"{meta['pairs']} scene-texture pairs: the first {meta['scenes']} scenes of "
                 f"the shapes {meta['split']} split at {meta['resolution']} px × "
                 f"{len(meta['textures'])} textures (seed {meta['texture_seed']}); "
                 f"{meta['steps']} L-BFGS iterations from the content image.")
    return "\n".join(lines) + "\n"


def write_grid(path: Path, pairs: list[tuple[int, str]], contents: dict, styles: dict,
               results: dict[str, list[dict[str, Any]]], textures: list[str]) -> None:
    """One row per texture (texture n on scene n): content, style, then each setting."""
    rows = []
    scenes = len(pairs) // len(textures)
    for n, t in enumerate(textures):
        k = n * scenes + n % scenes  # texture n on scene n
        i = pairs[k][0]
        rows.append(torch.stack([contents[i], styles[t],
                                 *[r[k]["image"] for r in results.values()]]))
    save_grid(torch.stack(rows), path)


if __name__ == "__main__":
    main()
