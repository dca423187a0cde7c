"""The contract of a foreign checkpoint reader: :class:`Loader` (registry kind ``loader``,
tried in turn by :func:`gaf.load`).

Part of :mod:`gaf.interfaces` (which re-exports every name here); no torch at import.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:  # pragma: no cover - typing only
    from pathlib import Path


__all__ = ["Loader"]


@runtime_checkable
class Loader(Protocol):
    """A reader of a foreign checkpoint format for :func:`gaf.load` (registry kind
    ``loader``: ``hf-gpt2``).

    The registered object itself is used (never built): a class with class methods,
    or any object with these members.

    * ``kind``: the registry kind it loads (``"policy"``); the catalogue's ``loads``
      must say the same.
    * ``accepts(path) -> bool``: whether the directory ``path`` (a ``pathlib.Path``
      that exists) is in its format; False for anything else, never an error, except a
      :class:`~gaf.errors.GafError` (a ``BadData`` naming the file) for a directory
      that is its format but damaged, reported when no other loader accepts it.
    * ``load(path)``: the component, built and with its weights; ``gaf.load`` puts a
      module in eval mode and stamps it with ``kind`` and the catalogue's ``creates``
      (the registry name that rebuilds it from its ``config``) unless it already has a
      ``gaf_name``.
    """

    kind: str

    def accepts(self, path: Path) -> bool: ...

    def load(self, path: Path) -> Any: ...
