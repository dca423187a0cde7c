"""The DPO-vs-PPO reward/KL frontier (DPO paper §6.1, Fig. 2 left) in miniature.

    python examples/frontier.py [OUT_DIR] [--smoke]       # default OUT_DIR: runs/frontier

On the embedded sentiment task (the ground-truth reward is the task's sentiment
scorer), from one shared SFT policy:

1. ``sft``: supervised fine-tuning of gpt2-tiny (1000 steps, as the DPO pipeline's
   SFT stage), the reference π_ref of every other run;
2. ``dpo`` at β ∈ {0.05, 0.1, 1, 5} on completions sampled from the SFT policy and
   labelled by the true reward (4 per prompt, all 6 pairs);
3. ``reward``: a reward model on K = 4 rankings of SFT samples (InstructGPT);
4. ``ppo`` against that *learned* reward, adaptive KL controller at target sequence
   KLs {1, 3, 6, 12} nats;
5. ``ppo`` against the *true* reward at the same targets.

Every run samples with the same sampler, ancestral at temperature 1 (DPO's preference
data, the reward model's rankings, PPO's rollouts and every evaluation), and is
evaluated the same way (the objectives' shared evaluation): 4 completions for each
of the 200 **validation** prompts (a sweep compares settings, so it never reads the
eval split; :mod:`gaf.plugins.alignment.tuning`), their mean true reward, and the
sequence KL(π‖π_ref) estimated from them. Each run is one point
(KL, reward). The script writes ``frontier.png`` and ``frontier.md`` (a table) into
OUT_DIR and prints the table. A run whose ``summary.json`` exists is reused, so an
interrupted sweep continues where it stopped. Its results and wall time are in
docs/results.md § The DPO-vs-PPO frontier.

``--smoke`` runs everything with tiny budgets (a check that the script works, not a
result).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

from gaf.plugins.alignment.tuning import tuning_run

DPO_BETAS = (0.05, 0.1, 1.0, 5.0)
TARGET_KLS = (1.0, 3.0, 6.0, 12.0)
#: the adaptive controller's horizon, in episodes (ppo's default): β may move by up
#: to 0.2 × 16 / 32 = 10% per rollout of 16, fast enough to hold a target within the
#: 100 rollouts of a run even against the learned reward, whose scale is several times
#: the true reward's (docs/results.md § The DPO-vs-PPO frontier); a much longer horizon
#: reacts too slowly and lets PPO overshoot a small target
KL_HORIZON = 32
#: every run samples (training data, rollouts, evaluation) from the model itself:
#: ancestral sampling at temperature 1, as PPO's ratios assume and the DPO paper did
SAMPLER = "temperature"
SMOKE = ["train.steps=4", "objective.eval_prompts=4", "objective.eval_samples=1",
         "objective.max_new_tokens=8"]


def stage(out: Path, name: str, objective: str, sets: list[str], smoke: bool,
          **components: str) -> tuple[Path, dict[str, Any]]:
    """Run ``objective`` as ``OUT/name`` (or reuse a completed run there)."""
    run_dir = out / name
    summary = run_dir / "summary.json"
    if summary.is_file():
        data = json.loads(summary.read_text())
        if data.get("status") == "completed":
            return run_dir, data
    extra = []
    if smoke:
        extra = (["train.steps=4", "objective.samples=4", "objective.eval_examples=8"]
                 if objective == "sft" else
                 [x for x in SMOKE if objective != "reward" or "eval_samples" not in x])
        if objective in ("dpo", "reward"):
            extra.append("objective.prompts=8")
    t0 = time.perf_counter()
    path, data = tuning_run(objective, sets=[f"out_dir={json.dumps(str(out))}",
                                             f"name={json.dumps(name)}", *sets, *extra],
                            **components)
    print(f"frontier: {name} done in {time.perf_counter() - t0:.0f} s", flush=True)
    return path, data


def main(out_dir: str = "runs/frontier", smoke: bool = False) -> list[dict[str, Any]]:
    out = Path(out_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    sft, _ = stage(out, "sft", "sft", ["train.steps=1000"], smoke, policy="gpt2-tiny")
    policy = str(sft / "policy")
    rows: list[dict[str, Any]] = []

    def point(method: str, setting: str, summary: dict[str, Any]) -> None:
        rows.append({"method": method, "setting": setting, "kl": summary["kl"],
                     "mean_reward": summary["mean_reward"], "win_rate": summary["win_rate"],
                     "reference_mean_reward": summary["reference_mean_reward"],
                     "wall_s": summary["wall_s"]})

    for beta in DPO_BETAS:
        _, s = stage(out, f"dpo-beta{beta:g}", "dpo", [f"objective.beta={beta}"], smoke,
                     policy=policy, sampler=SAMPLER)
        point("DPO", f"β={beta:g}", s)
    rm, _ = stage(out, "reward-model", "reward", [], smoke, policy=policy, sampler=SAMPLER)
    for reward, label in ((str(rm), "PPO (learned reward)"), ("sentiment-oracle",
                                                              "PPO (true reward)")):
        tag = "rm" if reward != "sentiment-oracle" else "true"
        for target in TARGET_KLS:
            _, s = stage(out, f"ppo-{tag}-kl{target:g}", "ppo",
                         [f"objective.target_kl={target}", f"objective.kl_horizon={KL_HORIZON}"],
                         smoke, policy=policy, reward=reward, sampler=SAMPLER)
            point(label, f"target KL {target:g}", s)
    table = render_table(rows)
    (out / "frontier.md").write_text(table)
    plot(rows, out / "frontier.png")
    print(table)
    print(f"frontier: {len(rows)} runs, {time.perf_counter() - t0:.0f} s; plot {out / 'frontier.png'}")
    return rows


def render_table(rows: list[dict[str, Any]]) -> str:
    lines = ["| method | setting | KL(π‖π_ref) | mean true reward | win rate vs SFT | wall s |",
             "|---|---|---|---|---|---|"]
    ref = sum(r["reference_mean_reward"] for r in rows) / max(len(rows), 1)
    lines.append(f"| SFT (reference) | — | 0 | {ref:.3f} | — | — |")
    for r in rows:
        lines.append(f"| {r['method']} | {r['setting']} | {r['kl']:.2f} | {r['mean_reward']:.3f} "
                     f"| {r['win_rate']:.3f} | {r['wall_s']:.0f} |")
    return "\n".join(lines) + "\n"


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    ref = sum(r["reference_mean_reward"] for r in rows) / max(len(rows), 1)
    ax.scatter([0.0], [ref], marker="s", color="grey", label="SFT (reference)")
    styles = {"DPO": ("o", "C0"), "PPO (learned reward)": ("^", "C1"),
              "PPO (true reward)": ("v", "C2")}
    for method, (marker, color) in styles.items():
        pts = [r for r in rows if r["method"] == method]
        ax.scatter([r["kl"] for r in pts], [r["mean_reward"] for r in pts], marker=marker,
                   color=color, label=method)
        for r in pts:
            ax.annotate(r["setting"].replace("target KL ", "→"), (r["kl"], r["mean_reward"]),
                        textcoords="offset points", xytext=(4, 3), fontsize=7, color=color)
    kls = [r["kl"] for r in rows if r["kl"] > 0]
    if kls and max(kls) / max(min(kls), 1e-3) > 30:
        ax.set_xscale("symlog", linthresh=1.0)
    ax.set_xlabel("sequence KL(π‖π_ref), nats (validation prompts)")
    ax.set_ylabel("mean true reward (validation prompts)")
    ax.set_title("Reward vs KL on the sentiment task: DPO and PPO")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if a != "--smoke"]
    main(*args[:1], smoke="--smoke" in sys.argv[1:])
