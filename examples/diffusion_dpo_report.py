"""What a ``diffusion-dpo`` run bought: the reward it optimised against what it was for.

    python examples/diffusion_dpo_report.py curve RUN_DIR [--split validation] [--plot P]
    python examples/diffusion_dpo_report.py sweep RUN_DIR [RUN_DIR ...] [--plot P]
    python examples/diffusion_dpo_report.py labels PAIRS.jsonl

``labels`` asks how good the training labels are: the analytic evaluator scores each
image of a preference file (a run's ``data/preferences.jsonl``) against its caption,
and each pair is counted as agreeing (the chosen image has the larger fraction of
correct attributes), disagreeing or tied, overall, by thirds of the reward margin, and
for each caption's best image against its worst (``pairs = "best-worst"``). With
``--relabel OUT.jsonl`` it also writes the same images' pairs ordered by the evaluator:
training on that file shows what the optimiser does with clean labels (a diagnostic:
the evaluator judges the results, so such a run is never a result of the method).

Both read finished ``diffusion-dpo`` runs and sample, for the first ``--images``
captions of ``--split`` that no training caption states (the evaluation's ``unseen``
set, with its seeds: caption ``i`` of the split is drawn with seed ``seed + i``; with
``--split train``, the first distinct training captions, those the pairs were sampled
for, with fresh seeds), one image each at ``--guidance`` with the run's evaluation
sampler, and score the samples twice:

* **the proxy**: the mean cosine similarity of the *generation* CLIP, the reward that
  labelled the run's pairs (``objective.reward_clip``, else ``RUN_DIR/reward_clip``,
  or ``--reward-clip DIR``);
* **the goal**: the analytic evaluator's attribute accuracies and exact match (±
  binomial standard errors), the shared evaluation's own scores
  (:func:`gaf.plugins.t2i.evaluation.attribute_scores`).

Each row also gives the paired change of the reward and of exact match from the base
(the same captions and seeds; its standard error is of the per-image differences, far
smaller than the spread across captions). ``curve`` does this for the base weights
(step 0: the reference) and every checkpoint the run kept (train with ``--set
train.save_every=N --set train.keep_checkpoints=K``), the over-optimisation curve RLHF
papers draw, and plots it beside the implicit accuracy logged during training
(``metrics.jsonl``). ``sweep`` does it for the final weights of each run and the base
once, and plots it against each run's ``β`` (a winners-only ``sft`` run is a separate
point). Each prints a markdown table and, with ``--json``, writes the rows.

Nothing here trains; the held-out ``eval`` split should be read once, for the settings
chosen on ``validation`` (the default).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ATTRIBUTES = ("colour", "shape", "size", "position", "relation", "count")
#: ``--split train`` draws caption ``i``'s image with seed ``seed + TRAIN_SEED_OFFSET + i``,
#: far from the seeds of the sampled pairs (``seed + i·K + j``)
TRAIN_SEED_OFFSET = 10_000_000


def paired_change(per_image: dict[str, list[float]], reference: dict[str, list[float]]
                  ) -> dict[str, float]:
    """``{key}_change`` and its standard error for ``reward`` and ``exact``: the mean of
    the per-image differences from ``reference`` (the same captions and seeds, so the
    caption-to-caption spread cancels)."""
    out = {}
    for key in ("reward", "exact"):
        diff = [a - b for a, b in zip(per_image[key], reference[key])]
        n = len(diff)
        mean = sum(diff) / n
        var = sum((d - mean) ** 2 for d in diff) / (n - 1) if n > 1 else float("nan")
        out[f"{key}_change"], out[f"{key}_change_se"] = mean, math.sqrt(var / n)
    return out


class Scorer:
    """A ``diffusion-dpo`` run, rebuilt from its ``config.toml`` as ``gaf eval`` does,
    with its unseen captions of ``split`` and its generation CLIP."""

    def __init__(self, run_dir: Path, *, split: str, images: int, guidance: float,
                 reward_clip: str | None = None):
        from gaf.config import read_toml
        from gaf.errors import BadConfig
        from gaf.launch import open_run
        from gaf.plugins.clip.frozen import load_clip
        from gaf.plugins.t2i.diffusion_dpo.base import base_context
        from gaf.plugins.t2i.evaluation import caption_sets, evaluation_splits
        from gaf.plugins.t2i.training_data import conditions_of

        if not (run_dir / "config.toml").is_file():
            raise BadConfig(f"{run_dir} is not a run directory (it has no config.toml)")
        objective = read_toml(run_dir / "config.toml").get("objective", {}).get("name")
        if objective != "diffusion-dpo":
            raise BadConfig(f"{run_dir} is a {objective!r} run, not a diffusion-dpo run")
        self.run_dir = run_dir
        self.objective, ctx = open_run(run_dir)
        spec, cfg = ctx.spec, self.objective.config
        self.beta, self.loss = float(cfg.beta), str(cfg.loss)
        self.pairs, self.lr = str(cfg.pairs), float(spec.train.lr)
        #: the run's trained weights of every module (the noise model, its EMA if kept)
        self.final = {name: {k: v.clone() for k, v in module.state_dict().items()}
                      for name, module in self.objective.modules().items()}
        train = conditions_of(self.objective.dataset, "caption")
        if split == "train":  # the captions the pairs were sampled for, with fresh seeds
            self.captions = list(dict.fromkeys(train))[:images]
            self.seeds = [spec.seed + TRAIN_SEED_OFFSET + i for i in range(len(self.captions))]
            self.evaluator = self.objective.dataset.evaluator()
        else:
            view = base_context(ctx, self.objective.base)
            eval_ds, _, _ = evaluation_splits(view, split, self.objective.dataset,
                                              lambda m: None)
            captions = conditions_of(eval_ds, "caption")
            head = caption_sets(train, captions, images)["unseen"]
            self.captions = [captions[i] for i in head]
            self.seeds = [spec.seed + i for i in head]
            self.evaluator = eval_ds.evaluator()
        path = reward_clip or cfg.reward_clip or str(run_dir / "reward_clip")
        self.reward_clip = str(Path(path).expanduser().resolve())
        self.reward = load_clip(self.reward_clip, who="--reward-clip").to(ctx.device)
        self.options = {"steps": cfg.eval_steps, "guidance": guidance}
        self.batch_size = cfg.eval_batch_size

    def checkpoints(self) -> list[tuple[int, Path]]:
        """``(step, directory)`` of every checkpoint the run kept, in step order."""
        found = []
        for path in sorted((self.run_dir / "checkpoints").glob("step-*")):
            if (path / "modules.safetensors").is_file():
                found.append((int(path.name.removeprefix("step-")), path))
        return found

    def load(self, checkpoint: Path | None) -> None:
        """Every module's weights of ``checkpoint``; ``None``: the base (reference)
        weights in each (the noise model and its EMA copy alike)."""
        from gaf.checkpoint import load_module_weights

        modules = self.objective.modules()
        if checkpoint is None:
            for module in modules.values():
                module.load_state_dict(self.objective.reference.state_dict())
        else:
            load_module_weights(checkpoint, modules)

    def load_final(self) -> None:
        """The run's trained weights (what ``gaf eval`` and ``gaf sample`` use)."""
        for name, module in self.objective.modules().items():
            module.load_state_dict(self.final[name])

    def score(self) -> dict[str, float]:
        """The proxy and the goal of the current weights (module docstring)."""
        import torch

        from gaf.plugins.t2i.diffusion_dpo.data import clip_rewards
        from gaf.plugins.t2i.evaluation import attribute_scores, sample_in_batches

        obj = self.objective
        with torch.no_grad():
            images = sample_in_batches(obj.pipeline(), self.captions, self.seeds,
                                       batch_size=self.batch_size, **self.options)
            reward = clip_rewards(self.reward, images, self.captions).double()
        out = {"reward": float(reward.mean()),
               "reward_se": float(reward.std() / math.sqrt(len(reward)))}
        exact = [float(self.evaluator.check(image, caption)["exact"])
                 for image, caption in zip(images, self.captions)]
        self.per_image = {"reward": reward.tolist(), "exact": exact}
        scores = attribute_scores(self.evaluator, images, self.captions)
        out.update(scores)
        present = [scores[a] for a in ATTRIBUTES if a in scores]
        out["attributes"] = sum(present) / len(present)
        return out


