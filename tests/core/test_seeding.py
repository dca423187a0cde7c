"""gaf.seeding: named random streams and the epoch order are pure functions of their
inputs, the same in every process (no salted hash), and distinct across names and keys.

Only deterministic assertions: a property that held by luck could flake."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from gaf import seeding
from gaf.runs import RunContext
from gaf.seeding import EpochOrder, entropy, rng, stream_seed, torch_generator, torch_seed
from gaf.spec import resolve

# a stream name is any non-empty string; keys and seeds are the integers runs use
names = st.text(min_size=1, max_size=12)
seeds = st.integers(-(2 ** 63), 2 ** 64 - 1)
keys = st.lists(st.integers(0, 2 ** 64 - 1), max_size=3)


def test_entropy_is_the_documented_closed_form():
    """Integers only: the words SeedSequence gets are fixed-width fields (seed, BLAKE2b
    of the name, key count, keys), so the derivation cannot drift unnoticed."""
    digest = int.from_bytes(hashlib.blake2b(b"rollouts", digest_size=8).digest(), "little")
    lo, hi = digest % 2 ** 32, digest >> 32
    assert entropy(5, "rollouts", 3, 2 ** 40 + 1) == [5, 0, lo, hi, 2, 3, 0, 1, 2 ** 8]
    assert entropy(-1, "rollouts") == [2 ** 32 - 1, 2 ** 32 - 1, lo, hi, 0]
    assert stream_seed(5, "rollouts", 3, 2 ** 40 + 1).entropy == entropy(5, "rollouts", 3,
                                                                          2 ** 40 + 1)


def test_pinned_values():
    """SeedSequence's output is stable across numpy versions (numpy's compatibility
    policy), so these integers change only if gaf changes how streams are derived,
    which changes every run's random draws: do that knowingly, once."""
    assert torch_seed(0, "sft-order") == _SFT_ORDER_0
    assert stream_seed(1234, "rollouts", 7, 1).generate_state(2).tolist() == _ROLLOUTS


_SFT_ORDER_0 = 14511222594894539223
_ROLLOUTS = [21941067, 2696485097]


_CHILD = """
import json, sys
from gaf.seeding import EpochOrder, rng, torch_seed
out = {"ints": rng(7, "eval-policy-samples", 2, 1).integers(0, 2 ** 31, 6).tolist(),
       "torch": torch_seed(7, "preference-labels"),
       "order": EpochOrder(10, 7, "sft-order").permutation(3).tolist()}
print(json.dumps(out))
"""


@pytest.mark.parametrize("hash_seed", ["1", "2"])
def test_same_stream_in_a_fresh_process(hash_seed):
    """Fresh interpreters with different PYTHONHASHSEED draw the same integers as this
    one: names are not hashed with the salted hash()."""
    env = {**os.environ, "PYTHONHASHSEED": hash_seed}
    out = subprocess.run([sys.executable, "-c", _CHILD], capture_output=True, text=True,
                         env=env, check=True)
    child = json.loads(out.stdout)
    assert child == {"ints": rng(7, "eval-policy-samples", 2, 1).integers(0, 2 ** 31, 6).tolist(),
                     "torch": torch_seed(7, "preference-labels"),
                     "order": EpochOrder(10, 7, "sft-order").permutation(3).tolist()}


@given(seeds, names, keys)
@settings(max_examples=50, deadline=None)
def test_a_stream_is_a_pure_function_of_its_inputs(seed, name, ks):
    a = rng(seed, name, *ks).integers(0, 2 ** 63, 4).tolist()
    assert a == rng(seed, name, *ks).integers(0, 2 ** 63, 4).tolist()
    assert torch_seed(seed, name, *ks) == torch_seed(seed, name, *ks)


@given(seeds, seeds, names, names, keys, keys)
@settings(max_examples=100, deadline=None)
def test_different_inputs_give_different_entropy(s1, s2, n1, n2, k1, k2):
    """Different (seed, name, keys) never share SeedSequence's input (names up to their
    64-bit BLAKE2b). Whether two inputs could still mix to one stream is
    SeedSequence's business: a property could only check it by luck."""
    a = (s1 % 2 ** 64, seeding.name_words(n1), k1)
    b = (s2 % 2 ** 64, seeding.name_words(n2), k2)
    assert (entropy(s1, n1, *k1) == entropy(s2, n2, *k2)) == (a == b)
    assert entropy(s1, n1, *k1) != entropy(s1, n1, *k1, 0)


