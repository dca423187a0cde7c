"""text-transformer: shapes, masking (against a float64 reference), batch and padding
independence, the null context, gradients, errors, saving; the shipped shapes-bpe
tokenizer makes every caption word one token and is reproducible."""

from __future__ import annotations

import math
import re

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

import gaf
from gaf.components import load_from, save_component
from gaf.config import OptionError
from gaf.errors import BadConfig, BadData
from gaf.interfaces import Conditioner
from gaf.plugins.conditioners import TextTransformer, TextTransformerConfig
from gaf.plugins.conditioners.text import SelfAttention
from gaf.plugins.images import shapes
from gaf.plugins.lm.bpe_training import SHAPES_MERGES, learn_bpe, shapes_corpus
from gaf.plugins.lm.tokenizer import BUILTIN_TOKENIZERS, gpt2_split, make_tokenizer
from gaf.registry import Registry

CAPTIONS = [
    "a red circle in the top left",
    "bottom right: a small purple triangle to the right of a small yellow triangle",
    "a cyan cross",
    "there is a large green diamond in the middle",
]
WORDS = sorted({w for c in CAPTIONS for w in c.replace(":", "").split()})


def model(seed: int = 0, **kwargs) -> TextTransformer:
    torch.manual_seed(seed)
    return TextTransformer(TextTransformerConfig(**kwargs)).eval()


@pytest.fixture(scope="module")
def corpus() -> list[str]:
    return shapes_corpus()


# ------------------------------------------------------------------ contract and shapes


def test_defaults_and_contract():
    m = model()
    assert isinstance(m, Conditioner)
    assert (m.condition_key, m.tokens, m.width, m.trainable) == ("caption", 24, 64, True)
    assert m.config.tokenizer == "shapes-bpe" and m.tokenizer.vocab_size == 354
    assert sum(p.numel() for p in m.parameters()) == 125_824


@settings(max_examples=12, deadline=None)
@given(width_per_head=st.integers(1, 8), heads=st.integers(1, 4), layers=st.integers(1, 3),
       head_dim=st.sampled_from([0, 3]), max_length=st.integers(1, 20),
       batch=st.integers(0, 5), data=st.data())
def test_shapes(width_per_head, heads, layers, head_dim, max_length, batch, data):
    width = width_per_head * heads
    m = model(width=width, heads=heads, layers=layers, head_dim=head_dim,
              max_length=max_length, mlp_mult=2)
    n_words = st.integers(0, max_length)
    captions = [" ".join(data.draw(st.lists(st.sampled_from(WORDS), min_size=n, max_size=n)))
                for n in data.draw(st.lists(n_words, min_size=batch, max_size=batch))]
    assert m.tokenize(captions)[1].sum(dim=1).tolist() == [len(c.split()) for c in captions]
    out = m(captions)
    assert out.shape == (batch, max_length, width) and out.dtype == torch.float32
    assert torch.isfinite(out).all()
    assert m.tokens == max_length and m.width == width
    assert m.null(batch).shape == (batch, max_length, width)
    expected_head = head_dim or width // heads
    assert m.blocks[0].attn.qkv.out_features == 3 * heads * expected_head


def test_tokenize_pads_with_the_pad_id():
    m = model()
    ids, mask = m.tokenize(["a red circle", ""])
    tok = m.tokenizer
    assert ids.shape == mask.shape == (2, 24) and ids.dtype == torch.long
    assert ids[0, :3].tolist() == tok.encode(" a red circle")
    assert (ids[0, 3:] == tok.pad_id).all() and (ids[1] == tok.pad_id).all()
    assert mask[0].tolist() == [True] * 3 + [False] * 21 and not mask[1].any()


def test_the_first_word_gets_a_prefix_space():
    m = model()
    ids, mask = m.tokenize(["red circle", "a red circle", " red circle", "top left: a cross"])
    assert ids[0, :2].tolist() == ids[1, 1:3].tolist() == ids[2, :2].tolist()
    assert mask.sum(dim=1).tolist() == [2, 3, 2, 5]
    assert ids[3, 0] == m.tokenizer.encode(" top")[0]


# ------------------------------------------------------------------ masking


