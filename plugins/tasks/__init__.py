"""gaf.plugins.tasks: language tasks (prompts, supervised examples, true rewards).

* :mod:`~gaf.plugins.tasks.sentiment` — the embedded movie-review task ``sentiment``
  and its ground-truth reward ``sentiment-oracle`` (lexicon in ``sentiment_lexicon``,
  text generator in ``sentiment_text``, scorer in ``sentiment_reward``);
* :mod:`~gaf.plugins.tasks.jsonl` — the task ``jsonl``: SFT examples or preference
  data (TRL pairs, ranked lists, labelled completions) from a file.
"""
