"""ByteTokenizer round-trips; BPETokenizer agrees with transformers' GPT-2 tokenizer."""

from __future__ import annotations

import json
import os
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gaf.errors import BadData
from gaf.interfaces import Tokenizer
from gaf.plugins.lm.tokenizer import BPETokenizer, ByteTokenizer, bytes_to_unicode, gpt2_split

os.environ.setdefault("HF_HUB_OFFLINE", "1")

# ------------------------------------------------------------------ byte tokenizer


@given(st.text())
def test_byte_roundtrip(text):
    tok = ByteTokenizer()
    ids = tok.encode(text)
    assert all(0 <= i < 256 for i in ids)
    assert ids == list(text.encode("utf-8"))
    assert tok.decode(ids) == text


def test_byte_specials_distinct_and_above_bytes():
    tok = ByteTokenizer()
    assert isinstance(tok, Tokenizer)
    specials = {tok.bos_id, tok.eos_id, tok.pad_id}
    assert len(specials) == 3
    assert all(256 <= i < tok.vocab_size for i in specials)
    assert tok.vocab_size == 259


def test_byte_decode_specials():
    tok = ByteTokenizer()
    ids = [tok.bos_id, *tok.encode("hé"), tok.eos_id, tok.pad_id]
    assert tok.decode(ids) == "hé"
    assert tok.decode(ids, skip_special=False) == "<|bos|>hé<|eos|><|pad|>"


def test_byte_decode_invalid_utf8_replaced():
    tok = ByteTokenizer()
    # a truncated 2-byte sequence, then valid text: the bad run becomes U+FFFD
    assert tok.decode([0xC3, ord("a")]) == "\ufffda"
    # a special in the middle of a multi-byte char splits it into two bad runs
    assert tok.decode([0xC3, tok.eos_id, 0xA9], skip_special=False) == "\ufffd<|eos|>\ufffd"
    with pytest.raises(ValueError):
        tok.decode([259])


def test_byte_rejects_lone_surrogate():
    with pytest.raises(BadData):
        ByteTokenizer().encode("a\ud800")


# -------------------------------------------------------------------------- BPE

_CORPUS = (
    "The quick brown fox jumps over the lazy dog. It's the dog's day; they'll see, "
    "we've 12 dogs and 345 cats, I'm sure you'd agree.\n\n  Indented   text\tand tabs! "
    "the the the then there these those other brother mother 2024 2025 ... ?! __init__ "
) * 3


def _train_bpe(corpus: str, n_merges: int) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """A textbook byte-level BPE trainer (most frequent pair, ties by pair order)."""
    be = bytes_to_unicode()
    words = Counter(tuple(be[b] for b in piece.encode("utf-8"))
                    for piece in gpt2_split().findall(corpus))
    merges: list[tuple[str, str]] = []
    for _ in range(n_merges):
        pairs: Counter = Counter()
        for word, count in words.items():
            for pair in zip(word, word[1:]):
                pairs[pair] += count
        if not pairs:
            break
        best = max(pairs, key=lambda p: (pairs[p], p))
        merges.append(best)
        new_words: Counter = Counter()
        for word, count in words.items():
            out, i = [], 0
            while i < len(word):
                if i + 1 < len(word) and (word[i], word[i + 1]) == best:
                    out.append(word[i] + word[i + 1])
                    i += 2
                else:
                    out.append(word[i])
                    i += 1
            new_words[tuple(out)] += count
        words = new_words
    vocab = {c: i for i, c in enumerate(be.values())}
    for a, b in merges:
        vocab.setdefault(a + b, len(vocab))
    vocab["<|endoftext|>"] = len(vocab)
    return vocab, merges


