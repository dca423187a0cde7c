"""DPO parity with TRL: the same start, the same pairs, the same hyper-parameters, seeds.

    python benchmarks/dpo_trl_parity.py [WORK_DIR] [--seeds 0,1,2] [--steps 150]
        [--peer-python /tmp/gaf-peers/bin/python] [--plot docs/img/dpo_trl_parity.png]
    python benchmarks/dpo_trl_parity.py [WORK_DIR] --check-step

A user moving from TRL expects the same result from the same run. This script runs
both libraries, each in its own venv (TRL's from ``../shared/peers/setup.sh``; its
side is ``benchmarks/dpo_trl_parity_peer.py``), from one starting checkpoint and one
pair file, and judges every policy with the same code:

1. **Start.** gpt2-tiny with the byte vocabulary (the peer benchmark's, 259 ids),
   fine-tuned with gaf's ``sft`` on the sentiment task (600 steps), exported as a
   Hugging Face GPT-2 directory and written back by transformers (``save_pretrained``):
   dropout 0, the checkpoint both sides load (``WORK_DIR/init``).
2. **Pairs.** 4 completions of training prompts sampled from it (ancestral,
   temperature 1, 48 new tokens), ranked by the task's true reward; every strictly
   ordered pair becomes a TRL record ``{prompt, chosen, rejected}`` until there are
   1,473 (``WORK_DIR/pairs.jsonl``).
3. **Training**, per seed, on both sides: the sigmoid loss with β 0.1, AdamW at lr 5e-5
   decaying linearly to 0 without warm-up, no weight decay, gradient clipping 1.0,
   16 pairs a step, 150 steps, dropout off, every pair in training (gaf:
   ``task.eval_fraction=0 task.validation_fraction=0``; TRL trains on the whole file),
   ``BOS prompt completion EOS`` on both sides, metrics every step.
4. **Judging** on the sentiment task's 200 **eval** prompts (the headline split; no
   setting here is chosen from these figures), 4 ancestral completions each (64 new
   tokens, the same generator seeds for every policy): the mean true reward; the
   sequence KL(π‖π_init), the mean of ``log π − log π_init`` over π's own drawn tokens;
   and the win rate against the starting policy's completions (ties ½).

``--check-step`` compares one training step instead: both sides take the same
perturbed policy (every weight moved by the same seeded noise, so that π ≠ π_ref),
the DPO loss on the file's first 16 pairs and its gradient; it prints the losses,
the largest gradient difference relative to the largest gradient entry, and the
cosine between the two flattened gradients.

It prints one line per policy and the means ± standard errors over seeds, writes
``WORK_DIR/parity.json`` (every figure and both sides' per-step ``loss``,
``rewards/margins`` and ``rewards/chosen``) and the plot of those curves. A finished
step is reused when its files exist (a policy's judgement too, in
``RUN/judge-eval.json``), so an interrupted run continues and more seeds cost only
their own runs.
"""

from __future__ import annotations

import json
import math
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch

import gaf
from gaf.plugins.lm.hf_gpt2 import save_hf
from gaf.plugins.preference.labelling import sample_groups

N_PAIRS = 1473
BETA, LR, BATCH = 0.1, 5e-5, 16
SFT_STEPS = 600
CURVES = ("loss", "rewards/margins", "rewards/chosen")
JUDGE_DRAWS, JUDGE_TOKENS = 4, 64


def make_start(work: Path, peer: str) -> Path:
    init = work / "init"
    if (init / "config.json").is_file():
        return init
    run_dir, _ = gaf.run("sft", policy="gpt2-tiny", sets=[
        'policy.tokenizer="byte"', f"train.steps={SFT_STEPS}", f"out_dir={json.dumps(str(work))}",
        'name="sft"', "progress=false"])
    save_hf(gaf.load("policy", run_dir), work / "init-gaf")
    subprocess.run([peer, str(Path(__file__).with_name("dpo_trl_parity_peer.py")), "export",
                    str(work / "init-gaf"), str(init)], check=True)
    hf = json.loads((init / "config.json").read_text())
    assert hf["resid_pdrop"] == hf["attn_pdrop"] == hf["embd_pdrop"] == 0.0, hf
    return init


