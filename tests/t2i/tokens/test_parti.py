"""The ``parti`` encoder–decoder: the cache against recomputation, the learned null
context, the loss against a float64 hand computation, guided sampling against
recomputing both branches, and a tiny run sampled through the ``tokens`` pipeline."""

from __future__ import annotations

import json

import pytest
import torch

import gaf
from gaf.plugins.lm.samplers import Greedy
from gaf.plugins.t2i.tokens.parti import PartiConfig, PartiTransformer
from gaf.plugins.t2i.tokens.pipeline import TokenPipeline
from gaf.plugins.t2i.tokens.sampling import guide, sample_codes

CAPTIONS = ["a red circle", "bottom left: a small blue square above a green cross"]


def model(dtype=torch.float64):
    torch.manual_seed(0)
    m = PartiTransformer(PartiConfig(text_length=16, codebook=12, rows=2, cols=3,
                                     d_model=32, encoder_layers=1, n_layer=2, n_head=4))
    with torch.no_grad():  # a null context far from its near-zero start, so it shows
        m.encoder.null_states.normal_()
    return m.to(dtype).eval()


def codes_for(batch, seed=1):
    return torch.randint(0, 12, (batch, 6), generator=torch.Generator().manual_seed(seed))


def test_mlp_ratio_sets_the_encoders_mlp_as_well_as_the_decoders():
    m = PartiTransformer(PartiConfig(text_length=8, codebook=12, rows=2, cols=3, d_model=16,
                                     encoder_layers=1, n_layer=1, n_head=2, mlp_ratio=3))
    widths = {name: p.shape[0] for name, p in m.named_parameters()
              if p.dim() == 2 and p.shape[1] == 16 and "mlp" in name}
    assert widths and all(w == 48 for w in widths.values())
    assert any(n.startswith("encoder.") for n in widths)
    assert any(n.startswith("blocks.") for n in widths)


def test_the_cache_gives_the_logits_of_a_full_recomputation():
    m = model()
    text, codes = m.tokenize(CAPTIONS), codes_for(2)
    with torch.no_grad():
        full = m.forward(text, codes)  # (2, 6, K)
        logits, cache = m.prefill(text)
        assert torch.allclose(logits, full[:, 0], atol=1e-12)
        for k in range(5):
            logits, cache = m.step(codes[:, k], k, cache)
            assert torch.allclose(logits, full[:, k + 1], atol=1e-12), k


def test_a_dropped_caption_reads_the_learned_null_context_whatever_it_said():
    m = model()
    text = m.tokenize(CAPTIONS)
    drop = torch.tensor([True, True])
    with torch.no_grad():
        states, mask = m.context(text, drop)
        null = m.encoder.null(2)
        assert torch.equal(states, null.to(states)) and mask.all()
        a = m.forward(text, codes_for(2), drop)
        b = m.forward(m.tokenize(["x", "y"]), codes_for(2), drop)
        assert torch.allclose(a, b)  # the caption no longer matters
        kept = m.forward(text, codes_for(2))
    assert not torch.allclose(a, kept)


def test_the_loss_is_the_mean_cross_entropy_of_the_codes():
    m = model()
    text, codes = m.tokenize(CAPTIONS), codes_for(2, seed=4)
    with torch.no_grad():
        loss, parts = m.loss(text, codes)
        logits = m.forward(text, codes).double()
    want = -logits.log_softmax(-1).gather(-1, codes[..., None]).mean()
    assert float(loss) == pytest.approx(float(want), rel=1e-12)
    assert parts["loss_image"] == pytest.approx(float(want), rel=1e-12)


def test_greedy_guided_sampling_equals_recomputing_both_branches():
    m = model()
    text = m.tokenize(CAPTIONS)
    gens = [torch.Generator().manual_seed(i) for i in range(2)]
    got = sample_codes(m, text, sampler=Greedy(), guidance=2.5, generators=gens)
    want = torch.zeros(2, 0, dtype=torch.long)
    drop = torch.tensor([True, True])
    with torch.no_grad():
        for k in range(6):
            so_far = torch.cat([want, torch.zeros(2, 1, dtype=torch.long)], 1)
            c = m.forward(text, so_far)[:, k]
            u = m.forward(text, so_far, drop)[:, k]
            want = torch.cat([want, guide(c, u, 2.5).argmax(-1, keepdim=True)], 1)
    assert torch.equal(got, want)


TINY = ["dataset.resolution=16", "dataset.size=64", "autoencoder.base_channels=8",
        "autoencoder.num_groups=4", "autoencoder.n_embed=16", "autoencoder.attention=false",
        "token-model.rows=4", "token-model.cols=4", "token-model.codebook=16",
        "token-model.d_model=32", "token-model.encoder_layers=1", "token-model.n_layer=1",
        "token-model.n_head=2", "train.steps=3", "train.batch_size=8",
        "train.warmup_steps=0", "objective.first_stage_steps=2", "objective.eval_images=0",
        "sampler.k=4"]


def test_a_tiny_parti_run_samples_through_the_tokens_pipeline(tmp_path):
    sets = [*TINY, f"out_dir={json.dumps(str(tmp_path))}", "name=\"p\""]
    run_dir, summary = gaf.run("parti", sets=sets)
    assert summary["status"] == "completed"
    meta = json.loads((run_dir / "pipeline.json").read_text())
    assert meta["objective"] == "parti" and meta["pipeline"] == "tokens"
    pipe = TokenPipeline.from_run(run_dir)
    assert isinstance(pipe.model, PartiTransformer)
    images = pipe(["a red circle"], seed=0, guidance=2.0)
    assert images.shape == (1, 3, 16, 16) and images.abs().max() <= 1
