"""Peer of ``benchmarks/rloo_throughput.py``: TRL's ``RLOOTrainer`` on the same prompts, the
same model shape and tokenizer, the same k, lengths, temperature, β, reward and optimiser.

    python benchmarks/rloo_throughput.py --write-prompts /tmp/rloo_prompts.jsonl
    /tmp/gaf-peers/bin/python benchmarks/trl_rloo_peer.py /tmp/rloo_prompts.jsonl \\
        [--threads 2] [--gradient-checkpointing]

Imports only torch, transformers, tokenizers, datasets and TRL (run it in the peer venv;
it reads gaf's shipped tokenizer files but imports no gaf). Everything it must match
comes from the file's first line, the ``settings`` the gaf script wrote; the rest of
the file is the prompts in the order gaf's loop consumes them.

* **Model**: ``GPT2LMHeadModel`` in gpt2-tiny's shape (d 128, 4 layers, 4 heads, 256
  positions, MLP 4 × d, GELU-tanh, tied output layer, dropout 0), randomly initialised,
  saved to a temporary directory and passed by path, so that TRL builds the frozen
  reference from the same weights (the policy is its own reference, as gaf's with
  ``sft_steps=0``). The parameter count is printed and checked against gaf's.
* **Tokenizer**: gaf's, rebuilt in ``tokenizers``: ``sentiment-bpe`` (gpt2-tiny's
  default: a GPT-2 byte-level BPE read from gaf's ``plugins/lm/tokenizers/sentiment-bpe``
  ``vocab.json`` and ``merges.txt``, ``<|endoftext|>`` as BOS, EOS and PAD) or ``byte``
  (``dpo_trl_parity_peer.byte_tokenizer``), with a post-processor that puts BOS in front
  of every prompt, as gaf's generation does. The script stops unless every prompt's ids
  equal the ``prompt_ids`` gaf wrote.
* **Sampling**: ``num_generations`` = k completions of each prompt (TRL's
  ``RepeatSampler`` without shuffling: each prompt's k rows in a run, the prompts in the
  file's order), ``max_completion_length`` = gaf's ``max_new_tokens``, the temperature,
  ``top_k=0``, ``top_p=1`` (the whole softmax, as gaf's ``temperature`` sampler), a stop
  at EOS. gaf never samples BOS or PAD where they differ from EOS (the byte vocabulary),
  so those ids are passed as ``suppress_tokens``; with ``sentiment-bpe`` all three are
  EOS and nothing is suppressed.
* **Loss**: β as KL coefficient with TRL's sequence k1 estimate (as gaf's), the
  leave-one-out baseline, no advantage normalisation (gaf has none), ``num_iterations
  = 1`` (one update per generation batch: the clipped ratio is 1, so the gradient is
  REINFORCE's), ``per_device_train_batch_size`` = prompts per step × k, no gradient
  accumulation.
* **Reward**: :func:`target_fraction`, the fraction of the letter ``e`` in the
  completion text, defined identically in the gaf script (a plain Python callable in
  ``reward_funcs``; decoding skips special tokens, as gaf's drops the EOS).
* **Optimiser**: AdamW (TRL's default, the fused kernel, as gaf's), the lr, betas and
  weight decay of the settings, constant lr without warm-up (gaf's loop applies no
  schedule), clipping at ``max_grad_norm``, fp32 (``bf16=False``), CPU.

What is timed: ``trainer.train()`` from the end of step ``warmup`` (its start when
``warmup`` is 0) to the end of the last step: every timed step's data loading,
generation, scoring, update and TRL's per-step bookkeeping. ``rollout_share`` is the
share of that time inside ``_generate_and_score_completions`` (generation, the
policy's and the reference's log-probs, the reward, the advantages).

Remaining differences, by design: TRL turns on gradient checkpointing by default; it is
off here, as gaf has none (``--gradient-checkpointing`` measures TRL's default). TRL's
training forward also computes the entropy of every completion token (a logged metric;
gaf does not), and it logs metrics every ``logging_steps`` = 10 steps. TRL pads prompts
on the left and completions on the right in the scoring passes; gaf scores right-padded
``BOS prompt completion`` rows. The completions themselves differ (different random
streams), so the mean completion length (``mean_completion_tokens``, EOS included, as
gaf counts) and ``prompt_tokens`` are printed to check that both sides did the same
amount of work. Prints one line::

    trl_rloo completions_per_s=… rollout_share=… mean_completion_tokens=… …

Protocol: alternate with ``rloo_throughput.py`` run with the same arguments as the
``--write-prompts`` command, on an otherwise idle machine, at least 3 runs each, and
compare the ratio of the medians of ``completions_per_s``. No test runs this script (it
needs the peer venv); tests/benchmarks/test_rloo_throughput.py checks the file the gaf
script writes and that both scripts define the same reward.
"""

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
from datasets import Dataset  # noqa: E402
from transformers import GPT2Config, GPT2LMHeadModel, PrinterCallback, TrainerCallback  # noqa: E402
from trl import RLOOConfig, RLOOTrainer  # noqa: E402

