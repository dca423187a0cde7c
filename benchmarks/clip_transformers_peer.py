"""Peer of ``benchmarks/clip_throughput.py``: transformers' ``CLIPModel`` training step.

    /tmp/gaf-peers/bin/python benchmarks/clip_transformers_peer.py [STEPS] [--patch-size P]
                                                        (STEPS: 30, P: 4)

Imports only torch and transformers (run it in the peer venv). A randomly initialised
``CLIPModel`` (nothing is downloaded) of the gaf script's shape:

* vision: ``CLIPVisionConfig(image_size=32, patch_size=4 (or P), hidden_size=64,
  num_hidden_layers=4, num_attention_heads=4, intermediate_size=256)``;
* text: ``CLIPTextConfig(vocab_size=354, max_position_embeddings=24, hidden_size=64,
  num_hidden_layers=2, num_attention_heads=4, intermediate_size=256)``;
* ``projection_dim=64``; ``hidden_act="gelu"`` in both towers (gaf's exact GELU; the
  transformers default is CLIP's ``quick_gelu``); the default attention implementation
  (``sdpa``); the default initial ``logit_scale``, ln(1/0.07), as gaf's.

339,969 parameters (346,113 with 8x8 patches), gaf's count exactly (see the gaf
script's docstring for the layer-by-layer differences).

One step: ``CLIPModel(input_ids, pixel_values, attention_mask, return_loss=True).loss``
(symmetric InfoNCE with the learnable temperature), backward, gradient clipping at norm
1.0, AdamW (lr 1e-3, weight decay 0.1, torch's fused kernel: what the transformers
``Trainer`` uses by default with torch >= 2.8, ``adamw_torch_fused``). Batch 128 of
random images (128, 3, 32, 32) in [-1, 1] and random captions of 3-15 tokens padded to
24, the last real token the end-of-text id (transformers pools the text at it), the
same tensors as the gaf script draws. float32, the default 2 threads, eager. 3 warm-up
steps, then ``STEPS`` timed steps.

Prints ``transformers_clip train_img_per_s=<f> params=<n>``.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch
import transformers
from transformers import CLIPConfig, CLIPModel, CLIPTextConfig, CLIPVisionConfig

BATCH, TOKENS, VOCAB, WARMUP = 128, 24, 354, 3
EOS = VOCAB - 1


def batch(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(images, ids, mask)``: the same tensors as ``clip_throughput.batch``."""
    g = torch.Generator().manual_seed(seed)
    images = torch.rand(BATCH, 3, 32, 32, generator=g) * 2 - 1
    lengths = torch.randint(3, 16, (BATCH,), generator=g)
    ids = torch.randint(1, EOS, (BATCH, TOKENS), generator=g)
    mask = torch.arange(TOKENS) < lengths[:, None]
    ids = ids.masked_fill(~mask, 0)
    ids[torch.arange(BATCH), lengths - 1] = EOS
    return images, ids, mask


def build(patch_size: int = 4) -> CLIPModel:
    text = CLIPTextConfig(vocab_size=VOCAB, max_position_embeddings=TOKENS, hidden_size=64,
                          num_hidden_layers=2, num_attention_heads=4, intermediate_size=256,
                          projection_dim=64, hidden_act="gelu", pad_token_id=0,
                          bos_token_id=1, eos_token_id=EOS)
    vision = CLIPVisionConfig(image_size=32, patch_size=patch_size, num_channels=3,
                              hidden_size=64, num_hidden_layers=4, num_attention_heads=4,
                              intermediate_size=256, projection_dim=64, hidden_act="gelu")
    return CLIPModel(CLIPConfig(text_config=text.to_dict(), vision_config=vision.to_dict(),
                                projection_dim=64))


def make_step(patch_size: int = 4) -> tuple[Callable[[], None], CLIPModel]:
    """One training step on :func:`batch` (a closure) and the model it trains."""
    torch.manual_seed(0)
    model = build(patch_size).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.1, fused=True)
    images, ids, mask = batch()
    attention_mask = mask.long()

    def step() -> None:
        loss = model(input_ids=ids, pixel_values=images, attention_mask=attention_mask,
                     return_loss=True).loss
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()

    return step, model


def main(steps: int = 30, patch_size: int = 4) -> None:
    step, model = make_step(patch_size)
    params = sum(p.numel() for p in model.parameters())
    for _ in range(WARMUP):
        step()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    dt = time.perf_counter() - t0
    print(f"transformers_clip train_img_per_s={BATCH * steps / dt:.1f} params={params} "
          f"(vit 64x4, patch {patch_size}, batch {BATCH}, {steps} steps, {model.config._attn_implementation}, "
          f"transformers {transformers.__version__}, torch {torch.__version__})")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("steps", nargs="?", type=int, default=30, help="timed steps")
    parser.add_argument("--patch-size", type=int, default=4, choices=(4, 8),
                        help="the ViT's patch side (8: gaf's evaluation CLIP's)")
    args = parser.parse_args()
    main(args.steps, args.patch_size)
