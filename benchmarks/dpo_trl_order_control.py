"""Where a DPO gap between gaf and TRL comes from: the same batches, then one difference at a time.

    python benchmarks/dpo_trl_order_control.py [WORK_DIR] [--seeds 0,1,2]
        [--variants same-order,no-bos,gaf-split] [--peer-python /tmp/gaf-peers/bin/python]

``benchmarks/dpo_trl_parity.py`` trains both libraries from one checkpoint on one pair
file with the same hyper-parameters and compares means over seeds. A seed there sets
a different batch order on each side (gaf's ``UnitOrder``, TRL's ``RandomSampler``),
so two runs of the same seed see different batches. This script removes that
difference and adds others back one at a time. It uses the parity's starting
checkpoint, pair file and gaf runs (``WORK_DIR/init``, ``pairs.jsonl``,
``gaf-seed{S}``; made by the parity's own functions when missing) and, per seed S:

* ``same-order``: TRL on exactly the batches gaf's seed-S run drew (gaf's order
  written to ``WORK_DIR/order-seed{S}.json``, TRL's sampler sequential:
  ``dpo_trl_order_control_peer.py``). Prints the largest per-step difference of the
  logged ``loss`` and ``rewards/margins`` and the distance between the two final
  weights relative to gaf's update ``‖θ_gaf − θ_TRL‖ / ‖θ_gaf − θ_init‖``.
* ``no-bos``: the same batches with a tokenizer that adds no BOS (TRL puts BOS in
  front only when the tokenizer does; GPT-2's does not), so TRL trains on
  ``prompt completion EOS`` while the policy was fine-tuned on, and samples from,
  ``BOS prompt …``. Paired with gaf's seed-S run.
* ``gaf-split``: gaf with the ``jsonl`` task's default split (5% of the records held
  out as eval and 5% as validation, whole prompts at a time), which is what
  ``--data FILE`` does unless ``task.eval_fraction=0 task.validation_fraction=0`` are
  set; everything else as the parity. Not paired (fewer pairs, another order).

Every policy is judged with the parity's ``judge`` (true reward, KL to the start on
the drawn tokens, win rate against the start's completions, ties ½), on the
sentiment task's **validation** prompts: this script compares settings. It prints one
line per run, then for each variant the mean ± standard error over seeds of its
difference from gaf's matched run (paired by seed where the batches are the same),
and writes ``WORK_DIR/control-<variants>.json`` (every figure and curve). Finished
runs and orders are reused when their files exist.
"""

from __future__ import annotations

import importlib.util
import json
import math
import statistics
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

import gaf
from gaf.plugins.alignment.tuning import tuning_prompts
from gaf.plugins.preference.units import UnitOrder

HERE = Path(__file__).resolve().parent
METRICS = ("mean_reward", "kl", "win_rate")
VARIANTS = ("same-order", "no-bos", "gaf-split")


def _parity() -> Any:
    spec = importlib.util.spec_from_file_location("dpo_trl_parity", HERE / "dpo_trl_parity.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def gaf_order(n_pairs: int, seed: int, steps: int, batch: int) -> list[int]:
    """The pair-file lines gaf's DPO run with ``seed`` trains on, batch after batch.

    With ``task.eval_fraction=0 task.validation_fraction=0`` the ``jsonl`` task's train
    split is every line, one group (one pair) per line, in file order, and batch ``i``
    is ``UnitOrder(counts, seed).slice(i · batch, batch)`` (gaf.plugins.preference.data).
    """
    order = UnitOrder([1] * n_pairs, seed)
    picks = order.slice(0, steps * batch)
    assert all(unit == 0 for _, unit in picks)
    return [group for group, _ in picks]


def largest_gap(a: Sequence[float], b: Sequence[float]) -> float:
    """The largest ``|a_i − b_i|`` over the common steps of two curves."""
    if len(a) != len(b):
        raise ValueError(f"curves of different lengths: {len(a)} and {len(b)}")
    return max(abs(x - y) for x, y in zip(a, b))


def mean_se(values: Sequence[float]) -> tuple[float, float]:
    """Mean and standard error (sample standard deviation / √n; NaN for one value)."""
    m = statistics.fmean(values)
    se = statistics.stdev(values) / math.sqrt(len(values)) if len(values) > 1 else float("nan")
    return m, se


def relative_distance(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor],
                      start: dict[str, torch.Tensor]) -> float:
    """``‖a − b‖ / ‖a − start‖`` over all parameters (state dicts, same keys)."""
    num = sum(float(((a[k] - b[k]).double() ** 2).sum()) for k in a)
    den = sum(float(((a[k] - start[k]).double() ** 2).sum()) for k in a)
    return math.sqrt(num / den)


def train_trl_ordered(work: Path, init: Path, pairs: Path, seed: int, steps: int,
                      peer: str, p: Any, *, bos: bool) -> Path:
    out = work / f"trl-{'order' if bos else 'nobos'}-seed{seed}"
    if (out / "log_history.json").is_file():
        return out
    n = sum(1 for line in pairs.read_text().splitlines() if line.strip())
    order = work / f"order-seed{seed}.json"
    order.write_text(json.dumps(gaf_order(n, seed, steps, p.BATCH)))
    subprocess.run([peer, str(HERE / "dpo_trl_order_control_peer.py"), str(init), str(pairs),
                    str(order), str(out), str(steps), str(p.BATCH), str(p.LR), str(p.BETA),
                    "yes" if bos else "no"], check=True)
    return out


