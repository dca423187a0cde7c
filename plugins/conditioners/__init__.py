"""Conditioners for text-to-image diffusion (kind ``conditioner``).

* ``text-transformer`` (:class:`TextTransformer`): captions → ``(B, max_length, width)``
  states of a small bidirectional transformer trained jointly with the noise model
  (the LDM recipe), over the word-level ``shapes-bpe`` tokenizer by default.
* ``class`` (:class:`ClassEmbedding`): integer labels → ``(B, tokens, width)`` learned
  embeddings (LDM's class-conditional ``ClassEmbedder``).

Both implement :class:`gaf.interfaces.Conditioner`: ``__call__(conditions)``,
``null(batch_size)`` (a learned unconditional context for classifier-free guidance),
``condition_key``, ``tokens``, ``width`` and ``trainable`` (True: trained with the
noise model).
"""

from .label import ClassEmbedding, ClassEmbeddingConfig
from .text import TextTransformer, TextTransformerConfig

__all__ = ["ClassEmbedding", "ClassEmbeddingConfig", "TextTransformer", "TextTransformerConfig"]
