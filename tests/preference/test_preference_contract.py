"""Every pairwise DPO-family objective declares what PreferenceObjective requires."""

from __future__ import annotations

import pytest

import gaf
from gaf.interfaces import PreferenceObjective

PAIRWISE = ["dpo", "cdpo", "robust", "ipo", "hinge", "simpo", "orpo"]


@pytest.mark.parametrize("name", PAIRWISE)
def test_pairwise_objectives_declare_the_preference_contract(name):
    cls = gaf.REGISTRY.entry("objective", name).load()
    for member in PreferenceObjective.__protocol_attrs__ if hasattr(
            PreferenceObjective, "__protocol_attrs__") else ("pair_loss", "reference_free", "beta"):
        assert hasattr(cls, member), f"{name} lacks {member}"
