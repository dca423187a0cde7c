"""The ``dalle`` token model and the guided, cached sampling loop: the token layout and
positions, the loss weights against a float64 hand computation, the guidance formula,
the cache against recomputation, and that no non-image token is ever drawn."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from gaf.errors import BadData
from gaf.plugins.lm.samplers import Greedy, Temperature, TopK, TopKConfig
from gaf.plugins.t2i.tokens.dalle import IMAGE_WEIGHT, DalleConfig, DalleTransformer
from gaf.plugins.t2i.tokens.sampling import guide, sample_codes

SMALL = DalleConfig(text_length=16, codebook=12, rows=2, cols=3, d_model=32, n_layer=2,
                    n_head=4)


def model(dtype=torch.float64, seed=0, **changes):
    torch.manual_seed(seed)
    cfg = DalleConfig(**{**{k: getattr(SMALL, k) for k in ("text_length", "codebook", "rows",
                                                          "cols", "d_model", "n_layer",
                                                          "n_head")}, **changes})
    return DalleTransformer(cfg).to(dtype).eval()


CAPTIONS = ["a red circle", "bottom left: a small blue square above a green cross"]


def test_the_vocabulary_ranges_are_disjoint_and_cover_the_table():
    m = model()
    lay = m.layout
    assert lay.pad0 == m.tokenizer.vocab_size
    assert lay.bos == lay.pad0 + 16 and lay.code0 == lay.bos + 1
    assert lay.size == lay.code0 + 12 == m.wte.num_embeddings
    assert lay.text_slice == slice(0, lay.bos) and lay.code_slice == slice(lay.code0, lay.size)


def test_captions_are_padded_with_each_positions_own_pad_and_the_null_is_all_pads():
    m = model()
    text = m.tokenize(CAPTIONS)
    own = m.tokenizer.encode(" a red circle")
    assert text[0, :len(own)].tolist() == own
    assert text[0, len(own):].tolist() == list(range(m.layout.pad0 + len(own),
                                                     m.layout.pad0 + 16))
    null = m.with_null(text, torch.tensor([False, True]))
    assert torch.equal(null[0], text[0])
    assert null[1].tolist() == list(range(m.layout.pad0, m.layout.pad0 + 16))
    with pytest.raises(BadData, match="more than text_length=16; raise the token model's"):
        m.tokenize(["a " * 20])


def test_text_bos_and_image_positions():
    m = model()
    text = m.tokenize(CAPTIONS)
    codes = torch.tensor([[3, 0, 11, 5, 7], [1, 2, 3, 4, 5]])
    h = m.embed(text, codes)
    assert h.shape == (2, 16 + 1 + 5, 32)
    assert torch.allclose(h[:, :16], m.wte(text) + m.text_pos)
    assert torch.allclose(h[:, 16], m.wte.weight[m.layout.bos] + m.bos_pos)
    for k in range(5):  # code k sits at row k // 3, column k % 3
        want = m.wte.weight[codes[:, k] + m.layout.code0] + m.row_pos[k // 3] + m.col_pos[k % 3]
        assert torch.allclose(h[:, 17 + k], want)


def test_the_loss_is_one_eighth_text_and_seven_eighths_image():
    m = model()
    text = m.tokenize(CAPTIONS)
    codes = torch.randint(0, 12, (2, 6), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        loss, parts = m.loss(text, codes)
        logits = m.logits(m.forward(text, codes)).double()
    lay = m.layout
    img = logits[:, 16:, lay.code0:lay.size]  # BOS and codes 0..4 predict codes 0..5
    ce_img = -img.log_softmax(-1).gather(-1, codes[..., None]).mean()
    txt = logits[:, :15, :lay.bos]
    ce_txt = -txt.log_softmax(-1).gather(-1, text[:, 1:, None]).mean()
    assert IMAGE_WEIGHT == 7 / 8
    assert float(loss) == pytest.approx(float(ce_txt / 8 + 7 * ce_img / 8), rel=1e-12)
    assert parts["loss_image"] == pytest.approx(float(ce_img), rel=1e-12)
    assert parts["loss_text"] == pytest.approx(float(ce_txt), rel=1e-12)


def test_dropped_rows_read_the_null_caption_in_the_loss():
    m = model()
    text = m.tokenize(CAPTIONS)
    codes = torch.randint(0, 12, (2, 6), generator=torch.Generator().manual_seed(2))
    drop = torch.tensor([True, False])
    with torch.no_grad():
        dropped, _ = m.loss(text, codes, drop)
        by_hand, _ = m.loss(m.with_null(text, drop), codes)
        kept, _ = m.loss(text, codes)
    assert float(dropped) == float(by_hand) != float(kept)


@given(scale=st.floats(0, 20), seed=st.integers(0, 2**16))
@settings(max_examples=30, deadline=None)
def test_guidance_is_the_cfg_formula(scale, seed):
    g = torch.Generator().manual_seed(seed)
    cond, null = torch.randn(3, 12, generator=g, dtype=torch.float64), torch.randn(
        3, 12, generator=g, dtype=torch.float64)
    assert torch.allclose(guide(cond, null, scale), (1 - scale) * null + scale * cond)
    assert torch.allclose(guide(cond, null, 1.0), cond, rtol=0, atol=1e-15)
    assert torch.equal(guide(cond, null, 0.0), null)


def test_the_cache_gives_the_logits_of_a_full_recomputation():
    m = model()
    text = m.tokenize(CAPTIONS)
    codes = torch.randint(0, 12, (2, 6), generator=torch.Generator().manual_seed(3))
    full = m.logits(m.forward(text, codes))[:, 16:, m.layout.code_slice]  # (2, 6, K)
    logits, cache = m.prefill(text)
    assert torch.allclose(logits, full[:, 0], atol=1e-12)
    for k in range(5):
        logits, cache = m.step(codes[:, k], k, cache)
        assert torch.allclose(logits, full[:, k + 1], atol=1e-12), k


def test_greedy_guided_sampling_equals_argmax_of_recomputed_guided_logits():
    """The whole loop, cache and 2B batch included, against recomputing both branches
    from scratch at every token."""
    m = model()
    text = m.tokenize(CAPTIONS)
    scale = 3.0
    gens = [torch.Generator().manual_seed(i) for i in range(2)]
    got = sample_codes(m, text, sampler=Greedy(), guidance=scale, generators=gens)
    null = m.with_null(text, torch.tensor([True, True]))
    want = torch.zeros(2, 0, dtype=torch.long)
    for k in range(6):
        pad = torch.zeros(2, 1, dtype=torch.long)  # forward drops the last code
        c = m.logits(m.forward(text, torch.cat([want, pad], 1)))[:, 16 + k, m.layout.code_slice]
        u = m.logits(m.forward(null, torch.cat([want, pad], 1)))[:, 16 + k, m.layout.code_slice]
        want = torch.cat([want, guide(c, u, scale).argmax(-1, keepdim=True)], 1)
    assert torch.equal(got, want)


def test_a_rows_image_depends_on_its_seed_not_on_the_batch():
    m = model(torch.float32)
    text = m.tokenize(CAPTIONS)
    sampler = TopK(TopKConfig(k=5))
    both = sample_codes(m, text, sampler=sampler, guidance=2.0,
                        generators=[torch.Generator().manual_seed(i) for i in (7, 8)])
    alone = sample_codes(m, text[1:], sampler=sampler, guidance=2.0,
                         generators=[torch.Generator().manual_seed(8)])
    assert torch.equal(both[1], alone[0])


def test_no_token_but_an_image_code_is_ever_drawn():
    """Text, pad and BOS tokens made overwhelmingly likely still cannot be drawn."""
    m = model(torch.float32)
    with torch.no_grad():  # every hidden state points at the text tokens' embeddings
        m.wte.weight[:m.layout.code0] *= 50
        m.ln_f.bias.copy_(m.wte.weight[:m.layout.code0].mean(0))
    text = m.tokenize(CAPTIONS)
    full = m.logits(m.forward(text, torch.zeros(2, 6, dtype=torch.long)))[:, 16]
    assert int(full.argmax(-1).max()) < m.layout.code0  # the whole vocabulary would say text
    for sampler in (Greedy(), Temperature(), TopK(TopKConfig(k=3))):
        codes = sample_codes(m, text, sampler=sampler, guidance=1.5,
                             generators=[torch.Generator().manual_seed(i) for i in range(2)])
        assert codes.shape == (2, 6) and int(codes.min()) >= 0 and int(codes.max()) < 12


def test_sampling_checks_its_generators():
    from gaf.errors import BadConfig

    m = model(torch.float32)
    with pytest.raises(BadConfig, match="1 generators for 2 captions"):
        sample_codes(m, m.tokenize(CAPTIONS), sampler=Greedy(), guidance=1.0,
                     generators=[torch.Generator()])


def test_the_default_model_is_about_a_million_parameters():
    """The size the project's defaults train on 2 cores (docs: ≈1M parameters)."""
    n = sum(p.numel() for p in DalleTransformer().parameters())
    assert 0.5e6 < n < 1.5e6