@pytest.fixture(scope="module")
def bpe_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("bpe")
    vocab, merges = _train_bpe(_CORPUS, 80)
    assert len(merges) == 80
    (d / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    (d / "merges.txt").write_text("#version: 0.2\n" + "\n".join(f"{a} {b}" for a, b in merges)
                                  + "\n", encoding="utf-8")
    return d


@pytest.fixture(scope="module")
def bpe_pair(bpe_files):
    transformers = pytest.importorskip("transformers")
    hf = transformers.GPT2Tokenizer(vocab=str(bpe_files / "vocab.json"),
                                    merges=str(bpe_files / "merges.txt"))
    mine = BPETokenizer.from_files(bpe_files / "vocab.json", bpe_files / "merges.txt")
    return hf, mine


_ascii = st.text(alphabet=st.characters(min_codepoint=0, max_codepoint=127), max_size=80)
_wordy = st.lists(st.sampled_from(["the", " the", "dog", "'s", " 12", "  ", "\n", "fox",
                                   " brother", "!?", "__", "\t", "x", "2025", " "]),
                  max_size=20).map("".join)


@settings(max_examples=200)
@given(st.one_of(_ascii, _wordy))
def test_bpe_matches_transformers_on_ascii(bpe_pair, text):
    hf, mine = bpe_pair
    if "<|endoftext|>" in text:
        return
    ids = mine.encode(text)
    assert ids == hf.encode(text, add_special_tokens=False)
    assert mine.decode(ids) == text


def test_bpe_merges_actually_apply(bpe_pair):
    hf, mine = bpe_pair
    text = "the brother's dog"
    ids = mine.encode(text)
    assert len(ids) < len(text.encode())  # merges shortened the sequence
    assert ids == hf.encode(text, add_special_tokens=False)


def test_bpe_split_matches_transformers_pretokenizer_on_unicode(bpe_pair):
    hf, _ = bpe_pair
    be = bytes_to_unicode()
    pre = hf._tokenizer.pre_tokenizer
    for text in ["é²½ x\u0301 \u00a0a\u3000b", "a  \x1c\x1c  b", "x\x85y  z",
                 "Ünïcödé wörds 123٣ ½ 漢字 テスト", "emoji 😀😀 ok", "it's  \n\n done"]:
        expected = [piece for piece, _ in pre.pre_tokenize_str(text)]
        got = ["".join(be[b] for b in p.encode("utf-8")) for p in gpt2_split().findall(text)]
        assert got == expected, text


@given(st.text())
def test_bpe_roundtrip_any_text(bpe_pair, text):
    _, mine = bpe_pair
    assert mine.decode(mine.encode(text)) == text


def test_bpe_specials(bpe_pair):
    hf, mine = bpe_pair
    assert isinstance(mine, Tokenizer)
    eot = hf.convert_tokens_to_ids("<|endoftext|>")
    assert mine.bos_id == mine.eos_id == mine.pad_id == eot
    assert mine.vocab_size == eot + 1
    ids = [eot, *mine.encode("the dog"), eot]
    assert mine.decode(ids) == "the dog"
    assert mine.decode(ids, skip_special=False) == "<|endoftext|>the dog<|endoftext|>"


def test_bpe_save_files_roundtrip(bpe_pair, tmp_path):
    _, mine = bpe_pair
    mine.save_files(tmp_path)
    again = BPETokenizer.from_files(tmp_path / "vocab.json", tmp_path / "merges.txt")
    text = "The lazy brother's 2025 dogs"
    assert again.encode(text) == mine.encode(text)


def test_bpe_rejects_bad_files(tmp_path):
    (tmp_path / "vocab.json").write_text(json.dumps({"a": 0}), encoding="utf-8")
    (tmp_path / "merges.txt").write_text("#version: 0.2\n", encoding="utf-8")
    with pytest.raises(BadData, match="endoftext"):
        BPETokenizer.from_files(tmp_path / "vocab.json", tmp_path / "merges.txt")
    be = bytes_to_unicode()
    vocab = {c: i for i, c in enumerate(be.values())} | {"<|endoftext|>": 256}
    (tmp_path / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    (tmp_path / "merges.txt").write_text("#version: 0.2\na b c\n", encoding="utf-8")
    with pytest.raises(BadData, match="merges.txt:2"):
        BPETokenizer.from_files(tmp_path / "vocab.json", tmp_path / "merges.txt")
    (tmp_path / "merges.txt").write_text("#version: 0.2\na b\n", encoding="utf-8")
    with pytest.raises(BadData, match="not in the vocabulary"):
        BPETokenizer.from_files(tmp_path / "vocab.json", tmp_path / "merges.txt")