def reference_attention(attn: SelfAttention, x: torch.Tensor, mask: torch.Tensor):
    """Multi-head attention written out in float64: softmax over the real keys only."""
    b, n, _ = x.shape
    h, d = attn.heads, attn.head_dim
    qkv = x @ attn.qkv.weight.T + attn.qkv.bias
    q, k, v = (qkv[..., i * h * d:(i + 1) * h * d].reshape(b, n, h, d) for i in range(3))
    out = torch.zeros(b, n, h, d, dtype=torch.float64)
    for bi in range(b):
        keys = mask[bi].nonzero().flatten().tolist()
        for hi in range(h):
            for qi in range(n):
                scores = torch.stack([q[bi, qi, hi] @ k[bi, kj, hi] for kj in keys]) / math.sqrt(d)
                p = torch.exp(scores - scores.max())
                p = p / p.sum()
                out[bi, qi, hi] = sum(pj * v[bi, kj, hi] for pj, kj in zip(p, keys))
    return out.reshape(b, n, h * d) @ attn.proj.weight.T + attn.proj.bias


@pytest.mark.parametrize("heads,head_dim", [(2, 4), (3, 5)])
def test_masked_attention_matches_float64_reference(heads, head_dim):
    torch.manual_seed(1)
    attn = SelfAttention(8, heads, head_dim).double()
    x = torch.randn(3, 6, 8, dtype=torch.float64)
    mask = torch.tensor([[1, 1, 1, 0, 0, 0], [1, 1, 1, 1, 1, 1], [1, 0, 0, 0, 0, 0]]).bool()
    with torch.no_grad():
        got, want = attn(x, mask), reference_attention(attn, x, mask)
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)
        # the pad positions' values do not matter: they are never attended to
        y = x.clone()
        y[~mask] = 100.0 * torch.randn(int((~mask).sum()), 8, dtype=torch.float64)
        torch.testing.assert_close(attn(y, mask)[mask], got[mask], rtol=1e-10, atol=1e-10)


def reference_encoder(m: TextTransformer, ids: torch.Tensor, mask: torch.Tensor):
    """The whole encoder in float64 from its parameters (pre-LN blocks, final LN)."""
    w = m.width
    h = m.token_embedding.weight[ids] + m.position_embedding
    for blk in m.blocks:
        a = F.layer_norm(h, (w,), blk.norm1.weight, blk.norm1.bias, blk.norm1.eps)
        h = h + reference_attention(blk.attn, a, mask)
        a = F.layer_norm(h, (w,), blk.norm2.weight, blk.norm2.bias, blk.norm2.eps)
        a = F.gelu(a @ blk.mlp[0].weight.T + blk.mlp[0].bias)
        h = h + a @ blk.mlp[2].weight.T + blk.mlp[2].bias
    return F.layer_norm(h, (w,), m.norm.weight, m.norm.bias, m.norm.eps)


def test_encoder_matches_float64_reference():
    m = model(width=16, heads=2, max_length=16).double()
    with torch.no_grad():
        ids, mask = m.tokenize(CAPTIONS[:1] + CAPTIONS[2:])
        torch.testing.assert_close(m(CAPTIONS[:1] + CAPTIONS[2:]),
                                   reference_encoder(m, ids, mask), rtol=1e-10, atol=1e-10)


