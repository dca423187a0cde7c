"""Text generator of the ``sentiment`` task: review prompts and labelled continuations.

Prompts are the opening of a movie review, from :data:`PROMPT_TEMPLATES` with slots
for a title, director, genre or subject (``"I watched {title} last night and"``).
Each template has a *form* that tells which continuations fit grammatically:

* ``"subject"`` — a noun phrase ("The acting in Night Train"): the continuation is a
  predicate (" was superb and the story kept me hooked.");
* ``"clause"`` — ends with "and", "," or "that": the continuation is a clause
  (" the plot was dull and predictable.");
* ``"sentence"`` — a whole sentence: the continuation is a capitalised sentence.

A continuation has one of four :data:`LABELS`: ``positive``, ``negative``,
``neutral`` (no sentiment word) or ``mixed`` (both polarities joined by "but"). It
starts with one space (so ``prompt + completion`` is the full review text), ends with
a period, and uses a compact subset (about 170 words) of
:data:`~gaf.plugins.tasks.sentiment_lexicon.VOCABULARY`, so that a ~1M-parameter
byte-level model learns to spell it quickly; prompts draw on the wider lists (titles,
directors, subjects). All randomness comes from the ``random.Random`` passed in.
"""

from __future__ import annotations

import random
from collections.abc import Callable

from .sentiment_lexicon import ASPECTS, DIRECTORS, GENRES, SUBJECTS, TITLES

__all__ = ["LABELS", "PROMPT_TEMPLATES", "all_prompts", "continuation", "prompt_groups"]

LABELS: tuple[str, ...] = ("positive", "negative", "neutral", "mixed")

#: (template, form). Slots: {title} {director} {genre} {genres} {subject} {aspect}.
PROMPT_TEMPLATES: tuple[tuple[str, str], ...] = (
    ("The acting in {title}", "subject"),
    ("The {aspect} of {title}", "subject"),
    ("This {genre} about {subject}", "subject"),
    ("{title}, the new {genre} from {director},", "subject"),
    ("The last hour of {title}", "subject"),
    ("This remake of {title}", "subject"),
    ("The ending of this {genre}", "subject"),
    ("{director}'s latest {genre}", "subject"),
    ("The {aspect} in this {genre}", "subject"),
    ("The first half of {title}", "subject"),
    ("I watched this movie last night and", "clause"),
    ("I watched {title} last night and", "clause"),
    ("My friends took me to see {title} and", "clause"),
    ("I went into this {genre} with low expectations and", "clause"),
    ("I had heard a lot about {title}, and", "clause"),
    ("After reading the book, I saw {title} and", "clause"),
    ("We rented {title} on a rainy weekend and", "clause"),
    ("As a fan of {director}, I can say that", "clause"),
    ("I have seen a lot of {genres}, and", "clause"),
    ("I saw {title} at the cinema, and", "clause"),
    ("My wife picked {title} for movie night and", "clause"),
    ("Ten minutes into {title}, I knew that", "clause"),
    ("I expected a lot from {director}, and", "clause"),
    ("If you like {genres}, you should know that", "clause"),
    ("Honestly,", "clause"),
    ("To be fair,", "clause"),
    ("I saw {title} this weekend.", "sentence"),
    ("{title} is a {genre} about {subject}.", "sentence"),
    ("I finally watched {title}.", "sentence"),
    ("{director} directed {title}.", "sentence"),
    ("This is my review of {title}.", "sentence"),
)

_SINGULAR_ASPECTS = tuple(a for a, plural in ASPECTS if not plural)
_SLOTS: dict[str, tuple[str, ...]] = {
    "title": TITLES, "director": DIRECTORS, "genre": tuple(g for g, _ in GENRES),
    "genres": tuple(p for _, p in GENRES), "subject": SUBJECTS,
    "aspect": _SINGULAR_ASPECTS,
}


def prompt_groups() -> list[list[str]]:
    """Every prompt the templates can produce, one list per template, in a fixed order.

    A prompt that two templates can produce belongs to the first one only, so the
    groups are disjoint."""
    groups: list[list[str]] = []
    seen: set[str] = set()
    for template, _ in PROMPT_TEMPLATES:
        fillings: list[dict[str, str]] = [{}]
        for slot, values in _SLOTS.items():
            if "{" + slot + "}" in template:
                fillings = [{**f, slot: v} for f in fillings for v in values]
        prompts = [template.format(**f) for f in fillings]
        groups.append([p for p in dict.fromkeys(prompts) if p not in seen])
        seen.update(prompts)
    return groups


def all_prompts() -> list[tuple[str, str]]:
    """Every ``(prompt, form)`` the templates can produce, in a fixed order."""
    return [(prompt, form) for group, (_, form) in zip(prompt_groups(), PROMPT_TEMPLATES)
            for prompt in group]


# ----------------------------------------------------------------------- pieces

