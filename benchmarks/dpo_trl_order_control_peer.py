"""The TRL side of ``benchmarks/dpo_trl_order_control.py``; runs in the peers' venv.

    PY=/tmp/gaf-peers/bin/python
    $PY benchmarks/dpo_trl_order_control_peer.py INIT PAIRS ORDER OUT STEPS BATCH LR BETA BOS

Trains TRL's ``DPOTrainer`` exactly as ``dpo_trl_parity_peer.py train`` does (sigmoid
loss, β, AdamW with TRL's defaults, lr decaying linearly from LR without warm-up,
clipping 1.0, dropout disabled, logging every step), with two differences:

* the batches: ORDER is a JSON list of line indices into PAIRS, ``STEPS × BATCH`` of
  them; the dataset is the pairs in that order and the sampler is sequential, so step
  ``i`` trains on entries ``i·BATCH … (i+1)·BATCH − 1`` (gaf's batch ``i``);
* BOS ``yes`` uses the parity's byte tokenizer (BOS in front of every text); ``no``
  the same tokenizer without its post-processor, so TRL tokenizes ``prompt
  completion EOS`` only, as it does with a tokenizer that adds no BOS (GPT-2's).

Gradient checkpointing (TRL's default) is off: it recomputes activations and changes
no number. Writes ``OUT/policy`` and ``OUT/log_history.json``. Imports no gaf.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).resolve().parent))


def tokenizer(bos: bool):
    from dpo_trl_parity_peer import byte_tokenizer
    from tokenizers import processors

    tok = byte_tokenizer()
    if not bos:
        plain = processors.TemplateProcessing(single="$A", special_tokens=[])
        tok._tokenizer.post_processor = plain
        assert tok("ab")["input_ids"] == [97, 98], tok("ab")
    return tok


def train(init: str, pairs: str, order: str, out: str, steps: str, batch: str, lr: str,
          beta: str, bos: str) -> None:
    from dpo_trl_parity_peer import dpo_args, train_and_save

    rows = [json.loads(line) for line in Path(pairs).read_text().splitlines() if line.strip()]
    picks = json.loads(Path(order).read_text())
    if len(picks) != int(steps) * int(batch):
        raise SystemExit(f"{order}: {len(picks)} entries, expected {int(steps) * int(batch)}")
    args = dpo_args(out, steps, batch, lr, beta, 0, gradient_checkpointing=False,
                    train_sampling_strategy="sequential")
    train_and_save(init, [rows[i] for i in picks], args, tokenizer(bos == "yes"), out)


if __name__ == "__main__":
    train(*sys.argv[1:])