def _masked_mean(states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    weights = mask.to(states.dtype).unsqueeze(-1)
    return (states * weights).sum(dim=1) / weights.sum(dim=1).clamp_min(1.0)


def test_mean_state_matches_float64_reference():
    m = model(width=16, heads=2, max_length=16).double()
    ids, mask = m.tokenize(CAPTIONS[:1] + CAPTIONS[2:] + [""])
    with torch.no_grad():
        want = _masked_mean(reference_encoder(m, ids, mask | ~mask.any(1, keepdim=True)), mask)
        torch.testing.assert_close(m.mean_state(ids, mask), want, rtol=1e-10, atol=1e-10)
    assert not m.mean_state(ids, mask)[-1].any()  # no real token: a zero mean


@settings(max_examples=40, deadline=None)
@given(data=st.data(), batch=st.integers(0, 5), length=st.integers(1, 9),
       layers=st.integers(1, 2))
def test_mean_state_is_the_masked_mean_of_encode_ids(data, batch, length, layers):
    # any mask, not only a prefix (real tokens may follow a pad), empty rows included:
    # the same values and the same gradients as the full grid, in float64
    m = model(width=8, heads=2, layers=layers, max_length=length).double().train()
    ids = torch.tensor(data.draw(st.lists(st.lists(st.integers(0, 353), min_size=length,
                                                   max_size=length),
                                          min_size=batch, max_size=batch)),
                       dtype=torch.long).view(batch, length)
    mask = torch.tensor(data.draw(st.lists(st.lists(st.booleans(), min_size=length,
                                                    max_size=length),
                                           min_size=batch, max_size=batch)),
                        dtype=torch.bool).view(batch, length)
    weights = torch.randn(batch, 8, dtype=torch.float64)
    params = [p for p in m.parameters() if p.requires_grad]
    full = _masked_mean(m.encode_ids(ids, mask), mask)
    fast = m.mean_state(ids, mask)
    torch.testing.assert_close(fast, full, rtol=1e-10, atol=1e-10)
    if batch and bool(mask.any()):
        want = torch.autograd.grad((full * weights).sum(), params, allow_unused=True)
        got = torch.autograd.grad((fast * weights).sum(), params, allow_unused=True)
        for p, g, w in zip(params, got, want):  # None: unused (the null states)
            torch.testing.assert_close(torch.zeros_like(p) if g is None else g,
                                       torch.zeros_like(p) if w is None else w,
                                       rtol=1e-9, atol=1e-10)


def test_empty_caption_gives_finite_states_that_differ_from_real_ones():
    m = model()
    with torch.no_grad():
        out = m(["", "a red circle", ""])
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out[0], out[2])
    assert (out[0] - out[1]).abs().amax() > 1e-2


# ------------------------------------------------------------------ independence