def implicit_accuracy(run_dir: Path) -> list[tuple[int, float]]:
    """``(step, implicit_accuracy)`` as logged in the run's ``metrics.jsonl``."""
    out = []
    path = run_dir / "metrics.jsonl"
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                row = json.loads(line)
            except ValueError:
                continue
            if "implicit_accuracy" in row and "step" in row:
                out.append((int(row["step"]), float(row["implicit_accuracy"])))
    return out


def _cell(row: dict[str, float], key: str, digits: int = 2) -> str:
    se = row.get(f"{key}_se")
    return f"{row[key]:.{digits}f}" + (f" ± {se:.{digits}f}" if se is not None else "")


def markdown(rows: Sequence[dict[str, Any]], first: str) -> str:
    head = (f"| {first} | generation-CLIP reward | change (paired) | " + " | ".join(ATTRIBUTES)
            + " | mean attribute | exact | change (paired) |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        lines.append(f"| {r['label']} | {_cell(r, 'reward', 3)} | {_cell(r, 'reward_change', 3)} | "
                     + " | ".join(_cell(r, a) if a in r else "—" for a in ATTRIBUTES)
                     + f" | {r['attributes']:.3f} | {_cell(r, 'exact')} | "
                     f"{_cell(r, 'exact_change', 3)} |")
    return "\n".join(lines)


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: Path, title: str) -> None:
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    fig.clf()


