"""unCLIP sampling throughput on the CPU: the diffusion prior, then the decoder.

    python benchmarks/unclip_throughput.py [DDIM_STEPS] [--no-cost]      (DDIM_STEPS: 25)

The peer, ``benchmarks/unclip_diffusers_peer.py`` (run it with /tmp/gaf-peers/bin/python),
does the same work with diffusers' ``PriorTransformer``, ``UNet2DConditionModel`` and
``DDIMScheduler``; both scripts draw the same inputs from one seeded generator, build
randomly initialised models (nothing is downloaded), run float32 on torch's default 2
threads, eager (no torch.compile), under ``torch.inference_mode``, with no warm-up call
(the first call's one-time set-up cost is inside both timings). ``DDIM_STEPS`` sets the
steps of both stages (a small number for a quick check).

What is timed, 16 captions:

* **prior**: 2 candidate image embeddings per caption (the paper samples 2 and keeps the
  one with the larger dot product with the caption's text embedding), so 32 rows; 25
  DDIM steps (``squaredcos_cap_v2`` betas, ``prediction_type="sample"``, no clipping)
  with classifier-free guidance ``x0 = x_u + 4 (x_c - x_u)``, the unconditional and
  conditional halves in one batched call of 64 rows per step; then the standardised
  sample is mapped back to embedding coordinates and the better candidate of each
  caption kept. The prior: text states (16, 24, 64) with a real-token mask (the first 8
  tokens real, the rest pads), text embedding (16, 64), width 128, 4 heads, 4 layers,
  embedding 64 (gaf's ``PriorTransformer``; the peer's ``num_attention_heads=4,
  attention_head_dim=32, num_layers=4, embedding_dim=64, num_embeddings=24,
  additional_embeddings=4, encoder_hid_proj_type="linear", added_emb_type="prd"``). The
  null caption is zero states with 2 real tokens (an empty caption's start and end
  tokens) and a zero text embedding.
* **decoder**: 16 images, latents 4x8x8, 25 DDIM steps (``squaredcos_cap_v2``, epsilon,
  no clipping) with guidance ``e_u + 8 (e_c - e_u)`` in one batched call of 32 per step.
  The UNet is ``benchmarks/ldm_throughput.py``'s (channels (64, 128), one ResBlock per
  level, cross-attention with 8 heads at full resolution and in the middle block) plus
  unCLIP's image-embedding conditioning: the kept 64-d embedding is projected into the
  time embedding (``cond_dim=64``: Linear-SiLU-Linear; the peer's
  ``class_embed_type="projection"``, the same layers) and into 4 extra context tokens
  (``extra_context_tokens=4``: Linear(64, 4x64); the peer's ``Linear`` outside its UNet,
  applied once per sampling run as diffusers' ``UnCLIPTextProjModel``) joining the 24
  text tokens x 64. The unconditional half has zero text states and a zero image
  embedding.

Not timed, on either side: the text encoder (its states are inputs here) and the
first-stage decode of the latents to pixels, which is the same work on both sides.

Prints ``gaf_unclip prior_samples_per_s=<f> decoder_samples_per_s=<f> samples_per_s=<f>
prior_params=<n> decoder_params=<n>``: 16 samples over the prior's time, over the
decoder's time, and over the two together.

Then, unless ``--no-cost``, a cost line for each stage (``benchmarks/step_cost.py``)::

    gaf_unclip_prior_cost unit=step gflop_per_unit=… achieved_gflops=… conv=… … outside=…
    gaf_unclip_decoder_cost unit=step gflop_per_unit=… achieved_gflops=… conv=… … outside=…

The unit is one guided DDIM step of that stage again (the model on ``[x; x]`` with the
stage's cached context, the guidance, the scheduler step); units = DDIM_STEPS, seconds
= that stage's timed seconds. The identity FLOPs(stage) = ``gflop_per_unit`` ×
DDIM_STEPS is approximate: each stage's one ``cache_context`` call is left out (the
candidate selection has no counted FLOPs). For the decoder that is one projection of
the context to the cross-attention keys and values, small beside a UNet step; for the
prior it runs the 25-token caption prefix of all 64 rows through the layers, several
3-token steps' worth, so ``achieved_gflops`` understates the prior's rate
(tests/benchmarks/test_unclip_throughput.py checks that the two parts add up exactly).
``samples_per_s`` has no cost line of its own: its FLOPs and seconds are the two stages'
sums. The cost pass runs 3 more steps of each stage (one counted, two profiled).

Parameters: the decoder has the peer's count exactly (the UNet's 3,152,644 of
``ldm_throughput.py`` plus the same time projection and extra-token Linear). The prior
has 128 fewer than the peer's: diffusers stores ``clip_mean`` / ``clip_std`` as
parameters, gaf as buffers (``embed_mean`` / ``embed_std``); every layer has the same
shape (gaf's fused q|k|v matrix holds diffusers' three).

What a gaf user's sampling does, and the peer (diffusers' pipelines) does not, all inside
the timed region:

* prior: ``PriorTransformer.cache_context`` runs the caption prefix (24 text tokens and
  the text-embedding token) through the layers once for ``[null; cond]``, and each step
  runs only the 3 step tokens (timestep, x_t, query) against the cached keys/values;
  diffusers reruns all 28 tokens and rebuilds its additive mask every step. The shared
  timestep is embedded once per step, not per row.
* decoder: ``UNet.cache_context(context, cond_vector=...)`` projects the context (text
  plus the 4 extra tokens) to every cross-attention layer's keys/values once; diffusers
  projects them in every call. The time embedding of the shared timestep is computed
  once per step.

The loops are what ``gaf.plugins.t2i.diffusion_pipeline.guided_prediction`` does (one
batched call on ``[x; x]`` with a ``cache_context`` object), written out so that the
decoder's ``cond_vector`` can be passed.

Protocol: on an otherwise idle machine (with two OpenMP threads on two cores, another
busy process slows every op several-fold), run this script and the peer alternately at
least 3 times each (gaf, peer, gaf, peer, gaf, peer) and report the ratio of the
medians, with the load average (``uptime``) beside it::

    for i in 1 2 3; do uptime; python benchmarks/unclip_throughput.py; \\
        /tmp/gaf-peers/bin/python benchmarks/unclip_diffusers_peer.py; done
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

from gaf.plugins.diffusion.prior import PriorCondition, PriorConfig, PriorTransformer
from gaf.plugins.diffusion.schedulers import DDIMScheduler, SchedulerConfig
from gaf.plugins.diffusion.unet import UNet, UNetConfig

sys.path.insert(0, str(Path(__file__).resolve().parent))

import step_cost  # noqa: E402

B, L, W, E = 16, 24, 64, 64      # captions, text tokens, text width, embedding width
REAL, NULL_REAL = 8, 2           # real tokens of a caption and of the null caption
CANDIDATES = 2                   # prior samples per caption (the best one is kept)
PRIOR_GUIDANCE, DECODER_GUIDANCE = 4.0, 8.0
LATENT = (4, 8, 8)


def inputs() -> dict[str, torch.Tensor]:
    """The same tensors as the peer's (one generator, drawn in the same order)."""
    g = torch.Generator().manual_seed(0)
    states = torch.randn(B, L, W, generator=g)
    pooled = torch.randn(B, E, generator=g)
    pooled = pooled / pooled.norm(dim=-1, keepdim=True)
    return {"states": states, "pooled": pooled,
            "mask": (torch.arange(L) < REAL).expand(B, L),
            "null_states": torch.zeros(B, L, W),
            "null_mask": (torch.arange(L) < NULL_REAL).expand(B, L),
            "null_pooled": torch.zeros(B, E),
            "prior_noise": torch.randn(CANDIDATES * B, E, generator=g),
            "decoder_noise": torch.randn(B, *LATENT, generator=g)}