def test_rows_do_not_depend_on_the_rest_of_the_batch():
    m = model()
    with torch.no_grad():
        alone = torch.cat([m([c]) for c in CAPTIONS])
        together = m(CAPTIONS)
        reordered = m(CAPTIONS[::-1]).flip(0)
    torch.testing.assert_close(together, alone, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(reordered, alone, rtol=1e-5, atol=1e-6)


def test_states_do_not_depend_on_the_amount_of_padding():
    # the same weights with 16 more pad positions: every one of the first 24 positions
    # (real tokens and pads alike) keeps its state, since pads are never attended to
    short = model()
    long = model(max_length=40)
    state = dict(short.state_dict())
    state["position_embedding"] = torch.cat([state["position_embedding"],
                                             long.position_embedding.detach()[24:]])
    state["null_states"] = long.null_states.detach()
    long.load_state_dict(state)
    with torch.no_grad():
        torch.testing.assert_close(long(CAPTIONS)[:, :24], short(CAPTIONS),
                                   rtol=1e-5, atol=1e-6)


def test_different_captions_give_different_states():
    m = model()
    pairs = [("a red circle", "a blue circle"),
             ("a red circle above a blue square", "a blue circle above a red square"),
             ("a red circle in the top left", "a red circle in the top right")]
    with torch.no_grad():
        for a, b in pairs:
            diff = (m([a]) - m([b])).abs().amax(dim=-1)
            assert (diff > 1e-3).all(), (a, b, diff)  # every position, pads included


# ------------------------------------------------------------------ null context


def test_null_is_learned_and_independent_of_captions():
    m = model()
    null = m.null(3)
    assert null.shape == (3, 24, 64)
    assert all(torch.equal(null[i], null[0]) for i in range(3))
    assert torch.equal(null[0], m.null_states)
    with torch.no_grad():
        m.token_embedding.weight.normal_()
        m(CAPTIONS)
    assert torch.equal(m.null(1)[0], null[0])
    with torch.no_grad():
        assert all((m([c])[0] - null[0]).abs().amax() > 0.1 for c in CAPTIONS)
    (m.null(2) * torch.randn(2, 24, 64)).sum().backward()
    assert m.null_states.grad is not None and m.null_states.grad.abs().amin() > 0
    assert m.token_embedding.weight.grad is None
    assert m.null(0).shape == (0, 24, 64)
    with pytest.raises(BadData, match="batch size"):
        m.null(-1)


# ------------------------------------------------------------------ gradients


def test_gradients_reach_every_parameter_used():
    m = model()
    m.train()
    out = m(CAPTIONS)
    (out * torch.randn_like(out)).sum().backward()
    for name, p in m.named_parameters():
        if name == "null_states":
            assert p.grad is None
        else:
            assert p.grad is not None and p.grad.abs().sum() > 0, name
    grad_rows = m.token_embedding.weight.grad.abs().sum(dim=1) > 0
    used = {i for c in CAPTIONS for i in m.tokenizer.encode(" " + c)} | {m.tokenizer.pad_id}
    assert set(grad_rows.nonzero().flatten().tolist()) == used
    assert (m.position_embedding.grad.abs().sum(dim=1) > 0).all()


def test_dropout_is_active_only_in_training():
    m = model(dropout=0.5)
    with torch.no_grad():
        torch.testing.assert_close(m(CAPTIONS), m(CAPTIONS))
        m.train()
        assert not torch.allclose(m(CAPTIONS), m(CAPTIONS))


# ------------------------------------------------------------------ errors


def test_a_caption_longer_than_max_length_is_bad_data():
    m = model(max_length=8)
    fits = "a small red circle in the top left"  # exactly 8 tokens
    assert m.tokenize([fits])[1].sum() == 8
    assert m([fits]).shape == (1, 8, 64)
    long = "a large red circle to the left of a small blue square in the top middle"
    with pytest.raises(BadData) as info:
        m(["a red circle", long])
    msg = str(info.value)
    n = len(m.tokenizer.encode(" " + long))
    assert f"is {n} tokens long" in msg and "max_length=8" in msg
    assert "'a large red circle to the left of a small blue square in..." in msg
    assert "raise the conditioner's max_length" in msg


@pytest.mark.parametrize("bad", [["a", 3], ["a", None], "a red circle", [b"a"]])
def test_non_string_captions_are_bad_data(bad):
    with pytest.raises(BadData, match="caption"):
        model()(bad)


@pytest.mark.parametrize("field,value,message", [
    ("width", 0, "width must be >= 1, got 0"), ("layers", 0, "layers must be >= 1, got 0"),
    ("heads", -1, "heads must be >= 1, got -1"),
    ("max_length", 0, "max_length must be >= 1, got 0"),
    ("mlp_mult", 0, "mlp_mult must be >= 1, got 0"),
    ("head_dim", -1, "head_dim must be >= 0, got -1"),
    ("dropout", 1.0, "dropout must be in [0, 1), got 1"),
    ("dropout", -0.1, "dropout must be in [0, 1), got -0.1"),
    ("dropout", math.nan, "dropout must be in [0, 1), got nan"),
    ("tokenizer", "", "tokenizer must be a non-empty name or path, got ''"),
])
def test_bad_config_names_the_field(field, value, message):
    with pytest.raises(OptionError, match=f"^{re.escape(message)}$"):
        TextTransformerConfig(**{field: value})
    with pytest.raises(OptionError, match=f"^conditioner text-transformer: {re.escape(message)}$"):
        gaf.create("conditioner", "text-transformer", **{field: value})


def test_non_integers_are_refused_where_data_becomes_a_config():
    with pytest.raises(BadConfig, match="conditioner text-transformer: width: expected an integer"):
        gaf.create("conditioner", "text-transformer", width=2.5)


def test_heads_must_divide_width_unless_head_dim_is_set():
    with pytest.raises(OptionError, match=r"^heads must divide width \(64\) when head_dim is 0; "
                                          r"or set head_dim, got 3$"):
        TextTransformerConfig(heads=3)
    m = model(heads=3, head_dim=8)
    assert m(["a red circle"]).shape == (1, 24, 64)


def test_unknown_tokenizer_is_bad_config():
    with pytest.raises(BadConfig, match="unknown tokenizer 'nope'"):
        TextTransformer(TextTransformerConfig(tokenizer="nope"))


def test_byte_tokenizer_works():
    m = model(tokenizer="byte", max_length=80)
    assert m.token_embedding.num_embeddings == 259
    with torch.no_grad():
        assert torch.isfinite(m(CAPTIONS + ["naïve ünïcode ✓"])).all()


def test_tokens_follow_the_parameters_device():
    m = model().to("meta")
    out = m(CAPTIONS)
    assert out.device.type == "meta" and out.shape == (4, 24, 64)


# ------------------------------------------------------------------ saving


def test_state_dict_round_trip():
    a, b = model(seed=0), model(seed=1)
    with torch.no_grad():
        assert not torch.allclose(a(CAPTIONS), b(CAPTIONS))
        b.load_state_dict(a.state_dict())
        assert torch.equal(a(CAPTIONS), b(CAPTIONS)) and torch.equal(a.null(2), b.null(2))


def test_save_and_load_through_a_registry(tmp_path):
    registry = Registry(catalogue=None, autoload=False)
    registry.register("conditioner", "text-transformer")(TextTransformer)
    a = registry.create("conditioner", "text-transformer", width=32, heads=2)
    save_component(a, tmp_path / "c")
    assert (tmp_path / "c" / "vocab.json").is_file() and (tmp_path / "c" / "merges.txt").is_file()
    b = load_from(registry, "conditioner", tmp_path / "c")
    assert b.config == a.config and b.tokenizer.merges == a.tokenizer.merges
    with torch.no_grad():
        assert torch.equal(a.eval()(CAPTIONS), b.eval()(CAPTIONS))
        assert torch.equal(a.null(1), b.null(1))


# ------------------------------------------------------------------ shapes-bpe


def test_shapes_bpe_is_builtin():
    assert "shapes-bpe" in BUILTIN_TOKENIZERS
    tok = make_tokenizer("shapes-bpe")
    assert tok.vocab_size == 354 and len(tok.merges) == 97


def _template_words() -> set[str]:
    words = set()
    values = [*shapes.COLOURS, *shapes.SHAPES, *shapes.SIZES, *shapes.POSITIONS,
              *shapes.RELATION_PHRASES.values()]
    for text in [*shapes.SINGLE_TEMPLATES, *shapes.PAIR_TEMPLATES, *values]:
        words |= set(re.sub(r"\{\w+\}|:", " ", text).split())
    return words


def test_every_caption_word_is_one_token():
    tok = make_tokenizer("shapes-bpe")
    words = _template_words()
    assert {"red", "cyan", "diamond", "cross", "small", "middle", "bottom", "left", "above",
            "below", "there", "is", "the", "of", "to", "at", "in", "a"} <= words
    for w in words:
        assert len(tok.encode(" " + w)) == 1, w


def test_every_training_caption_is_one_token_per_word(corpus):
    tok = make_tokenizer("shapes-bpe")
    lengths = [len(tok.encode(c)) for c in corpus]
    assert lengths == [len(c.replace(":", " :").split()) for c in corpus]
    assert max(lengths) == 15 < TextTransformerConfig().max_length
    for split in ("eval", "heldout", "swapped"):
        captions = shapes.ShapesDataset(shapes.ShapesConfig(split=split, size=500)).captions()
        assert all(len(tok.encode(" " + c)) == len(c.replace(":", " :").split())
                   for c in captions)


@settings(max_examples=40, deadline=None)
@given(st.text())
def test_shapes_bpe_is_lossless_on_any_text(text):
    tok = make_tokenizer("shapes-bpe")
    ids = tok.encode(text)
    assert tok.pad_id not in ids
    assert tok.decode(ids) == text


def test_unknown_words_fall_back_to_smaller_pieces():
    tok = make_tokenizer("shapes-bpe")
    ids = tok.encode(" a magenta hexagon!")
    assert len(ids) > 4 and tok.decode(ids) == " a magenta hexagon!"


def test_shipped_shapes_bpe_is_learn_bpe_of_the_training_captions(corpus):
    pieces = {p for c in corpus for p in gpt2_split().findall(c)}
    learned = learn_bpe(corpus, max_merges=SHAPES_MERGES)
    shipped = make_tokenizer("shapes-bpe")
    assert learned.merges == shipped.merges and learned.encoder == shipped.encoder
    assert len(learned.merges) < SHAPES_MERGES  # it stopped because every piece is merged
    assert all(len(learned.encode(p)) == 1 for p in pieces)
