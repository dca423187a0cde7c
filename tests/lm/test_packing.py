"""Packing pairs that share a prompt into one row (block mask): same results as unpacked."""

from __future__ import annotations

import pytest
import torch
from hypothesis import event, given, settings
from hypothesis import strategies as st

from gaf.plugins.lm.batching import LMBatch, build_batch, packing_pays, pair_ids
from gaf.plugins.lm.gpt2 import GPT2Config, GPT2Policy
from gaf.plugins.lm.tokenizer import BPETokenizer, bytes_to_unicode

BOS, EOS, PAD = 256, 257, 258


def tiny(seed: int = 0, *, n_positions: int = 64, tokenizer=None, **kw) -> GPT2Policy:
    """A 2-layer d=32 model with large weights, so outputs depend strongly on inputs."""
    torch.manual_seed(seed)
    if tokenizer is not None:
        kw.setdefault("vocab_size", tokenizer.vocab_size)
    cfg = GPT2Config(d_model=32, n_layer=2, n_head=2, n_positions=n_positions, **kw)
    model = GPT2Policy(cfg, tokenizer=tokenizer)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.normal_(0.0, 0.3)
            else:
                p.add_(torch.randn_like(p) * 0.1)
    return model.eval()


@pytest.fixture(scope="module")
def model() -> GPT2Policy:
    return tiny(0)


def batches(m: GPT2Policy, prompts, completions) -> tuple[LMBatch, LMBatch]:
    """(always packed where a prompt is shared, never packed)."""
    args = (m.tokenizer, prompts, completions, m.config.n_positions, m.device)
    return build_batch(*args, pack=True), build_batch(*args, pack=False)


def assert_same(m: GPT2Policy, prompts, completions, atol=1e-5, *, expect_packed=None):
    packed, plain = batches(m, prompts, completions)
    if expect_packed is not None:
        assert packed.packed == expect_packed
    assert not plain.packed
    got, want = m.completion_logprobs(packed), m.completion_logprobs(plain)
    assert got.token_logps.shape == want.token_logps.shape
    assert got.token_logps.dtype == want.token_logps.dtype
    assert torch.equal(got.mask, want.mask)
    assert torch.all(got.token_logps[~got.mask] == 0)
    assert torch.allclose(got.token_logps, want.token_logps, atol=atol, rtol=0)
    return packed, got


# ------------------------------------------------------------------------ layout


def test_packed_layout_matches_the_module_docstring():
    m = tiny(n_positions=16)
    b = m.prepare(["pq", "pq"], ["yz", "w"])
    assert b.packed
    row = [BOS, *b"pq", *b"yz", EOS, *b"w", EOS]
    assert b.input_ids.tolist() == [row]
    assert b.position_ids.tolist() == [[0, 1, 2, 3, 4, 5, 3, 4]]
    assert b.segment_ids.tolist() == [[0, 0, 0, 1, 1, 1, 2, 2]]
    assert b.attention_mask.tolist() == [[True] * 8]
    assert b.target_ids.tolist() == [row[1:] + [PAD]]
    assert b.completion_mask.tolist() == [[False, False, True, True, True, False, True, False]]
    assert b.pair_row.tolist() == [0, 0]
    assert (b.score_index % 8).tolist() == [2, 3, 4, 2, 6]
    assert b.score_target.tolist() == [*b"yz", EOS, *b"w", EOS]
    assert b.score_pair.tolist() == [0, 0, 0, 1, 1]
    assert b.score_slot.tolist() == [0, 1, 2, 0, 1]
    T, F_ = True, False
    assert b.attention_mask_4d.shape == (1, 1, 8, 8)
    assert b.attention_mask_4d[0, 0].tolist() == [
        [T, F_, F_, F_, F_, F_, F_, F_],
        [T, T, F_, F_, F_, F_, F_, F_],
        [T, T, T, F_, F_, F_, F_, F_],
        [T, T, T, T, F_, F_, F_, F_],
        [T, T, T, T, T, F_, F_, F_],
        [T, T, T, T, T, T, F_, F_],
        [T, T, T, F_, F_, F_, T, F_],   # 'w' sees the prompt and itself, not 'yz EOS'
        [T, T, T, F_, F_, F_, T, T],
    ]


