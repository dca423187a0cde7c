"""The TRL side of ``benchmarks/dpo_trl_parity.py``; runs in the peers' venv, imports no gaf.

    PY=/tmp/gaf-peers/bin/python
    $PY benchmarks/dpo_trl_parity_peer.py export SRC DST
    $PY benchmarks/dpo_trl_parity_peer.py train INIT PAIRS OUT SEED STEPS BATCH LR BETA
    $PY benchmarks/dpo_trl_parity_peer.py step INIT PAIRS OUT BATCH BETA

``export`` reads a GPT-2 directory with transformers and writes it back with
``save_pretrained``: the parity's starting checkpoint is one transformers wrote.

``train`` runs TRL's ``DPOTrainer`` from INIT (policy and reference) on the TRL-format
pairs in PAIRS with the sigmoid loss, β, a linear decay from LR without warm-up,
gradient clipping 1.0, AdamW (TRL's defaults: no weight decay, betas 0.9/0.999,
eps 1e-8), ``STEPS`` steps of ``BATCH`` pairs, seed SEED, dropout disabled, logging
every step. The model is saved to ``OUT/policy`` (weights and config only) and the
log history to ``OUT/log_history.json``.

``step`` perturbs the policy's weights by a fixed, seeded amount (so that the policy
is not the reference), computes TRL's DPO loss on the first BATCH pairs of the file
(one batch, as TRL's collator builds it) and writes the loss to ``OUT/step.json``
and every parameter's gradient to ``OUT/step_grads.safetensors``, for
``dpo_trl_parity.py --check-step`` to compare with gaf's.

The tokenizer is gaf's byte vocabulary (ids 0–255 are bytes, 256 BOS, 257 EOS,
258 PAD) with a post-processor that puts BOS in front of every text, so that both
sides train on ``BOS prompt completion EOS``, the format the starting policy was
fine-tuned on (TRL appends EOS to the completions itself).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def byte_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    printable = (list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
                 + list(range(ord("®"), ord("ÿ") + 1)))
    chars, extra = {}, 0
    for b in range(256):  # GPT-2's printable stand-in of every byte
        if b in printable:
            chars[b] = chr(b)
        else:
            chars[b] = chr(256 + extra)
            extra += 1
    tok = Tokenizer(models.BPE(vocab={c: b for b, c in chars.items()}, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(["<|bos|>", "<|eos|>", "<|pad|>"])
    tok.post_processor = processors.TemplateProcessing(single="<|bos|> $A",
                                                       special_tokens=[("<|bos|>", 256)])
    hf = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|bos|>",
                                 eos_token="<|eos|>", pad_token="<|pad|>")
    assert (hf.bos_token_id, hf.eos_token_id, hf.pad_token_id) == (256, 257, 258)
    assert hf("ab")["input_ids"] == [256, 97, 98]
    return hf


def gpt2_tiny_config(tok, **extra):
    """``GPT2Config`` in gaf's gpt2-tiny shape (d 128, 4 layers, 4 heads, 256 positions,
    tied output layer) for the tokenizer ``tok``, dropout 0 as gaf's default (transformers'
    default is 0.1); ``extra`` adds or overrides fields (``num_labels`` for a reward
    model)."""
    from transformers import GPT2Config

    fields = dict(vocab_size=len(tok), n_positions=256, n_embd=128, n_layer=4, n_head=4,
                  resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                  pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id,
                  eos_token_id=tok.eos_token_id)
    return GPT2Config(**{**fields, **extra})


def perturbed(model, seed: int = 7, scale: float = 0.02):
    """``model`` with every parameter moved by ``scale`` × N(0, 1) noise drawn from a
    generator seeded with ``seed``, in ``named_parameters`` order of the HF names."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, p in sorted(model.named_parameters()):
            p.add_(scale * torch.randn(p.shape, generator=gen))
    return model


