"""Peer of ``benchmarks/dalle_sampling.py``: transformers' ``GPT2LMHeadModel.generate``
sampling 64 image tokens after 25 prompt tokens, 16 rows, guidance 3, top-k 32.

    /tmp/gaf-peers/bin/python benchmarks/dalle_transformers_peer.py [RUNS]   (RUNS: 5)

Imports only torch and transformers (run it in the peer venv). A randomly initialised
GPT-2 of the gaf model's shape (nothing is downloaded): ``vocab_size=635`` (354 text
tokens, 24 pads, BOS, 256 codes), ``n_positions=88``, ``n_embd=128``, ``n_layer=4``,
``n_head=4``. Classifier-free guidance is transformers' own (``guidance_scale=3`` with
``negative_prompt_ids``: the null caption, 24 pads and BOS), which runs the
unconditional branch as a second forward pass per token; every token that is not an
image code is suppressed (``suppress_tokens``), so only codes are drawn, as in gaf.
``do_sample=True, top_k=32``, ``min_new_tokens = max_new_tokens = 64``. float32, the
default 2 threads, eager. One warm-up call, then ``RUNS`` timed calls; the median.

Prints ``transformers_generate image_tokens_per_s=<f> params=<n>``.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from transformers import GPT2Config, GPT2LMHeadModel

BATCH, TEXT, IMAGE, TEXT_VOCAB = 16, 24, 64, 354
PAD0, BOS, CODE0 = TEXT_VOCAB, TEXT_VOCAB + TEXT, TEXT_VOCAB + TEXT + 1
VOCAB = CODE0 + 256


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("runs", nargs="?", type=int, default=5)
    args = parser.parse_args()
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=VOCAB, n_positions=TEXT + 1 + IMAGE,
                                       n_embd=128, n_layer=4, n_head=4)).eval()
    g = torch.Generator().manual_seed(0)
    lengths = torch.randint(5, 16, (BATCH,), generator=g)
    text = torch.randint(0, TEXT_VOCAB, (BATCH, TEXT), generator=g)
    pads = torch.arange(PAD0, PAD0 + TEXT).expand(BATCH, -1)
    text = torch.where(torch.arange(TEXT) < lengths[:, None], text, pads)
    bos = torch.full((BATCH, 1), BOS)
    prompt = torch.cat([text, bos], dim=1)
    null = torch.cat([pads, bos], dim=1)

    def once() -> float:
        torch.manual_seed(1)
        t0 = time.perf_counter()
        out = model.generate(prompt, attention_mask=torch.ones_like(prompt),
                             max_new_tokens=IMAGE, min_new_tokens=IMAGE, do_sample=True,
                             top_k=32, guidance_scale=3.0, negative_prompt_ids=null,
                             negative_prompt_attention_mask=torch.ones_like(null),
                             suppress_tokens=list(range(CODE0)), pad_token_id=BOS,
                             eos_token_id=None)
        dt = time.perf_counter() - t0
        new = out[:, prompt.shape[1]:]
        assert new.shape == (BATCH, IMAGE) and int(new.min()) >= CODE0
        return dt

    once()
    median = statistics.median(once() for _ in range(args.runs))
    params = sum(p.numel() for p in model.parameters())
    print(f"transformers_generate image_tokens_per_s={BATCH * IMAGE / median:.1f} "
          f"params={params}")


if __name__ == "__main__":
    main()