def test_mixed_batch_rows_and_pair_order(model):
    prompts = ["aa", "bbb", "bbb", "c", "bbb"]          # the last "bbb" is not adjacent
    completions = ["1", "22", "333", "4", "5"]
    b, _ = batches(model, prompts, completions)
    assert b.packed and len(b) == 5 and b.input_ids.shape[0] == 4
    assert b.pair_row.tolist() == [0, 1, 1, 2, 3]
    assert b.input_ids[1].tolist() == [BOS, *b"bbb", *b"22", EOS, *b"333", EOS]
    T = b.input_ids.shape[1]
    assert b.input_ids[0].tolist() == [BOS, *b"aa", *b"1", EOS] + [PAD] * (T - 5)
    assert b.segment_ids[0].tolist() == [0, 0, 0, 1, 1] + [-1] * (T - 5)
    # padded queries see something (themselves), so no NaN anywhere
    assert b.attention_mask_4d.any(-1).all()
    with torch.no_grad():
        hidden = model(b.input_ids, position_ids=b.position_ids, mask_4d=b.attention_mask_4d)
    assert torch.isfinite(hidden).all()
    assert_same(model, prompts, completions)


def test_packed_batch_moves_between_devices(model):
    b, plain = batches(model, ["x", "x"], ["a", "b"])
    moved = b.to("cpu")
    assert moved.packed and torch.equal(moved.attention_mask_4d, b.attention_mask_4d)
    assert plain.to("cpu").position_ids is None


# ------------------------------------------------------------------- fast path


def test_no_sharing_keeps_the_plain_causal_batch(model):
    prompts, completions = ["one", "two", "one", "three"], ["a", "b", "c", "d"]
    b = model.prepare(prompts, completions)
    assert not b.packed
    assert b.position_ids is None and b.attention_mask_4d is None and b.pair_row is None
    plain = build_batch(model.tokenizer, prompts, completions, 64, pack=False)
    for name in ("input_ids", "target_ids", "attention_mask", "completion_mask"):
        assert torch.equal(getattr(b, name), getattr(plain, name))


def test_empty_prompts_are_not_packed(model):
    """SFT ``{"text"}`` records have empty prompts: a shared BOS saves nothing."""
    b = build_batch(model.tokenizer, ["", "", ""], ["abc", "de", "f"], 64, pack=True)
    assert not b.packed


def test_fast_path_calls_the_model_without_mask(model, monkeypatch):
    calls = []
    original = GPT2Policy.forward

    def spy(self, input_ids, *args, **kw):
        calls.append((args, kw))
        return original(self, input_ids, *args, **kw)

    monkeypatch.setattr(GPT2Policy, "forward", spy)
    model.completion_logprobs(model.prepare(["p1", "p2"], ["a", "b"]))
    assert calls == [((), {})]
    calls.clear()
    packed, _ = batches(model, ["p", "p"], ["a", "b"])
    model.completion_logprobs(packed)
    assert calls[0][1]["mask_4d"] is packed.attention_mask_4d


def test_prepare_packs_only_when_it_is_estimated_cheaper():
    m = GPT2Policy(GPT2Config(d_model=128, n_layer=1, n_head=4, n_positions=256)).eval()

    def groups(n_groups, k, lp, lc):
        prompts, completions = [], []
        for g in range(n_groups):
            for i in range(k):
                prompts.append(f"{g}" * lp)
                completions.append(chr(97 + i) * lc)
        return prompts, completions

    dpo_like = groups(8, 4, 36, 48)
    long_completions = groups(8, 4, 8, 200)
    assert m.prepare(*dpo_like).packed
    assert not m.prepare(*long_completions).packed
    assert packing_pays((32, 86), (8, 233), 1 / 768)
    assert not packing_pays((32, 210), (8, 813), 1 / 768)
    assert packing_pays((32, 210), (8, 813), 0.0)


def test_completion_logprobs_project_only_scored_outputs(model, monkeypatch):
    packed, _ = batches(model, ["shared", "shared", "own"], ["abc", "de", "f"])
    seen = []
    original = model.logits

    def spy(hidden):
        seen.append(tuple(hidden.shape))
        return original(hidden)

    monkeypatch.setattr(model, "logits", spy)
    model.completion_logprobs(packed)
    assert seen == [(4 + 3 + 2, 32)]


# ------------------------------------------------------------------- equality


GROUPED = (
    ["the prompt", "the prompt", "the prompt", "the prompt", "x", "other one", "other one"],
    ["first answer", "2nd", "", "a rather longer third completion", "y", "A", "BB"],
)


def test_packed_equals_unpacked_float32(model):
    b, got = assert_same(model, *GROUPED, expect_packed=True)
    assert b.input_ids.shape[0] == 3
    assert got.count.tolist() == [13, 4, 1, 33, 2, 2, 3]


def test_packed_equals_unpacked_float64():
    m = tiny(1).double()
    got = assert_same(m, *GROUPED, atol=1e-10, expect_packed=True)[1]
    assert got.token_logps.dtype == torch.float64
    # and reversed order of pairs within and across groups
    assert_same(m, GROUPED[0][::-1], GROUPED[1][::-1], atol=1e-10, expect_packed=True)