def build() -> tuple[PriorTransformer, UNet]:
    prior = PriorTransformer(PriorConfig(embed_dim=E, text_width=W, text_length=L, width=128,
                                         layers=4, heads=4, prediction_type="sample"))
    unet = UNet(UNetConfig(in_channels=4, channels=(64, 128), layers_per_level=1,
                           attention_levels=(0,), mid_attention=True, heads=8, context_dim=W,
                           cond_dim=E, extra_context_tokens=4, prediction_type="epsilon"))
    return prior.eval(), unet.eval()


def prior_context(prior: PriorTransformer, x: dict[str, torch.Tensor]) -> object:
    """The prior's cached ``[null; cond]`` context, each caption repeated per candidate."""
    k = CANDIDATES
    cond = PriorCondition(x["states"].repeat_interleave(k, 0),
                          x["mask"].repeat_interleave(k, 0),
                          x["pooled"].repeat_interleave(k, 0))
    null = PriorCondition(x["null_states"].repeat_interleave(k, 0),
                          x["null_mask"].repeat_interleave(k, 0),
                          x["null_pooled"].repeat_interleave(k, 0))
    return prior.cache_context(PriorCondition.cat([null, cond]))


def prior_step(prior: PriorTransformer, sched: DDIMScheduler, cache: object,
               z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """One guided DDIM step of the prior (both halves in one call)."""
    out_u, out_c = prior(torch.cat([z, z]), t, cache).chunk(2)
    return sched.step(out_u + PRIOR_GUIDANCE * (out_c - out_u), t, z)


def decoder_context(unet: UNet, x: dict[str, torch.Tensor],
                    image_embeds: torch.Tensor) -> tuple[torch.Tensor, object]:
    """``(cond_vector, cache)``: the decoder's ``[null; cond]`` image embeddings and context."""
    vec = torch.cat([torch.zeros(B, E), image_embeds])
    return vec, unet.cache_context(torch.cat([x["null_states"], x["states"]]), cond_vector=vec)


def decoder_step(unet: UNet, sched: DDIMScheduler, cache: object, vec: torch.Tensor,
                 lat: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """One guided DDIM step of the decoder (both halves in one call)."""
    e_u, e_c = unet(torch.cat([lat, lat]), t, cache, cond_vector=vec).chunk(2)
    return sched.step(e_u + DECODER_GUIDANCE * (e_c - e_u), t, lat)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("steps", nargs="?", type=int, default=25, metavar="DDIM_STEPS")
    parser.add_argument("--no-cost", action="store_true", help="skip the cost lines")
    args = parser.parse_args(argv)
    steps = args.steps
    torch.manual_seed(0)
    prior, unet = build()
    prior_params = sum(p.numel() for p in prior.parameters())
    decoder_params = sum(p.numel() for p in unet.parameters())
    x = inputs()
    prior_sched = DDIMScheduler(SchedulerConfig(beta_schedule="squaredcos_cap_v2",
                                                prediction_type="sample", clip_sample=False))
    decoder_sched = DDIMScheduler(SchedulerConfig(beta_schedule="squaredcos_cap_v2",
                                                  prediction_type="epsilon", clip_sample=False))
    prior_sched.set_timesteps(steps)
    decoder_sched.set_timesteps(steps)
    with torch.inference_mode():
        # ---- prior: 2 candidates per caption, guidance 4, the better one kept
        t0 = time.perf_counter()
        prior_cache = prior_context(prior, x)
        z = x["prior_noise"]
        for t in prior_sched.timesteps:
            z = prior_step(prior, prior_sched, prior_cache, z, t)
        z = prior.unstandardize(z).reshape(B, CANDIDATES, E)
        best = (z * x["pooled"][:, None]).sum(-1).argmax(1)
        image_embeds = z[torch.arange(B), best]
        prior_s = time.perf_counter() - t0

        # ---- decoder: guidance 8, image embedding in the time embedding and 4 tokens
        t0 = time.perf_counter()
        vec, decoder_cache = decoder_context(unet, x, image_embeds)
        lat = x["decoder_noise"]
        for t in decoder_sched.timesteps:
            lat = decoder_step(unet, decoder_sched, decoder_cache, vec, lat, t)
        decoder_s = time.perf_counter() - t0
    assert image_embeds.shape == (B, E) and lat.shape == (B, *LATENT)
    print(f"gaf_unclip prior_samples_per_s={B / prior_s:.2f} "
          f"decoder_samples_per_s={B / decoder_s:.2f} "
          f"samples_per_s={B / (prior_s + decoder_s):.2f} "
          f"prior_params={prior_params} decoder_params={decoder_params}")
    if not args.no_cost:
        prior.requires_grad_(False)  # (FlopCounterMode's module hooks need it)
        unet.requires_grad_(False)
        z0, t0 = x["prior_noise"], prior_sched.timesteps[0]
        lat0, t1 = x["decoder_noise"], decoder_sched.timesteps[0]
        units = {"prior": (lambda: prior_step(prior, prior_sched, prior_cache, z0, t0), prior_s),
                 "decoder": (lambda: decoder_step(unet, decoder_sched, decoder_cache, vec,
                                                  lat0, t1), decoder_s)}
        for name, (unit, seconds) in units.items():
            cost = step_cost.measure(unit, units=steps, seconds=seconds, inference=True)
            print(step_cost.line(f"gaf_unclip_{name}", cost, "step"))


if __name__ == "__main__":
    main()
