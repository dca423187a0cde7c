"""``class``: a learned embedding per class label (LDM's class-conditional ``ClassEmbedder``).

``__call__(labels)`` maps ``B`` integer labels in ``[0, num_classes)`` to
``(B, tokens, width)`` states: each class owns ``tokens`` learned vectors of ``width``
channels (one ``nn.Embedding`` row of ``tokens * width`` numbers, reshaped), which the
noise model's cross-attention reads like a very short caption. The default,
``num_classes = 30``, fits the ``shapes`` dataset's colour-shape labels
(``colour_index * 5 + shape_index``).

Labels may be Python or NumPy integers, a 1-D integer tensor, or strings of digits
(``"3"``; the command line passes prompts as strings). Anything else, or a label
outside ``[0, num_classes)``, raises :class:`~gaf.errors.BadData` naming it.

Initialisation: class rows ~ ``N(0, 1)`` (``nn.Embedding``'s default, as in the LDM),
the same scale as the ``text-transformer``'s LayerNorm-ed states. ``null(batch_size)``
is a separate learned ``(tokens, width)`` parameter, not one of the classes,
initialised ~ ``N(0, 0.02^2)`` like the text encoder's null states: near zero, so the
unconditional branch starts out as "no information" for cross-attention.

Default size (``num_classes=30, width=64, tokens=1``): 1,984 parameters (1,920 class
rows + 64 null).
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from typing import Any

import attrs
import numpy as np
import torch
from torch import Tensor, nn

from gaf.config import option
from gaf.errors import BadData

__all__ = ["ClassEmbeddingConfig", "ClassEmbedding", "NULL_STD"]

#: std of the normal initialisation of the null embedding
NULL_STD = 0.02


@attrs.define
class ClassEmbeddingConfig:
    """Options of the ``class`` conditioner."""

    num_classes: int = option(30, "number of class labels (shapes: 30 colour-shape classes)",
                              ge=1)
    width: int = option(64, "state width (must equal the noise model's context_dim)", ge=1)
    tokens: int = option(1, "learned vectors per class (the context length)", ge=1)


class ClassEmbedding(nn.Module):
    """Labels → ``(B, tokens, width)`` learned class embeddings (see the module docstring)."""

    Config = ClassEmbeddingConfig
    condition_key = "label"
    trainable = True

    def __init__(self, config: ClassEmbeddingConfig | None = None):
        super().__init__()
        cfg = config if config is not None else ClassEmbeddingConfig()
        self.config = cfg
        self.tokens, self.width = cfg.tokens, cfg.width
        self.embedding = nn.Embedding(cfg.num_classes, cfg.tokens * cfg.width)
        self.null_embedding = nn.Parameter(torch.empty(cfg.tokens, cfg.width))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Class rows ~ N(0, 1), null ~ N(0, 0.02^2)."""
        nn.init.normal_(self.embedding.weight)
        nn.init.normal_(self.null_embedding, std=NULL_STD)

    def labels(self, conditions: Sequence[Any] | Tensor) -> Tensor:
        """``conditions`` as a ``(B,)`` LongTensor on the module's device, checked."""
        n = self.config.num_classes
        if isinstance(conditions, Tensor):
            if conditions.dim() != 1 or conditions.dtype.is_floating_point \
                    or conditions.dtype.is_complex or conditions.dtype == torch.bool:
                raise BadData(f"class conditioner: expected a 1-D integer tensor of labels, "
                              f"got shape {tuple(conditions.shape)} dtype {conditions.dtype}")
            values = conditions.tolist()
        elif isinstance(conditions, (str, bytes)) or not isinstance(conditions,
                                                                     (Sequence, np.ndarray)):
            raise BadData(f"class conditioner: expected a sequence of labels, got "
                          f"{type(conditions).__name__} {conditions!r}")
        else:
            values = [_label(c) for c in conditions]
        for v in values:
            if not 0 <= v < n:
                raise BadData(f"class conditioner: label {v} is outside [0, {n}) "
                              f"(num_classes={n})")
        device = self.embedding.weight.device
        return torch.tensor(values, dtype=torch.long).view(len(values)).to(device)

    def forward(self, conditions: Sequence[Any] | Tensor) -> Tensor:
        """``(B, tokens, width)`` embeddings of ``B`` labels."""
        labels = self.labels(conditions)
        return self.embedding(labels).view(labels.shape[0], self.tokens, self.width)

    def null(self, batch_size: int) -> Tensor:
        """The learned unconditional context, ``(batch_size, tokens, width)``."""
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 0:
            raise BadData(f"class conditioner: null() needs a batch size >= 0, got "
                          f"{batch_size!r}")
        return self.null_embedding.unsqueeze(0).expand(batch_size, -1, -1)

    def extra_repr(self) -> str:
        return f"num_classes={self.config.num_classes}, tokens={self.tokens}"


def _label(value: Any) -> int:
    """One label as an int: an integer (not a bool) or a string of decimal digits."""
    if isinstance(value, (bool, np.bool_)):
        raise BadData(f"class conditioner: label {value!r} is a boolean, not a class number")
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, Tensor) and value.dim() == 0 and not value.dtype.is_floating_point \
            and value.dtype != torch.bool:
        return int(value.item())
    if isinstance(value, str):
        text = value.strip()
        digits = text[1:] if text[:1] in "+-" else text
        if digits.isascii() and digits.isdigit():
            return int(text)
    raise BadData(f"class conditioner: label {value!r} is not an integer class number")
