"""A tiny trained CLIP shared by the text-to-image tests (the GAN's frozen text embedding,
the token models' generation CLIP that reranks candidates)."""

from __future__ import annotations

import json

import pytest

import gaf

#: 16x16 shapes, small towers: a CLIP in a few seconds
CLIP_SETS = ["dataset.resolution=16", "dataset.size=200", "encoder.resolution=16",
             "encoder.image_width=8", "encoder.embed_dim=16", "encoder.text_width=16",
             "encoder.text_layers=1", "encoder.text_heads=2", "train.steps=10",
             "train.batch_size=32", "train.warmup_steps=0", "objective.eval_pairs=0",
             "progress=false"]


@pytest.fixture(scope="session")
def tiny_clip(tmp_path_factory):
    out = tmp_path_factory.mktemp("gan-clip")
    run_dir, _ = gaf.run("clip", sets=[f"out_dir={json.dumps(str(out))}", "name=\"clip\"",
                                       *CLIP_SETS])
    return run_dir
