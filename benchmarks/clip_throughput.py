"""CLIP training throughput on the CPU, against transformers' ``CLIPModel``.

    python benchmarks/clip_throughput.py [STEPS] [--patch-size P] [--interleaved ROUNDS]
                                         [--no-cost]          (STEPS: 30, P: 4)

The same work as the peer script ``benchmarks/clip_transformers_peer.py`` (run it with
the peer venv, ``/tmp/gaf-peers/bin/python``), measured the same way: 3 warm-up steps
(not timed), then ``STEPS`` timed training steps, each

* both towers forward on one batch of 128 random images (128, 3, 32, 32) in [-1, 1]
  and 128 random captions of 3-15 tokens padded to 24 (the same tensors in both
  scripts, drawn from a seeded generator);
* the symmetric InfoNCE loss with the learnable temperature (:func:`clip_loss`; every
  caption is distinct, so the identity target: the ``clip`` objective's duplicate-aware
  target would add one (128, 128, 24) comparison);
* backward, gradient clipping at norm 1.0, AdamW (lr 1e-3, weight decay 0.1: the
  ``clip`` objective's defaults) through gaf's ``make_optimizer`` (torch's fused
  kernel, as the peer), and the objective's temperature clamp.

float32, the default 2 threads, eager (no torch.compile).

The model: the ``vit`` image tower of width 64, 4 blocks of 4 heads, 4x4 patches
(8x8 = 64 patch tokens and the class token; ``--patch-size 8`` gives the evaluation
CLIP's image tower of ``plugins/clip/evaluation_clip.py``, 4x4 = 16 patch tokens: pass
the same option to the peer script), and
the default text tower (``shapes-bpe``, 354 ids, 24 tokens, width 64, 2 blocks of 4
heads), ``embed_dim`` 64. The peer is ``CLIPModel(CLIPVisionConfig(image_size=32,
patch_size=4, hidden_size=64, num_hidden_layers=4, num_attention_heads=4,
intermediate_size=256), CLIPTextConfig(vocab_size=354, max_position_embeddings=24,
hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=256),
projection_dim=64)`` with ``hidden_act="gelu"``.

Both have 339,969 trainable parameters (346,113 with 8x8 patches; gaf's text
conditioner also holds 1,536 frozen null states that CLIP never uses, not counted).
The layers are the same but for: transformers' patch embedding and both projections
have no bias, where gaf's patch embedding and image projection have one (64 + 64), and
transformers LayerNorms the embedded patches before the first block (``pre_layrnorm``,
128), which gaf does not. The text towers read their output differently:
transformers' is causal and pools at the end-of-text token, gaf's is bidirectional
(key-padding mask only) and pools the mean of the real tokens' states.

Where gaf does less work for the same result: the last ViT block computes its query,
output projection and MLP for the class token only (the only row read after it); the
keys and values still come from every token. transformers computes the whole block.
The text tower computes the real tokens' states only (the pooled mean reads no other:
``TextTransformer.mean_state``); transformers computes all 24 positions.

Prints ``gaf_clip train_img_per_s=<f> params=<n>``, then the same figure for gaf's
default CLIP (the ``cnn`` image tower, width 32, attention pooling; 418,977
parameters), ``gaf_clip_cnn train_img_per_s=<f> params=<n>``, which has no
transformers equivalent.

Measure on a quiet machine: with two OpenMP threads on two cores, another busy process
slows every op several-fold, so run this script and the peer alternately and compare
runs made under the same load. Even idle, this machine's speed drifts by 20-30% over
minutes; ``--interleaved ROUNDS`` (in a venv that also has transformers) then builds
both models in this one process and times 3 steps of each in turn, ROUNDS times, and
prints the median step times and their ratio,
``interleaved gaf_step_ms=<f> transformers_step_ms=<f> ratio=<f>``: both sides see the
same drift.

Last, unless ``--no-cost``, one cost line per throughput figure
(``benchmarks/step_cost.py``), after every result line::

    gaf_clip_cost unit=step gflop_per_unit=… achieved_gflops=… conv=… … outside=…
    gaf_clip_cnn_cost unit=step gflop_per_unit=… achieved_gflops=… conv=… … outside=…

The unit is one training step of that model again (its own closure, optimiser state
and all); units = STEPS, seconds = its timed steps' wall time. Every step has the same
shapes, so FLOPs(timed) = ``gflop_per_unit`` × STEPS exactly. The cost pass runs 3 more
steps of each model (one counted, two profiled). The interleaved comparison has no cost
line: its gaf step is ``gaf_clip``'s.
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

from gaf.plugins.clip.loss import clamp_log_scale_, clip_loss
from gaf.plugins.clip.towers import CLIPConfig, CLIPModel
from gaf.train import TrainConfig, make_optimizer

sys.path.insert(0, str(Path(__file__).resolve().parent))

import step_cost  # noqa: E402

BATCH, TOKENS, VOCAB, WARMUP = 128, 24, 354, 3
EOS = VOCAB - 1
#: the evaluation CLIP's image tower (the transformers peer's shape)
VIT = {"image_tower": "vit", "image_width": 64, "image_layers": 4, "patch_size": 4,
       "image_heads": 4}


def batch(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(images, ids, mask)``: the peer's tensors (its end-of-text id included)."""
    g = torch.Generator().manual_seed(seed)
    images = torch.rand(BATCH, 3, 32, 32, generator=g) * 2 - 1
    lengths = torch.randint(3, 16, (BATCH,), generator=g)
    ids = torch.randint(1, EOS, (BATCH, TOKENS), generator=g)
    mask = torch.arange(TOKENS) < lengths[:, None]
    ids = ids.masked_fill(~mask, 0)
    ids[torch.arange(BATCH), lengths - 1] = EOS
    return images, ids, mask