def make_pairs(work: Path, init: Path) -> Path:
    path = work / "pairs.jsonl"
    if path.is_file():
        return path
    policy = gaf.load("policy", init)
    task = gaf.create("task", "sentiment")
    sampler = gaf.create("sampler", "temperature", temperature=1.0)
    rows: list[dict[str, str]] = []
    prompts = task.prompts("train")
    gen = torch.Generator().manual_seed(1234)
    for start in range(0, len(prompts), 128):
        with torch.no_grad():
            groups, _ = sample_groups(policy, sampler, task.reward(), prompts[start:start + 128],
                                      k=4, max_new_tokens=48, batch_size=128, rule="order",
                                      temperature=0.1,
                                      generator=gen)
        for g in groups:
            for i, j in g.pairs:
                if g.responses[i].strip() and g.responses[j].strip():
                    rows.append({"prompt": g.prompt, "chosen": g.responses[i],
                                 "rejected": g.responses[j]})
        if len(rows) >= N_PAIRS:
            break
    rows = rows[:N_PAIRS]
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    return path


def train_gaf(work: Path, init: Path, pairs: Path, seed: int, steps: int) -> Path:
    out = work / f"gaf-seed{seed}"
    if (out / "policy" / "gaf.json").is_file():
        return out
    gaf.run("dpo", policy=str(init), task="jsonl", sets=[
        f"task.path={json.dumps(str(pairs))}", "task.eval_fraction=0",
        "task.validation_fraction=0", f"objective.beta={BETA}", f"train.lr={LR}",
        'train.schedule="linear"', "train.warmup_steps=0", "train.max_grad_norm=1.0",
        f"train.batch_size={BATCH}", f"train.steps={steps}", "train.log_every=1",
        f"seed={seed}", f"out_dir={json.dumps(str(work))}", f'name="gaf-seed{seed}"',
        "progress=false", 'device="cpu"'])
    return out


def train_trl(work: Path, init: Path, pairs: Path, seed: int, steps: int, peer: str) -> Path:
    out = work / f"trl-seed{seed}"
    if (out / "log_history.json").is_file():
        return out
    subprocess.run([peer, str(Path(__file__).with_name("dpo_trl_parity_peer.py")), "train",
                    str(init), str(pairs), str(out), str(seed), str(steps), str(BATCH),
                    str(LR), str(BETA)], check=True)
    return out


def curves_gaf(run: Path) -> dict[str, list[float]]:
    records = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    return {k: [float(r[k]) for r in records if k in r] for k in CURVES}


def curves_trl(run: Path) -> dict[str, list[float]]:
    records = [r for r in json.loads((run / "log_history.json").read_text()) if "loss" in r]
    return {k: [float(r[k]) for r in records] for k in CURVES}


def judge(policy: Any, init: Any, prompts: list[str], init_rewards: list[float]
          ) -> dict[str, float]:
    """Mean true reward, KL(π‖π_init) on π's drawn tokens and win rate against the
    starting policy's completions (module docstring)."""
    task = gaf.create("task", "sentiment")
    sampler = gaf.create("sampler", "temperature", temperature=1.0)
    rewards, ratios = [], []
    for d in range(JUDGE_DRAWS):
        gen = torch.Generator().manual_seed(100 + d)
        with torch.no_grad():
            rollout = policy.rollout(prompts, sampler=sampler, max_new_tokens=JUDGE_TOKENS,
                                     generator=gen)
            logp = policy.completion_logprobs(rollout.batch).sequence().sum
            ref = init.completion_logprobs(rollout.batch).sequence().sum
        ratios += (logp - ref).double().tolist()
        rewards += task.reward()(prompts, rollout.completions).tolist()
    wins = [1.0 if a > b else 0.5 if a == b else 0.0 for a, b in zip(rewards, init_rewards)]
    return {"mean_reward": sum(rewards) / len(rewards), "kl": sum(ratios) / len(ratios),
            "win_rate": sum(wins) / len(wins), "rewards": rewards}


