"""benchmarks/text_encoder_probe.py: its readouts are the lm-text conditioner's states,
and its attention probe reads an attribute that the states hold and not one they do not."""

from __future__ import annotations

import pytest
import torch

from script_module import load_script  # tests/ is on sys.path (conftest)
from tiny_lm import save_tiny_lm

probe = load_script("benchmarks/text_encoder_probe.py")


@pytest.fixture(scope="module")
def lm_dir(tmp_path_factory):
    return str(save_tiny_lm(tmp_path_factory.mktemp("lm"))[0])


def test_readouts_are_the_conditioners_states(lm_dir):
    from gaf.plugins.conditioners.frozen_lm import FrozenLMText, FrozenLMTextConfig

    captions, labels = probe.labelled_captions(40)
    assert len(captions) == 40 and all(len(v) == 40 for v in labels.values())
    states, mask = probe.readouts(lm_dir, captions, batch=16)
    assert set(states) == {"final", "final+embeddings", "embeddings", "block 0", "block 1"}
    cond = FrozenLMText(FrozenLMTextConfig(lm=lm_dir))
    torch.testing.assert_close(states["final+embeddings"], cond(captions), rtol=0, atol=1e-5)
    plain = FrozenLMText(FrozenLMTextConfig(lm=lm_dir, embeddings=False))
    torch.testing.assert_close(states["final"], plain(captions), rtol=0, atol=1e-6)
    assert mask.shape == states["final"].shape[:2]


def test_the_probe_reads_what_is_there_and_not_what_is_not(lm_dir):
    captions, labels = probe.labelled_captions(600)
    states, mask = probe.readouts(lm_dir, captions)
    # the input embeddings name each colour word: the probe reads colour from them far
    # above chance (six colours), even from an untrained LM's 16-wide embeddings
    assert probe.probe_accuracy(states["embeddings"], mask, labels["colour"], heads=4,
                                steps=300, seed=0) > 0.6
    # labels unrelated to the captions: near chance
    shuffled = [labels["colour"][(i * 7 + 3) % len(captions)] for i in range(len(captions))]
    assert probe.probe_accuracy(states["embeddings"], mask, shuffled, heads=4, steps=300,
                                seed=0) < 0.35
