"""Peer of ``benchmarks/sft_throughput.py``: TRL's ``SFTTrainer`` on the same examples,
the same model shape and tokenizer, CPU.

    python benchmarks/sft_throughput.py 60 16 --tokenizer byte --warmup 0 \\
        --write-examples /tmp/sft_examples.jsonl
    /tmp/gaf-peers/bin/python benchmarks/trl_sft_peer.py /tmp/sft_examples.jsonl \\
        [--batch 16] [--threads 2] [--gradient-checkpointing]

Imports only torch, transformers, datasets and TRL (run it in the peer venv). The model
is ``GPT2LMHeadModel`` in gpt2-tiny's shape (d 128, 4 layers, 4 heads, 256 positions,
tied output layer) with gaf's ``byte`` tokenizer rebuilt by ``dpo_trl_parity_peer.py``'s
``byte_tokenizer`` (id = UTF-8 byte, ``<|bos|>`` 256 prepended, ``<|eos|>`` 257,
``<|pad|>`` 258). The data: the ``{"prompt", "completion"}`` rows the gaf script writes
with ``--write-examples``, in order, ``--batch`` a step, one epoch (no shuffling, as the
gaf loop), AdamW at lr 1e-3 (gaf's script: the same; weight decay 0 on both sides), fp32,
loss on the completion tokens only (``completion_only_loss``, TRL's default for
prompt-completion rows; TRL appends the EOS to each completion, as gaf's batches end
with it), no packing, ``max_length`` 128, no evaluation, no checkpoints, dropout 0 (gaf's
gpt2-tiny default; ``GPT2Config`` defaults to 0.1 and ``SFTConfig`` has no switch for it)
and no gradient checkpointing (gaf recomputes no activations; TRL 1.16's ``SFTConfig``
turns it on by default: ``--gradient-checkpointing`` measures that default).

What is timed: ``trainer.train()`` (the dataset is tokenised in the trainer's
constructor, before the timer starts). Prints one line::

    trl_sft examples_per_s=… steps=… wall_s=… mean_loss=… params=… gradient_checkpointing=…

Protocol: alternate with ``sft_throughput.py … --tokenizer byte --warmup 0`` (which times
every step too) on an otherwise idle machine, at least 3 runs each, and compare the
ratio of the medians of ``examples_per_s``. No test runs this script (it needs the peer
venv); tests/benchmarks/test_sft_throughput.py checks the rows the gaf script writes.
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
from transformers import GPT2LMHeadModel  # noqa: E402
from trl import SFTConfig, SFTTrainer  # noqa: E402


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("examples", help="the JSONL rows of sft_throughput.py --write-examples")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--gradient-checkpointing", action="store_true",
                   help="TRL's default (off here, as gaf)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    tok = byte_tokenizer()
    model = GPT2LMHeadModel(gpt2_tiny_config(tok))
    rows = [json.loads(line) for line in Path(args.examples).read_text().splitlines()]
    steps = len(rows) // args.batch
    dataset = Dataset.from_list(rows[:steps * args.batch])
    config = SFTConfig(output_dir="/tmp/trl_sft_peer_out", per_device_train_batch_size=args.batch,
                       max_steps=steps, num_train_epochs=1, learning_rate=1e-3,
                       weight_decay=0.0, lr_scheduler_type="constant", logging_steps=10,
                       report_to=[], save_strategy="no", use_cpu=True,
                       dataloader_num_workers=0, disable_tqdm=True, bf16=False,
                       max_length=128, packing=False, completion_only_loss=True,
                       gradient_checkpointing=args.gradient_checkpointing)
    trainer = SFTTrainer(model=model, args=config, train_dataset=dataset, processing_class=tok)
    trainer._get_train_sampler = lambda *a, **k: torch.utils.data.SequentialSampler(
        trainer.train_dataset)  # in order, as the gaf loop
    t0 = time.perf_counter()
    out = trainer.train()
    dt = time.perf_counter() - t0
    print(f"trl_sft examples_per_s={steps * args.batch / dt:.1f} steps={steps} "
          f"wall_s={dt:.2f} mean_loss={out.training_loss:.4f} "
          f"params={sum(q.numel() for q in model.parameters())} "
          f"gradient_checkpointing={args.gradient_checkpointing}")


if __name__ == "__main__":
    main()