def step(init: str, pairs: str, out: str, batch: str, beta: str) -> None:
    import torch
    from datasets import Dataset
    from safetensors.torch import save_file
    from transformers import GPT2LMHeadModel
    from trl import DPOConfig, DPOTrainer

    torch.set_num_threads(2)
    rows = [json.loads(line) for line in Path(pairs).read_text().splitlines() if line.strip()]
    rows = rows[:int(batch)]
    data = Dataset.from_list([{k: r[k] for k in ("prompt", "chosen", "rejected")} for r in rows])
    model = perturbed(GPT2LMHeadModel.from_pretrained(init))
    ref = GPT2LMHeadModel.from_pretrained(init)
    args = DPOConfig(output_dir=str(Path(out) / "trainer"), per_device_train_batch_size=int(batch),
                     beta=float(beta), report_to=[], use_cpu=True, save_strategy="no",
                     max_length=256, loss_type=["sigmoid"], disable_dropout=True, bf16=False)
    trainer = DPOTrainer(model=model, ref_model=ref, args=args, train_dataset=data,
                         processing_class=byte_tokenizer())
    inputs = trainer.data_collator([trainer.train_dataset[i] for i in range(len(rows))])
    trainer.model.train()
    loss = trainer.compute_loss(trainer.model, inputs)
    loss.backward()
    grads = {name: p.grad.detach().contiguous() for name, p in trainer.model.named_parameters()
             if p.grad is not None}
    Path(out).mkdir(parents=True, exist_ok=True)
    save_file(grads, str(Path(out) / "step_grads.safetensors"))
    (Path(out) / "step.json").write_text(json.dumps({"loss": float(loss)}))


def export(src: str, dst: str) -> None:
    from transformers import GPT2LMHeadModel

    GPT2LMHeadModel.from_pretrained(src).save_pretrained(dst)


def dpo_args(out: str, steps: str, batch: str, lr: str, beta: str, seed: int, **extra):
    """The parity's ``DPOConfig``: sigmoid loss, linear decay without warm-up, clipping
    1.0, no weight decay, dropout off, metrics every step (``extra`` adds options)."""
    from trl import DPOConfig

    return DPOConfig(output_dir=str(Path(out) / "trainer"), per_device_train_batch_size=int(batch),
                     max_steps=int(steps), learning_rate=float(lr), beta=float(beta),
                     lr_scheduler_type="linear", warmup_steps=0, max_grad_norm=1.0,
                     weight_decay=0.0, logging_steps=1, save_strategy="no", report_to=[],
                     use_cpu=True, seed=seed, dataloader_num_workers=0, disable_tqdm=True,
                     bf16=False, max_length=256, loss_type=["sigmoid"], disable_dropout=True,
                     **extra)


def train_and_save(init: str, rows: list[dict], args, tokenizer, out: str) -> None:
    """Train TRL's ``DPOTrainer`` from ``init`` on ``rows`` (in this order for a
    sequential sampler); write ``OUT/policy`` and ``OUT/log_history.json``."""
    import torch
    from datasets import Dataset
    from transformers import GPT2LMHeadModel
    from trl import DPOTrainer

    torch.set_num_threads(2)
    data = Dataset.from_list([{k: r[k] for k in ("prompt", "chosen", "rejected")} for r in rows])
    model = GPT2LMHeadModel.from_pretrained(init)
    ref = GPT2LMHeadModel.from_pretrained(init)
    trainer = DPOTrainer(model=model, ref_model=ref, args=args, train_dataset=data,
                         processing_class=tokenizer)
    trainer.train()
    Path(out).mkdir(parents=True, exist_ok=True)
    trainer.model.save_pretrained(str(Path(out) / "policy"))
    (Path(out) / "log_history.json").write_text(json.dumps(trainer.state.log_history))


def train(init: str, pairs: str, out: str, seed: str, steps: str, batch: str, lr: str,
          beta: str) -> None:
    rows = [json.loads(line) for line in Path(pairs).read_text().splitlines() if line.strip()]
    train_and_save(init, rows, dpo_args(out, steps, batch, lr, beta, int(seed)),
                   byte_tokenizer(), out)


if __name__ == "__main__":
    command, *rest = sys.argv[1:]
    {"export": export, "train": train, "step": step}[command](*rest)
