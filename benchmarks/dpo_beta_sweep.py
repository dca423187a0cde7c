"""DPO β sweep on the sentiment task: the reward-vs-KL plot of docs/results.md.

    python benchmarks/dpo_beta_sweep.py SFT_DIR [OUT_PNG]

Runs ``gaf run --objective dpo --init SFT_DIR --set objective.beta=β`` for β in
{0.05, 0.1, 0.5, 1} (every other option at its default, so each run samples the same
preference data from the same SFT policy), evaluated on the **validation** split (a
sweep chooses β; :mod:`gaf.plugins.alignment.tuning`), then plots each run's mean
true reward against its sequence KL(π‖π_ref), with the SFT policy at (0, its reward),
and prints one line per β. SFT_DIR is an SFT policy, e.g. ``runs/<a dpo run>/sft``.
Takes about 1 minute per β on a 2-core CPU.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

from gaf.plugins.alignment.tuning import tuning_run

BETAS = (0.05, 0.1, 0.5, 1.0)


def main(sft_dir: str, out_png: str = "docs/img/dpo_beta_sweep.png") -> None:
    points = []
    with tempfile.TemporaryDirectory() as tmp:
        for beta in BETAS:
            _, s = tuning_run("dpo", policy=str(Path(sft_dir).resolve()), sets=[
                f"objective.beta={beta}", f"out_dir={json.dumps(tmp)}", "progress=false"])
            points.append((beta, s["kl"], s["mean_reward"], s["win_rate"],
                           s["reference_mean_reward"]))
            print(f"dpo_beta_sweep beta={beta} kl={s['kl']:.3f} mean_reward={s['mean_reward']:.4f} "
                  f"win_rate={s['win_rate']:.3f} reference_mean_reward="
                  f"{s['reference_mean_reward']:.4f}", flush=True)
    plot(points, out_png)


def plot(points: list[tuple[float, float, float, float, float]], out_png: str) -> None:
    """The reward-vs-KL plot of ``(beta, kl, mean_reward, win_rate, reference_mean_reward)``
    points (validation split), the SFT policy at (0, its reward)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 4))
    ax.scatter([0.0], [points[0][4]], marker="s", color="grey", label="SFT (reference)")
    ax.plot([p[1] for p in points], [p[2] for p in points], "o-", label="DPO")
    for beta, kl, reward, win, _ in points:
        ax.annotate(f"β={beta:g} (win {win:.2f})", (kl, reward), textcoords="offset points",
                    xytext=(5, -12), fontsize=8)
    ax.set_xlabel("sequence KL(π‖π_ref), nats")
    ax.set_ylabel("mean true reward (validation prompts)")
    ax.set_title("DPO on the sentiment task: reward vs KL")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    Path(out_png).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=110)
    print(f"plot: {out_png}")


if __name__ == "__main__":
    main(*sys.argv[1:3])