def train_gaf_split(work: Path, init: Path, pairs: Path, seed: int, steps: int, p: Any) -> Path:
    """The parity's gaf run with the ``jsonl`` task's default held-out fractions."""
    out = work / f"gaf-split-seed{seed}"
    if (out / "policy" / "gaf.json").is_file():
        return out
    gaf.run("dpo", policy=str(init), task="jsonl", sets=[
        f"task.path={json.dumps(str(pairs))}", f"objective.beta={p.BETA}", f"train.lr={p.LR}",
        'train.schedule="linear"', "train.warmup_steps=0", "train.max_grad_norm=1.0",
        f"train.batch_size={p.BATCH}", f"train.steps={steps}", "train.log_every=1",
        f"seed={seed}", f"out_dir={json.dumps(str(work))}", f'name="gaf-split-seed{seed}"',
        "progress=false", 'device="cpu"', 'objective.eval_split="validation"'])
    return out


def main(argv: list[str]) -> dict[str, Any]:
    work = Path(argv[0] if argv and not argv[0].startswith("--") else "/tmp/gaf-parity")
    opts = {a: argv[i + 1] for i, a in enumerate(argv[:-1]) if a.startswith("--")}
    seeds = [int(s) for s in opts.get("--seeds", "0,1,2").split(",")]
    variants = opts.get("--variants", ",".join(VARIANTS)).split(",")
    unknown = set(variants) - set(VARIANTS)
    if unknown:
        raise SystemExit(f"unknown variants {sorted(unknown)}; choose from {', '.join(VARIANTS)}")
    steps = int(opts.get("--steps", 150))
    peer = opts.get("--peer-python", "/tmp/gaf-peers/bin/python")
    work.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(2)
    p = _parity()
    init_dir = p.make_start(work, peer)
    pairs = p.make_pairs(work, init_dir)
    init = gaf.load("policy", init_dir)
    task = gaf.create("task", "sentiment")
    prompts = tuning_prompts(task)
    sampler = gaf.create("sampler", "temperature")
    init_rewards: list[float] = []  # the start's own completions, as in the parity
    for d in range(p.JUDGE_DRAWS):
        with torch.no_grad():
            texts = init.generate(prompts, sampler=sampler, max_new_tokens=p.JUDGE_TOKENS,
                                  generator=torch.Generator().manual_seed(200 + d))
        init_rewards += task.reward()(prompts, texts).tolist()
    start = init.state_dict()

    def judged(run: Path, curves: dict[str, list[float]]) -> dict[str, Any]:
        j = p.judge(gaf.load("policy", run / "policy"), init, prompts, init_rewards)
        j.pop("rewards")
        return {**j, "curves": curves}

    results: dict[str, Any] = {"split": "validation", "prompts": len(prompts), "seeds": seeds,
                               "runs": {v: [] for v in ("gaf", *variants)}}
    for seed in seeds:
        gaf_run = p.train_gaf(work, init_dir, pairs, seed, steps)
        rows = {"gaf": judged(gaf_run, p.curves_gaf(gaf_run))}
        for variant in variants:
            if variant == "gaf-split":
                run = train_gaf_split(work, init_dir, pairs, seed, steps, p)
                rows[variant] = judged(run, p.curves_gaf(run))
                continue
            run = train_trl_ordered(work, init_dir, pairs, seed, steps, peer, p,
                                    bos=variant == "same-order")
            row = rows[variant] = judged(run, p.curves_trl(run))
            ours = rows["gaf"]["curves"]
            row["loss_gap"] = largest_gap(row["curves"]["loss"], ours["loss"])
            row["margin_gap"] = largest_gap(row["curves"]["rewards/margins"],
                                            ours["rewards/margins"])
            row["weight_gap"] = relative_distance(
                gaf.load("policy", gaf_run / "policy").state_dict(),
                gaf.load("policy", run / "policy").state_dict(), start)
        for name, row in rows.items():
            extra = "".join(f" {k}={row[k]:.3g}" for k in ("loss_gap", "margin_gap", "weight_gap")
                            if k in row)
            print(f"control {name} seed={seed} " + " ".join(f"{k}={row[k]:.4f}" for k in METRICS)
                  + extra, flush=True)
            results["runs"][name].append({"seed": seed, **row})
    base = results["runs"]["gaf"]
    for variant in variants:
        runs = results["runs"][variant]
        summary = {}
        for key in METRICS:
            if variant == "gaf-split":  # other data, other order: unpaired
                (ma, sa) = mean_se([r[key] for r in runs])
                (mb, sb) = mean_se([r[key] for r in base])
                summary[key] = (ma - mb, math.hypot(sa, sb))
            else:
                summary[key] = mean_se([r[key] - b[key] for r, b in zip(runs, base)])
        results[f"{variant}_minus_gaf"] = summary
        print(f"control {variant} minus gaf over {len(seeds)} seeds "
              f"({'unpaired' if variant == 'gaf-split' else 'paired by batch order'}): "
              + " ".join(f"{k}={m:+.4f}±{se:.4f}" for k, (m, se) in summary.items()), flush=True)
    (work / f"control-{'+'.join(variants)}.json").write_text(json.dumps(results, indent=1))
    return results


if __name__ == "__main__":
    main(sys.argv[1:])
