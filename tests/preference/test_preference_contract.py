"""The whole DPO family implements the core PreferenceObjective contract."""

from __future__ import annotations

import pytest
import torch

import gaf
from gaf.interfaces import PreferenceObjective, SequenceLogProbs

FAMILY = ["dpo", "cdpo", "robust", "ipo", "hinge", "simpo", "orpo", "kto", "ranking-dpo"]


@pytest.mark.parametrize("name", FAMILY)
def test_every_family_member_is_a_preference_objective(name):
    obj = gaf.REGISTRY.get("objective", name)()
    assert isinstance(obj, PreferenceObjective)
    assert PreferenceObjective in type(obj).__mro__  # it subclasses the contract, not only fits it
    assert isinstance(obj.beta, float) and isinstance(obj.reference_free, bool)
    policy = SequenceLogProbs(torch.tensor([-3.0, -5.0], dtype=torch.float64),
                              torch.tensor([2.0, 4.0], dtype=torch.float64))
    ref = SequenceLogProbs(torch.tensor([-3.5, -4.0], dtype=torch.float64),
                           torch.tensor([2.0, 4.0], dtype=torch.float64))
    reward = obj.implicit_reward(policy, None if obj.reference_free else ref)
    expected = (obj.beta * policy.mean if obj.reference_free  # the documented forms;
                else obj.beta * (policy.mean - ref.mean) if name == "ipo"  # IPO's: means
                else obj.beta * (policy.sum - ref.sum))
    assert torch.allclose(reward, expected)


def test_an_objective_without_the_preference_members_is_not_one():
    class Plain:
        Config = dict

        def setup(self, ctx): ...

        def modules(self): ...

        def train_batch(self, index): ...

        def loss(self, batch): ...

        def evaluate(self, ctx): ...

    assert not isinstance(Plain(), PreferenceObjective)