def judged(run: Path, policy: Any, init: Any, prompts: list[str], init_rewards: list[float]
           ) -> dict[str, float]:
    """:func:`judge` of the policy in ``run``, kept in ``run/judge-eval.json`` so that a
    re-run with more seeds judges only the new policies."""
    cache = run / "judge-eval.json"
    key = {"prompts": len(prompts), "draws": JUDGE_DRAWS, "tokens": JUDGE_TOKENS}
    if cache.is_file():
        kept = json.loads(cache.read_text())
        if kept.get("key") == key:
            return kept["judge"]
    j = judge(policy, init, prompts, init_rewards)
    j.pop("rewards")
    cache.write_text(json.dumps({"key": key, "judge": j}))
    return j


def perturbed(model: Any, seed: int = 7, scale: float = 0.02) -> Any:
    """The peer script's perturbation: ``scale`` × N(0, 1) added to every parameter, in
    sorted-name order from one seeded generator (gaf uses Hugging Face's names)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, p in sorted(model.named_parameters()):
            p.add_(scale * torch.randn(p.shape, generator=gen))
    return model


def check_step(work: Path, init_dir: Path, pairs: Path, peer: str) -> dict[str, float]:
    """One DPO step's loss and gradient on both sides (module docstring)."""
    from safetensors.torch import load_file

    from gaf.runs import RunContext
    from gaf.spec import resolve

    out = work / "step"
    subprocess.run([peer, str(Path(__file__).with_name("dpo_trl_parity_peer.py")), "step",
                    str(init_dir), str(pairs), str(out), str(BATCH), str(BETA)], check=True)
    trl_loss = json.loads((out / "step.json").read_text())["loss"]
    trl_grads = load_file(str(out / "step_grads.safetensors"))
    spec = resolve(objective="dpo", components={"task": "jsonl", "policy": str(init_dir)}, sets=[
        f"task.path={json.dumps(str(pairs))}", "task.eval_fraction=0",
        "task.validation_fraction=0", f"objective.beta={BETA}", 'device="cpu"'])
    obj = gaf.REGISTRY.get("objective", "dpo")(spec.objective_config)
    obj.setup(RunContext(spec, out))
    perturbed(obj.policy).train()
    from gaf.plugins.preference.units import assemble

    units = [(g, obj.units[g][0]) for g in range(BATCH)]
    scored = assemble(obj.groups, obj.offsets, units, obj.responses_of)
    loss, _ = obj.loss((scored, obj.policy.prepare(scored.prompts, scored.completions)))
    loss.backward()
    ours = {n: p.grad for n, p in obj.policy.named_parameters()}
    assert set(ours) == set(trl_grads), set(ours) ^ set(trl_grads)
    a = torch.cat([ours[n].flatten().double() for n in sorted(ours)])
    b = torch.cat([trl_grads[n].flatten().double() for n in sorted(ours)])
    result = {"gaf_loss": float(loss), "trl_loss": trl_loss,
              "max_grad_diff_rel": float((a - b).abs().max() / b.abs().max()),
              "grad_cosine": float(a @ b / (a.norm() * b.norm())),
              "gaf_grad_norm": float(a.norm()), "trl_grad_norm": float(b.norm())}
    print("parity step " + " ".join(f"{k}={v:.6g}" for k, v in result.items()))
    return result


def mean_se(values: list[float]) -> tuple[float, float]:
    m = statistics.fmean(values)
    se = statistics.stdev(values) / math.sqrt(len(values)) if len(values) > 1 else float("nan")
    return m, se


def plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    for ax, key in zip(axes, CURVES):
        for side, color in (("gaf", "C0"), ("trl", "C1")):
            runs = [r["curves"][key] for r in results[side]]
            n = min(len(c) for c in runs)
            for c in runs:
                ax.plot(range(1, len(c) + 1), c, color=color, alpha=0.25, lw=0.8)
            mean = [statistics.fmean(c[i] for c in runs) for i in range(n)]
            ax.plot(range(1, n + 1), mean, color=color, lw=2,
                    label=f"{'gaf' if side == 'gaf' else 'TRL'} (mean of {len(runs)} seeds)")
        ax.set_title(key)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle("DPO from one checkpoint on one pair file: gaf and TRL 1.16, per-step metrics")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str]) -> None:
    work = Path(argv[0] if argv and not argv[0].startswith("--") else "/tmp/gaf-parity")
    opts = {a: argv[i + 1] for i, a in enumerate(argv[:-1]) if a.startswith("--")}
    seeds = [int(s) for s in opts.get("--seeds", "0,1,2").split(",")]
    steps = int(opts.get("--steps", 150))
    peer = opts.get("--peer-python", "/tmp/gaf-peers/bin/python")
    png = Path(opts.get("--plot", "docs/img/dpo_trl_parity.png"))
    work.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(2)
    init_dir = make_start(work, peer)
    pairs = make_pairs(work, init_dir)
    if "--check-step" in argv:
        check_step(work, init_dir, pairs, peer)
        return
    init = gaf.load("policy", init_dir)
    prompts = gaf.create("task", "sentiment").prompts("eval")
    base = judge(init, init, prompts, [0.0] * (len(prompts) * JUDGE_DRAWS))
    # the starting policy's own completions, drawn with other seeds, are the opponent
    task, sampler = gaf.create("task", "sentiment"), gaf.create("sampler", "temperature")
    init_rewards: list[float] = []
    for d in range(JUDGE_DRAWS):
        with torch.no_grad():
            texts = init.generate(prompts, sampler=sampler, max_new_tokens=JUDGE_TOKENS,
                                  generator=torch.Generator().manual_seed(200 + d))
        init_rewards += task.reward()(prompts, texts).tolist()
    print(f"parity start mean_reward={base['mean_reward']:.4f} pairs={N_PAIRS} "
          f"eval_prompts={len(prompts)} draws={JUDGE_DRAWS}", flush=True)
    results: dict[str, Any] = {"start_mean_reward": base["mean_reward"], "gaf": [], "trl": []}
    for seed in seeds:
        for side in ("gaf", "trl"):
            if side == "gaf":
                run = train_gaf(work, init_dir, pairs, seed, steps)
                policy, curves = gaf.load("policy", run / "policy"), curves_gaf(run)
            else:
                run = train_trl(work, init_dir, pairs, seed, steps, peer)
                policy, curves = gaf.load("policy", run / "policy"), curves_trl(run)
            j = judged(run, policy, init, prompts, init_rewards)
            results[side].append({"seed": seed, **j, "curves": curves})
            print(f"parity {side} seed={seed} mean_reward={j['mean_reward']:.4f} "
                  f"kl={j['kl']:.3f} win_rate={j['win_rate']:.4f} "
                  f"final_loss={curves['loss'][-1]:.4f}", flush=True)
    for side in ("gaf", "trl"):
        summary = {}
        for key in ("mean_reward", "kl", "win_rate"):
            m, se = mean_se([r[key] for r in results[side]])
            summary[key] = (m, se)
        results[f"{side}_mean"] = summary
        print(f"parity {side} mean over {len(seeds)} seeds: " + " ".join(
            f"{k}={m:.4f}±{se:.4f}" for k, (m, se) in summary.items()))
    (work / "parity.json").write_text(json.dumps(results, indent=1))
    plot(results, png)
    print(f"parity plot {png}")


if __name__ == "__main__":
    main(sys.argv[1:])
