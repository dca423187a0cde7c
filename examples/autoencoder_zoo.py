"""The autoencoder zoo: the LDM paper's Table 8 (first stages) in miniature.

    python examples/autoencoder_zoo.py [OUT_DIR] [--steps N] [--only shapes|fashion]
                                       [--smoke]                 # default OUT_DIR: runs/zoo

Trains ``kl-vae`` and ``vqgan`` first stages (``gaf run --objective autoencoder``,
every option at its default but the ones below) at downsampling factors
f ∈ {1, 2, 4, 8} on two datasets:

* ``shapes`` at 32x32 (RGB, the procedural dataset of the text-to-image work);
* Fashion-MNIST (``idx``, padded to 32x32, grey; needs ``apt-get install
  dataset-fashion-mnist``, skipped with a note when absent).

Latent channels c follow the LDM's choices for small f: 3 for f ≤ 4, 4 for f = 8;
VQ models use |Z| = 256 codes; mid-block attention is on except at f = 1. Each run is evaluated by the objective on 1,000
held-out images: PSNR, SSIM, the in-domain rFD (features of a classifier trained on
the real training split, with its accuracy and the real-vs-real floor), and for VQ
codebook usage and perplexity. The script writes ``zoo.md`` (a table) into OUT_DIR
and prints it; a run whose ``summary.json`` exists is reused. The table, and how long
the runs take, are in docs/results.md § Autoencoders.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import gaf

FACTORS = (1, 2, 4, 8)
LATENT_CHANNELS = {1: 3, 2: 3, 4: 3, 8: 4}
#: mid-block attention over the latent grid; off at f = 1, where it attends over all
#: 1,024 pixels of a 32x32 image and makes a step several times slower
ATTENTION = {1: False, 2: True, 4: True, 8: True}
CODEBOOK = 256
FASHION = "/usr/share/datasets/fashion-mnist"
DATASETS = {
    "shapes": ("shapes", ["dataset.resolution=32"], 3),
    "fashion": ("idx", [f"dataset.path={json.dumps(FASHION)}", "dataset.resolution=32"], 1),
}


def run_one(out: Path, dataset: str, kind: str, f: int, steps: int | None,
            smoke: bool) -> dict[str, Any]:
    name = f"{dataset}-{kind}-f{f}"
    run_dir = out / name
    summary = run_dir / "summary.json"
    if summary.is_file() and json.loads(summary.read_text()).get("status") == "completed":
        data = json.loads(summary.read_text())
    else:
        ds_name, ds_sets, channels = DATASETS[dataset]
        sets = [f"out_dir={json.dumps(str(out))}", f"name={json.dumps(name)}", *ds_sets,
                f"autoencoder.downsample={f}", f"autoencoder.latent_channels={LATENT_CHANNELS[f]}",
                f"autoencoder.in_channels={channels}",
                f"autoencoder.attention={str(ATTENTION[f]).lower()}"]
        if kind == "vqgan":
            sets.append(f"autoencoder.n_embed={CODEBOOK}")
        if steps:
            sets.append(f"train.steps={steps}")
        if smoke:
            sets += ["train.steps=4", "objective.eval_images=16", "objective.scale_images=16",
                     "objective.fd_train_images=64", "objective.fd_epochs=1",
                     "objective.disc_start=2"]
        t0 = time.perf_counter()
        _, data = gaf.run("autoencoder", autoencoder=kind, dataset=ds_name, sets=sets)
        print(f"zoo: {name} done in {time.perf_counter() - t0:.0f} s", flush=True)
    return {"dataset": dataset, "model": kind, "f": f, "c": LATENT_CHANNELS[f],
            "codebook": CODEBOOK if kind == "vqgan" else None, **data}


def render_table(rows: list[dict[str, Any]]) -> str:
    lines = ["| data | model | f | c | \\|Z\\| | rFD (floor) | feature acc. | PSNR dB | SSIM "
             "| codebook usage | perplexity | params | train s |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        rfd = (f"{r['rfd']:.3f} ({r['rfd_floor']:.3f})" if "rfd" in r else "—")
        acc = f"{r['feature_accuracy']:.2f}" if "feature_accuracy" in r else "—"
        usage = f"{r['codebook_usage']:.2f}" if "codebook_usage" in r else "—"
        ppl = f"{r['perplexity']:.0f}" if "perplexity" in r else "—"
        lines.append(
            f"| {r['dataset']} | {r['model']} | {r['f']} | {r['c']} | {r['codebook'] or '—'} | "
            f"{rfd} | {acc} | {r['psnr']:.1f} | {r['ssim']:.3f} | {usage} | {ppl} | "
            f"{r['autoencoder_parameters'] / 1e6:.2f}M | {r['train_s']:.0f} |")
    return "\n".join(lines) + "\n"


def main(out_dir: str = "runs/zoo", steps: int | None = None, only: str | None = None,
         smoke: bool = False) -> list[dict[str, Any]]:
    out = Path(out_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    t0 = time.perf_counter()
    for dataset in DATASETS:
        if only and dataset != only:
            continue
        if dataset == "fashion" and not os.path.isdir(FASHION):
            print(f"zoo: skipping Fashion-MNIST ({FASHION} is missing; "
                  "apt-get install dataset-fashion-mnist)")
            continue
        for kind in ("kl-vae", "vqgan"):
            for f in FACTORS:
                rows.append(run_one(out, dataset, kind, f, steps, smoke))
    table = render_table(rows)
    (out / "zoo.md").write_text(table)
    print(table)
    print(f"zoo: {len(rows)} runs, {time.perf_counter() - t0:.0f} s")
    return rows


if __name__ == "__main__":
    args = sys.argv[1:]
    opts: dict[str, Any] = {"smoke": "--smoke" in args}
    args = [a for a in args if a != "--smoke"]
    for flag, key, conv in (("--steps", "steps", int), ("--only", "only", str)):
        if flag in args:
            i = args.index(flag)
            opts[key] = conv(args[i + 1])
            del args[i:i + 2]
    main(*args[:1], **opts)