# The continuations use a compact subset of the lexicon (about 150 distinct words) so
# that a ~1M-parameter byte-level model learns to spell them within a few hundred
# steps; the oracle knows the whole lexicon, so a policy's synonyms still count.
_POS = ("great", "good", "wonderful", "brilliant", "excellent", "beautiful", "funny",
        "clever", "moving", "charming", "perfect", "lovely", "fun", "superb")
_NEG = ("bad", "terrible", "awful", "boring", "dull", "weak", "poor", "stupid", "silly",
        "slow", "flat", "predictable", "painful", "lazy")
_MILD_POS = ("good", "funny", "clever", "moving", "charming", "lovely", "fun")
_MILD_NEG = ("dull", "weak", "poor", "silly", "slow", "flat", "predictable", "lazy")
_INTENSIFY = ("very", "really", "truly", "so")  # "so" only after a verb
_SOFTEN = ("a bit", "a little", "slightly")
_NEGATE_WEAK = ("not very", "not", "not at all")
_TAILS = ("from start to finish", "until the very end", "the whole time")
_POS_NOUNS = ("masterpiece", "real gem", "joy", "real treat")
_NEG_NOUNS = ("mess", "total disaster", "waste of time", "complete mess")
_POS_FEEL = ("hooked", "smiling", "laughing")
_NEG_FEEL = ("bored", "confused")
_POS_VERBS = ("i loved", "i really enjoyed", "i enjoyed", "i liked")
_NEG_VERBS = ("i hated", "i did not enjoy", "i really disliked")
_ASPECTS = (("acting", False), ("plot", False), ("story", False), ("script", False),
            ("ending", False), ("music", False), ("cast", False), ("dialogue", False),
            ("pacing", False), ("humor", False), ("characters", True), ("jokes", True),
            ("effects", True))
_COUNTABLE = ("plot", "story", "script", "ending", "cast")
_FILMS = ("film", "movie")
_GENRES = (("drama", "dramas"), ("comedy", "comedies"), ("thriller", "thrillers"),
           ("western", "westerns"), ("musical", "musicals"))
_SUBJECTS = ("two brothers", "a small town", "a young boxer", "a family farm")
_PLACES = ("a small town", "the city", "the desert", "the mountains")
_COMPANIONS = ("friends", "family", "brother", "sister")
_NEUTRAL = ("long", "short", "quiet", "simple", "familiar", "dark")


def _a(word: str) -> str:
    return ("an " if word[0] in "aeiou" else "a ") + word


def _aspect(rng: random.Random) -> tuple[str, str]:
    """An aspect and its verb ("was" or "were")."""
    aspect, plural = rng.choice(_ASPECTS)
    return aspect, ("were" if plural else "was")


def _adj(rng: random.Random, pol: int, *, attributive: bool = True) -> str:
    """A sentiment adjective (may be intensified, never negated)."""
    word = rng.choice(_POS if pol > 0 else _NEG)
    if rng.random() >= 0.3:
        return word
    return f"{rng.choice(_INTENSIFY[:-1] if attributive else _INTENSIFY)} {word}"


def _ap(rng: random.Random, pol: int) -> str:
    """A predicative adjective phrase of polarity ``pol`` (+1, -1, or 0 = neutral)."""
    if pol == 0:
        return rng.choice(_NEUTRAL)
    same, other = (_POS, _NEG) if pol > 0 else (_NEG, _POS)
    r = rng.random()
    if r < 0.45:
        return _adj(rng, pol, attributive=False)
    if r < 0.65:
        a, b = rng.sample(same, 2)
        return f"{a} and {b}"
    if r < 0.8:
        return f"{rng.choice(_SOFTEN)} {rng.choice(_MILD_POS if pol > 0 else _MILD_NEG)}"
    negated = rng.choice(_NEGATE_WEAK)
    if negated == "not at all":
        return f"not {rng.choice(other)} at all"
    return f"{negated} {rng.choice(other)}"


def _clause(rng: random.Random, pol: int) -> str:
    """A full clause (lower case, no final period) of polarity ``pol``."""
    if pol == 0:
        return _neutral_clause(rng)
    aspect, be = _aspect(rng)
    film = rng.choice(_FILMS)
    genre = rng.choice(_GENRES)[0]
    options: list[Callable[[], str]] = [
        lambda: f"the {aspect} {be} {_ap(rng, pol)}",
        lambda: f"the {aspect} felt {_ap(rng, pol)}",
        lambda: f"i thought the {aspect} {be} {_ap(rng, pol)}",
        lambda: f"i found the {aspect} {_ap(rng, pol)}",
        lambda: f"{rng.choice(_POS_VERBS if pol > 0 else _NEG_VERBS)} the {aspect}"
                + rng.choice(("", "", f" {rng.choice(_TAILS)}")),
        lambda: f"it was {_a(_adj(rng, pol))} {genre}",
        lambda: f"it is {_a(_adj(rng, pol))} {film} with "
                + (f"{_adj(rng, pol)} {aspect}" if be == "were"
                   else _a(f"{_adj(rng, pol)} {rng.choice(_COUNTABLE)}")),
        lambda: f"the director did {_a(_adj(rng, pol))} job with the {aspect}",
        lambda: f"every scene felt {_ap(rng, pol)}",
        lambda: f"the {film} is {_a(rng.choice(_POS_NOUNS if pol > 0 else _NEG_NOUNS))}",
        lambda: (f"i would recommend this {film} to {rng.choice(('anyone', 'everyone'))}"
                 if pol > 0 else f"i would not recommend this {film} to anyone"),
        lambda: (f"the {film} kept me {rng.choice(_POS_FEEL)} {rng.choice(_TAILS)}"
                 if pol > 0 else f"the {film} left me {rng.choice(_NEG_FEEL)}"
                 + rng.choice(("", f" {rng.choice(_TAILS)}"))),
        lambda: f"this is the {'best' if pol > 0 else 'worst'} {genre} i have seen in years",
        lambda: (f"the {aspect} made the {film} feel {_ap(rng, pol)}"),
    ]
    if pol < 0:
        options.append(lambda: f"i wasted two hours on this {film}")
    return rng.choice(options)()