def test_names_keys_and_seeds_select_different_streams():
    """A few fixed cases (deterministic): the draws themselves differ."""
    def draw(seed, name, *ks):
        return rng(seed, name, *ks).integers(0, 2 ** 63, 4).tolist()

    base = draw(0, "sft-order", 1)
    assert base != draw(0, "ptx-order", 1)
    assert base != draw(0, "sft-order", 2)
    assert base != draw(0, "sft-order", 1, 0)  # an extra key is another stream
    assert base != draw(0, "sft-order")
    assert base != draw(1, "sft-order", 1)
    assert draw(0, "a", 1, 2) != draw(0, "a", 2, 1)  # keys are ordered


def test_torch_generator_draws_from_the_stream():
    a = torch.randint(0, 2 ** 62, (4,), generator=torch_generator(3, "rollouts", 0, 1))
    b = torch.randint(0, 2 ** 62, (4,), generator=torch_generator(3, "rollouts", 0, 1))
    c = torch.randint(0, 2 ** 62, (4,), generator=torch_generator(3, "rollouts", 0, 2))
    assert a.tolist() == b.tolist() and a.tolist() != c.tolist()
    assert torch_generator(3, "rollouts").initial_seed() == torch_seed(3, "rollouts")


@pytest.mark.parametrize("bad", [("", ()), (3, ()), ("x", (-1,)), ("x", (1.5,)),
                                 ("x", (2 ** 64,))])
def test_bad_names_and_keys_are_refused(bad):
    name, ks = bad
    with pytest.raises((TypeError, ValueError)):
        rng(0, name, *ks)


def test_seed_range():
    with pytest.raises(ValueError, match="seed"):
        stream_seed(2 ** 64, "x")
    with pytest.raises(ValueError, match="seed"):
        EpochOrder(3, -(2 ** 63) - 1, "x")


@given(st.integers(1, 200), seeds, names, st.integers(0, 10 ** 6))
@settings(max_examples=100, deadline=None)
def test_epoch_order_epochs_are_permutations(n, seed, name, epoch):
    order = EpochOrder(n, seed, name)
    perm = order.permutation(epoch)
    assert sorted(perm.tolist()) == list(range(n))
    assert order.slice(epoch * n, n) == perm.tolist()
    # a fresh order (a resumed run) has the same epoch, without the earlier ones
    assert EpochOrder(n, seed, name).permutation(epoch).tolist() == perm.tolist()
    assert perm.tolist() == rng(seed, name, epoch).permutation(n).tolist()


@given(st.integers(1, 30), seeds, names, st.integers(0, 200), st.integers(0, 60))
@settings(max_examples=100, deadline=None)
def test_epoch_order_positions_are_pure_and_span_epochs(n, seed, name, start, size):
    order = EpochOrder(n, seed, name)
    for k in range(0, start, 7):  # whatever was drawn before, and in what order
        order.index(k)
    got = order.slice(start, size)
    assert got == [int(EpochOrder(n, seed, name).permutation(k // n)[k % n])
                   for k in range(start, start + size)]


def test_epoch_order_permutations_are_read_only_and_refuse_bad_input():
    order = EpochOrder(5, 0, "sft-order")
    with pytest.raises(ValueError):
        order.permutation(0)[0] = 1
    with pytest.raises(ValueError, match="at least one"):
        EpochOrder(0, 0, "sft-order")
    with pytest.raises(TypeError):
        EpochOrder(5, 0, 17)  # the old stream numbers are gone
    with pytest.raises(ValueError):
        order.index(-1)


def test_two_orders_of_one_run_are_independent():
    """The old PPO pretraining-mix order (seed + 1) was the prompt order of the next
    seed; named orders of 50 items differ in every one of the first 10 epochs."""
    for e in range(10):
        assert (EpochOrder(50, 0, "prompt-order").permutation(e).tolist()
                != EpochOrder(50, 0, "ptx-order").permutation(e).tolist())
        assert (EpochOrder(50, 1, "prompt-order").permutation(e).tolist()
                != EpochOrder(50, 0, "ptx-order").permutation(e).tolist())


def test_run_context_streams_use_the_run_seed(tmp_path):
    spec = resolve(objective="sft", sets=["seed=11", "device=cpu", "progress=false"])
    ctx = RunContext(spec, tmp_path)
    assert (ctx.rng("sampling", 2).integers(0, 2 ** 63, 3).tolist()
            == rng(11, "sampling", 2).integers(0, 2 ** 63, 3).tolist())
    gen = ctx.generator("rollouts", 4, 0)
    assert gen.device == torch.device("cpu")
    assert gen.initial_seed() == torch_seed(11, "rollouts", 4, 0)
    with pytest.raises(TypeError):
        ctx.generator(stream=21)
    assert isinstance(ctx.rng("x"), np.random.Generator)


def test_importing_seeding_imports_neither_numpy_nor_torch():
    code = ("import sys, gaf.seeding, gaf.runs; "
            "print('torch' in sys.modules, 'numpy' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.split() == ["False", "False"]
