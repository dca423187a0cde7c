"""Peer of ``benchmarks/parti_sampling.py``: transformers' ``EncoderDecoderModel.generate``
sampling 64 image codes for 16 captions of 24 text tokens, guidance 2, top-k 8.

    /tmp/gaf-peers/bin/python benchmarks/parti_transformers_peer.py [RUNS] [--threads 2]
                                                                    (RUNS: 80)
    /tmp/gaf-peers/bin/python benchmarks/parti_transformers_peer.py --check

Imports only torch and transformers (run it in the peer venv; written against
transformers 5.25.0). Nothing is downloaded: the model is built from configs with
random weights (seeded).

The model
---------
gaf's ``parti`` is a pre-LayerNorm text encoder and a GPT-2 decoder whose blocks add a
cross-attention (``ln_x``, ``q``, ``kv``, ``proj``) between the causal self-attention
and the MLP, with a head over the 256 codes only. The closest transformers class is
``EncoderDecoderModel`` with

* encoder ``RobertaPreLayerNormModel`` (no pooler): ``vocab_size=354`` (shapes-bpe),
  ``hidden_size=128``, ``num_hidden_layers=2``, ``num_attention_heads=4``,
  ``intermediate_size=512``, exact GELU, ``layer_norm_eps=1e-5``, pre-LayerNorm blocks
  and a final LayerNorm, as gaf's ``TextTransformer``;
* decoder ``GPT2LMHeadModel`` with ``add_cross_attention=True``: ``vocab_size=257`` (the
  256 codes and BOS = 256, the decoder start token), ``n_positions=64``, ``n_embd=128``,
  ``n_layer=3``, ``n_head=4``, tanh GELU, ``tie_word_embeddings=False``. Its blocks are
  gaf's ``CrossBlock`` parameter for parameter (``ln_cross_attn``, ``q_attn``,
  ``c_attn`` of 2d, ``c_proj``).

``BartForConditionalGeneration`` / ``MBartForConditionalGeneration`` and
``T5ForConditionalGeneration`` were not taken: they share one vocabulary between
encoder and decoder, so their output layer would score the 354 text tokens besides the
codes (and tie it to the shared table); BART is post-LayerNorm, T5 has relative
position biases, RMSNorm and no biases.

Parameters: gaf 1,310,208, this model 1,313,792 (printed by both scripts). The gap of
3,584 = 640 + 6,016 - 3,072: the encoder's ``position_embeddings`` has 26 rows
(RoBERTa's positions start after the pad id, here 1) against gaf's 24 (+256), plus a
one-row ``token_type_embeddings`` (+128) and an embedding LayerNorm (+256); the
decoder's 64 learned positions (8,192) against gaf's 8 row and 8 column embeddings
(2,048: +6,144), and its ``lm_head`` has a row for BOS (+128) and no bias (-256) (BOS's
input embedding is a row of ``wte`` here and a vector of its own in gaf: 128 on each
side); gaf's learned null context (24 x 128 = 3,072) is a parameter there and a fixed
tensor here (see below), so it is not counted on this side.

Classifier-free guidance
------------------------
transformers' own ``guidance_scale`` (``UnbatchedClassifierFreeGuidanceLogitsProcessor``)
does not support encoder-decoder models in 5.25: it calls ``model(input_ids,
attention_mask=…)`` with the negative prompt and later the last generated token as the
*encoder's* input and no ``decoder_input_ids``: ``EncoderDecoderModel`` raises "You
have to specify either input_ids or inputs_embeds" (its GPT-2 decoder gets no input),
T5 "You must specify exactly one of input_ids or inputs_embeds", and BART derives
decoder inputs from the encoder's and runs, guiding with the wrong logits. So guidance
here is a ``LogitsProcessor`` of this script (:class:`NullContextGuidance`) that does
what that processor does for decoder-only models, the decoder's way: a second forward
pass per token of the same model, with the cross-attention reading a null context (a fixed
``(24, 128)`` tensor drawn N(0, 0.02), all 24 positions attended, as gaf's learned
null context ``null_states``, which replaces the encoder's states, so the encoder does
not run for it) and its own KV cache; it returns ``l0 + s (lc - l0)`` on the raw logits
(gaf's formula; transformers' processor guides log-softmaxes, which differ by a
per-row constant: the same distribution). generate runs it after
``suppress_tokens`` and before the top-k warper.

What is timed, and what differs
-------------------------------
One ``generate`` call: the encoder over the 16 captions (gaf encodes both halves, 32
rows, and replaces the unconditional half's states), 64 decoder passes for the
conditional rows and 64 for the unconditional ones (gaf: 64 passes of 32 rows with
both halves batched), cross-attention keys and values computed once per call and
cached (``EncoderDecoderCache``) on both sides, ``do_sample=True, top_k=8``,
``min_new_tokens = max_new_tokens = 64`` and ``eos_token_id=None`` (every row makes 64
tokens), BOS suppressed (``suppress_tokens``) so that only codes are drawn (gaf's head
has the 256 code logits only). Sampling draws every row from the global generator
(gaf: one generator per row, one top-k call per row). The captions are the gaf
script's four, repeated to 16, as its shapes-bpe token ids (``CAPTION_IDS``, held
equal to gaf's tokenisation by tests/benchmarks/test_parti_sampling.py) padded to 24
with the pad id 1 and masked in the encoder and the cross-attention (gaf: pad id 353,
masked the same way). float32, eager (no ``torch.compile``), the default attention
implementation (printed), ``torch.no_grad`` (generate's own), ``--threads`` threads.
One warm-up call, then ``RUNS`` timed calls; the median.

``--check`` (no timing) samples 6 tokens for 2 captions with a processor that also
recomputes, at every step, both branches' logits from the whole prefix without a
cache, and asserts the guided scores it got equal ``l0 + s (lc - l0)`` of those.

Prints ``transformers_parti image_tokens_per_s=<f> params=<n> batch=16
image_tokens=64 text_tokens=24 guidance=2 top_k=8 runs=<n> threads=<n> attn=<impl>
codes_sum=<n>``.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from transformers import (EncoderDecoderModel, GPT2Config, GPT2LMHeadModel, LogitsProcessor,
                          LogitsProcessorList, RobertaPreLayerNormConfig,
                          RobertaPreLayerNormModel)
from transformers.modeling_outputs import BaseModelOutput

BATCH, TEXT, IMAGE, CODES, GUIDANCE, TOP_K = 16, 24, 64, 256, 2.0, 8
TEXT_VOCAB, TEXT_PAD, BOS = 354, 1, 256
D_MODEL, HEADS, ENCODER_LAYERS, DECODER_LAYERS, MLP_RATIO = 128, 4, 2, 3, 4
#: the shapes-bpe ids of parti_sampling.CAPTIONS (its tokenizer adds a prefix space)
CAPTION_IDS = [[256, 341, 302, 349, 256, 317, 310],
               [339, 287, 58, 256, 277, 327, 306],
               [256, 282, 321, 298, 268, 262, 291, 323, 256, 329, 314],
               [256, 270, 97, 103, 101, 110, 116, 97, 310]]


def build() -> EncoderDecoderModel:
    """The encoder-decoder of the module docstring, random weights (seeded), eval mode."""
    torch.manual_seed(0)
    encoder = RobertaPreLayerNormModel(RobertaPreLayerNormConfig(
        vocab_size=TEXT_VOCAB, hidden_size=D_MODEL, num_hidden_layers=ENCODER_LAYERS,
        num_attention_heads=HEADS, intermediate_size=MLP_RATIO * D_MODEL, hidden_act="gelu",
        max_position_embeddings=TEXT + TEXT_PAD + 1, type_vocab_size=1,
        pad_token_id=TEXT_PAD, layer_norm_eps=1e-5), add_pooling_layer=False)
    decoder = GPT2LMHeadModel(GPT2Config(
        vocab_size=CODES + 1, n_positions=IMAGE, n_embd=D_MODEL, n_layer=DECODER_LAYERS,
        n_head=HEADS, n_inner=MLP_RATIO * D_MODEL, add_cross_attention=True, is_decoder=True,
        tie_word_embeddings=False, bos_token_id=BOS, eos_token_id=None))
    return EncoderDecoderModel(encoder=encoder, decoder=decoder).eval()


def caption_batch(batch: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(ids, mask)`` ``(batch, TEXT)``: ``CAPTION_IDS`` repeated in order, padded."""
    rows = [CAPTION_IDS[i % len(CAPTION_IDS)] for i in range(batch)]
    ids = torch.tensor([r + [TEXT_PAD] * (TEXT - len(r)) for r in rows])
    return ids, (ids != TEXT_PAD).long()


