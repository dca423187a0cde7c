"""Learn a GPT-2 style byte-level BPE from a corpus: :func:`learn_bpe`.

The algorithm is GPT-2's (Sennrich et al. 2016 over bytes): split each text with
GPT-2's pre-tokenisation pattern (:func:`~gaf.plugins.lm.tokenizer.gpt2_split`),
spell every piece with the 256 printable byte symbols
(:func:`~gaf.plugins.lm.tokenizer.bytes_to_unicode`), then repeatedly merge the most
frequent adjacent pair of symbols (counted over the whole corpus, pieces weighted by
their frequency) until ``max_merges`` merges are made or no pair occurs at least
``min_frequency`` times. Ties go to the lexicographically largest pair, so the result
depends only on the corpus and the two limits.

The vocabulary is the 256 byte symbols (ids 0-255, in byte order), then one id per
merge in merge order, then ``<|endoftext|>`` (BOS, EOS and PAD, as in GPT-2). Text
the corpus never showed still encodes, byte by byte: the tokenizer is lossless.

Two tokenizers learned this way are shipped in ``plugins/lm/tokenizers/``:

* ``sentiment-bpe`` (``gpt2-tiny``'s default) is this function applied to the
  embedded ``sentiment`` task's training split (prompts and completions; the held-out
  split is not seen): :func:`sentiment_corpus`, at most :data:`SENTIMENT_MERGES`
  merges.
* ``shapes-bpe`` (the ``text-transformer`` conditioner's default) is this function
  applied to the captions of the ``shapes`` dataset's ``train`` split at its default
  options (10,000 captions drawn from every single- and two-object template), each
  with the leading space that the conditioner adds: :func:`shapes_corpus`. Merging
  runs until every pre-tokenised piece of that corpus is one symbol (97 merges,
  354 ids; :data:`SHAPES_MERGES` is only a cap), so every caption word, with its
  leading space, is one token, while other text still encodes byte by byte.

Regenerate the shipped files with::

    python -m gaf.plugins.lm.bpe_training plugins/lm/tokenizers/sentiment-bpe
    python -m gaf.plugins.lm.bpe_training --shapes plugins/lm/tokenizers/shapes-bpe
"""

from __future__ import annotations

import sys
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

from gaf.errors import BadConfig

from .tokenizer import BPETokenizer, bytes_to_unicode, gpt2_split, merge_pair

__all__ = ["learn_bpe", "sentiment_corpus", "shapes_corpus", "SENTIMENT_MERGES",
           "SHAPES_MERGES"]

#: merge limit of the shipped ``sentiment-bpe`` tokenizer
SENTIMENT_MERGES = 1024
#: merge cap of the shipped ``shapes-bpe`` tokenizer (learning ends earlier, at 97)
SHAPES_MERGES = 1024

Word = tuple[str, ...]


def learn_bpe(texts: Iterable[str], max_merges: int = SENTIMENT_MERGES,
              min_frequency: int = 2) -> BPETokenizer:
    """A byte-level BPE tokenizer learned from ``texts`` (see the module docstring).

    ``max_merges`` caps the merges (the vocabulary has ``257 + merges`` ids);
    ``min_frequency`` is the fewest occurrences a pair needs to be merged.
    """
    if max_merges < 0:
        raise BadConfig(f"learn_bpe: max_merges must be >= 0, got {max_merges}")
    if min_frequency < 1:
        raise BadConfig(f"learn_bpe: min_frequency must be >= 1, got {min_frequency}")
    spell = bytes_to_unicode()
    pieces: Counter[Word] = Counter()
    for text in texts:
        for piece in gpt2_split().findall(text):
            pieces[tuple(spell[b] for b in piece.encode("utf-8"))] += 1
    words = dict(pieces)
    merges: list[tuple[str, str]] = []
    while len(merges) < max_merges:
        pairs: Counter[tuple[str, str]] = Counter()
        for word, count in words.items():
            for pair in zip(word, word[1:]):
                pairs[pair] += count
        if not pairs:
            break
        pair, count = max(pairs.items(), key=lambda kv: (kv[1], kv[0]))
        if count < min_frequency:
            break
        merges.append(pair)
        merged: dict[Word, int] = {}
        for word, n in words.items():
            new = tuple(merge_pair(word, *pair)) if len(word) > 1 else word
            merged[new] = merged.get(new, 0) + n
        words = merged
    vocab = {spell[b]: b for b in range(256)}
    for a, b in merges:
        vocab.setdefault(a + b, len(vocab))
    vocab["<|endoftext|>"] = len(vocab)
    return BPETokenizer(vocab, merges)


def sentiment_corpus() -> list[str]:
    """The texts ``sentiment-bpe`` is learned from: prompt + completion of every
    example of the ``sentiment`` task's training split at its default options, as the
    split was before the validation split was drawn from it (``n_validation = 0``):
    4,000 examples on every prompt outside the eval split. The vocabulary has never
    seen an eval prompt or example; it has seen text on today's validation prompts,
    which only ever changes how text is cut into tokens, never a label or a score."""
    from gaf.plugins.tasks.sentiment import SentimentConfig, SentimentTask

    task = SentimentTask(SentimentConfig(n_validation=0))
    return [ex.prompt + ex.completion for ex in task.sft_examples("train")]


def shapes_corpus() -> list[str]:
    """The texts ``shapes-bpe`` is learned from: the captions of the ``shapes``
    dataset's ``train`` split at its default options (no held-out or eval scene),
    each prefixed with a space as the ``text-transformer`` conditioner encodes them
    (so the first word is the same token as anywhere else)."""
    from gaf.plugins.images.shapes import ShapesConfig, ShapesDataset

    return [" " + c for c in ShapesDataset(ShapesConfig(split="train")).captions()]


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    shapes = "--shapes" in args
    args = [a for a in args if a != "--shapes"]
    if len(args) != 1:
        print("usage: python -m gaf.plugins.lm.bpe_training [--shapes] OUT_DIR\n"
              "  learns sentiment-bpe, or shapes-bpe with --shapes", file=sys.stderr)
        return 2
    out = Path(args[0])
    out.mkdir(parents=True, exist_ok=True)
    if shapes:
        tok = learn_bpe(shapes_corpus(), max_merges=SHAPES_MERGES)
    else:
        tok = learn_bpe(sentiment_corpus())
    tok.save_files(out)
    print(f"wrote {out}/vocab.json and merges.txt: {len(tok.merges)} merges, "
          f"{tok.vocab_size} ids")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
