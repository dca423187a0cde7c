"""Peer of ``benchmarks/preference_throughput.py``: TRL 1.16's ``KTOTrainer``,
``ORPOTrainer`` and ``CPOTrainer(loss_type="simpo")`` on the same pairs, the same model
shape and tokenizer, CPU.

    python benchmarks/preference_throughput.py --objective kto 300 8 --warmup 5 \\
        --write-pairs /tmp/kto_pairs.jsonl
    /tmp/gaf-peers/bin/python benchmarks/trl_preference_peer.py --trainer kto \\
        /tmp/kto_pairs.jsonl [--batch 8] [--warmup 5] [--threads 2]

(the same with ``orpo`` and ``simpo``; write each objective's own file: the loop's
order depends on the objective's units). Imports only torch, transformers, datasets and
TRL (run it in the peer venv). Where TRL 1.16 has them: ``trl.KTOTrainer``,
``trl.experimental.orpo.ORPOTrainer``, ``trl.experimental.cpo.CPOTrainer``.

The model is ``GPT2LMHeadModel`` in gpt2-tiny's shape (d 128, 4 layers, 4 heads, 256
positions, tied output layer, 859,264 parameters with the 259 ids) with gaf's ``byte``
tokenizer rebuilt by ``dpo_trl_parity_peer.py``'s ``byte_tokenizer`` (id = UTF-8 byte,
``<|bos|>`` 256, ``<|eos|>`` 257, ``<|pad|>`` 258), randomly initialised (seed 0). The
sequences are ``BOS prompt completion EOS`` on both sides. Settings (``CONFIGS``; the
loss options are gaf's defaults, which tests/benchmarks/test_preference_throughput.py
compares with gaf's resolved config):

* ``kto``: ``KTOConfig(beta=1.0, desirable_weight=1.0, undesirable_weight=1.0,
  loss_type="kto", precompute_ref_log_probs=True)``, the reference a copy of the
  initial model. Each pair of the file becomes two unpaired rows, ``{prompt, chosen,
  label: True}`` then ``{prompt, rejected, label: False}`` (``kto_rows``), in the
  file's order: the completions gaf's ``kto`` (``unpair = "trl"``) trains on in a step,
  in its order. **Batch counts:** gaf's ``train.batch_size`` and TRL's
  ``per_device_train_batch_size`` both count completions, so both are ``2·BATCH``
  (``--batch`` counts pairs, as gaf's script): a step is ``BATCH`` pairs, ``BATCH``
  desirable and ``BATCH`` undesirable completions, the same ones on both sides, and
  ``pairs_per_s`` counts ``BATCH`` a step on both. (TRL's own
  ``unpair_preference_dataset`` would put all chosen rows of a 1,000-row block before
  the rejected ones; this script does not call it.)
* ``orpo``: ``ORPOConfig(beta=0.1)`` (the paper's λ; gaf's ``orpo`` ``beta``).
* ``simpo``: ``CPOConfig(loss_type="simpo", beta=2.0, simpo_gamma=1.0, cpo_alpha=0.0)``
  (TRL's defaults are β 0.1, γ 0.5 and a behaviour-cloning NLL with weight 1.0, i.e.
  CPO-SimPO; gaf's ``simpo`` has no NLL term, ``rpo_alpha = 0``). TRL's ``simpo_gamma``
  is the absolute margin γ, as gaf's ``gamma``.

Every trainer: ``--batch`` pairs a step, ``max_length=256`` (gaf's context; no
sequence here comes near it, nothing is truncated on either side), one pass in the
file's order (``train_sampling_strategy="sequential"``), AdamW (``adamw_torch_fused``,
gaf's fused AdamW) at lr 1e-4, constant, weight decay 0, betas 0.9/0.999, gradient
clipping 1.0, dropout off, fp32 (``bf16=False``), no gradient checkpointing (these
configs default to it), no evaluation, no checkpoints, logging every 10 steps.

What is timed: ``trainer.train()`` from the end of step ``--warmup`` (a callback reads
the clock there; with 0, from the call) until it returns; the dataset is tokenised and,
for KTO, the reference log-probs computed in the trainer's constructor, before it. gaf's
script times its steps after the same number of warm-up steps; its ``kto`` also reads
reference log-probs computed before the timer. Prints one line::

    trl_<trainer> pairs_per_s=… completions_per_step=… steps=… warmup=… batch=…
        wall_s=… mean_loss=… params=… threads=…

Differences that remain (each side's own algorithm, not settings):

* **KTO's KL estimate.** TRL estimates ``z0`` from mismatched pairs (each prompt with
  the previous row's completion within the batch): an extra no-grad policy forward of
  the whole batch every step (the reference's mismatched log-probs are precomputed
  too). gaf's ``kto`` uses the detached batch mean of the matched log-ratios, no extra
  forward.
* **Packing.** gaf puts a pair's prompt once in a row with both completions (block
  attention mask); TRL runs ``prompt + chosen`` and ``prompt + rejected`` as two rows
  (KTO: every completion its own row).
* **ORPO's NLL term.** TRL's is the token mean of the chosen sequences' cross-entropy
  over prompt and completion tokens, pooled over the batch; gaf's is each chosen
  completion's token-mean NLL (completion tokens only), averaged over pairs.
* **Metrics.** Each side computes its own per-step metrics (gaf: rewards, log-probs,
  entropy; TRL's KTO: the same plus mean logits; ORPO/CPO: rewards, log-probs, mean
  logits, NLL).

Protocol: alternate with ``preference_throughput.py --objective …`` (same ``STEPS
BATCH --warmup``) on an otherwise idle machine, at least 3 runs each, write the load
average before the first, and compare the ratio of the medians of ``pairs_per_s``. No
test runs this script (it needs the peer venv); the test reads its ``CONFIGS`` and
``kto_rows``.
"""