class NullContextGuidance(LogitsProcessor):
    """Classifier-free guidance for an encoder-decoder: the unconditional logits from a
    second decoder pass per token over ``null`` ``(B, L, d)`` encoder states (all
    attended) with its own cache; returns ``l0 + scale (lc - l0)``. One instance per
    ``generate`` call."""

    def __init__(self, model: EncoderDecoderModel, scale: float, null: torch.Tensor):
        self.model, self.scale = model, scale
        self.context = BaseModelOutput(last_hidden_state=null)
        self.mask = torch.ones(null.shape[:2], dtype=torch.long, device=null.device)
        self.cache = None

    def unconditional(self, input_ids: torch.Tensor) -> torch.Tensor:
        first = self.cache is None
        out = self.model(encoder_outputs=self.context, attention_mask=self.mask,
                         decoder_input_ids=input_ids if first else input_ids[:, -1:],
                         cache=self.cache, use_cache=True)
        self.cache = out.cache
        return out.logits[:, -1].float()

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        null = self.unconditional(input_ids)
        return null + self.scale * (scores - null)


def null_context(batch: int) -> torch.Tensor:
    """The fixed null context ``(batch, TEXT, D_MODEL)``, N(0, 0.02) (gaf's null_states'
    initialisation)."""
    g = torch.Generator().manual_seed(1)
    return (torch.randn(TEXT, D_MODEL, generator=g) * 0.02).expand(batch, -1, -1).contiguous()


