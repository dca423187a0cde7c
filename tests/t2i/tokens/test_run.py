"""A tiny ``dalle`` run end to end: the vqgan stage, training on cached codes, the shared
evaluation through the ``tokens`` pipeline, and ``gaf sample`` with a sampler of the
command line's choosing."""

from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner
from PIL import Image

import gaf
from gaf.cli import main
from gaf.errors import BadConfig
from gaf.plugins.t2i.tokens.pipeline import TokenPipeline

TINY = ["dataset.resolution=16", "dataset.size=64", "autoencoder.base_channels=8",
        "autoencoder.num_groups=4", "autoencoder.n_embed=16", "autoencoder.attention=false",
        "token-model.rows=4", "token-model.cols=4", "token-model.codebook=16",
        "token-model.d_model=32", "token-model.n_layer=1", "token-model.n_head=2",
        "train.steps=3", "train.batch_size=8", "train.log_every=1", "train.warmup_steps=0",
        "objective.first_stage_steps=2", "objective.eval_images=4", "objective.fd=false",
        "objective.eval_batch_size=4", "objective.throughput_batch=4",
        "objective.eval_clip_steps=2", "objective.grid_prompts=2",
        "objective.eval_guidance=[1.0, 3.0]", "sampler.k=4"]


@pytest.fixture(scope="module")
def run(tmp_path_factory, tiny_clip):
    out = tmp_path_factory.mktemp("dalle")
    return gaf.run("dalle", sets=[f"out_dir={json.dumps(str(out))}", "name=\"d\"", *TINY,
                                  f"objective.rerank_clip={json.dumps(str(tiny_clip))}",
                                  "objective.eval_candidates=[1, 2]"])


def test_a_tiny_run_trains_and_is_evaluated(run):
    run_dir, s = run
    assert s["status"] == "completed" and s["steps"] == 3
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert all({"loss", "loss_text", "loss_image", "dropped"} <= set(r) for r in rows)
    for key in ("unseen_colour", "floor_colour", "clip_score", "images_per_s",
                "tokenizer_psnr", "tokenizer_colour", "tokenizer_exact",
                "evaluations_per_image"):
        assert key in s, key
    assert s["evaluations_per_image"] == (16 + 1) * 2 + 1  # guided at fd_guidance 3
    assert any(k.startswith("guidance_1") for k in s)  # the sweep's other scale
    assert any(k.startswith("candidates_2") for k in s)  # reranked by the generation CLIP
    meta = json.loads((run_dir / "pipeline.json").read_text())
    assert meta["rerank_clip"] and "evaluation_clip" not in meta["rerank_clip"]
    assert meta["pipeline"] == "tokens" and meta["sampler"] == {"name": "top-k",
                                                                "options": {"k": 4,
                                                                            "temperature": 1.0}}


def test_the_pipeline_loads_and_a_seed_repeats_its_image(run):
    run_dir, _ = run
    pipe = TokenPipeline.from_run(run_dir)
    a = pipe(["a red circle", "a blue square"], seed=3)
    b = pipe(["a red circle"], seed=3)
    assert a.shape == (2, 3, 16, 16) and a.min() >= -1 and a.max() <= 1
    assert torch.allclose(a[0], b[0], atol=1e-5)  # image 0 depends on its seed only
    with pytest.raises(BadConfig, match="guidance must be >= 0"):
        pipe(["x"], guidance=-1.0)


def test_gaf_sample_takes_the_sampler_and_its_options(run, tmp_path):
    run_dir, _ = run
    out = tmp_path / "grid.png"
    result = CliRunner().invoke(main, ["sample", "--pipeline", str(run_dir), "--prompt",
                                       "a red circle", "-n", "2", "--guidance", "3",
                                       "--sampler", "top-k", "--set", "k=8", "--out",
                                       str(out)])
    assert result.exit_code == 0, result.output
    assert Image.open(out).size == (2 + 2 * 18, 2 + 18)
    bad = CliRunner().invoke(main, ["sample", "--pipeline", str(run_dir), "--prompt", "x",
                                    "--set", "kk=8", "--out", str(out)])
    assert bad.exit_code == 2 and "unknown key 'kk'" in bad.output
    bad = CliRunner().invoke(main, ["sample", "--pipeline", str(run_dir), "--prompt", "x",
                                    "--scheduler", "ddim", "--out", str(out)])
    assert bad.exit_code == 2 and "--scheduler does not apply" in bad.output


def test_reranking_keeps_each_captions_best_candidate_and_depends_on_its_seed_only(run):
    run_dir, _ = run
    pipe = TokenPipeline.from_run(run_dir)
    assert pipe.reranker is not None
    captions = ["a red circle", "a large blue square"]
    best = pipe(captions, seed=5, candidates=3)
    alone = pipe(captions[1:], generators=[torch.Generator().manual_seed(6)], candidates=3)
    assert best.shape == (2, 3, 16, 16)
    assert torch.allclose(best[1], alone[0], atol=1e-5)
    assert pipe.evaluations_per_image(candidates=3) == 3 * ((16 + 1) * 2 + 1) + 4
    pipe.reranker = None
    with pytest.raises(BadConfig, match="candidates=3 needs a generation CLIP"):
        pipe(captions, candidates=3)


