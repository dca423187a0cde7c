"""The LDM evaluation's shuffled-caption floor: a seeded derangement."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from gaf.plugins.t2i.ldm_eval import shuffled
from gaf.seeding import rng


@given(st.integers(0, 40), st.integers(0, 2 ** 32))
def test_shuffled_is_a_seeded_derangement(n, seed):
    items = [f"caption {i}" for i in range(n)]
    out = shuffled(items, seed)
    assert sorted(out) == sorted(items)
    if n >= 2:
        assert all(a != b for a, b in zip(out, items))  # no caption keeps its image
    assert shuffled(items, seed) == out  # a pure function of (items, seed)


def test_shuffled_draws_from_its_named_stream():
    items = list(range(6))
    perm = rng(3, "floor-derangement").permutation(6).tolist()
    out = shuffled(items, 3)
    for k in range(6):  # item perm[k - 1] goes to place perm[k]
        assert out[perm[k]] == items[perm[k - 1]]