def _neutral_clause(rng: random.Random) -> str:
    aspect, be = _aspect(rng)
    film = rng.choice(_FILMS)
    options: list[Callable[[], str]] = [
        lambda: f"the story follows {rng.choice(_SUBJECTS)} in {rng.choice(_PLACES)}",
        lambda: f"the {film} is about {rng.choice(_SUBJECTS)}",
        lambda: f"the {film} runs about two hours",
        lambda: f"the {aspect} reminded me of older {rng.choice(_GENRES)[1]}",
        lambda: f"most of the {film} takes place in {rng.choice(_PLACES)}",
        lambda: f"the {film} was shot in black and white",
        lambda: f"the {aspect} {be} {rng.choice(_NEUTRAL)}",
        lambda: f"i watched the {film} with my {rng.choice(_COMPANIONS)}",
        lambda: "the director also wrote the script",
        lambda: f"the final scene takes place in {rng.choice(_PLACES)}",
        lambda: f"i saw the {film} on a rainy night with my {rng.choice(_COMPANIONS)}",
    ]
    return rng.choice(options)()


def _predicate(rng: random.Random, pol: int) -> str:
    """A predicate for a singular subject (lower case, no final period)."""
    film = rng.choice(_FILMS)
    if pol == 0:
        options: list[Callable[[], str]] = [
            lambda: "runs about two hours",
            lambda: f"takes place in {rng.choice(_PLACES)}",
            lambda: f"was {rng.choice(_NEUTRAL)} and {_neutral_clause(rng)}",
            lambda: f"reminded me of older {rng.choice(_GENRES)[1]}",
            lambda: "was shot in black and white",
            lambda: f"is {_a(rng.choice(_NEUTRAL))} {rng.choice(_GENRES)[0]}",
            lambda: f"follows {rng.choice(_SUBJECTS)} in {rng.choice(_PLACES)}",
        ]
        return rng.choice(options)()
    be = rng.choice(("was", "is"))
    options = [
        lambda: f"{be} {_ap(rng, pol)}",
        lambda: f"felt {_ap(rng, pol)}",
        lambda: f"seemed {_ap(rng, pol)}",
        lambda: f"{be} {_a(_adj(rng, pol))} {film}",
        lambda: f"made the {film} feel {_ap(rng, pol)}",
        lambda: f"{be} the {'best' if pol > 0 else 'worst'} part of the {film}",
        lambda: (f"kept me {rng.choice(_POS_FEEL)} {rng.choice(_TAILS)}" if pol > 0
                 else f"left me {rng.choice(_NEG_FEEL)} {rng.choice(_TAILS)}"),
        lambda: f"{be} {_a(rng.choice(_POS_NOUNS if pol > 0 else _NEG_NOUNS))}",
    ]
    return rng.choice(options)()


def _polarities(rng: random.Random, label: str) -> tuple[int, int | None, str]:
    """(first polarity, second polarity or None, joiner) for a label."""
    if label == "mixed":
        first = rng.choice((1, -1))
        return first, -first, " but "
    pol = {"positive": 1, "negative": -1, "neutral": 0}[label]
    if rng.random() < 0.5:
        return pol, None, ""
    return pol, pol, rng.choice((" and ", ", and "))


def continuation(rng: random.Random, form: str, label: str) -> str:
    """One candidate continuation for a prompt of ``form`` with sentiment ``label``.

    Candidates are not filtered: the task keeps those that fit its length limits and
    that the oracle scores without penalties (see :mod:`gaf.plugins.tasks.sentiment`).
    """
    first, second, joiner = _polarities(rng, label)
    head = _predicate(rng, first) if form == "subject" else _clause(rng, first)
    text = head
    if second is not None:
        text += joiner + _clause(rng, second)
    if form == "sentence":
        text = text[0].upper() + text[1:]
    text = text.replace(" i ", " I ")
    if text.startswith("i "):
        text = "I " + text[2:]
    return " " + text + "."