def vit(patch_size: int = 4) -> CLIPConfig:
    """The benchmark's ViT CLIP with ``patch_size``-pixel patches."""
    return CLIPConfig(**{**VIT, "patch_size": patch_size})


def make_step(config: CLIPConfig) -> tuple[Callable[[], None], int]:
    """One training step on :func:`batch` (a closure) and the trainable parameters."""
    torch.manual_seed(0)
    model = CLIPModel(config).train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = make_optimizer(TrainConfig(lr=1e-3, weight_decay=0.1), params)
    images, ids, mask = batch()

    def step() -> None:
        loss = clip_loss(*model(images, ids, mask))
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        clamp_log_scale_(model.log_scale)

    return step, sum(p.numel() for p in params)


def measure(config: CLIPConfig, steps: int) -> tuple[float, int, Callable[[], None], float]:
    """``(trained images/s, trainable parameters, the step, timed seconds)`` of ``steps``
    timed steps."""
    step, params = make_step(config)
    for _ in range(WARMUP):
        step()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    seconds = time.perf_counter() - t0
    return BATCH * steps / seconds, params, step, seconds


def interleaved(rounds: int, patch_size: int = 4,
                per_round: int = 3) -> tuple[float, float]:
    """Median step seconds ``(gaf, transformers)`` with both models (``patch_size``-pixel
    patches) in this process, ``per_round`` steps of each in turn for ``rounds`` rounds
    (needs transformers)."""
    path = Path(__file__).with_name("clip_transformers_peer.py")
    spec = importlib.util.spec_from_file_location("clip_transformers_peer", path)
    peer = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(peer)
    steps = {"gaf": make_step(vit(patch_size))[0], "peer": peer.make_step(patch_size)[0]}
    times: dict[str, list[float]] = {name: [] for name in steps}
    for step in steps.values():
        for _ in range(WARMUP):
            step()
    for _ in range(rounds):
        for name, step in steps.items():
            for _ in range(per_round):
                t0 = time.perf_counter()
                step()
                times[name].append(time.perf_counter() - t0)
    return statistics.median(times["gaf"]), statistics.median(times["peer"])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("steps", nargs="?", type=int, default=30, help="timed steps")
    parser.add_argument("--interleaved", type=int, default=0, metavar="ROUNDS",
                        help="also time both models in this process, 3 steps each in "
                             "turn for ROUNDS rounds (needs transformers)")
    parser.add_argument("--patch-size", type=int, default=4, choices=(4, 8),
                        help="the ViT's patch side (8: the evaluation CLIP's)")
    parser.add_argument("--no-cost", action="store_true", help="skip the cost lines")
    args = parser.parse_args(argv)
    rate, params, vit_step, vit_s = measure(vit(args.patch_size), args.steps)
    print(f"gaf_clip train_img_per_s={rate:.1f} params={params} "
          f"(vit 64x4, patch {args.patch_size}, batch {BATCH}, {args.steps} steps)")
    rate, params, cnn_step, cnn_s = measure(CLIPConfig(), args.steps)
    print(f"gaf_clip_cnn train_img_per_s={rate:.1f} params={params} "
          f"(default cnn tower, batch {BATCH}, {args.steps} steps, no peer)", flush=True)
    if args.interleaved:
        gaf, peer = interleaved(args.interleaved, args.patch_size)
        print(f"interleaved gaf_step_ms={gaf * 1e3:.1f} transformers_step_ms={peer * 1e3:.1f} "
              f"ratio={peer / gaf:.2f} (medians of {3 * args.interleaved} steps each)")
    if not args.no_cost:
        for name, step, seconds in (("gaf_clip", vit_step, vit_s),
                                    ("gaf_clip_cnn", cnn_step, cnn_s)):
            cost = step_cost.measure(step, units=args.steps, seconds=seconds, inference=False)
            print(step_cost.line(name, cost, "step"))


if __name__ == "__main__":
    main()