TOKENIZERS = Path(__file__).resolve().parents[1] / "plugins" / "lm" / "tokenizers"
TARGET = "e"


def target_fraction(text: str) -> float:
    """The benchmark's reward: the fraction of the characters of ``text`` that are
    ``TARGET`` (0 for the empty text). Defined identically in rloo_throughput.py."""
    return text.count(TARGET) / len(text) if text else 0.0


def bpe_tokenizer(name: str):
    """gaf's shipped byte-level BPE ``name`` as a transformers tokenizer, BOS prepended."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    folder = TOKENIZERS / name
    vocab = json.loads((folder / "vocab.json").read_text(encoding="utf-8"))
    lines = (folder / "merges.txt").read_text(encoding="utf-8").splitlines()
    merges = [tuple(line.split()) for n, line in enumerate(lines)
              if line.strip() and not (n == 0 and line.startswith("#version"))]
    special = "<|endoftext|>"
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([special])
    tok.post_processor = processors.TemplateProcessing(
        single=f"{special} $A", special_tokens=[(special, vocab[special])])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=special, eos_token=special,
                                   pad_token=special, clean_up_tokenization_spaces=False)


def make_tokenizer(name: str):
    if name == "byte":
        from dpo_trl_parity_peer import byte_tokenizer  # this folder, peer venv

        return byte_tokenizer()
    return bpe_tokenizer(name)


class StepTimer(TrainerCallback):
    """Wall time from the end of step ``warmup`` (the start of training when it is 0) to
    the end of step ``last``."""

    def __init__(self, warmup: int, last: int):
        self.warmup, self.last = warmup, last
        self.start = self.end = None

    def on_train_begin(self, args, state, control, **kwargs):
        if self.warmup == 0:
            self.start = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.warmup:
            self.start = time.perf_counter()
        if state.global_step == self.last:
            self.end = time.perf_counter()


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("prompts", help="the JSONL of rloo_throughput.py --write-prompts")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--gradient-checkpointing", action="store_true",
                   help="TRL's default; off by default here, as gaf has none")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    lines = Path(args.prompts).read_text().splitlines()
    s = json.loads(lines[0])["settings"]
    rows = [json.loads(line) for line in lines[1:]]
    k, per_step, warmup, steps = s["k"], s["prompts_per_step"], s["warmup"], s["steps"]
    if s["reward"] != "target-fraction" or s["target"] != TARGET:
        raise SystemExit(f"the file asks for reward {s['reward']!r}; only target-fraction "
                         f"with target {TARGET!r} is implemented here")
    if len(rows) != (warmup + steps) * per_step:
        raise SystemExit(f"{len(rows)} prompts, expected (warmup + steps) × prompts_per_step "
                         f"= {(warmup + steps) * per_step}")

    tok = make_tokenizer(s["tokenizer"])
    if (tok.bos_token_id, tok.eos_token_id, tok.pad_token_id) != (s["bos_id"], s["eos_id"],
                                                                   s["pad_id"]):
        raise SystemExit("special ids differ from gaf's")
    for r in rows:
        ids = tok(r["prompt"])["input_ids"]
        if ids != r["prompt_ids"]:
            raise SystemExit(f"tokenizer mismatch on {r['prompt']!r}: {ids} != {r['prompt_ids']}")

    torch.manual_seed(s["seed"])
    cfg = GPT2Config(vocab_size=s["vocab_size"], n_positions=s["n_positions"],
                     n_embd=s["d_model"], n_layer=s["n_layer"], n_head=s["n_head"],
                     n_inner=s["mlp_ratio"] * s["d_model"], activation_function="gelu_new",
                     layer_norm_epsilon=s["layer_norm_eps"], resid_pdrop=s["dropout"],
                     embd_pdrop=s["dropout"], attn_pdrop=s["dropout"],
                     tie_word_embeddings=True, bos_token_id=s["bos_id"],
                     eos_token_id=s["eos_id"], pad_token_id=s["pad_id"])
    suppress = sorted({s["bos_id"], s["pad_id"]} - {s["eos_id"]})
    scores = []

    def reward(completions, **kwargs):
        out = [target_fraction(c) for c in completions]
        scores.extend(out)
        return out

    with tempfile.TemporaryDirectory() as tmp:
        GPT2LMHeadModel(cfg).save_pretrained(Path(tmp) / "init")
        config = RLOOConfig(
            output_dir=str(Path(tmp) / "out"), per_device_train_batch_size=per_step * k,
            num_generations=k, max_completion_length=s["max_new_tokens"],
            temperature=s["temperature"], top_k=0, top_p=1.0, beta=s["beta"],
            num_iterations=1, normalize_advantages=False, learning_rate=s["lr"],
            adam_beta1=s["betas"][0], adam_beta2=s["betas"][1],
            weight_decay=s["weight_decay"], max_grad_norm=s["max_grad_norm"],
            lr_scheduler_type="constant", warmup_steps=0, max_steps=warmup + steps,
            num_train_epochs=1, shuffle_dataset=False, seed=s["seed"],
            gradient_checkpointing=args.gradient_checkpointing, bf16=False, fp16=False,
            use_cpu=True, disable_dropout=True, report_to=[], save_strategy="no",
            logging_steps=10, disable_tqdm=True, dataloader_num_workers=0,
            generation_kwargs={"suppress_tokens": suppress} if suppress else None)
        trainer = RLOOTrainer(model=str(Path(tmp) / "init"), reward_funcs=reward, args=config,
                              train_dataset=Dataset.from_list([{"prompt": r["prompt"]}
                                                               for r in rows]),
                              processing_class=tok)
        params = sum(q.numel() for q in trainer.model.parameters())
        if params != s["params"]:
            raise SystemExit(f"{params} parameters, gaf's model has {s['params']}")
        trainer.remove_callback(PrinterCallback)  # its log dicts: one line on stdout
        timer = StepTimer(warmup, warmup + steps)
        trainer.add_callback(timer)
        generate = trainer._generate_and_score_completions
        counts = {"rollout_s": 0.0, "completions": 0, "tokens": 0, "prompt_tokens": 0}

        def timed_generate(inputs):
            t0 = time.perf_counter()
            out = generate(inputs)
            if trainer.state.global_step >= warmup:
                counts["rollout_s"] += time.perf_counter() - t0
                counts["completions"] += out["completion_mask"].shape[0]
                counts["tokens"] += int(out["completion_mask"].sum())
                counts["prompt_tokens"] += int(out["prompt_mask"].sum())
            return out

        trainer._generate_and_score_completions = timed_generate
        trainer.train()
    dt = timer.end - timer.start
    n = counts["completions"]
    timed_scores = scores[-n:]
    print(f"trl_rloo completions_per_s={n / dt:.1f} rollout_share={counts['rollout_s'] / dt:.3f} "
          f"mean_completion_tokens={counts['tokens'] / n:.1f} "
          f"prompt_tokens={counts['prompt_tokens'] // k} "
          f"mean_reward={sum(timed_scores) / n:.4f} "
          f"steps={steps} warmup={warmup} prompts_per_step={per_step} k={k} "
          f"max_new_tokens={s['max_new_tokens']} temperature={s['temperature']:g} "
          f"beta={s['beta']:g} lr={s['lr']:g} tokenizer={s['tokenizer']} params={params} "
          f"gradient_checkpointing={args.gradient_checkpointing} "
          f"threads={torch.get_num_threads()} wall_s={dt:.2f}")


if __name__ == "__main__":
    main()