def plot_curve(rows: Sequence[dict[str, Any]], accuracy: Sequence[tuple[int, float]],
               path: Path, title: str) -> None:
    """Implicit accuracy during training; the paired changes of the proxy and the goal
    per checkpoint; the goal against the proxy."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(14, 3.8))
    steps = [r["step"] for r in rows]
    ax = axes[0]
    if accuracy:
        xs, ys = zip(*accuracy)
        k = max(1, len(ys) // 25)
        smooth = [sum(ys[max(0, i - k):i + 1]) / len(ys[max(0, i - k):i + 1])
                  for i in range(len(ys))]
        ax.plot(xs, ys, color="0.8", lw=0.8, label="per logged step")
        ax.plot(xs, smooth, color="C0", label="running mean")
    ax.axhline(0.5, color="0.5", ls=":")
    ax.set(xlabel="step", ylabel="implicit accuracy (h > 0)", title="training pairs")
    ax.legend(fontsize=8)
    ax = axes[1]
    ax.errorbar(steps, [r["reward_change"] for r in rows],
                [r["reward_change_se"] for r in rows], color="C1", marker="o", capsize=2)
    ax.axhline(0, color="0.5", ls=":")
    ax.set(xlabel="step", ylabel="generation-CLIP reward − base (proxy)",
           title="held-out captions (paired ± SE)")
    twin = ax.twinx()
    twin.errorbar(steps, [r["exact_change"] for r in rows], [r["exact_change_se"] for r in rows],
                  color="C2", marker="s", capsize=2)
    twin.set_ylabel("exact match − base (goal)", color="C2")
    ax = axes[2]
    ax.errorbar([r["reward_change"] for r in rows], [r["exact_change"] for r in rows],
                xerr=[r["reward_change_se"] for r in rows],
                yerr=[r["exact_change_se"] for r in rows], color="C2", marker="s", capsize=2,
                ls="none")
    for r in rows:
        ax.annotate(str(r["step"]), (r["reward_change"], r["exact_change"]), fontsize=7,
                    xytext=(3, 3), textcoords="offset points")
    ax.axhline(0, color="0.5", ls=":")
    ax.axvline(0, color="0.5", ls=":")
    ax.set(xlabel="reward − base (proxy)", ylabel="exact match − base (goal)",
           title="goal against proxy (labels: step)")
    _save(fig, path, title)
    plt.close(fig)


def plot_sweep(rows: Sequence[dict[str, Any]], base: dict[str, Any], path: Path,
               title: str) -> None:
    """The paired changes of the proxy and of exact match, and the mean attribute
    accuracy, against β: one line per (loss, pairs, lr); the winners-only runs dashed."""
    plt = _pyplot()
    lines: dict[tuple[str, str, float], list[dict[str, Any]]] = {}
    for r in rows:
        if r["loss"] != "sft":
            lines.setdefault((r["loss"], r["pairs"], r["lr"]), []).append(r)
    sft = [r for r in rows if r["loss"] == "sft"]
    fig, axes = plt.subplots(1, 3, figsize=(15, 3.8))
    for ax, key, se_key, label in (
            (axes[0], "reward_change", "reward_change_se",
             "generation-CLIP reward − base (proxy)"),
            (axes[1], "exact_change", "exact_change_se", "exact match − base (goal)"),
            (axes[2], "attributes", None, "mean attribute accuracy (goal)")):
        for n, ((loss, pairs, lr), runs) in enumerate(sorted(lines.items())):
            runs = sorted(runs, key=lambda r: r["beta"])
            ax.errorbar([r["beta"] for r in runs], [r[key] for r in runs],
                        [r[se_key] for r in runs] if se_key else None, marker="o", capsize=2,
                        color=f"C{n}", label=f"{loss}, {pairs} pairs, lr {lr:g}")
        ax.axhline(base[key], color="0.4", lw=0.8, label="base")
        for n, r in enumerate(sft):
            ax.axhline(r[key], color=f"C{n + len(lines)}", ls="--", lw=1,
                       label=f"winners only (sft), lr {r['lr']:g}")
        ax.set_xscale("log")
        ax.set(xlabel="β", ylabel=label)
        ax.legend(fontsize=7)
    _save(fig, path, title)
    plt.close(fig)


def _title(run: Path, args: argparse.Namespace, n: int) -> str:
    from gaf.config import read_toml

    config = read_toml(run / "config.toml")
    objective, train = config.get("objective", {}), config.get("train", {})
    return (f"{run.name}: {objective.get('loss', 'dpo')}, β {objective.get('beta', '?'):g}, "
            f"lr {train.get('lr', '?'):g}, {train.get('steps', '?')} steps; "
            f"{n} unseen {args.split} captions, guidance {args.guidance:g}, one seed")


def curve(args: argparse.Namespace) -> list[dict[str, Any]]:
    run = Path(args.runs[0])
    if args.from_json:
        rows = json.loads(Path(args.from_json).read_text(encoding="utf-8"))
        if args.plot:
            plot_curve(rows, implicit_accuracy(run), Path(args.plot),
                       _title(run, args, int(rows[0]["n"])))
        print(markdown(rows, "checkpoint"))
        return rows
    scorer = Scorer(run, split=args.split, images=args.images, guidance=args.guidance,
                    reward_clip=args.reward_clip)
    rows: list[dict[str, Any]] = []
    reference: dict[str, list[float]] = {}
    for step, ckpt in [(0, None), *scorer.checkpoints()]:
        scorer.load(ckpt)
        row = {"step": step, "label": f"step {step}" + (" (base)" if ckpt is None else ""),
               **scorer.score()}
        reference = reference if ckpt is not None else scorer.per_image
        row.update(paired_change(scorer.per_image, reference))
        print(f"step {step}: reward {row['reward']:.4f} exact {row['exact']:.3f} "
              f"mean attribute {row['attributes']:.3f}", flush=True)
        rows.append(row)
    if args.plot:
        plot_curve(rows, implicit_accuracy(run), Path(args.plot),
                   _title(run, args, len(scorer.captions)))
    print(markdown(rows, "checkpoint"))
    return rows


def sweep(args: argparse.Namespace) -> list[dict[str, Any]]:
    if args.from_json:
        base, *rows = json.loads(Path(args.from_json).read_text(encoding="utf-8"))
        if args.plot:
            plot_sweep(rows, base, Path(args.plot), _sweep_title(args))
        print(markdown([base, *rows], "run"))
        return [base, *rows]
    rows, base = [], None
    for run in map(Path, args.runs):
        scorer = Scorer(run, split=args.split, images=args.images, guidance=args.guidance,
                        reward_clip=args.reward_clip)
        if base is None:
            scorer.load(None)
            base = {"label": "base (the reference)", "beta": float("nan"), "loss": "base",
                    "run": str(scorer.objective.base.root), **scorer.score()}
            reference = scorer.per_image
            base.update(paired_change(reference, reference))
            reward_clip = scorer.reward_clip
        elif scorer.reward_clip != reward_clip:
            from gaf.errors import BadConfig

            raise BadConfig(f"{run} labels with {scorer.reward_clip}, the first run with "
                            f"{reward_clip}: pass --reward-clip so that one proxy scores all")
        scorer.load_final()
        label = ("winners only (sft)" if scorer.loss == "sft" else
                 f"{scorer.loss}, β {scorer.beta:g}"
                 + (", best-worst pairs" if scorer.pairs == "best-worst" else ""))
        row = {"label": f"{label}, lr {scorer.lr:g}", "beta": scorer.beta,
               "loss": scorer.loss, "pairs": scorer.pairs, "lr": scorer.lr, "run": str(run),
               **scorer.score()}
        row.update(paired_change(scorer.per_image, reference))
        print(f"{label}: reward {row['reward']:.4f} exact {row['exact']:.3f}", flush=True)
        rows.append(row)
    rows.sort(key=lambda r: (r["loss"] == "sft", r["pairs"], r["lr"], r["beta"]))
    if args.plot:
        plot_sweep(rows, base, Path(args.plot), _sweep_title(args))
    print(markdown([base, *rows], "run"))
    return [base, *rows]


def labels(args: argparse.Namespace) -> list[dict[str, Any]]:
    import numpy as np

    from gaf.plugins.images.shapes_eval import ShapesEvaluator
    from gaf.plugins.t2i.diffusion_dpo.data import PreferencePairs, read_preferences, widest_pairs

    path = Path(args.runs[0])
    first = json.loads(path.read_text(encoding="utf-8").splitlines()[0])
    probe = read_preferences(path, _image_shape(path, first))
    evaluator = ShapesEvaluator(probe.images.shape[-1])
    cache: dict[tuple[int, str], float] = {}

    def fraction(image: int, caption: str) -> float:
        if (image, caption) not in cache:
            checks = evaluator.check(probe.images[image], caption)
            values = [int(v) for key, ok in checks.items() if key != "exact"
                      for v in (ok if isinstance(ok, list) else [ok])]
            cache[image, caption] = sum(values) / max(1, len(values))
        return cache[image, caption]

    def count(label: str, pairs: PreferencePairs) -> dict[str, Any]:
        agree = disagree = 0
        for prompt, w, lo in zip(pairs.prompts, pairs.chosen, pairs.rejected):
            a, b = fraction(w, prompt), fraction(lo, prompt)
            agree, disagree = agree + (a > b), disagree + (a < b)
        decided = agree + disagree
        acc = agree / decided if decided else float("nan")
        return {"label": label, "pairs": len(pairs), "agree": agree, "disagree": disagree,
                "tied": len(pairs) - decided, "accuracy": acc,
                "accuracy_se": math.sqrt(acc * (1 - acc) / decided) if decided else float("nan")}

    rows = [count("all pairs", probe)]
    margins = np.asarray(probe.reward_margin, dtype=float)
    if not np.isnan(margins).any():
        edges = np.quantile(margins, [0, 1 / 3, 2 / 3, 1])
        for n, (lo, hi) in enumerate(zip(edges[:-1], edges[1:])):
            keep = [p for p, m in enumerate(margins) if (lo <= m < hi) or (n == 2 and m == hi)]
            rows.append(count(f"reward margin {lo:.3f}–{hi:.3f}", probe.select(keep)))
        rows.append(count("best against worst", widest_pairs(probe)))
    if args.relabel:
        _relabel(probe, fraction, Path(args.relabel))
    lines = ["| pairs | n | evaluator agrees / disagrees / tied | agreement of the decided |",
             "|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['label']} | {r['pairs']} | {r['agree']} / {r['disagree']} / "
                     f"{r['tied']} | {r['accuracy']:.2f} ± {r['accuracy_se']:.2f} |")
    print("\n".join(lines))
    return rows


def _relabel(pairs: Any, fraction: Any, out: Path) -> None:
    """Write the pair file ``out``: the images of ``pairs`` (read from a file), each
    caption's ordered by the evaluator's fraction of right attributes instead (every
    strictly ordered pair, the fractions as ``chosen_reward``/``rejected_reward``,
    absolute image paths). The evaluator is the judge of the results: training on this
    file measures what the optimiser can do with clean labels, and is never a result of
    the method."""
    from gaf.atomic import atomic_write_text
    from gaf.plugins.t2i.diffusion_dpo.data import ordered_pairs

    images: dict[str, dict[int, None]] = {}  # caption → its images, in order of appearance
    for prompt, w, lo in zip(pairs.prompts, pairs.chosen, pairs.rejected):
        images.setdefault(prompt, {}).update({w: None, lo: None})
    rows = []
    for prompt, group in images.items():
        order = list(group)
        scores = [fraction(i, prompt) for i in order]
        for w, lo in ordered_pairs(scores):
            rows.append(json.dumps({"prompt": prompt, "chosen": str(pairs.paths[order[w]]),
                                    "rejected": str(pairs.paths[order[lo]]),
                                    "chosen_reward": scores[w], "rejected_reward": scores[lo]}))
    atomic_write_text(out, "".join(r + "\n" for r in rows))
    print(f"{out}: {len(rows)} pairs ordered by the evaluator")


def _image_shape(path: Path, row: dict[str, Any]) -> tuple[int, ...]:
    """The shape of the file's first chosen image (every image must share it)."""
    from PIL import Image

    image = Path(row["chosen"])
    with Image.open(image if image.is_absolute() else path.parent / image) as im:
        return (len(im.getbands()), im.height, im.width)


