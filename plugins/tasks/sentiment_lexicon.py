"""Word lists of the ``sentiment`` task: the oracle's lexicon and the generator's fillers.

Everything here is plain data, lower-case ASCII. The oracle
(:mod:`gaf.plugins.tasks.sentiment_reward`) reads the word classes below; the text
generator (:mod:`gaf.plugins.tasks.sentiment_text`) draws its fillers from the same
lists, so every word the task writes is in :data:`VOCABULARY` (a test checks this).

Word classes (disjoint except where noted):

* :data:`POSITIVE` / :data:`NEGATIVE` — sentiment words with their strength
  (1 = mild, 3 = strong). :data:`VALENCE` maps each to a signed valence.
* :data:`NEGATORS` — flip the next sentiment word (any word ending in ``n't`` too).
* :data:`INTENSIFIERS` / :data:`DIMINISHERS` — multiply the next sentiment word.
* :data:`CONTRAST` — ``but``/``however``: the clause after weighs more.
* :data:`FUNCTION_WORDS` — grammar words; repeating them is not penalised.
* :data:`TOPIC_WORDS` — movie-related content words (an on-topic review names one).
* :data:`CONTENT_WORDS` — other known content words (verbs, places, title words…).
"""

from __future__ import annotations

# ------------------------------------------------------------------ sentiment words

#: Positive adjectives usable after "was" and before a noun ("a wonderful film").
POSITIVE_ADJECTIVES: dict[str, float] = {
    "great": 2.5, "good": 2.0, "fine": 1.0, "decent": 1.0, "nice": 1.5, "solid": 1.5,
    "wonderful": 3.0, "brilliant": 3.0, "superb": 3.0, "excellent": 3.0, "amazing": 3.0,
    "fantastic": 3.0, "outstanding": 3.0, "perfect": 3.0, "masterful": 3.0,
    "stunning": 2.5, "beautiful": 2.5, "lovely": 2.0, "moving": 2.0, "charming": 2.0,
    "delightful": 2.5, "clever": 2.0, "gripping": 2.5, "powerful": 2.0, "touching": 2.0,
    "memorable": 2.0, "enjoyable": 2.0, "funny": 2.0, "fresh": 1.5, "smart": 1.5,
    "impressive": 2.0, "engaging": 2.0, "heartfelt": 2.0, "thoughtful": 1.5, "warm": 1.5,
    "entertaining": 2.0, "believable": 1.5, "elegant": 2.0, "inspiring": 2.5, "fun": 2.0,
}

#: Negative adjectives (strengths are magnitudes; the valence is negative).
NEGATIVE_ADJECTIVES: dict[str, float] = {
    "bad": 2.5, "terrible": 3.0, "awful": 3.0, "horrible": 3.0, "dreadful": 3.0,
    "painful": 2.5, "boring": 2.5, "dull": 2.0, "weak": 2.0, "poor": 2.0, "stupid": 2.5,
    "lazy": 2.0, "silly": 1.5, "flat": 1.5, "messy": 1.5, "predictable": 1.5,
    "forgettable": 2.0, "bland": 1.5, "tedious": 2.5, "slow": 1.0, "annoying": 2.0,
    "confusing": 1.5, "clumsy": 1.5, "cheap": 1.5, "ugly": 2.0, "disappointing": 2.5,
    "pointless": 2.5, "shallow": 2.0, "wooden": 2.0, "mediocre": 1.5, "lifeless": 2.5,
}

#: Positive verbs, nouns and feelings ("i loved", "a gem", "kept me hooked").
POSITIVE_OTHER: dict[str, float] = {
    "loved": 3.0, "love": 3.0, "enjoyed": 2.0, "enjoy": 2.0, "liked": 1.5, "admired": 2.0,
    "recommend": 2.0, "best": 3.0, "better": 1.5, "masterpiece": 3.0, "gem": 2.5,
    "joy": 2.5, "treat": 2.0, "delight": 2.5, "hooked": 2.0, "smiling": 2.0,
    "laughing": 2.0, "interested": 1.5,
}

#: Negative verbs, nouns and feelings ("i hated", "a mess", "left me bored").
NEGATIVE_OTHER: dict[str, float] = {
    "hated": 3.0, "hate": 3.0, "disliked": 2.0, "wasted": 2.5, "regret": 2.0,
    "worst": 3.0, "worse": 1.5, "mess": 2.0, "disaster": 3.0, "waste": 2.5,
    "failure": 2.5, "bored": 2.5, "confused": 1.5, "annoyed": 2.0,
}

