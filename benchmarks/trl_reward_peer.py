"""Peer of ``benchmarks/reward_model_throughput.py``: TRL's ``RewardTrainer`` on the same
pairs, the same model shape and tokenizer, CPU.

    python benchmarks/reward_model_throughput.py 30 --write-pairs /tmp/rm_pairs.jsonl
    /tmp/gaf-peers/bin/python benchmarks/trl_reward_peer.py /tmp/rm_pairs.jsonl \\
        [--rows-per-step 96] [--threads 2] [--gradient-checkpointing]

Imports only torch, transformers, datasets and TRL (run it in the peer venv). The model
is ``GPT2ForSequenceClassification`` (one score) in the gpt2-tiny shape of gaf's
``gpt2-reward`` (d 128, 4 layers, 4 heads, 256 positions) with gaf's default ``byte``
tokenizer rebuilt as a ``tokenizers`` byte-level model by ``dpo_trl_parity_peer.py``'s
``byte_tokenizer``: id = UTF-8 byte, then ``<|bos|>`` 256 (prepended), ``<|eos|>``
257, ``<|pad|>`` 258 (259 ids, as gaf's). The data: the ``{"prompt", "chosen",
"rejected"}`` rows the gaf script writes with ``--write-pairs`` (K = 4 ranked completions
of 16 prompts a step, C(4, 2) = 6 pairs each), trained ``--rows-per-step`` rows a step
(96: the same pairs a step as the gaf script's ranked and pairwise steps), one epoch,
AdamW at lr 1e-4, fp32, no evaluation, no checkpoints, ``max_length`` 128, dropout off
(``RewardConfig``'s ``disable_dropout``), no gradient checkpointing (gaf recomputes no
activations; TRL 1.16's ``RewardConfig`` turns it on by default:
``--gradient-checkpointing`` measures that default).

What is timed: ``trainer.train()`` (the dataset is tokenised in the trainer's
constructor, before the timer, as TRL does). ``RewardTrainer`` is pairwise: each row runs
its chosen and rejected sequences, 2 * C(K, 2) forwards per prompt, where gaf's
``ranked`` steps run K. Prints one line::

    trl_reward pairs_per_s=… steps=… rows_per_step=… wall_s=… final_loss=… params=…
        gradient_checkpointing=…

Protocol: alternate with the gaf script on an otherwise idle machine, at least 3 runs
each, and compare the ratio of the medians of ``pairs_per_s`` (gaf's ``ranked`` and
``pairwise`` figures against this one). No test runs this script (it needs the peer
venv); tests/benchmarks/test_reward_pairs.py checks the file the gaf script writes.
"""

import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402
from datasets import Dataset  # noqa: E402
from dpo_trl_parity_peer import byte_tokenizer, gpt2_tiny_config  # noqa: E402 (this folder)
from transformers import GPT2ForSequenceClassification  # noqa: E402
from trl import RewardConfig, RewardTrainer  # noqa: E402


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("pairs", help="the JSONL rows of reward_model_throughput.py --write-pairs")
    p.add_argument("--rows-per-step", type=int, default=96)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--gradient-checkpointing", action="store_true",
                   help="TRL's default (off here, as gaf)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    tok = byte_tokenizer()  # gaf's byte ids, <|bos|> first as gaf's batches start
    assert len(tok) == 259
    model = GPT2ForSequenceClassification(gpt2_tiny_config(tok, num_labels=1))
    rows = [json.loads(line) for line in Path(args.pairs).read_text().splitlines()]
    steps = len(rows) // args.rows_per_step
    dataset = Dataset.from_list(rows[:steps * args.rows_per_step])
    config = RewardConfig(output_dir="/tmp/trl_reward_peer_out",
                          per_device_train_batch_size=args.rows_per_step, max_steps=steps,
                          num_train_epochs=1, learning_rate=1e-4, logging_steps=10,
                          report_to=[], save_strategy="no", use_cpu=True,
                          dataloader_num_workers=0, disable_tqdm=True, bf16=False,
                          max_length=128,
                          gradient_checkpointing=args.gradient_checkpointing)
    trainer = RewardTrainer(model=model, args=config, train_dataset=dataset,
                            processing_class=tok)
    t0 = time.perf_counter()
    out = trainer.train()
    dt = time.perf_counter() - t0
    print(f"trl_reward pairs_per_s={steps * args.rows_per_step / dt:.1f} steps={steps} "
          f"rows_per_step={args.rows_per_step} wall_s={dt:.2f} "
          f"final_loss={out.training_loss:.4f} "
          f"params={sum(q.numel() for q in model.parameters())} "
          f"gradient_checkpointing={args.gradient_checkpointing}")


if __name__ == "__main__":
    main()