def _sweep_title(args: argparse.Namespace) -> str:
    return (f"final weights; {args.images} unseen {args.split} captions, guidance "
            f"{args.guidance:g}, one seed; changes paired with the base (± SE)")


def main(argv: Sequence[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("mode", choices=("curve", "sweep", "labels"))
    parser.add_argument("runs", nargs="+", metavar="RUN_DIR (labels: PAIRS.jsonl)")
    parser.add_argument("--split", default="validation", choices=("validation", "eval", "train"),
                        help="held-out captions (unseen in training), or 'train': the "
                             "first training captions, the pairs' own, with fresh seeds")
    parser.add_argument("--images", type=int, default=200, help="unseen captions scored")
    parser.add_argument("--guidance", type=float, default=3.0)
    parser.add_argument("--reward-clip", default=None, help="the generation CLIP run")
    parser.add_argument("--plot", default=None, help="PNG to write")
    parser.add_argument("--json", default=None, help="file for the rows")
    parser.add_argument("--relabel", default=None, metavar="OUT.jsonl",
                        help="labels: also write the pairs ordered by the evaluator (a "
                             "diagnostic of the optimiser: the evaluator is the judge)")
    parser.add_argument("--from-json", default=None, metavar="FILE",
                        help="curve/sweep: redraw and reprint the rows a --json run wrote "
                             "(nothing is sampled)")
    args = parser.parse_args(argv)
    if args.mode in ("curve", "labels") and len(args.runs) != 1:
        parser.error(f"{args.mode} reads one run (labels: one file)")
    rows = {"curve": curve, "sweep": sweep, "labels": labels}[args.mode](args)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2) + "\n", encoding="utf-8")
    return rows


if __name__ == "__main__":
    from gaf.errors import GafError

    try:
        main()
    except GafError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
