"""What a text-to-image objective reads from a dataset besides the images."""

from __future__ import annotations

from typing import Any

from gaf.errors import BadConfig

__all__ = ["conditions_of"]


def conditions_of(dataset: Any, key: str, n: int | None = None) -> list[Any]:
    """The ``key`` field (``"caption"``, ``"label"`` …) of the first ``n`` items (all by
    default), through the dataset's ``captions()``/``labels()`` when it has them (no
    image rendering), else item by item."""
    count = len(dataset) if n is None else min(n, len(dataset))
    fast = {"caption": "captions", "label": "labels"}.get(key)
    if fast and hasattr(dataset, fast):
        return list(getattr(dataset, fast)())[:count]
    try:
        return [dataset[i][key] for i in range(count)]
    except KeyError:
        raise BadConfig(f"the dataset's items have no {key!r} field, which the conditioner "
                        f"reads") from None
