"""``lm-text``: a saved GPT-2 policy's hidden states as the caption context, frozen."""

from __future__ import annotations

import pytest
import torch

import gaf
from gaf.errors import BadConfig, BadData
from gaf.plugins.conditioners.frozen_lm import FrozenLMText, FrozenLMTextConfig
from tiny_lm import save_tiny_lm  # tests/ is on sys.path (conftest)


@pytest.fixture(scope="module")
def saved_lm(tmp_path_factory):
    return save_tiny_lm(tmp_path_factory.mktemp("lm"))


def _layer_norm64(x: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    x = x.double()
    return (x - x.mean(-1, keepdim=True)) / (x.var(-1, unbiased=False, keepdim=True)
                                              + eps).sqrt()


@pytest.mark.parametrize("embeddings", [True, False])
def test_states_are_the_lms_hidden_states_with_pads_zeroed(saved_lm, embeddings):
    """The final states (plus the layer-normed input embeddings by default), against a
    float64 reference."""
    path, policy = saved_lm
    cond = FrozenLMText(FrozenLMTextConfig(lm=str(path), max_length=16,
                                           embeddings=embeddings))
    captions = ["a red circle", "a large blue square to the left of a green star"]
    states = cond(captions)
    assert states.shape == (2, 16, 16) and cond.width == 16 and cond.tokens == 16
    tok = policy.tokenizer
    for i, caption in enumerate(captions):
        ids = [tok.bos_id, *tok.encode(" " + caption)]
        with torch.no_grad():
            want = policy(torch.tensor([ids]))[0].double()
            if embeddings:
                want = want + _layer_norm64(policy.transformer.wte.weight[ids])
        torch.testing.assert_close(states[i, :len(ids)].double(), want, rtol=0, atol=1e-5)
        assert torch.equal(states[i, len(ids):], torch.zeros(16 - len(ids), 16))
    # the empty caption: BOS then zeros, the null context
    null = cond.null(3)
    assert null.shape == (3, 16, 16)
    torch.testing.assert_close(null[0], cond([""])[0])
    assert torch.equal(null[0, 1:], torch.zeros(15, 16)) and null[0, 0].abs().sum() > 0


def test_it_is_frozen_and_records_an_absolute_path(saved_lm, monkeypatch, tmp_path):
    path, _ = saved_lm
    monkeypatch.chdir(path.parent)
    cond = gaf.REGISTRY.create("conditioner", "lm-text", lm="policy")
    assert cond.config.lm == str(path.resolve())
    assert not cond.trainable and not any(p.requires_grad for p in cond.parameters())
    cond.train()
    assert not cond.lm.training


def test_bad_inputs_name_the_option(saved_lm, tmp_path):
    path, _ = saved_lm
    with pytest.raises(BadConfig, match="conditioner.lm"):
        FrozenLMText(FrozenLMTextConfig())
    with pytest.raises(BadConfig, match="does not exist"):
        FrozenLMText(FrozenLMTextConfig(lm=str(tmp_path / "nowhere")))
    cond = FrozenLMText(FrozenLMTextConfig(lm=str(path), max_length=4))
    with pytest.raises(BadData, match="max_length"):
        cond(["a large blue square to the left of a green star"])
    with pytest.raises(BadConfig, match="n_positions"):
        FrozenLMText(FrozenLMTextConfig(lm=str(path), max_length=64))


def test_embeddings_need_a_model_that_has_them(saved_lm, monkeypatch):
    path, _ = saved_lm
    cond = FrozenLMText(FrozenLMTextConfig(lm=str(path), embeddings=False))
    assert cond(["a red circle"]).shape[0] == 1
    monkeypatch.setattr(type(cond.lm), "transformer", None, raising=False)
    with pytest.raises(BadConfig, match="conditioner.embeddings=false"):
        FrozenLMText(FrozenLMTextConfig(lm=str(path)))