import argparse
import copy
import json
import os
import time
from pathlib import Path

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

#: each trainer's loss options: gaf's defaults of the objective of the same name
CONFIGS = {
    "kto": {"beta": 1.0, "desirable_weight": 1.0, "undesirable_weight": 1.0,
            "loss_type": "kto", "precompute_ref_log_probs": True},
    "orpo": {"beta": 0.1},
    "simpo": {"loss_type": "simpo", "beta": 2.0, "simpo_gamma": 1.0, "cpo_alpha": 0.0},
}
LR = 1e-4
MAX_LENGTH = 256


def kto_rows(pairs):
    """Each pair as TRL's unpaired rows: its chosen (desirable), then its rejected."""
    return [row for p in pairs for row in (
        {"prompt": p["prompt"], "completion": p["chosen"], "label": True},
        {"prompt": p["prompt"], "completion": p["rejected"], "label": False})]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--trainer", required=True, choices=sorted(CONFIGS))
    p.add_argument("pairs", help="the JSONL pairs of preference_throughput.py --write-pairs")
    p.add_argument("--batch", type=int, default=8, help="pairs a step")
    p.add_argument("--warmup", type=int, default=5, help="steps before the clock starts")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)

    import torch
    from datasets import Dataset
    from dpo_trl_parity_peer import byte_tokenizer, gpt2_tiny_config  # this folder, peer venv
    from transformers import GPT2LMHeadModel, TrainerCallback

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    tok = byte_tokenizer()
    model = GPT2LMHeadModel(gpt2_tiny_config(tok))
    pairs = [json.loads(line) for line in Path(args.pairs).read_text().splitlines()]
    steps = len(pairs) // args.batch
    pairs = pairs[:steps * args.batch]
    if steps <= args.warmup:
        raise SystemExit(f"{len(pairs)} pairs make {steps} steps of {args.batch}: "
                         f"not more than --warmup {args.warmup}")
    per_step = 2 * args.batch if args.trainer == "kto" else args.batch
    common = dict(output_dir=f"/tmp/trl_preference_peer_{args.trainer}",
                  per_device_train_batch_size=per_step, max_steps=steps, num_train_epochs=1,
                  learning_rate=LR, lr_scheduler_type="constant", weight_decay=0.0,
                  max_grad_norm=1.0, optim="adamw_torch_fused", logging_steps=10,
                  report_to=[], save_strategy="no", eval_strategy="no", use_cpu=True,
                  dataloader_num_workers=0, disable_tqdm=True, bf16=False,
                  gradient_checkpointing=False, disable_dropout=True,
                  train_sampling_strategy="sequential", max_length=MAX_LENGTH, seed=0,
                  **CONFIGS[args.trainer])
    if args.trainer != "kto":  # the pair collator needs the raw columns (TRL sets it too)
        common["remove_unused_columns"] = False
    if args.trainer == "kto":
        from trl import KTOConfig, KTOTrainer

        ref = copy.deepcopy(model)
        trainer = KTOTrainer(model=model, ref_model=ref, args=KTOConfig(**common),
                             train_dataset=Dataset.from_list(kto_rows(pairs)),
                             processing_class=tok)
    elif args.trainer == "orpo":
        from trl.experimental.orpo import ORPOConfig, ORPOTrainer

        trainer = ORPOTrainer(model=model, args=ORPOConfig(**common),
                              train_dataset=Dataset.from_list(pairs), processing_class=tok)
    else:
        from trl.experimental.cpo import CPOConfig, CPOTrainer

        trainer = CPOTrainer(model=model, args=CPOConfig(**common),
                             train_dataset=Dataset.from_list(pairs), processing_class=tok)

    clock = {"start": None}

    class Warmup(TrainerCallback):
        def on_step_end(self, a, state, control, **kwargs):
            if state.global_step == args.warmup:
                clock["start"] = time.perf_counter()

    trainer.add_callback(Warmup())
    t0 = time.perf_counter()
    out = trainer.train()
    t1 = time.perf_counter()
    start = t0 if args.warmup == 0 else clock["start"]
    timed = steps - args.warmup
    print(f"trl_{args.trainer} pairs_per_s={timed * args.batch / (t1 - start):.2f} "
          f"completions_per_step={2 * args.batch} steps={timed} warmup={args.warmup} "
          f"batch={args.batch} wall_s={t1 - t0:.2f} mean_loss={out.training_loss:.4f} "
          f"params={sum(q.numel() for q in model.parameters())} "
          f"threads={torch.get_num_threads()}")


if __name__ == "__main__":
    main()
