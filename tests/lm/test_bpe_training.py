"""learn_bpe: hand-checked merges, lossless round trips, the shipped sentiment-bpe is
reproducible, and make_tokenizer / gpt2's ``tokenizer`` option build what they name."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import gaf
from gaf.errors import BadConfig
from gaf.plugins.lm.bpe_training import learn_bpe, sentiment_corpus
from gaf.plugins.lm.tokenizer import BPETokenizer, ByteTokenizer, make_tokenizer

SHIPPED = Path(gaf.plugins.__file__).parent / "lm" / "tokenizers" / "sentiment-bpe"


def test_merges_by_hand():
    # pieces "ab", " ab", " ab", " abc": (a, b) occurs 4 times, then (Ġ, ab) 3 times,
    # then (Ġab, c) once, below min_frequency 2
    tok = learn_bpe(["ab ab ab abc"])
    assert tok.merges == [("a", "b"), ("Ġ", "ab")]
    assert tok.vocab_size == 256 + 2 + 1
    assert tok.encoder["ab"] == 256 and tok.encoder["Ġab"] == 257
    assert tok.eos_id == tok.bos_id == tok.pad_id == 258
    assert tok.encode(" abc") == [257, ord("c")]
    assert tok.encode("ab") == [256]


def test_frequency_ties_break_on_the_larger_pair():
    tok = learn_bpe(["xy", "zw"], min_frequency=1)  # (x, y) and (z, w) occur once each
    assert tok.merges[0] == ("z", "w")


def test_limits():
    assert learn_bpe(["ab ab ab abc"], max_merges=1).merges == [("a", "b")]
    assert learn_bpe(["ab ab ab abc"], max_merges=0).merges == []
    assert learn_bpe(["ab ab ab abc"], min_frequency=4).merges == [("a", "b")]
    assert learn_bpe([]).vocab_size == 257
    with pytest.raises(BadConfig, match="max_merges"):
        learn_bpe(["a"], max_merges=-1)
    with pytest.raises(BadConfig, match="min_frequency"):
        learn_bpe(["a"], min_frequency=0)


@settings(max_examples=30, deadline=None)
@given(st.lists(st.text(max_size=40), max_size=8), st.text())
def test_learned_tokenizer_is_lossless(corpus, text):
    tok = learn_bpe(corpus, max_merges=50, min_frequency=1)
    ids = tok.encode(text)
    assert all(0 <= i < tok.vocab_size and i != tok.eos_id for i in ids)
    assert tok.decode(ids) == text


@given(st.text())
def test_sentiment_bpe_is_lossless(text):
    tok = make_tokenizer("sentiment-bpe")
    assert tok.decode(tok.encode(text)) == text


def test_shipped_sentiment_bpe_is_learn_bpe_of_the_training_corpus():
    learned = learn_bpe(sentiment_corpus())
    shipped = make_tokenizer("sentiment-bpe")
    assert learned.merges == shipped.merges
    assert learned.encoder == shipped.encoder


def test_sentiment_bpe_shortens_the_corpus():
    tok = make_tokenizer("sentiment-bpe")
    texts = sentiment_corpus()[:200]
    n_bytes = sum(len(t.encode()) for t in texts)
    n_tokens = sum(len(tok.encode(t)) for t in texts)
    assert n_tokens * 3 < n_bytes


def test_make_tokenizer_names(tmp_path):
    assert isinstance(make_tokenizer("byte"), ByteTokenizer)
    bpe = make_tokenizer("sentiment-bpe")
    assert isinstance(bpe, BPETokenizer) and bpe.vocab_size == 1122
    bpe.save_files(tmp_path)
    from_dir = make_tokenizer(str(tmp_path))
    assert from_dir.merges == bpe.merges
    with pytest.raises(BadConfig, match="byte, sentiment-bpe"):
        make_tokenizer("sentiment-bp")


def test_gpt2_vocab_size_follows_the_tokenizer(tmp_path):
    tiny = gaf.create("policy", "gpt2-tiny")
    assert tiny.config.tokenizer == "sentiment-bpe"
    assert tiny.config.vocab_size == 1122 == tiny.tokenizer.vocab_size
    assert tiny.transformer.wte.weight.shape[0] == 1122
    assert gaf.create("policy", "gpt2-tiny", tokenizer="byte").config.vocab_size == 259
    with pytest.raises(BadConfig, match="smaller than the tokenizer"):
        gaf.create("policy", "gpt2-tiny", vocab_size=300)
    with pytest.raises(BadConfig, match="unknown tokenizer"):
        gaf.create("policy", "gpt2-tiny", tokenizer="nope")
    gaf.save(tiny, tmp_path / "p")
    assert (tmp_path / "p" / "merges.txt").is_file()
    back = gaf.load("policy", tmp_path / "p")
    assert back.config == tiny.config
    assert back.tokenizer.encode(" a fine film.") == tiny.tokenizer.encode(" a fine film.")
