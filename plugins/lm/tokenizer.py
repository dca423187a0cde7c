"""Tokenizers for the language-model plugins.

Two implementations of :class:`gaf.interfaces.Tokenizer`:

* :class:`ByteTokenizer` — the default: one id per UTF-8 byte (0-255) plus three
  special ids, ``bos_id=256``, ``eos_id=257``, ``pad_id=258`` (``vocab_size=259``).
  Needs no files and is lossless on every Unicode string.
* :class:`BPETokenizer` — GPT-2's byte-level BPE, read from a Hugging Face
  ``vocab.json`` + ``merges.txt`` pair (:meth:`BPETokenizer.from_files`). Used when a
  GPT-2 checkpoint directory ships those files. As in GPT-2, BOS, EOS and PAD are all
  the single ``<|endoftext|>`` id.

Neither ``encode`` adds special tokens; text that happens to contain
``<|endoftext|>`` is encoded as ordinary text.

:func:`make_tokenizer` builds one from the name a policy config gives: ``byte``,
``sentiment-bpe`` (a byte-level BPE of 1,122 ids learned from the embedded
``sentiment`` task's training text by :func:`gaf.plugins.lm.bpe_training.learn_bpe`,
shipped in ``tokenizers/sentiment-bpe/``), ``shapes-bpe`` (354 ids learned from the
``shapes`` dataset's training captions, every caption word one token; the
``text-transformer`` conditioner's default), or a directory holding ``vocab.json`` and
``merges.txt``.
"""

from __future__ import annotations

import json
import re
import sys
import unicodedata
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

from gaf.errors import BadConfig, BadData

__all__ = ["ByteTokenizer", "BPETokenizer", "bytes_to_unicode", "gpt2_split", "GPT2_PATTERN",
           "make_tokenizer", "BUILTIN_TOKENIZERS"]

#: tokenizers that need no files of the user's: ``byte`` and the shipped BPEs
BUILTIN_TOKENIZERS = ("byte", "sentiment-bpe", "shapes-bpe")
_SHIPPED = Path(__file__).parent / "tokenizers"


def _utf8(text: str) -> bytes:
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError as exc:  # lone surrogates are not Unicode text
        raise BadData(f"cannot encode text: {exc.reason} at index {exc.start} "
                      f"({text[exc.start:exc.end]!r}); text must be valid Unicode") from None


class ByteTokenizer:
    """UTF-8 bytes as ids 0-255; ``<|bos|>``=256, ``<|eos|>``=257, ``<|pad|>``=258.

    ``decode`` turns each run of byte ids back into text with ``errors="replace"``
    (an invalid byte run becomes U+FFFD). Special ids are dropped, or shown as
    ``<|bos|>``, ``<|eos|>``, ``<|pad|>`` when ``skip_special=False``.
    """

    vocab_size = 259
    bos_id = 256
    eos_id = 257
    pad_id = 258
    special_names = {256: "<|bos|>", 257: "<|eos|>", 258: "<|pad|>"}

    def encode(self, text: str) -> list[int]:
        """The UTF-8 bytes of ``text`` (no special tokens)."""
        return list(_utf8(text))

    def decode(self, ids: Sequence[int], skip_special: bool = True) -> str:
        """Text for ``ids``; raises ``ValueError`` for an id outside ``[0, vocab_size)``."""
        parts: list[str] = []
        run = bytearray()
        for i in ids:
            i = int(i)
            if 0 <= i < 256:
                run.append(i)
                continue
            if i not in self.special_names:
                raise ValueError(f"token id {i} is outside the byte vocabulary (0..258)")
            if not skip_special:
                parts.append(run.decode("utf-8", errors="replace"))
                run.clear()
                parts.append(self.special_names[i])
        parts.append(run.decode("utf-8", errors="replace"))
        return "".join(parts)

    def __repr__(self) -> str:
        return "ByteTokenizer()"


# ----------------------------------------------------------------------------- BPE

