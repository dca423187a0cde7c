"""GPT2Policy: layout, causality, batching, completion log-probs, generation, training."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from gaf.config import from_dict
from gaf.errors import BadConfig
from gaf.interfaces import CompletionLogProbs, Policy
from gaf.plugins.lm.gpt2 import GPT2Config, GPT2Policy
from gaf.plugins.lm.samplers import Greedy

BOS, EOS, PAD = 256, 257, 258


def tiny(seed: int = 0, *, n_positions: int = 64, spiky: bool = True, **kw) -> GPT2Policy:
    """A 2-layer d=32 model. ``spiky`` re-draws weights with a large std so that
    outputs depend strongly on every input (a random GPT-2 init is nearly flat)."""
    torch.manual_seed(seed)
    cfg = GPT2Config(d_model=32, n_layer=2, n_head=2, n_positions=n_positions, **kw)
    model = GPT2Policy(cfg)
    if spiky:
        with torch.no_grad():
            for name, p in model.named_parameters():
                if p.dim() == 2:
                    p.normal_(0.0, 0.3)
    return model.eval()


@pytest.fixture(scope="module")
def model() -> GPT2Policy:
    return tiny(0)


def _no_eos_greedy(logits, generator=None):
    logits = logits.clone()
    logits[:, EOS] = float("-inf")
    return logits.argmax(-1)


# ------------------------------------------------------------------------ layout


def test_is_a_policy_and_builds_from_registry_style_kwargs():
    m = GPT2Policy(from_dict(GPT2Policy.Config, {"n_layer": 1, "n_head": 2, "d_model": 16,
                                                 "n_positions": 8}))
    assert isinstance(m, Policy)
    assert m.config.n_positions == 8 and m.tokenizer.vocab_size == 259


def test_state_dict_names_and_hf_conv1d_shapes():
    m = tiny(spiky=False)
    sd = m.state_dict()
    d, V, P = 32, 259, 64
    expected = {"transformer.wte.weight": (V, d), "transformer.wpe.weight": (P, d),
                "transformer.ln_f.weight": (d,), "transformer.ln_f.bias": (d,)}
    for i in range(2):
        h = f"transformer.h.{i}."
        expected |= {h + "ln_1.weight": (d,), h + "ln_1.bias": (d,),
                     h + "attn.c_attn.weight": (d, 3 * d), h + "attn.c_attn.bias": (3 * d,),
                     h + "attn.c_proj.weight": (d, d), h + "attn.c_proj.bias": (d,),
                     h + "ln_2.weight": (d,), h + "ln_2.bias": (d,),
                     h + "mlp.c_fc.weight": (d, 4 * d), h + "mlp.c_fc.bias": (4 * d,),
                     h + "mlp.c_proj.weight": (4 * d, d), h + "mlp.c_proj.bias": (d,)}
    assert {k: tuple(v.shape) for k, v in sd.items()} == expected
    ptrs = [v.untyped_storage().data_ptr() for v in sd.values()]
    assert len(set(ptrs)) == len(ptrs)  # no shared tensors (tied head is wte itself)


def test_gpt2_init_statistics():
    torch.manual_seed(0)
    m = GPT2Policy(GPT2Config(d_model=128, n_layer=8, n_head=4, n_positions=64))
    sd = m.state_dict()
    assert sd["transformer.wte.weight"].std().item() == pytest.approx(0.02, rel=0.05)
    assert sd["transformer.h.0.attn.c_attn.weight"].std().item() == pytest.approx(0.02, rel=0.05)
    proj = 0.02 / math.sqrt(2 * 8)
    assert sd["transformer.h.3.attn.c_proj.weight"].std().item() == pytest.approx(proj, rel=0.05)
    assert sd["transformer.h.3.mlp.c_proj.weight"].std().item() == pytest.approx(proj, rel=0.05)
    assert torch.all(sd["transformer.h.0.attn.c_attn.bias"] == 0)
    assert torch.all(sd["transformer.h.0.ln_1.weight"] == 1)


@pytest.mark.parametrize("bad", [{"d_model": 30, "n_head": 4}, {"n_layer": 0},
                                 {"dropout": 1.0}, {"vocab_size": 100}])
def test_bad_config_rejected(bad):
    with pytest.raises(BadConfig):
        GPT2Policy(GPT2Config(**{"d_model": 32, "n_head": 2, "n_layer": 1, **bad}))


def test_logits_are_tied_to_wte(model):
    h = torch.randn(3, 32)
    assert torch.allclose(model.logits(h), h @ model.transformer.wte.weight.T)


# ----------------------------------------------------------------------- causality


@settings(max_examples=25, deadline=None)
@given(st.data())
def test_future_tokens_never_change_earlier_logits(model, data):
    T = data.draw(st.integers(2, 20), label="T")
    ids = data.draw(st.lists(st.integers(0, 258), min_size=T, max_size=T), label="ids")
    j = data.draw(st.integers(1, T - 1), label="j")
    new = data.draw(st.integers(0, 258).filter(lambda t: t != ids[j]), label="new")
    a = torch.tensor([ids])
    b = a.clone()
    b[0, j] = new
    with torch.no_grad():
        la, lb = model.logits(model(a)), model.logits(model(b))
    assert torch.allclose(la[:, :j], lb[:, :j], atol=1e-5, rtol=0)
    assert (la[:, j:] - lb[:, j:]).abs().max() > 1e-3  # the change is visible from j on


def test_left_padding_with_mask_and_positions_matches_unpadded(model):
    ids = torch.tensor([[BOS, 5, 6, 7]])
    padded = torch.tensor([[PAD, PAD, BOS, 5, 6, 7]])
    mask = padded != PAD
    pos = (mask.long().cumsum(1) - 1).clamp_min(0)
    with torch.no_grad():
        ref = model(ids)
        out = model(padded, attention_mask=mask, position_ids=pos)
        wrong = model(padded)  # no mask: padding leaks in
    assert torch.allclose(out[:, 2:], ref, atol=1e-5)
    assert torch.isfinite(out).all()
    assert not torch.allclose(wrong[:, 2:], ref, atol=1e-3)


def test_kv_cache_forward_matches_full_forward(model):
    ids = torch.tensor([[BOS, 10, 20, 30, 40, 50]])
    with torch.no_grad():
        full = model(ids)
        h1, cache = model(ids[:, :4], use_cache=True)
        h2, cache = model(ids[:, 4:], past_key_values=cache, use_cache=True)
    assert torch.allclose(torch.cat([h1, h2], 1), full, atol=1e-5)
    assert cache[0][0].shape == (1, 2, 6, 16)


# ----------------------------------------------------------------------- prepare


def test_prepare_exact_layout(model):
    b = model.prepare(["ab", "", "hello"], ["c", "", "wd"])
    ids = [[BOS, 97, 98, 99, EOS, PAD, PAD, PAD, PAD],
           [BOS, EOS, PAD, PAD, PAD, PAD, PAD, PAD, PAD],
           [BOS, 104, 101, 108, 108, 111, 119, 100, EOS]]
    assert b.input_ids.tolist() == ids
    assert b.input_ids.dtype == torch.long
    assert b.target_ids.tolist() == [row[1:] + [PAD] for row in ids]
    assert b.attention_mask.tolist() == [[t != PAD for t in row] for row in ids]
    F_, T_ = False, True
    assert b.completion_mask.tolist() == [
        [F_, F_, T_, T_, F_, F_, F_, F_, F_],   # targets 'c', EOS
        [T_, F_, F_, F_, F_, F_, F_, F_, F_],   # target EOS
        [F_, F_, F_, F_, F_, T_, T_, T_, F_],   # targets 'w', 'd', EOS
    ]
    assert b.completion_mask.dtype == torch.bool and b.attention_mask.dtype == torch.bool
    for row in b.input_ids.tolist():  # exactly one BOS and one EOS
        assert row.count(BOS) == 1 and row.count(EOS) == 1


def test_prepare_truncation():
    m = tiny(n_positions=8, spiky=False)
    b = m.prepare(["abcdefgh", "p", "p"], ["xy", "0123456789", "012345"])
    assert b.input_ids.tolist() == [
        [BOS, *b"efgh", *b"xy", EOS],          # prompt cut from the left
        [BOS, *b"0123456"],                    # completion alone too long: no EOS
        [BOS, *b"012345", EOS],                # completion + EOS fit exactly
    ]
    assert b.completion_mask.sum(1).tolist() == [3, 7, 7]
    assert b.completion_mask[0].tolist() == [False] * 4 + [True] * 3 + [False]


def test_prepare_rejects_mismatched_lengths(model):
    with pytest.raises(ValueError):
        model.prepare(["a", "b"], ["c"])


# ------------------------------------------------------------ completion_logprobs


def _naive(model, prompts, completions) -> tuple[torch.Tensor, torch.Tensor]:
    """Full log-softmax over every position of each pair run on its own, in float64."""
    rows = []
    for p, c in zip(prompts, completions):
        ctx = [BOS, *p.encode()]
        comp = [*c.encode(), EOS]
        ids = torch.tensor([ctx + comp])
        logp = torch.log_softmax(model.logits(model(ids)).double(), -1)[0]
        rows.append([logp[len(ctx) - 1 + i, t].item() for i, t in enumerate(comp)])
    L = max(len(r) for r in rows)
    out = torch.zeros(len(rows), L, dtype=torch.float64)
    mask = torch.zeros(len(rows), L, dtype=torch.bool)
    for i, r in enumerate(rows):
        out[i, :len(r)] = torch.tensor(r, dtype=torch.float64)
        mask[i, :len(r)] = True
    return out, mask


def test_completion_logprobs_match_float64_reference():
    m = tiny(1).double()
    prompts, completions = ["hello ", "", "a much longer prompt here"], ["world", "xyz", ""]
    got = m.completion_logprobs(m.prepare(prompts, completions))
    assert isinstance(got, CompletionLogProbs)
    want, mask = _naive(m, prompts, completions)
    assert got.token_logps.dtype == torch.float64
    assert torch.equal(got.mask, mask)
    assert torch.allclose(got.token_logps, want, atol=1e-10, rtol=0)
    assert got.count.tolist() == [6, 4, 1]  # completion bytes + EOS, no prompt tokens
    assert torch.all(got.token_logps[~got.mask] == 0)


def _naive_tempered(model, prompts, completions, temperature):
    """Per completion token: log-softmax(logits / T)[target] and the entropy of
    softmax(logits / T), each pair run on its own, in float64."""
    logps, entropies = [], []
    for p, c in zip(prompts, completions):
        ctx = [BOS, *p.encode()]
        comp = [*c.encode(), EOS]
        with torch.no_grad():
            z = model.logits(model(torch.tensor([ctx + comp]))).double()[0] / temperature
        logp = torch.log_softmax(z, -1)
        rows = [len(ctx) - 1 + i for i in range(len(comp))]
        logps.append([logp[r, t].item() for r, t in zip(rows, comp)])
        entropies.append([float(-(logp[r].exp() * logp[r]).sum()) for r in rows])
    return logps, entropies


@settings(max_examples=12, deadline=None)
@given(st.floats(0.25, 4.0), st.booleans())
def test_tempered_logprobs_and_entropy_match_float64_reference(temperature, shared_prompt):
    m = tiny(2).double()
    prompts = ["same prompt "] * 3 if shared_prompt else ["hello ", "", "longer prompt"]
    completions = ["world", "xyz", ""]
    got = m.completion_logprobs(m.prepare(prompts, completions), temperature=temperature,
                                entropy=True)
    logps, entropies = _naive_tempered(m, prompts, completions, temperature)
    for b, (lp, h) in enumerate(zip(logps, entropies)):
        n = len(lp)
        assert got.mask[b, :n].all() and not got.mask[b, n:].any()
        assert torch.allclose(got.token_logps[b, :n], torch.tensor(lp, dtype=torch.float64),
                              atol=1e-10, rtol=0)
        assert torch.allclose(got.entropy[b, :n], torch.tensor(h, dtype=torch.float64),
                              atol=1e-10, rtol=0)
        assert torch.all(got.entropy[b, n:] == 0)
    flat = [x for h in entropies for x in h]
    assert abs(got.mean_entropy() - sum(flat) / len(flat)) < 1e-10
    assert not got.entropy.requires_grad


def test_temperature_one_is_the_plain_score_and_entropy_is_off_by_default(model):
    batch = model.prepare(["a ", "b "], ["cd", "e"])
    plain = model.completion_logprobs(batch)
    assert plain.entropy is None and math.isnan(plain.mean_entropy())
    assert torch.equal(plain.token_logps,
                       model.completion_logprobs(batch, temperature=1.0).token_logps)
    with pytest.raises(ValueError, match="temperature"):
        model.completion_logprobs(batch, temperature=0.0)


def test_completion_logprobs_only_project_completion_positions(monkeypatch):
    m = tiny(2)
    batch = m.prepare(["prompt one", "p2"], ["abc", "de"])
    seen = []
    original = m.logits

    def spy(hidden):
        seen.append(tuple(hidden.shape))
        return original(hidden)

    monkeypatch.setattr(m, "logits", spy)
    m.completion_logprobs(batch)
    assert seen == [(4 + 3, 32)]  # (3+1) + (2+1) completion positions, nothing else


def test_completion_logprobs_are_differentiable_and_float32():
    m = tiny(3, spiky=False)
    out = m.completion_logprobs(m.prepare(["q"], ["answer"]))
    assert out.token_logps.dtype == torch.float32
    out.sum.sum().backward()
    assert m.transformer.wte.weight.grad is not None
    assert m.transformer.h[0].attn.c_attn.weight.grad.abs().sum() > 0


def test_loss_falls_on_tiny_overfit_batch():
    torch.manual_seed(0)
    m = GPT2Policy(GPT2Config(d_model=32, n_layer=2, n_head=2, n_positions=64)).train()
    batch = m.prepare(["Q: 2+2? A:", "Name:"], [" four", " gaf"])
    opt = torch.optim.Adam(m.parameters(), lr=1e-2)

    def nll():
        lp = m.completion_logprobs(batch)
        return -(lp.sum / lp.count).mean()

    start = nll().item()
    for _ in range(25):
        opt.zero_grad()
        loss = nll()
        loss.backward()
        opt.step()
    end = nll().item()
    assert start > 4.0  # near log(259) at init
    assert end < 0.5 * start


# ---------------------------------------------------------------------- generation


def _naive_greedy(model, prompt_ids, n):
    """Greedy decoding by re-running the whole sequence each step (no cache)."""
    ids = list(prompt_ids)
    banned = model.banned_ids()
    out = []
    with torch.no_grad():
        for _ in range(n):
            if len(ids) >= model.config.n_positions:
                break
            logits = model.logits(model(torch.tensor([ids])))[0, -1].float()
            logits[banned] = float("-inf")
            tok = int(logits.argmax())
            out.append(tok)
            if tok == EOS:
                break
            ids.append(tok)
    return out


PROMPTS = ["", "a", "hello there", "xyzxyzxyz", "The quick brown fox"]


def test_kv_cache_generation_equals_full_recomputation(model):
    prompt_ids = [[BOS, *p.encode()] for p in PROMPTS]
    for ids in prompt_ids:
        got = model.generate_ids([ids], sampler=Greedy(), max_new_tokens=12)[0]
        assert got == _naive_greedy(model, ids, 12)
    firsts = {tuple(_naive_greedy(model, ids, 12)) for ids in prompt_ids}
    assert len(firsts) > 1  # the check is not vacuous: prompts lead to different outputs


def test_batched_left_padded_generation_equals_one_at_a_time(model):
    batched = model.generate(PROMPTS, sampler=Greedy(), max_new_tokens=10)
    single = [model.generate([p], sampler=Greedy(), max_new_tokens=10)[0] for p in PROMPTS]
    assert batched == single
    ids = [[BOS, *p.encode()] for p in PROMPTS]
    b_ids = model.generate_ids(ids, sampler=Greedy(), max_new_tokens=10)
    s_ids = [model.generate_ids([i], sampler=Greedy(), max_new_tokens=10)[0] for i in ids]
    assert b_ids == s_ids
    assert all(len(x) > 0 for x in b_ids)


class _StopAt:
    """Greedy (never EOS) except row ``b`` emits EOS on its ``stops[b]``-th call."""

    def __init__(self, stops):
        self.stops, self.calls = stops, 0

    def __call__(self, logits, generator=None):
        tok = _no_eos_greedy(logits)
        for b, s in enumerate(self.stops):
            if s == self.calls:
                tok[b] = EOS
        self.calls += 1
        return tok


def test_rows_stop_at_eos_without_disturbing_others(model):
    prompts = ["one", "two two", "three"]
    free = model.generate_ids([[BOS, *p.encode()] for p in prompts], sampler=_no_eos_greedy,
                              max_new_tokens=8)
    stopped = model.generate_ids([[BOS, *p.encode()] for p in prompts],
                                 sampler=_StopAt([2, None, 5]), max_new_tokens=8)
    assert stopped[0] == free[0][:2] + [EOS]
    assert stopped[1] == free[1]
    assert stopped[2] == free[2][:5] + [EOS]
    text = model.generate(prompts, sampler=_StopAt([2, None, 0]), max_new_tokens=8)
    assert text[0] == model.tokenizer.decode(free[0][:2])  # EOS itself is not in the text
    assert text[2] == ""


def test_generation_respects_n_positions():
    m = tiny(4, n_positions=16)
    out = m.generate_ids([[BOS, *b"abc"]], sampler=_no_eos_greedy, max_new_tokens=50)[0]
    assert len(out) == 16 - 4
    long_prompt = "0123456789abcdefghijklmnopqrstuvwxyz"
    texts = m.generate([long_prompt, "abc"], sampler=_no_eos_greedy, max_new_tokens=50)
    # the prompt keeps its last 14 tokens (BOS + 14 + one new token = 16)
    cut = m.generate_ids([[BOS, *long_prompt[-14:].encode()]], sampler=_no_eos_greedy,
                         max_new_tokens=50)[0]
    assert len(cut) == 1
    assert texts[0] == m.tokenizer.decode(cut)
    assert texts[1] == m.tokenizer.decode(out)


def test_generate_restores_mode_and_uses_eval(model):
    m = tiny(5, dropout=0.5).train()
    a = m.generate(["hi", "there"], sampler=Greedy(), max_new_tokens=8)
    b = m.generate(["hi", "there"], sampler=Greedy(), max_new_tokens=8)
    assert a == b  # dropout off during generation
    assert m.training
    m.eval()
    m.generate(["x"], sampler=Greedy(), max_new_tokens=2)
    assert not m.training


def test_generate_never_emits_bos_or_pad_and_max_new_tokens(model):
    def prefer_specials(logits, generator=None):
        logits = logits.clone()
        logits[:, EOS] = float("-inf")
        return logits.argmax(-1)

    biased = tiny(6)
    bump = torch.zeros(259)
    bump[[BOS, PAD]] = 100.0  # make BOS and PAD the favourite tokens everywhere
    biased.logits = lambda h: GPT2Policy.logits(biased, h) + bump
    out = biased.generate_ids([[BOS, 1, 2]], sampler=prefer_specials, max_new_tokens=7)[0]
    assert len(out) == 7
    assert BOS not in out and PAD not in out
    assert model.generate(["a", "b"], sampler=Greedy(), max_new_tokens=0) == ["", ""]
    assert model.generate([], sampler=Greedy()) == []


@settings(max_examples=25, deadline=None)
@given(prefix=st.integers(1, 6), steps=st.lists(st.integers(1, 3), min_size=1, max_size=4),
       seed=st.integers(0, 2**16))
def test_a_preallocated_kv_buffer_attends_exactly_as_concatenation(prefix, steps, seed):
    from gaf.plugins.lm.gpt2 import Attention, KVBuffer

    torch.manual_seed(seed)
    attn = Attention(GPT2Config(d_model=16, n_head=2, n_layer=1, tokenizer="byte")).eval()
    total = prefix + sum(steps)
    x = torch.randn(2, total, 16, dtype=torch.float64)
    attn = attn.double()
    for param in attn.parameters():  # (Conv1D leaves its weights to the model's init)
        torch.nn.init.normal_(param, std=0.3)
    with torch.no_grad():
        y, pair = attn(x[:, :prefix], None, None)
        buffer = KVBuffer(*pair, capacity=total)
        start = prefix
        for n in steps:
            chunk = x[:, start:start + n]
            # one query at a time sees all earlier keys: causal within the chunk
            for j in range(n):
                a, pair = attn(chunk[:, j:j + 1], None, pair)
                b, same = attn(chunk[:, j:j + 1], None, buffer)
                assert same is buffer
                torch.testing.assert_close(b, a, rtol=0, atol=1e-12)
            start += n
        assert buffer.length == total
        torch.testing.assert_close(buffer.key[:, :, :total], pair[0], rtol=0, atol=0)
        with pytest.raises(ValueError, match="capacity"):
            buffer.extend(pair[0][:, :, :1], pair[1][:, :, :1])
