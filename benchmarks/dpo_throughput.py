"""DPO training throughput on the peer benchmark's shape, through the real ``dpo`` objective.

    python benchmarks/dpo_throughput.py [STEPS]

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
"""

from __future__ import annotations

import json
import random
import sys
import tempfile
from pathlib import Path

import torch

import gaf

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


def main(steps: int = 30) -> None:
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


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:2]))