POSITIVE: dict[str, float] = {**POSITIVE_ADJECTIVES, **POSITIVE_OTHER}
NEGATIVE: dict[str, float] = {**NEGATIVE_ADJECTIVES, **NEGATIVE_OTHER}

#: Signed valence of every sentiment word.
VALENCE: dict[str, float] = {**POSITIVE, **{w: -s for w, s in NEGATIVE.items()}}

# ------------------------------------------------------------------------ modifiers

#: Words that flip the polarity of the next sentiment word. Any token ending in
#: ``n't`` ("wasn't", "didn't") is a negator as well.
NEGATORS: frozenset[str] = frozenset({"not", "no", "never", "hardly", "nothing", "nor",
                                      "without"})

#: Contractions the generator writes (all negators).
NEGATED_AUXILIARIES: tuple[str, ...] = ("wasn't", "isn't", "didn't", "doesn't", "don't",
                                        "couldn't", "won't")

#: Multipliers of the next sentiment word's valence.
INTENSIFIERS: dict[str, float] = {
    "very": 1.3, "really": 1.3, "truly": 1.3, "so": 1.3, "too": 1.3, "extremely": 1.5,
    "incredibly": 1.5, "absolutely": 1.5, "genuinely": 1.3, "quite": 1.1, "utterly": 1.5,
    "totally": 1.3, "total": 1.3, "complete": 1.3, "real": 1.2, "deeply": 1.3,
}
DIMINISHERS: dict[str, float] = {
    "slightly": 0.5, "somewhat": 0.6, "fairly": 0.7, "rather": 0.7, "bit": 0.6,
    "little": 0.6, "mostly": 0.8,
}

#: Contrast words: the valence before the first one is halved, after it × 1.5.
CONTRAST: frozenset[str] = frozenset({"but", "however"})

# ---------------------------------------------------------------- grammar / content

FUNCTION_WORDS: frozenset[str] = frozenset("""
a an the and or but however of in on at to for with from by about as into over after
before until through than then so too also just even still only again ever once
is was were are be been being am has have had do does did will would can could should
it its it's this that these those there here i me my we our you your he him his she
her they them their who whom which what when where while why how if because though
all some any every each both more most much many few other such same own one no not
never up out off down very really quite well almost like
""".split())

#: Neutral adjectives the generator uses for neutral descriptions.
NEUTRAL_ADJECTIVES: tuple[str, ...] = ("long", "short", "quiet", "simple", "familiar",
                                       "typical", "unusual", "old", "dark", "different",
                                       "loud", "serious")

#: Movie-related words: a completion naming one is on topic.
TOPIC_WORDS: frozenset[str] = frozenset("""
film films movie movies cinema screen acting actor actors actress cast plot story stories
script screenplay dialogue ending soundtrack music camera cinematography photography
pacing direction director directors editing humor writing villain hero scene scenes act
character characters performance performances jokes effects costumes action sequel
remake drama dramas comedy comedies thriller thrillers western westerns musical musicals
romance romances mystery mysteries documentary documentaries horror crime genre twist
role roles audience theater runtime trailer lead actress picture
""".split())

# ----------------------------------------------------------------- generator fillers

#: Invented film titles (prompt slots).
TITLES: tuple[str, ...] = (
    "The Long Winter", "Red Horizon", "City of Glass", "Paper Moon", "The Last Orchard",
    "Night Train", "Silver Lake", "The Quiet Year", "Iron Valley", "Blue Summer",
    "The Broken Clock", "Storm Season", "The Hidden Road", "Golden Hour", "Dark Water",
    "The Lost Letter", "Stone Bridge", "Northern Lights", "The Empty House", "Wild River",
    "Salt and Smoke", "The Glass Garden", "Morning Star", "The Third Door", "Falling Snow",
    "Distant Shore", "The Painted Sky", "Winter Roads",
)

#: Invented directors (prompt slots).
DIRECTORS: tuple[str, ...] = (
    "Anna Reyes", "Tom Becker", "Mira Chen", "Paul Novak", "Lena Ford", "Sam Okafor",
    "Ruth Adler", "Omar Haddad", "Nina Petrova", "Jack Moreno",
)