#: GPT-2's pre-tokenisation pattern (for the third-party ``regex`` module):
GPT2_PATTERN = (r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+"""
                r"""|\s+(?!\S)|\s+""")


def _category_class(prefix: str) -> str:
    """A ``re`` character-class body listing every code point whose Unicode general
    category starts with ``prefix`` (``"L"`` letters, ``"N"`` numbers), as ranges."""
    parts, start = [], None
    for cp in range(sys.maxunicode + 2):
        inside = cp <= sys.maxunicode and unicodedata.category(chr(cp)).startswith(prefix)
        if inside and start is None:
            start = cp
        elif not inside and start is not None:
            a, b = re.escape(chr(start)), re.escape(chr(cp - 1))
            parts.append(a if start == cp - 1 else f"{a}-{b}")
            start = None
    return "".join(parts)


@lru_cache(maxsize=1)
def gpt2_split() -> re.Pattern[str]:
    r""":data:`GPT2_PATTERN` compiled with the standard ``re`` module.

    ``re`` has no ``\p{..}`` classes, so ``\p{L}`` and ``\p{N}`` are spelled out as
    explicit code-point ranges built from :mod:`unicodedata` (built once per process),
    rather than approximated with ``[^\W\d_]`` / ``\d`` (which would call ``²`` a
    letter and miss non-decimal numbers). ``re``'s ``\s`` also matches the ASCII
    separators U+001C-U+001F, which are not Unicode ``White_Space`` (the ``\s`` of
    GPT-2's tokenizers), so they are moved to the "other" class. The remaining
    difference is the Unicode version of :mod:`unicodedata`.
    """
    letters, numbers = _category_class("L"), _category_class("N")
    space, nonspace = r"[^\S\x1c-\x1f]", r"[\S\x1c-\x1f]"
    other = rf"(?:[^\s{letters}{numbers}]|[\x1c-\x1f])"
    return re.compile(rf"""'s|'t|'re|'ve|'m|'ll|'d| ?[{letters}]+| ?[{numbers}]+| ?{other}+"""
                      rf"""|{space}+(?!{nonspace})|{space}+""")


@lru_cache(maxsize=1)
def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte → printable character table.

    Printable Latin-1 bytes map to themselves; the other 68 bytes map to
    ``chr(256 + n)`` in byte order, so every byte string has a whitespace-free,
    printable spelling (e.g. space is ``Ġ``, newline is ``Ċ``).
    """
    keep = (list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
            + list(range(ord("®"), ord("ÿ") + 1)))
    table, n = {}, 0
    for b in range(256):
        if b in keep:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + n)
            n += 1
    return table


def merge_pair(symbols: Sequence[str], first: str, second: str) -> list[str]:
    """``symbols`` with every occurrence of ``first`` followed by ``second`` merged into
    one symbol, left to right (``a a a`` with the pair ``a a`` gives ``aa a``)."""
    merged: list[str] = []
    i = 0
    while i < len(symbols):
        if i + 1 < len(symbols) and symbols[i] == first and symbols[i + 1] == second:
            merged.append(first + second)
            i += 2
        else:
            merged.append(symbols[i])
            i += 1
    return merged


class BPETokenizer:
    """GPT-2 byte-level BPE over a Hugging Face ``vocab.json`` / ``merges.txt`` pair.

    Encoding: split text with :func:`gpt2_split`, spell each piece's UTF-8 bytes with
    :func:`bytes_to_unicode`, then repeatedly merge the adjacent pair with the lowest
    rank in ``merges.txt`` until no listed pair remains; each resulting symbol is
    looked up in ``vocab.json``. ``bos_id``, ``eos_id`` and ``pad_id`` are all the
    ``<|endoftext|>`` id (GPT-2's convention), so they are *not* distinct.
    """

    def __init__(self, vocab: dict[str, int], merges: Sequence[tuple[str, str]],
                 special_token: str = "<|endoftext|>", *, source: str = "<memory>"):
        self.encoder = dict(vocab)
        self.decoder = {i: s for s, i in self.encoder.items()}
        self.merges = [tuple(m) for m in merges]
        self.ranks = {pair: r for r, pair in enumerate(self.merges)}
        self.byte_encoder = bytes_to_unicode()
        self.byte_decoder = {c: b for b, c in self.byte_encoder.items()}
        if special_token not in self.encoder:
            raise BadData(f"the vocabulary has no {special_token!r} token", path=source)
        missing = [c for c in self.byte_encoder.values() if c not in self.encoder]
        if missing:
            raise BadData(f"the vocabulary lacks {len(missing)} of the 256 byte symbols "
                          f"(e.g. {missing[0]!r}); byte-level BPE needs all of them",
                          path=source)
        for a, b in self.merges:
            if a + b not in self.encoder:
                raise BadData(f"merge {a!r} {b!r} makes {a + b!r}, which is not in the "
                              "vocabulary", path=source)
        self.special_token = special_token
        sid = self.encoder[special_token]
        self.bos_id = self.eos_id = self.pad_id = sid
        self.special_ids = {sid}
        self.vocab_size = max(self.encoder.values()) + 1
        self._cache: dict[str, list[int]] = {}

    @classmethod
    def from_files(cls, vocab_path: str | Path, merges_path: str | Path) -> BPETokenizer:
        """Read a Hugging Face GPT-2 ``vocab.json`` and ``merges.txt``."""
        vocab_path, merges_path = Path(vocab_path), Path(merges_path)
        try:
            vocab = json.loads(vocab_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise BadData(f"cannot read vocabulary: {exc}", path=str(vocab_path)) from None
        if not isinstance(vocab, dict) or not all(
                isinstance(k, str) and isinstance(v, int) for k, v in vocab.items()):
            raise BadData("expected a JSON object mapping token strings to integer ids",
                          path=str(vocab_path))
        try:
            lines = merges_path.read_text(encoding="utf-8").splitlines()
        except OSError as exc:
            raise BadData(f"cannot read merges: {exc.strerror}", path=str(merges_path)) from None
        merges = []
        for n, line in enumerate(lines, start=1):
            if not line.strip() or (n == 1 and line.startswith("#version")):
                continue
            parts = line.split()
            if len(parts) != 2:
                raise BadData(f"expected two symbols separated by a space, got {line!r}",
                              path=str(merges_path), line=n)
            merges.append((parts[0], parts[1]))
        return cls(vocab, merges, source=f"{vocab_path} / {merges_path}")

    def save_files(self, directory: str | Path) -> None:
        """Write ``vocab.json`` and ``merges.txt`` into ``directory`` (HF format)."""
        directory = Path(directory)
        (directory / "vocab.json").write_text(json.dumps(self.encoder, ensure_ascii=False),
                                              encoding="utf-8")
        lines = ["#version: 0.2"] + [f"{a} {b}" for a, b in self.merges]
        (directory / "merges.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")

    def _bpe(self, piece: str) -> list[int]:
        cached = self._cache.get(piece)
        if cached is not None:
            return cached
        symbols = [self.byte_encoder[b] for b in piece.encode("utf-8")]
        while len(symbols) > 1:
            ranked = [(self.ranks.get(pair, len(self.ranks)), i)
                      for i, pair in enumerate(zip(symbols, symbols[1:]))]
            rank, _ = min(ranked)
            if rank == len(self.ranks):
                break
            symbols = merge_pair(symbols, *self.merges[rank])
        ids = [self.encoder[s] for s in symbols]
        if len(self._cache) < 100_000:
            self._cache[piece] = ids
        return ids

    def encode(self, text: str) -> list[int]:
        """BPE ids of ``text`` (no special tokens)."""
        _utf8(text)
        ids: list[int] = []
        for piece in gpt2_split().findall(text):
            ids.extend(self._bpe(piece))
        return ids

    def decode(self, ids: Sequence[int], skip_special: bool = True) -> str:
        """Text for ``ids`` (invalid UTF-8 runs become U+FFFD)."""
        parts: list[str] = []
        run = bytearray()
        for i in ids:
            i = int(i)
            if i in self.special_ids:
                if not skip_special:
                    parts.append(run.decode("utf-8", errors="replace"))
                    run.clear()
                    parts.append(self.decoder[i])
                continue
            token = self.decoder.get(i)
            if token is None:
                raise ValueError(f"token id {i} is not in the vocabulary")
            try:
                run.extend(self.byte_decoder[c] for c in token)
            except KeyError:  # an added token spelled outside the byte alphabet
                parts.append(run.decode("utf-8", errors="replace"))
                run.clear()
                parts.append(token)
        parts.append(run.decode("utf-8", errors="replace"))
        return "".join(parts)

    def __repr__(self) -> str:
        return f"BPETokenizer(vocab_size={self.vocab_size}, merges={len(self.merges)})"


# ------------------------------------------------------------------------ factory

@lru_cache(maxsize=8)
def _shipped_bpe(name: str) -> BPETokenizer:
    return BPETokenizer.from_files(_SHIPPED / name / "vocab.json", _SHIPPED / name / "merges.txt")


def make_tokenizer(spec: str) -> ByteTokenizer | BPETokenizer:
    """The tokenizer named by ``spec``: ``"byte"``, a shipped BPE (``"sentiment-bpe"``,
    ``"shapes-bpe"``) or a directory with a Hugging Face GPT-2 ``vocab.json`` + ``merges.txt`` pair.

    Raises :class:`~gaf.errors.BadConfig` for anything else, naming the choices."""
    if spec == "byte":
        return ByteTokenizer()
    if spec in BUILTIN_TOKENIZERS:
        return _shipped_bpe(spec)
    path = Path(spec).expanduser()
    if (path / "vocab.json").is_file() and (path / "merges.txt").is_file():
        return BPETokenizer.from_files(path / "vocab.json", path / "merges.txt")
    raise BadConfig(f"unknown tokenizer {spec!r}: use one of {', '.join(BUILTIN_TOKENIZERS)} "
                    "or a directory with vocab.json and merges.txt")
