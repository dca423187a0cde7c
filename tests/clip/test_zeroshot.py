"""gaf.plugins.clip.zeroshot: caption variants change one attribute in place, and the
zero-shot reading of a model that knows the answer is perfect, of one that knows
nothing is near its floor."""

from __future__ import annotations

import pytest
import torch

from gaf.plugins.clip.zeroshot import ATTRIBUTES, caption_variants, zero_shot_reading
from gaf.plugins.images.shapes_eval import parse_caption


def test_variants_change_one_attribute_in_place():
    c = "top left: a small red circle to the left of a large blue square"
    colours = caption_variants(c, "colour")
    assert len(colours) == 5 and colours[0] == c.replace("red", "green")
    assert all("blue square" in v for v in colours)  # the second object keeps its colour
    assert caption_variants(c, "size") == [c.replace("small", "large", 1)]
    positions = caption_variants(c, "position")
    assert len(positions) == 8 and positions[0].startswith("top middle: a small red circle")
    relations = caption_variants(c, "relation")
    assert [parse_caption(v)["relation"] for v in relations] == ["right of", "above", "below"]
    for a in ATTRIBUTES:
        for v in caption_variants(c, a):
            want, got = parse_caption(c), parse_caption(v)
            changed = {k for k in ("colour", "shape", "size", "position", "relation")
                       if want.get(k) != got.get(k)}
            assert changed == {a}, (a, v)


def test_unstated_attributes_have_no_variants():
    assert caption_variants("a red circle", "size") == []
    assert caption_variants("a red circle", "position") == []
    assert caption_variants("a red circle", "relation") == []
    assert caption_variants("middle: a red circle", "position")[0] == "top left: a red circle"
    with pytest.raises(ValueError, match="unknown attribute"):
        caption_variants("a red circle", "texture")


class _Oracle:
    """Images are indices; a text scores 1 against its own image's caption, else 0."""

    def __init__(self, captions, know=True):
        self.captions, self.know = list(captions), know

    def encode_image(self, images):
        return torch.nn.functional.one_hot(images.long(), len(self.captions) + 1).float()

    def encode_text(self, texts):
        rows = []
        for t in texts:
            v = torch.zeros(len(self.captions) + 1)
            if self.know and t in self.captions:
                v[self.captions.index(t)] = 1.0
            else:
                v[-1] = 1.0
            rows.append(v)
        return torch.stack(rows)


def test_an_oracle_reads_everything_and_a_blind_model_nothing():
    captions = ["a small red circle in the top left",
                "a red circle above a large blue square", "bottom right: a green cross"]
    images = torch.arange(len(captions))
    good = zero_shot_reading(_Oracle(captions), images, captions)
    for a in ATTRIBUTES:
        assert good[a] == 1.0, a
    assert good["colour_floor"] == pytest.approx(1 / 6) and good["colour_n"] == 3
    assert good["size_n"] == 1 and good["relation_n"] == 1 and good["position_n"] == 2
    assert good["r_precision"] == 1.0
    blind = zero_shot_reading(_Oracle(captions, know=False), images, captions)
    assert blind["colour"] == 0.0 and blind["r_precision"] == 0.0  # ties are not wins
