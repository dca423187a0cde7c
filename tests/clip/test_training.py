"""A ``clip`` run trained for seconds reads every attribute of unseen captions above its
chance floor (issue 16); zero-shot classification for class captions."""

from __future__ import annotations

import json
import math

import pytest

import torch

import gaf
from gaf.errors import BadConfig
from gaf.plugins.clip.loss import INIT_LOG_SCALE
from gaf.plugins.clip.objective import zero_shot_classes
from gaf.plugins.clip.zeroshot import ATTRIBUTES

pytestmark = pytest.mark.slow

SMALL = ["dataset.resolution=16", "encoder.resolution=16", "encoder.image_width=16",
         "encoder.embed_dim=32", "encoder.text_width=32", "train.batch_size=64",
         "train.warmup_steps=20"]


def test_a_short_run_reads_attributes_of_unseen_captions_above_chance(tmp_path):
    # 150 steps on 1,000 scenes at 16x16 (about 10 s on 2 cores)
    run_dir, s = gaf.run("clip", sets=[f"out_dir={json.dumps(str(tmp_path))}", *SMALL,
                                       "dataset.size=1000", "train.steps=150",
                                       "objective.eval_pairs=300"])
    for attr in (*ATTRIBUTES, "r_precision"):
        p, floor, n = (s[f"zero_shot_{attr}{x}"] for x in ("", "_floor", "_n"))
        # four standard errors of a guess at the floor's rate above it
        assert p > floor + 4 * math.sqrt(floor * (1 - floor) / n), (attr, p, floor, n)
    assert s["image_to_text_r5"] > 0.4 and s["text_to_image_r5"] > 0.4
    assert s["temperature"] != pytest.approx(math.exp(INIT_LOG_SCALE))
    log = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert log[-1]["loss"] < log[0]["loss"] - 0.5


class _Words:
    """Images are their features; caption ``"a w_k"`` maps to axis ``k``."""

    def encode_text(self, captions):
        return torch.stack([torch.eye(4)[int(c.split("w")[-1])] for c in captions])


def test_zero_shot_classes_closed_form():
    classes = ["a w0", "a w1", "a w2", "a w3"]
    feats = torch.tensor([[1.0, 0, 0, 0], [0.1, 0.9, 0, 0], [0, 0, 0.2, 0.8], [0, 0, 1, 0],
                          [5.0, 0, 0, 0]])
    captions = ["a w0", "a w1", "a w2", "a w2", "a w9"]  # the last is not a class: left out
    got = zero_shot_classes(_Words(), feats, captions, classes)
    assert got == {"zero_shot_class": 0.75, "zero_shot_class_floor": 0.5,
                   "zero_shot_class_chance": 0.25, "zero_shot_class_n": 4.0}
    assert zero_shot_classes(_Words(), feats[4:], ["a w9"], classes) == {}


def test_images_of_another_shape_are_a_clear_error(tmp_path):
    with pytest.raises(BadConfig, match="set encoder.in_channels=3 and encoder.resolution=16"):
        gaf.run("clip", sets=[f"out_dir={json.dumps(str(tmp_path))}", "dataset.resolution=16",
                              "dataset.size=8", "train.steps=1"])
