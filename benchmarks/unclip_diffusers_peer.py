"""Peer of ``benchmarks/unclip_throughput.py``: unCLIP sampling (prior, then decoder) with
diffusers' ``PriorTransformer``, ``UNet2DConditionModel`` and ``DDIMScheduler``, CPU.

    /tmp/gaf-peers/bin/python benchmarks/unclip_diffusers_peer.py [DDIM_STEPS]   (25)

Imports only torch and diffusers (run it in the peer venv). The same inputs as the gaf
script (one seeded generator, drawn in the same order), randomly initialised models
(nothing is downloaded), float32 on torch's default 2 threads, eager, under
``torch.inference_mode``, no warm-up call on either side. ``DDIM_STEPS`` sets the steps
of both stages (a small number for a quick check).

What is timed, 16 captions (the loops are those of diffusers' ``UnCLIPPipeline``, with
``DDIMScheduler`` in place of its ``UnCLIPScheduler``, as on the gaf side):

* **prior**: 2 candidate embeddings per caption (32 rows; the paper keeps the one with
  the larger dot product with the text embedding), 25 DDIM steps
  (``beta_schedule="squaredcos_cap_v2", prediction_type="sample", clip_sample=False``)
  with guidance 4, the unconditional and conditional halves in one call of 64 rows per
  step; the transformer gets the full inputs every step (``proj_embedding``,
  ``encoder_hidden_states``, ``attention_mask``), as the pipeline does; then
  ``post_process_latents`` (``clip_std`` set to ones, ``clip_mean`` zeros: gaf's fresh
  statistics) and the selection. ``PriorTransformer(num_attention_heads=4,
  attention_head_dim=32, num_layers=4, embedding_dim=64, num_embeddings=24,
  additional_embeddings=4, encoder_hid_proj_type="linear", added_emb_type="prd")``: width
  128; text states (16, 24, 64) through ``encoder_hidden_states_proj`` (64 -> 128, gaf's
  ``text_proj``), the first 8 tokens real; ``embedding_proj`` for the text embedding,
  ``proj_in`` for x_t, the ``prd`` token as the query, 28 positions. The null caption:
  zero states with 2 real tokens and a zero text embedding.
* **decoder**: 16 images, latents 4x8x8, 25 DDIM steps (``squaredcos_cap_v2``, epsilon,
  no clipping), guidance 8 in one call of 32 per step. The UNet of
  ``/work/shared/peers/diffusers_ldm_bench.py`` plus ``class_embed_type="projection",
  projection_class_embeddings_input_dim=64`` (the image embedding through Linear-SiLU-
  Linear added to the time embedding, passed as ``class_labels`` every step) and, as
  diffusers' ``UnCLIPTextProjModel``, a ``Linear(64, 4 x 64)`` outside the UNet making 4
  extra context tokens, computed once per sampling run and put before the 24 text
  tokens. The unconditional half: zero text states and a zero image embedding.

Not timed, on either side: the text encoder and the first-stage decode to pixels (the
same work on both sides).

Prints ``diffusers_unclip prior_samples_per_s=<f> decoder_samples_per_s=<f>
samples_per_s=<f> prior_params=<n> decoder_params=<n>`` (16 samples over each stage's
time and over both). ``decoder_params`` counts the UNet and the extra-token Linear
(gaf's count exactly); ``prior_params`` is 128 above gaf's, diffusers' ``clip_mean`` /
``clip_std`` being parameters (buffers in gaf).

What gaf's sampling does and this does not: gaf caches the prior's caption prefix
(keys/values of the 25 prefix tokens, computed once; each step runs 3 tokens) and the
decoder's cross-attention keys/values (projected once), and embeds the shared timestep
once per step.

Protocol: the ratio of medians of at least 3 alternating runs (gaf, peer, gaf, ...) on
an otherwise idle machine, with the load average (``uptime``) beside it.
"""

import sys
import time

import torch
from diffusers import DDIMScheduler, PriorTransformer, UNet2DConditionModel

