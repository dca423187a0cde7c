"""Training throughput of the reference-free and unpaired preference objectives: ``kto``,
``orpo`` and ``simpo``, on the DPO peer benchmark's pairs.

    python benchmarks/preference_throughput.py --objective {kto,orpo,simpo} [STEPS] [BATCH]
        [--warmup 5] [--threads 2] [--no-cost] [--write-pairs PAIRS.jsonl]

The model, data and optimiser are those of ``benchmarks/dpo_throughput.py``: a randomly
initialised gpt2-tiny (4 layers, 4 heads, d 128, 256 positions, 859,264 parameters) with
the byte vocabulary of 259 ids (``policy.tokenizer = "byte"``), the pairs of
``dpo_throughput.peer_rows`` (prompts of 6 random words, completions of 8, the same word
list and seed as ``../shared/peers/trl_dpo_bench.py``), all of them in the train split,
no SFT stage (``sft_steps = 0``: the random policy is its own reference), CPU, fp32.

It builds the registered objective directly (as ``dpo_step_profile.py`` does) with its
own defaults for every loss option, and runs the trainer's step by hand
(``gaf.train._step``'s order): ``train_batch`` (the units in ``UnitOrder``'s order,
tokenisation, the shared prompt packed once per row), ``loss`` (policy forward, the
completion log-probs and the ``entropy`` metric, the objective's loss and metrics),
``backward``, gradient-norm clipping at 1.0, fused AdamW at lr 1e-4 (no weight decay,
constant rate). The reference is what each objective uses:

* ``kto`` (β 1, λD = λU = 1, ``unpair = "trl"``): the reference log-probs of every
  completion are computed once in ``setup`` and looked up per step, as the objective
  does in a run (not timed); ``z0`` is the detached batch mean of the log-ratios,
  clamped at 0. ``train.batch_size`` counts completions, so a step of ``BATCH`` pairs
  is ``2·BATCH`` completions: each pair's chosen (desirable) then its rejected
  (undesirable), pairs in the loop's order.
* ``orpo`` (λ = ``beta`` 0.1) and ``simpo`` (β 2, γ 1): reference-free, no reference
  pass at all. ``BATCH`` pairs a step.

``STEPS`` (default 300) steps are timed after ``--warmup`` (default 5) untimed ones;
prints one line::

    gaf_<objective> pairs_per_s=… completions_per_step=… steps=… warmup=… batch=…
        mean_loss=… last_loss=… params=… threads=… <the loss options>

``mean_loss`` is the mean over every step, warm-up included (what TRL's
``training_loss`` reports). Then (unless ``--no-cost``) it prints the timed steps' cost
(``benchmarks/step_cost.py``)::

    gaf_<objective>_cost unit=step gflop_per_unit=… achieved_gflops=… conv=… …

the unit being one more :func:`step` (the timed batches again, in order, from the
first), ``STEPS`` units in the timed seconds. The batches' packed lengths vary, so
``gflop_per_unit`` (the first timed batch's step) times ``STEPS`` is the timed FLOPs only
approximately (exactly when one step is timed), taken as the mean step.

``--write-pairs`` writes, instead of timing, the
``{"prompt", "chosen", "rejected"}`` pairs of every step (warm-up included), in the
loop's order, for the peer ``benchmarks/trl_preference_peer.py`` (TRL 1.16's
``KTOTrainer``, ``ORPOTrainer``, ``CPOTrainer`` with ``loss_type="simpo"``), which
trains on them in that order with the same ``--batch`` and ``--warmup``.

Protocol: write the pairs once per objective with the same ``STEPS BATCH --warmup``,
then alternate this script and the peer on an otherwise idle machine, at least 3 runs
each, note the load average before the first run, and compare the ratio of the
medians of ``pairs_per_s`` (docs/benchmarks.md § KTO, ORPO and SimPO).
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

import gaf
from gaf.runs import RunContext
from gaf.spec import resolve
from gaf.train import make_optimizer

sys.path.insert(0, str(Path(__file__).resolve().parent))
from dpo_throughput import BATCH as PEER_BATCH  # noqa: E402
from dpo_throughput import peer_rows  # noqa: E402
import step_cost  # noqa: E402

OBJECTIVES = ("kto", "orpo", "simpo")
BATCH = 8
LR = 1e-4
MAX_GRAD_NORM = 1.0
#: the loss options printed (the objective's own defaults: none is set here)
LOSS_OPTIONS = {"kto": ("beta", "desirable_weight", "undesirable_weight", "unpair"),
                "orpo": ("beta", "rpo_alpha"), "simpo": ("beta", "gamma", "rpo_alpha")}


def rows(n: int) -> list[dict[str, str]]:
    """The first ``n`` pairs of the DPO peer benchmark's generator."""
    return peer_rows(math.ceil(n / PEER_BATCH))[:n]