def test_packed_gradients_equal_unpacked():
    m = tiny(2).train()  # dropout 0: train mode is deterministic
    packed, plain = batches(m, *GROUPED)
    grads = []
    for batch in (packed, plain):
        m.zero_grad()
        lp = m.completion_logprobs(batch)
        (lp.sum * torch.linspace(-1, 1, len(batch))).sum().backward()
        grads.append({n: p.grad.clone() for n, p in m.named_parameters()})
    for name, g in grads[0].items():
        assert torch.allclose(g, grads[1][name], atol=1e-5, rtol=1e-4), name
    assert grads[0]["transformer.wpe.weight"].abs().sum() > 0


_prompt_pool = st.sampled_from(["", "a", "ab", "hello", "hello there, friend"])
_completion = st.text(alphabet="xyz ._", max_size=12)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(_prompt_pool, st.lists(_completion, min_size=1, max_size=4)),
                min_size=1, max_size=5),
       st.sampled_from([12, 24, 64]))
def test_random_groupings_match_unpacked(groups, n_positions):
    m = tiny(3, n_positions=n_positions).double()
    prompts = [p for p, cs in groups for _ in cs]
    completions = [c for _, cs in groups for c in cs]
    packed, got = assert_same(m, prompts, completions, atol=1e-10)
    kept = [tuple(ids[:n]) for ids, n in
            (pair_ids(m.tokenizer, p, c, n_positions) for p, c in zip(prompts, completions))]
    shares = any(a == b and len(a) > 1 for a, b in zip(kept, kept[1:]))
    assert packed.packed == shares
    event(f"packed={packed.packed}")
    if packed.packed:  # rows are runs of equal kept contexts, in order
        rows = packed.pair_row.tolist()
        assert rows == sorted(rows)
        for b in range(1, len(rows)):
            assert (rows[b] == rows[b - 1]) == (kept[b] == kept[b - 1] and len(kept[b]) > 1)


# ------------------------------------------------------------------- truncation


def test_truncation_matches_pair_ids():
    m = tiny(4, n_positions=12).double()
    prompts = ["0123456789abcdef"] * 5
    completions = ["xy", "uv", "long-ish", "this one alone is too long", "zz"]
    packed, got = assert_same(m, prompts, completions, atol=1e-10, expect_packed=True)
    # "xy", "uv" keep the same 8 prompt bytes; "long-ish" keeps 2; the too-long
    # completion drops the prompt and EOS; "zz" keeps 8 again (a new run)
    assert packed.pair_row.tolist() == [0, 0, 1, 2, 3]
    assert packed.input_ids[0, :15].tolist() == [BOS, *b"89abcdef", *b"xy", EOS, *b"uv", EOS]
    assert packed.input_ids[2, :12].tolist() == [BOS, *b"this one al"]
    assert packed.position_ids.max() < 12
    assert packed.input_ids.shape[1] > 12  # a packed row may be longer than n_positions
    assert got.count.tolist() == [3, 3, 9, 11, 3]


# -------------------------------------------------------------- BPE boundaries


@pytest.fixture(scope="module")
def bpe() -> BPETokenizer:
    be = bytes_to_unicode()
    vocab = {c: i for i, c in enumerate(be.values())}
    merges = [("a", "t"), ("c", "at"), ("Ġ", "s"), ("Ġs", "at")]
    for a, b in merges:
        vocab[a + b] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    return BPETokenizer(vocab, merges)


def test_bpe_prompt_boundary_is_not_merged(bpe):
    prompt, completions = "the ca", ["t sat", "t", "at sat"]
    assert bpe.encode(prompt + completions[0]) != bpe.encode(prompt) + bpe.encode(completions[0])
    m = tiny(5, tokenizer=bpe).double()
    eot = bpe.eos_id
    assert bpe.bos_id == eot == bpe.pad_id
    packed, got = assert_same(m, [prompt] * 3, completions, atol=1e-10, expect_packed=True)
    p = bpe.encode(prompt)
    row = packed.input_ids[0].tolist()
    segs = [bpe.encode(c) + [eot] for c in completions]
    assert row == [eot, *p, *segs[0], *segs[1], *segs[2]]  # prompt once, one BOS, EOS each
    assert row.count(eot) == 1 + len(completions)
    for b, seg in enumerate(segs):  # the scored tokens are exactly encode(completion) + EOS
        mine = packed.score_pair == b
        assert packed.score_target[mine].tolist() == seg
    assert got.count.tolist() == [len(s) for s in segs]
