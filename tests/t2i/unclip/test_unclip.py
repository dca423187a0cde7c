"""The ``unclip`` objective and pipeline on a tiny pixel-space run (a CLIP of a few
steps, a 2-level UNet, a 1-layer prior): the two losses against hand-written formulas,
the drop rates, guidance in both stages against separate calls, the best-of-N choice,
variations from a fixed embedding, ``gaf sample --image``, the run's figures and clear
errors."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner
from PIL import Image

import gaf
from gaf.cli import main
from gaf.errors import BadConfig, BadData
from gaf.plugins.diffusion.prior import PriorCondition
from gaf.plugins.t2i.unclip.pipeline import UnCLIPPipeline

pytestmark = pytest.mark.slow

from tiny_unclip import TINY  # tests/ is on sys.path (conftest)


def _sets(tiny_clip, out=None, name="unclip"):
    sets = [f"conditioner.clip={json.dumps(str(tiny_clip))}", *TINY]
    if out is not None:
        sets = [f"out_dir={json.dumps(str(out))}", f"name={json.dumps(name)}", *sets]
    return sets


@pytest.fixture(scope="module")
def run(tmp_path_factory, tiny_clip):
    out = tmp_path_factory.mktemp("unclip-run")
    return gaf.run("unclip", autoencoder="none", sets=_sets(tiny_clip, out))


@pytest.fixture(scope="module")
def objective(tmp_path_factory, tiny_clip):
    """The objective after setup (no training), in float64 for the formula checks."""
    from gaf.registry import REGISTRY
    from gaf.runs import RunContext
    from gaf.spec import resolve

    spec = resolve(objective="unclip", components={"autoencoder": "none"},
                   sets=_sets(tiny_clip))
    obj = REGISTRY.get("objective", "unclip")(spec.objective_config)
    obj.setup(RunContext(spec, tmp_path_factory.mktemp("unclip-setup")))
    torch.manual_seed(0)
    for module in (obj.prior, obj.noise_model):  # zero-initialised outputs made live
        for p in module.parameters():
            if p.dim() >= 1 and float(p.detach().abs().max()) == 0 and p.numel() > 1:
                torch.nn.init.normal_(p, std=0.1)
    return obj


@pytest.fixture(scope="module")
def pipe(run):
    return UnCLIPPipeline.from_run(run[0], scheduler="ddim")


# ------------------------------------------------------------------ the losses


def _batch(obj, index, **force):
    batch = obj.train_batch(index)
    for key, value in force.items():
        batch[key] = torch.full_like(batch[key], value)
    return batch


def test_train_batch_is_a_function_of_the_step(objective):
    a, b = objective.train_batch(2), objective.train_batch(2)
    for key in a:
        assert torch.equal(a[key], b[key]), key
    assert not torch.equal(a["noise"], objective.train_batch(3)["noise"])


def test_the_drop_rates_are_the_papers(objective):
    draws = [objective.train_batch(i) for i in range(400)]  # 3,200 draws of each
    for key, p in (("drop_embedding", 0.1), ("drop_text", 0.5), ("drop_prior", 0.1)):
        rate = float(torch.cat([d[key] for d in draws]).float().mean())
        se = math.sqrt(p * (1 - p) / 3200)
        assert abs(rate - p) < 4 * se, (key, rate)
    emb = torch.cat([d["drop_embedding"] for d in draws]).float()
    text = torch.cat([d["drop_text"] for d in draws]).float()
    both = float((emb * text).mean())  # independent: P(both) = 0.05
    assert abs(both - 0.05) < 4 * math.sqrt(0.05 * 0.95 / 3200), both


@pytest.mark.parametrize("drop", [False, True])
def test_the_prior_loss_is_the_x0_mse(objective, drop):
    obj = objective
    batch = _batch(obj, 1, drop_prior=drop)
    with torch.no_grad():
        loss, cosine = obj.prior_loss(batch)
    prior, sched = obj.prior, obj.prior_scheduler
    z = batch["embedding"].double()
    mean, std = prior.embed_mean.double(), prior.embed_std.double()
    x0 = (z - mean) / std
    ab = torch.tensor([float(sched.alphas_cumprod[int(t)]) for t in batch["t_prior"]],
                      dtype=torch.float64)[:, None]
    eps = batch["noise_prior"].double()
    x_t = ab.sqrt() * x0 + (1 - ab).sqrt() * eps
    i = batch["caption"]
    if drop:  # the empty caption's states, mask and embedding for every row
        n = len(i)
        cond = PriorCondition(obj.null_states.expand(n, -1, -1), obj.null_mask.expand(n, -1),
                              obj.null_pooled.expand(n, -1))
    else:
        cond = PriorCondition(obj.text_states[i], obj.text_mask[i], obj.text_pooled[i])
    with torch.no_grad():
        pred = prior(x_t.float(), batch["t_prior"], cond).double()
    want = ((pred - x0) ** 2).mean()
    assert abs(float(loss) - float(want)) < 1e-5 * max(1.0, float(want))
    cos = F.cosine_similarity(pred * std + mean, z, dim=-1).mean()
    assert abs(cosine - float(cos)) < 1e-5
    # the loss reads the condition: the other drop setting gives another loss
    with torch.no_grad():
        other, _ = obj.prior_loss(_batch(obj, 1, drop_prior=not drop))
    assert float(other) != float(loss)


def test_the_decoder_loss_drops_the_embedding_and_the_text(objective):
    obj = objective
    batch = _batch(obj, 2)
    batch["drop_embedding"] = torch.tensor([True, False] * 4)
    batch["drop_text"] = torch.tensor([True, True, False, False] * 2)
    with torch.no_grad():
        loss = obj.decoder_loss(batch)
    sched = obj.scheduler
    z0, eps, t = batch["z0"].double(), batch["noise"].double(), batch["t"]
    ab = torch.tensor([float(sched.alphas_cumprod[int(s)]) for s in t],
                      dtype=torch.float64)[:, None, None, None]
    z_t = ab.sqrt() * z0 + (1 - ab).sqrt() * eps
    states = torch.stack([obj.null_states[0] if d else obj.text_states[c]
                          for d, c in zip(batch["drop_text"], batch["caption"])])
    emb = torch.stack([torch.zeros_like(e) if d else e
                       for d, e in zip(batch["drop_embedding"], batch["embedding"])])
    with torch.no_grad():
        out = obj.noise_model(z_t.float(), t, states, cond_vector=emb).double()
    v = ab.sqrt() * eps - (1 - ab).sqrt() * z0  # the unet predicts v by default
    want = ((out - v) ** 2).mean()
    assert abs(float(loss) - float(want)) < 1e-5 * max(1.0, float(want))


def test_the_prior_statistics_are_fitted_on_the_training_embeddings(objective):
    prior, emb = objective.prior, objective.image_embeddings
    assert bool(prior.stats_fitted)
    torch.testing.assert_close(prior.embed_mean, emb.mean(0), atol=1e-5, rtol=0)
    torch.testing.assert_close(prior.standardize(emb).std(0), torch.ones(emb.shape[1]),
                               atol=1e-3, rtol=0)
    assert torch.allclose(emb.norm(dim=-1), torch.ones(len(emb)), atol=1e-5)  # unit vectors


# ------------------------------------------------------------- the pipeline


def _manual_loop(model, sched, x, steps, call):
    sched.set_timesteps(steps)
    for t in sched.timesteps:
        x = sched.step(call(model, x, int(t)), int(t), x)
    return x


def test_prior_guidance_is_the_cfg_combination_of_two_calls(pipe):
    captions = ["a red circle", "a blue square above a green triangle"]
    s, steps = 2.5, 3
    got = pipe.prior_embeddings(captions, generators=[torch.Generator().manual_seed(7 + i)
                                                      for i in range(2)],
                                steps=steps, guidance=s, candidates=1)
    states, mask, pooled = pipe.conditioner.text_condition(captions)
    cond = PriorCondition(states, mask, pooled)
    null = PriorCondition(*(v.expand(2, *v.shape[1:])
                            for v in pipe.conditioner.text_condition([""])))
    x = torch.stack([torch.randn(pipe.prior.embed_dim,
                                 generator=torch.Generator().manual_seed(7 + i))
                     for i in range(2)])

    def guided(model, x, t):
        u, c = model(x, t, null), model(x, t, cond)
        return u + s * (c - u)

    with torch.no_grad():
        x = _manual_loop(pipe.prior, pipe.prior_scheduler, x, steps, guided)
    want = F.normalize(pipe.prior.unstandardize(x), dim=-1)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    plain = pipe.prior_embeddings(captions, generators=[torch.Generator().manual_seed(7 + i)
                                                        for i in range(2)],
                                  steps=steps, guidance=1.0, candidates=1)
    assert not torch.allclose(plain, got)  # the scale reaches the result


def test_decoder_guidance_is_the_cfg_combination_of_two_calls(pipe):
    captions = ["a red circle", "a blue square"]
    emb = F.normalize(torch.randn(2, pipe.prior.embed_dim,
                                  generator=torch.Generator().manual_seed(1)), dim=-1)
    s, steps = 3.0, 3
    gens = [torch.Generator().manual_seed(20 + i) for i in range(2)]
    got = pipe.decode_embeddings(emb, captions, generators=gens, steps=steps, guidance=s,
                                 decode=False)
    states = pipe.conditioner(captions)
    null = pipe.conditioner.null(2)
    x = torch.stack([torch.randn(*pipe.sample_shape,
                                 generator=torch.Generator().manual_seed(20 + i))
                     for i in range(2)])

    def guided(model, x, t):
        u = model(x, t, null, cond_vector=torch.zeros_like(emb))
        c = model(x, t, states, cond_vector=emb)
        return u + s * (c - u)

    with torch.no_grad():
        want = _manual_loop(pipe.noise_model, pipe.scheduler, x, steps, guided)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_the_best_of_n_is_the_candidate_closest_to_the_text(pipe):
    caption = ["a red circle above a blue square"]
    g = torch.Generator().manual_seed(3)
    best = pipe.prior_embeddings(caption, generators=[g], steps=2, guidance=2.0,
                                 candidates=3)
    shared = torch.Generator().manual_seed(3)  # one generator drawing the 3 rows in turn
    each = pipe.prior_embeddings(caption * 3, generators=[shared] * 3, steps=2,
                                 guidance=2.0, candidates=1)
    pooled = pipe.conditioner.text_condition(caption)[2]
    pick = int((each @ pooled[0]).argmax())
    torch.testing.assert_close(best[0], each[pick])


def test_an_image_does_not_depend_on_its_batch(pipe):
    together = pipe(["a red circle", "a blue square"], seed=3, steps=2, prior_steps=2)
    alone = pipe(["a blue square"], seed=4, steps=2, prior_steps=2)
    torch.testing.assert_close(together[1:], alone, atol=1e-5, rtol=1e-5)
    assert together.shape == (2, 3, 16, 16) and float(together.abs().max()) <= 1


def test_evaluations_per_image_count_both_stages(pipe):
    n = pipe.evaluations_per_image(steps=10, guidance=3, prior_steps=5, prior_guidance=4,
                                   candidates=2)
    assert n == 1 + 2 * 5 * 2 + 10 * 2  # text encoder, prior, decoder (no first stage)
    assert pipe.evaluations_per_image(steps=10, guidance=1, embedding="text") == 1 + 10
    with pytest.raises(BadConfig, match="unknown key .temperature."):
        pipe.evaluations_per_image(temperature=1.0)


def test_the_text_route_gives_the_decoder_the_text_embedding(pipe, monkeypatch):
    seen = []
    decode = pipe.decode_embeddings

    def spy(embeddings, *args, **kwargs):
        seen.append(embeddings)
        return decode(embeddings, *args, **kwargs)

    monkeypatch.setattr(pipe, "decode_embeddings", spy)
    pipe(["a red circle"], steps=2, embedding="text")
    torch.testing.assert_close(seen[0], pipe.conditioner.text_condition(["a red circle"])[2])


def test_variations_decode_the_images_fixed_embedding(pipe, monkeypatch):
    images = pipe(["a red circle", "a blue square"], seed=0, steps=2, prior_steps=2)
    emb = pipe.image_embeddings(images)
    calls = []
    model = pipe.noise_model
    forward = model.forward

    def spy(x, t, context=None, **kwargs):
        calls.append(kwargs["cond_vector"].clone())
        return forward(x, t, context, **kwargs)

    monkeypatch.setattr(model, "forward", spy)
    out = pipe.variations(images, seed=5, steps=3, guidance=2.0)
    assert len(calls) == 3  # one batched call a step
    for vector in calls:  # [zero; embedding] at every step, the embedding unchanged
        torch.testing.assert_close(vector, torch.cat([torch.zeros_like(emb), emb]))
    monkeypatch.setattr(model, "forward", forward)
    again = pipe.decode_embeddings(emb, None, seed=5, steps=3, guidance=2.0)
    torch.testing.assert_close(out, again)
    other = pipe.variations(images, seed=6, steps=3, guidance=2.0)
    assert not torch.allclose(out, other)  # new samples of the same embedding
    with pytest.raises(BadData, match="images must be"):
        pipe.variations(torch.zeros(1, 3, 8, 8))


# ------------------------------------------------------------------ the run


def test_the_run_reports_the_prior_the_ablation_and_the_variations(run):
    run_dir, s = run
    for key in ("unseen_colour", "floor_colour", "g1_colour", "g3_colour", "prior_g1_colour",
                "text_embedding_colour", "true_embedding_colour", "prior_cosine",
                "prior_cosine_floor", "text_cosine", "variation_colour",
                "variation_diversity_position", "variation_pixel_distance",
                "evaluations_per_image", "images_per_s", "train_wall_s"):
        assert key in s, key
    assert -1 <= s["prior_cosine"] <= 1 and -1 <= s["prior_cosine_floor"] <= 1
    log = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert {"loss_decoder", "loss_prior", "prior_cosine"} <= set(log[-1])
    assert abs(log[-1]["loss"] - log[-1]["loss_decoder"] - log[-1]["loss_prior"]) < 1e-4
    meta = json.loads((run_dir / "pipeline.json").read_text())
    assert meta["pipeline"] == "unclip" and meta["ema_modules"]["prior"] == "prior_ema"


def test_gaf_sample_makes_variations_of_a_picture(run, tmp_path):
    picture = tmp_path / "picture.png"
    Image.new("RGB", (24, 24), (200, 30, 30)).save(picture)
    out = tmp_path / "grid.png"
    result = CliRunner().invoke(main, ["sample", "--pipeline", str(run[0]), "--image",
                                       str(picture), "-n", "3", "--steps", "2", "-q",
                                       "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "resized from 24x24 to 16x16" in result.output
    assert Image.open(out).size == (2 + 3 * 18, 2 + 1 * 18)
    both = CliRunner().invoke(main, ["sample", "--pipeline", str(run[0]), "--image",
                                     str(picture), "--prompt", "a red circle"])
    assert both.exit_code == 2 and "does not edit pictures" in both.output
    hole = tmp_path / "hole.png"
    Image.new("L", (16, 16), 0).save(hole)
    masked = CliRunner().invoke(main, ["sample", "--pipeline", str(run[0]), "--image",
                                       str(picture), "--mask", str(hole)])
    assert masked.exit_code == 2 and "does not edit pictures" in masked.output
    with pytest.raises(BadConfig, match="does not inpaint"):
        UnCLIPPipeline.from_run(run[0]).inpaint(["a red circle"], torch.zeros(1, 3, 16, 16),
                                                torch.ones(1, 1, 16, 16))
    bad = tmp_path / "bad.png"
    bad.write_text("not an image")
    unreadable = CliRunner().invoke(main, ["sample", "--pipeline", str(run[0]), "--image",
                                           str(bad)])
    assert unreadable.exit_code == 2 and "bad.png" in unreadable.output
    text = CliRunner().invoke(main, ["sample", "--pipeline", str(run[0]), "--prompt",
                                     "a red circle", "--steps", "2", "--option",
                                     "prior_steps=2", "-q", "--out", str(tmp_path / "t.png")])
    assert text.exit_code == 0, text.output


def test_clear_errors(run, tmp_path, tiny_clip):
    meta = json.loads((run[0] / "pipeline.json").read_text())
    del meta["prior_scheduler"]
    broken = tmp_path / "broken"
    broken.mkdir()
    for name in ("noise_model", "noise_model_ema", "prior", "prior_ema"):
        (broken / name).symlink_to(run[0] / name)
    (broken / "pipeline.json").write_text(json.dumps(meta))
    with pytest.raises(BadData, match="prior_scheduler"):
        UnCLIPPipeline.from_run(broken)
    with pytest.raises(BadConfig, match="prior.text_width=16"):
        gaf.run("unclip", autoencoder="none",
                sets=[*_sets(tiny_clip, tmp_path, "wrong"), "prior.text_width=8"])
    with pytest.raises(BadConfig, match="noise-model.cond_dim=16"):
        gaf.run("unclip", autoencoder="none",
                sets=[*_sets(tiny_clip, tmp_path, "wrong2"), "noise-model.cond_dim=8"])