def sample(model: EncoderDecoderModel, ids: torch.Tensor, mask: torch.Tensor,
           new_tokens: int, guidance: LogitsProcessor) -> torch.Tensor:
    """``generate`` with the benchmark's options; the new tokens ``(B, new_tokens)``."""
    out = model.generate(ids, attention_mask=mask, decoder_start_token_id=BOS,
                         bos_token_id=BOS, pad_token_id=BOS, eos_token_id=None,
                         max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                         do_sample=True, top_k=TOP_K, suppress_tokens=[BOS],
                         logits_processor=LogitsProcessorList([guidance]))
    return out[:, 1:]


def check(model: EncoderDecoderModel) -> None:
    """``--check``: the cached guidance equals a recomputation from the whole prefix."""
    ids, mask = caption_batch(2)
    null = null_context(2)
    checked = []

    class Checked(NullContextGuidance):
        def __call__(self, input_ids, scores):
            guided = super().__call__(input_ids, scores)
            with torch.no_grad():
                cond = model(input_ids=ids, attention_mask=mask, decoder_input_ids=input_ids,
                             use_cache=False).logits[:, -1]
                uncond = model(encoder_outputs=BaseModelOutput(last_hidden_state=null),
                               attention_mask=torch.ones(2, TEXT, dtype=torch.long),
                               decoder_input_ids=input_ids, use_cache=False).logits[:, -1]
            want = uncond + GUIDANCE * (cond - uncond)
            want[:, BOS] = -float("inf")
            torch.testing.assert_close(guided, want, rtol=1e-4, atol=1e-4)
            checked.append(input_ids.shape[1])
            return guided

    torch.manual_seed(1)
    codes = sample(model, ids, mask, 6, Checked(model, GUIDANCE, null))
    assert codes.shape == (2, 6) and int(codes.max()) < CODES, codes
    assert checked == [1, 2, 3, 4, 5, 6], checked
    print(f"check ok: {len(checked)} guided steps equal the uncached recomputation")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="?", type=int, default=80)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--check", action="store_true", help="check the guidance, no timing")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    model = build()
    if args.check:
        check(model)
        return
    ids, mask = caption_batch(BATCH)
    null = null_context(BATCH)
    last: list[torch.Tensor] = []

    def once() -> float:
        guidance = NullContextGuidance(model, GUIDANCE, null)
        torch.manual_seed(1)
        t0 = time.perf_counter()
        codes = sample(model, ids, mask, IMAGE, guidance)
        dt = time.perf_counter() - t0
        assert codes.shape == (BATCH, IMAGE) and int(codes.max()) < CODES
        last[:] = [codes]
        return dt

    once()
    median = statistics.median(once() for _ in range(args.runs))
    params = sum(p.numel() for p in model.parameters())
    print(f"transformers_parti image_tokens_per_s={BATCH * IMAGE / median:.1f} "
          f"params={params} batch={BATCH} image_tokens={IMAGE} text_tokens={TEXT} "
          f"guidance={GUIDANCE:g} top_k={TOP_K} runs={args.runs} "
          f"threads={torch.get_num_threads()} attn={model.config._attn_implementation} "
          f"codes_sum={int(last[0].sum())}")


if __name__ == "__main__":
    main()
