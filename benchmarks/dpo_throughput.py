"""DPO training throughput on the peer benchmark's shape, through the real ``dpo`` objective.

    python benchmarks/dpo_throughput.py [STEPS] [--no-cost]

The shape and data are those of ``../shared/peers/trl_dpo_bench.py`` (TRL's
``DPOTrainer``): a randomly initialised gpt2-tiny (4 layers, 4 heads, d=128, 256
positions) with the byte vocabulary of 259 (``policy.tokenizer = "byte"``; gpt2-tiny's
default is the 1,122-id ``sentiment-bpe``), 8 pairs a step, prompts of 6 random words and
completions of 8 (same word list and seed), AdamW at lr 1e-4, β = 0.1, CPU, fp32.

It runs ``gaf.run("dpo", ...)`` on those pairs written as TRL-format JSONL, all of them
in the train split as in the peer script (``sft_steps = 0``: the random policy is its own
reference, as in the peer script) and
prints ``gaf_dpo pairs_per_s=…``, counting the setup (reading the data, building the
frozen reference, computing the reference log-probs of every completion once) **and**
the training steps, but not the final evaluation. TRL's figure counts only
``trainer.train()`` (which runs the reference forward each step), so the comparison
is conservative for gaf. ``train_only_pairs_per_s`` counts the training steps alone
(reference log-probs already cached): its like-for-like peer is
``benchmarks/trl_dpo_precompute_bench.py``, whose timed ``trainer.train()`` also starts
with the reference log-probs computed (TRL 1.16 computes them in ``DPOTrainer.__init__``).
Run them in the same session and compare the ratios (docs/benchmarks.md).

Then (unless ``--no-cost``) it prints the cost of each figure (``benchmarks/step_cost.py``),
its units built by :func:`cost_units` on the data's first 8 pairs (the objective set up
again, as ``benchmarks/dpo_step_profile.py`` builds it, on those pairs alone)::

    gaf_dpo_setup_and_train_cost unit=step+reference gflop_per_unit=… achieved_gflops=… …
    gaf_dpo_train_only_cost unit=step gflop_per_unit=… achieved_gflops=… …

``step``: one training step as the trainer runs it (``gaf.train._step``: ``train_batch``,
loss, backward, clipping, AdamW), ``STEPS`` units in ``train_s``; ``step+reference``: the
setup's reference pass over one step's pairs then that step, ``STEPS`` units in
``setup_s + train_s`` (the setup's other work, reading the data and copying the
reference, has no FLOPs counted). Both are approximate: the timed steps' packed batches
vary in length, and the setup scores every pair once in batches of its own, so
``gflop_per_unit`` (the first 8 pairs') times ``STEPS`` is taken as the mean. The shares
are of one profiled call of each unit.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch

import gaf

sys.path.insert(0, str(Path(__file__).resolve().parent))
import step_cost  # noqa: E402

BATCH = 8
WORDS = "the a good bad movie film plot actor great awful fine dull story scene music love hate"


def peer_rows(steps: int) -> list[dict[str, str]]:
    """The peer script's pairs (same generator and seed)."""
    random.seed(0)
    words = WORDS.split()

    def sent(n: int) -> str:
        return " ".join(random.choice(words) for _ in range(n))

    return [{"prompt": sent(6), "chosen": " " + sent(8), "rejected": " " + sent(8)}
            for _ in range(BATCH * steps)]


def cost_units(tmp: str) -> tuple[Callable[[], None], Callable[[], None]]:
    """The cost pass's units (module docstring) on the data's first ``BATCH`` pairs, set
    up in ``tmp``: ``(step, step+reference)``."""
    import dpo_step_profile

    from gaf.train import _step, make_optimizer

    obj, spec, _ = dpo_step_profile.build(1, tmp)
    params = [q for q in obj.policy.parameters() if q.requires_grad]
    opt = make_optimizer(spec.train, params)

    def step() -> None:
        _step(obj, obj.ctx, opt, params, 1, None)

    def with_reference() -> None:
        obj.score(obj.reference, obj.groups)
        step()

    return step, with_reference


def main(steps: int = 30, cost: bool = True) -> None:
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "pairs.jsonl"
        rows = peer_rows(steps)
        data.write_text("".join(json.dumps(r) + "\n" for r in rows))
        # every pair trains, as in the peer script: no eval or validation split (the
        # final evaluation then has no held-out prompts and is skipped; it is not timed)
        _, summary = gaf.run("dpo", task="jsonl", sets=[
            f"task.path={json.dumps(str(data))}", "task.eval_fraction=0",
            "task.validation_fraction=0",
            f"out_dir={json.dumps(tmp)}", "device=cpu", "progress=false",
            "policy.tokenizer=\"byte\"",  # the peer's byte vocabulary, not gpt2-tiny's BPE
            "objective.sft_steps=0", "objective.beta=0.1", "objective.eval_prompts=1",
            "objective.max_new_tokens=1", f"train.steps={steps}", f"train.batch_size={BATCH}",
            "train.lr=1e-4", "train.warmup_steps=0", "train.max_grad_norm=1.0",
            "train.log_every=10"])
    pairs = steps * BATCH
    seconds = summary["setup_s"] + summary["train_s"]
    print(f"gaf_dpo pairs_per_s={pairs / seconds:.2f} steps={steps} "
          f"setup_s={summary['setup_s']:.2f} train_s={summary['train_s']:.2f} "
          f"train_only_pairs_per_s={summary['train_pairs_per_s']:.2f} "
          f"final_loss={summary['final']['loss']:.4f} params={summary['parameters']} "
          f"threads={torch.get_num_threads()}")
    if cost:
        with tempfile.TemporaryDirectory() as tmp:
            step, with_reference = cost_units(tmp)
            whole = step_cost.measure(with_reference, units=steps, seconds=seconds,
                                      inference=False, calls=1)
            train = step_cost.measure(step, units=steps, seconds=summary["train_s"],
                                      inference=False, calls=1)
        print(step_cost.line("gaf_dpo_setup_and_train", whole, "step+reference"))
        print(step_cost.line("gaf_dpo_train_only", train, "step"))


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("steps", nargs="?", type=int, default=30)
    ap.add_argument("--no-cost", action="store_true", help="skip the cost pass")
    a = ap.parse_args()
    main(a.steps, cost=not a.no_cost)