#: (singular, plural) genre nouns.
GENRES: tuple[tuple[str, str], ...] = (
    ("drama", "dramas"), ("comedy", "comedies"), ("thriller", "thrillers"),
    ("western", "westerns"), ("musical", "musicals"), ("romance", "romances"),
    ("mystery", "mysteries"), ("documentary", "documentaries"), ("war film", "war films"),
    ("horror film", "horror films"), ("crime story", "crime stories"),
    ("family film", "family films"),
)

#: What a film can be about (prompt and neutral-sentence slots).
SUBJECTS: tuple[str, ...] = (
    "a small town", "two brothers", "a stolen painting", "a lonely teacher",
    "a family farm", "a young boxer", "an old ship", "a missing girl", "a jazz singer",
    "a haunted hotel", "a failed heist", "a space mission", "a war reporter",
    "three sisters", "a night nurse", "an old soldier",
)

#: Where a film takes place.
PLACES: tuple[str, ...] = (
    "a small town", "a big city", "the desert", "the mountains", "a quiet village",
    "the north", "a seaside town", "an old hotel", "a farm", "the city",
)

#: (aspect, is_plural): the parts of a film a review talks about (all on topic).
ASPECTS: tuple[tuple[str, bool], ...] = (
    ("acting", False), ("plot", False), ("story", False), ("script", False),
    ("dialogue", False), ("ending", False), ("soundtrack", False), ("music", False),
    ("camera work", False), ("pacing", False), ("direction", False), ("cast", False),
    ("lead actor", False), ("lead actress", False), ("editing", False), ("humor", False),
    ("cinematography", False), ("writing", False), ("villain", False),
    ("final scene", False), ("opening scene", False), ("first act", False),
    ("characters", True), ("performances", True), ("jokes", True), ("effects", True),
    ("costumes", True), ("action scenes", True),
)

#: Nouns for the film itself.
FILM_NOUNS: tuple[str, ...] = ("film", "movie", "picture", "story")

#: People one watches a film with.
COMPANIONS: tuple[str, ...] = ("brother", "sister", "wife", "husband", "parents",
                               "friends", "kids", "family")

#: Other content words used by the templates (verbs, time words, …).
OTHER_CONTENT_WORDS: frozenset[str] = frozenset("""
watched watch watching saw see seen went rented picked took heard read reading thought
found felt feel seemed made make kept left expected expectations knew know say said
follows takes place shot runs includes wrote plays reminded spent sitting waiting
weekend night last evening friend brother sister wife husband parents kids family
minutes hours hour two three ten first second final opening whole half rainy fan lot
low high anyone everyone time start finish end part year years town city village
desert mountains north seaside farm hotel ship girl teacher boxer singer brothers
sisters painting heist mission space jazz stolen missing lonely young small big
haunted failed black white book new latest older honestly fair short keep can
directed review finally worth surprise job piece work example nurse soldier war
reporter crime sure cannot wait next sleep mind moment moments
""".split())


def _words(phrases: object) -> set[str]:
    out: set[str] = set()
    for phrase in phrases:  # type: ignore[attr-defined]
        if isinstance(phrase, tuple):
            out |= _words(p for p in phrase if isinstance(p, str))
        else:
            out |= {w.lower().removesuffix("'s") for w in phrase.split()}
    return out


#: Known content words that are neither topic words nor sentiment/modifier words.
CONTENT_WORDS: frozenset[str] = frozenset(
    (_words(TITLES) | _words(DIRECTORS) | _words(SUBJECTS) | _words(PLACES)
     | _words(COMPANIONS) | set(NEUTRAL_ADJECTIVES) | OTHER_CONTENT_WORDS)
    - FUNCTION_WORDS - TOPIC_WORDS - set(VALENCE) - set(INTENSIFIERS) - set(DIMINISHERS)
    - NEGATORS - CONTRAST
)

#: Every word the task writes; the oracle treats any other token as a non-word.
VOCABULARY: frozenset[str] = frozenset(
    FUNCTION_WORDS | TOPIC_WORDS | CONTENT_WORDS | set(VALENCE) | set(INTENSIFIERS)
    | set(DIMINISHERS) | NEGATORS | CONTRAST | set(NEGATED_AUXILIARIES)
    | _words(g for g in GENRES) | _words(a for a, _ in ASPECTS) | set(FILM_NOUNS)
)