B, L, W, E = 16, 24, 64, 64
REAL, NULL_REAL = 8, 2
CANDIDATES = 2
PRIOR_GUIDANCE, DECODER_GUIDANCE = 4.0, 8.0
LATENT = (4, 8, 8)
EXTRA_TOKENS = 4


def inputs():
    """The same tensors as the gaf script's (one generator, drawn in the same order)."""
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


def build():
    prior = PriorTransformer(num_attention_heads=4, attention_head_dim=32, num_layers=4,
                             embedding_dim=E, num_embeddings=L, additional_embeddings=4,
                             encoder_hid_proj_type="linear", added_emb_type="prd")
    with torch.no_grad():
        prior.clip_std.fill_(1.0)  # zeros by default: post_process_latents would zero all
    unet = UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, layers_per_block=1,
        block_out_channels=(64, 128), down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=W,
        attention_head_dim=8, norm_num_groups=32, class_embed_type="projection",
        projection_class_embeddings_input_dim=E)
    extra_proj = torch.nn.Linear(E, EXTRA_TOKENS * W)  # UnCLIPTextProjModel's extra tokens
    return prior.eval(), unet.eval(), extra_proj.eval()


def main(steps=25):
    torch.manual_seed(0)
    prior, unet, extra_proj = build()
    prior_params = sum(p.numel() for p in prior.parameters())
    decoder_params = (sum(p.numel() for p in unet.parameters())
                      + sum(p.numel() for p in extra_proj.parameters()))
    x = inputs()
    prior_sched = DDIMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2",
                                prediction_type="sample", clip_sample=False)
    decoder_sched = DDIMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2",
                                  prediction_type="epsilon", clip_sample=False)
    prior_sched.set_timesteps(steps)
    decoder_sched.set_timesteps(steps)
    k = CANDIDATES
    with torch.inference_mode():
        # ---- prior: 2 candidates per caption, guidance 4, the better one kept
        t0 = time.perf_counter()
        states = torch.cat([x["null_states"].repeat_interleave(k, 0),
                            x["states"].repeat_interleave(k, 0)])
        mask = torch.cat([x["null_mask"].repeat_interleave(k, 0),
                          x["mask"].repeat_interleave(k, 0)])
        pooled = torch.cat([x["null_pooled"].repeat_interleave(k, 0),
                            x["pooled"].repeat_interleave(k, 0)])
        z = x["prior_noise"]
        for t in prior_sched.timesteps:
            out = prior(torch.cat([z, z]), timestep=t, proj_embedding=pooled,
                        encoder_hidden_states=states,
                        attention_mask=mask).predicted_image_embedding
            out_u, out_c = out.chunk(2)
            z = prior_sched.step(out_u + PRIOR_GUIDANCE * (out_c - out_u), t, z).prev_sample
        z = prior.post_process_latents(z).reshape(B, k, E)
        best = (z * x["pooled"][:, None]).sum(-1).argmax(1)
        image_embeds = z[torch.arange(B), best]
        prior_s = time.perf_counter() - t0

        # ---- decoder: guidance 8, image embedding in the time embedding and 4 tokens
        t0 = time.perf_counter()
        vec = torch.cat([torch.zeros(B, E), image_embeds])
        extra = extra_proj(vec).reshape(2 * B, EXTRA_TOKENS, W)
        ctx = torch.cat([extra, torch.cat([x["null_states"], x["states"]])], dim=1)
        lat = x["decoder_noise"]
        for t in decoder_sched.timesteps:
            eps = unet(torch.cat([lat, lat]), t, encoder_hidden_states=ctx,
                       class_labels=vec).sample
            e_u, e_c = eps.chunk(2)
            lat = decoder_sched.step(e_u + DECODER_GUIDANCE * (e_c - e_u), t, lat).prev_sample
        decoder_s = time.perf_counter() - t0
    assert image_embeds.shape == (B, E) and lat.shape == (B, *LATENT)
    print(f"diffusers_unclip prior_samples_per_s={B / prior_s:.2f} "
          f"decoder_samples_per_s={B / decoder_s:.2f} "
          f"samples_per_s={B / (prior_s + decoder_s):.2f} "
          f"prior_params={prior_params} decoder_params={decoder_params}")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 25)