def build(objective: str, n_pairs: int, batch: int, tmp: str) -> tuple[Any, Any]:
    """The objective set up on ``n_pairs`` pairs (module docstring), and its spec."""
    data = Path(tmp) / "pairs.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows(n_pairs)))
    per_step = 2 * batch if objective == "kto" else batch  # kto's batch counts completions
    spec = resolve(objective=objective, components={"task": "jsonl"}, sets=[
        f"task.path={json.dumps(str(data))}", "task.eval_fraction=0",
        "task.validation_fraction=0", 'device="cpu"', "progress=false",
        'policy.tokenizer="byte"', "objective.sft_steps=0", f"train.batch_size={per_step}",
        f"train.lr={LR}", f"train.max_grad_norm={MAX_GRAD_NORM}", "train.warmup_steps=0"])
    torch.manual_seed(0)
    obj = gaf.REGISTRY.get("objective", objective)(spec.objective_config)
    obj.setup(RunContext(spec, Path(tmp)))
    obj.policy.train()
    return obj, spec


def step_pairs(obj: Any, objective: str, scored: Any) -> list[dict[str, str]]:
    """The pairs a step trains on, in order. A kto step's completions are the chosen
    (desirable) then the rejected (undesirable) of each pair: rebuilt as that pair."""
    groups = obj.groups
    if objective != "kto":
        return [{"prompt": groups[g].prompt, "chosen": groups[g].responses[i],
                 "rejected": groups[g].responses[j]} for g, (i, j) in scored.units]
    units = scored.units
    if len(units) % 2:
        raise ValueError(f"a kto step of {len(units)} completions is not whole pairs")
    out = []
    for (g, (i, good)), (h, (j, bad)) in zip(units[::2], units[1::2]):
        if g != h or not good or bad:
            raise ValueError(f"kto units {(g, i, good)}, {(h, j, bad)} are not one pair's "
                             f"chosen then rejected")
        out.append({"prompt": groups[g].prompt, "chosen": groups[g].responses[i],
                    "rejected": groups[g].responses[j]})
    return out


def step(obj: Any, opt: Any, params: list[Any], index: int) -> tuple[float, int]:
    """One training step on batch ``index`` (module docstring): its loss and the number
    of completions it scored."""
    opt.zero_grad(set_to_none=True)
    batch = obj.train_batch(index)
    loss, _ = obj.loss(batch)
    loss.backward()
    value = loss.item()
    torch.nn.utils.clip_grad_norm_(params, MAX_GRAD_NORM)
    opt.step()
    return value, len(batch[0].completions)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("steps", nargs="?", type=int, default=300)
    p.add_argument("batch", nargs="?", type=int, default=BATCH, help="pairs a step")
    p.add_argument("--objective", required=True, choices=OBJECTIVES)
    p.add_argument("--warmup", type=int, default=5, help="untimed steps first")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--no-cost", action="store_true", help="skip the cost pass")
    p.add_argument("--write-pairs", default="", metavar="PAIRS.jsonl")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    n = args.steps + args.warmup
    with tempfile.TemporaryDirectory() as tmp:
        obj, spec = build(args.objective, n * args.batch, args.batch, tmp)
        if args.write_pairs:
            with Path(args.write_pairs).open("w") as f:
                for i in range(n):
                    for pair in step_pairs(obj, args.objective, obj.train_batch(i)[0]):
                        f.write(json.dumps(pair) + "\n")
            return
        params = [q for q in obj.policy.parameters() if q.requires_grad]
        opt = make_optimizer(spec.train, params)
        losses: list[float] = []
        start = time.perf_counter()
        for i in range(n):
            if i == args.warmup:
                start = time.perf_counter()
            loss, completions = step(obj, opt, params, i)
            losses.append(loss)
        elapsed = time.perf_counter() - start
        if not args.no_cost:
            timed = itertools.cycle(range(args.warmup, n))
            cost = step_cost.measure(lambda: step(obj, opt, params, next(timed)),
                                     units=args.steps, seconds=elapsed, inference=False)
        cfg = spec.objective_config
        options = " ".join(f"{k}={getattr(cfg, k)}" for k in LOSS_OPTIONS[args.objective])
    print(f"gaf_{args.objective} pairs_per_s={args.steps * args.batch / elapsed:.2f} "
          f"completions_per_step={completions} steps={args.steps} warmup={args.warmup} "
          f"batch={args.batch} mean_loss={sum(losses) / len(losses):.4f} "
          f"last_loss={losses[-1]:.4f} params={sum(q.numel() for q in params)} "
          f"threads={torch.get_num_threads()} {options}")
    if not args.no_cost:
        print(step_cost.line(f"gaf_{args.objective}", cost, "step"))


if __name__ == "__main__":
    main()