def test_rerank_picks_the_highest_cosine():
    from gaf.plugins.t2i.tokens.pipeline import rerank

    class Fake:  # image i's embedding is one-hot at i % 3; every caption's is (0, 1, 0)
        def encode_image(self, images):
            return torch.eye(3)[torch.arange(len(images)) % 3] * (1 + images.flatten(1)[:, :1])

        def encode_text(self, captions):
            return torch.tensor([[0.0, 1.0, 0.0]]).expand(len(captions), -1)

    images = torch.arange(6.0).view(6, 1, 1, 1) / 10
    kept = rerank(Fake(), images, ["a", "b"], 3)
    assert kept.flatten().tolist() == pytest.approx([0.1, 0.4])  # candidate 1 of each


def test_the_generation_clip_may_not_be_the_evaluation_clip(tmp_path, tiny_clip):
    sets = [f"out_dir={json.dumps(str(tmp_path))}", *TINY,
            f"objective.rerank_clip={json.dumps(str(tiny_clip))}",
            f"objective.eval_clip_dir={json.dumps(str(tiny_clip))}"]
    with pytest.raises(BadConfig, match="is the evaluation CLIP"):
        gaf.run("dalle", sets=sets)
    with pytest.raises(BadConfig, match="eval_candidates above 1 needs objective.rerank_clip"):
        gaf.run("dalle", sets=[f"out_dir={json.dumps(str(tmp_path))}", *TINY,
                               "objective.eval_candidates=[4]"])


def test_a_token_model_that_does_not_fit_the_first_stage_names_the_options(tmp_path):
    sets = [f"out_dir={json.dumps(str(tmp_path))}", *TINY, "token-model.rows=8"]
    with pytest.raises(BadConfig, match="set token-model.rows=4, token-model.cols=4"):
        gaf.run("dalle", sets=sets)
    assert not any(p.name != "latest" for p in tmp_path.iterdir())


def test_the_tables_script_scores_every_cell_with_the_shared_evaluation(run, tiny_clip,
                                                                       tmp_path):
    from script_module import load_script  # tests/ is on sys.path (conftest)

    tables = load_script("examples/token_tables.py")
    run_dir, _ = run
    out = tmp_path / "tables"
    results = tables.main([str(run_dir), "--parti", str(run_dir), "--rerank-clip",
                           str(tiny_clip), "--top-k", "2,16", "--guidance", "1,3",
                           "--candidates", "1,2", "--captions", "4", "--out", str(out)])
    cells = [(c["k"], c["guidance"]) for c in results["guidance_topk"]]
    assert cells == [(2, 1.0), (2, 3.0), (16, 1.0), (16, 3.0)]
    unguided, guided = results["guidance_topk"][:2]
    assert unguided["evaluations_per_image"] == 16 + 1 + 1  # one pass per token, no branch
    assert guided["evaluations_per_image"] == (16 + 1) * 2 + 1
    assert [c["candidates"] for c in results["rerank"]] == [1, 2]
    assert results["rerank"][1]["evaluations_per_image"] == 2 * ((16 + 1) * 2 + 1) + 3
    # the same run as both models: the same images, so the same scores
    dalle, parti = results["models"]
    assert dalle["unseen_colour"] == parti["unseen_colour"]
    text = (out / "tables.md").read_text()
    assert text.count("| --- |") == 0 and "### guidance × top-k" in text
    assert len([line for line in text.splitlines() if line.startswith("| 2 | 1 |")]) == 1
    # under each table, the tokenizer's ceiling read by the evaluator (numbers, not "–")
    ceilings = [line for line in text.splitlines() if "real images' codes" in line]
    assert len(ceilings) == 3 and all(" ± " in line for line in ceilings)
    assert 0 <= results["tokenizer"]["tokenizer_colour"] <= 1
    for grid in ("grid_guidance_topk", "grid_rerank", "grid_models"):
        rows = (out / f"{grid}.txt").read_text().splitlines()[0]
        assert rows.startswith("rows: ")
        assert Image.open(out / f"{grid}.png").size[0] > 0


def test_a_reused_first_stage_counts_its_runs_training_time(run, tmp_path):
    run_dir, _ = run
    stage = run_dir / "first_stage"
    first = json.loads((stage / "summary.json").read_text())
    sets = [s for s in TINY if not s.startswith("autoencoder.")]
    again, s = gaf.run("dalle", autoencoder=str(stage / "autoencoder"),
                       sets=[f"out_dir={json.dumps(str(tmp_path))}", *sets])
    elapsed = [json.loads(line)["elapsed_s"]
               for line in (again / "metrics.jsonl").read_text().splitlines()]
    assert not (again / "first_stage").exists()
    assert s["train_wall_s"] == pytest.approx(
        elapsed[-1] + first["setup_s"] + first["train_s"], abs=0.02)
