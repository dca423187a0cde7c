"""``folder``: a directory of images with captions in ``metadata.jsonl``.

The Hugging Face *imagefolder* layout: the directory ``path`` holds image files (any
format Pillow reads: png, jpg, bmp, gif, webp …, possibly in subdirectories) and a
``metadata.jsonl`` with one JSON object per line::

    {"file_name": "0001.png", "text": "a red circle"}
    {"file_name": "cats/0002.jpg", "caption": "a cat", "label": 3}

* ``file_name`` (required) — the image's path relative to ``path``;
* ``text`` or ``caption`` (optional, ``text`` wins; default ``""``) — the caption;
* ``label`` (optional) — a non-negative int; if one record has it, all must.

Blank lines are skipped; other keys are ignored.

Items
-----
``ds[i]`` (in the order of the metadata lines) is ``{"image", "caption", "label"}``.
``image`` is float32 ``(channels, R, R)`` in ``[-1, 1]`` (pixel ``x`` → ``x / 127.5 -
1``): the image converted to RGB (``channels=3``; an alpha channel is dropped) or grey
(``channels=1``), centre-cropped to a square on its shorter side, then resized to
``resolution`` with bicubic filtering (anti-aliased when shrinking; no resize when it
already has that size). Images are decoded on access (nothing is cached).

``label`` is the record's ``label`` if given (``num_classes`` = largest + 1, and
``class_names[k]`` = the caption of the first record with label k, or ``"class k"``);
otherwise the index of the record's caption among the sorted distinct captions
(``class_names`` = those captions).

Errors (:class:`gaf.errors.BadData`, naming the file and, for records, the line of
``metadata.jsonl``): a missing directory or ``metadata.jsonl``, a line that is not a
JSON object, a record without a string ``file_name``, a caption that is not a string,
a bad or missing ``label``, a ``file_name`` that does not exist, an image Pillow
cannot read (checked when the dataset is built, from the file header, and again when
the item is decoded), and a metadata file without records.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import attrs
import numpy as np
from PIL import Image

from gaf.config import option
from gaf.errors import BadConfig, BadData

from .common import check_channels, check_index, check_resolution, uint8_to_unit

__all__ = ["FolderConfig", "FolderDataset", "METADATA"]

METADATA = "metadata.jsonl"


@attrs.define
class FolderConfig:
    """Options of the ``folder`` dataset."""

    path: str = option("", "directory with the images and metadata.jsonl")
    resolution: int = option(64, "side of the square images (centre crop, then resize)")
    channels: int = option(3, "3 (RGB) or 1 (grey)")


@attrs.frozen
class _Record:
    file: Path
    caption: str
    label: int | None
    line: int


class FolderDataset:
    """A directory of images with captions in ``metadata.jsonl`` (HF imagefolder).

    ``ds[i]`` → ``{"image" (channels, R, R) in [-1, 1], "caption", "label"}``: images
    centre-cropped and resized; labels from the records or from the sorted distinct
    captions.
    """

    Config = FolderConfig

    def __init__(self, config: FolderConfig | None = None):
        cfg = config if config is not None else FolderConfig()
        self.config = cfg
        what = "dataset folder"
        if not cfg.path:
            raise BadConfig(f"{what}: set path to a directory with images and {METADATA}")
        check_resolution(cfg.resolution, what)
        check_channels(cfg.channels, what)
        self.root = Path(cfg.path)
        if not self.root.is_dir():
            raise BadData("no such directory", path=str(self.root))
        self.metadata_path = self.root / METADATA
        if not self.metadata_path.is_file():
            raise BadData(f"no {METADATA} in this directory (one JSON object per line with "
                          "'file_name' and 'text')", path=str(self.root))
        self._records = self._read_metadata()
        self.resolution = cfg.resolution
        self.channels = cfg.channels
        self._labels, self.class_names = self._assign_labels()
        self.num_classes = len(self.class_names)

    # ------------------------------------------------------------------ map-style API

    def __len__(self) -> int:
        return len(self._records)

    def __getitem__(self, index: int) -> dict[str, Any]:
        i = check_index(index, len(self), "folder")
        rec = self._records[i]
        return {"image": self._load(rec), "caption": rec.caption, "label": self._labels[i]}

    def captions(self) -> list[str]:
        """All captions, in order (no image decoding)."""
        return [r.caption for r in self._records]

    def labels(self) -> list[int]:
        """All labels, in order."""
        return list(self._labels)

    # ------------------------------------------------------------------ internals

    def _read_metadata(self) -> list[_Record]:
        meta = str(self.metadata_path)
        try:
            text = self.metadata_path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise BadData(f"cannot read: {e}", path=meta) from None
        records = []
        for number, raw in enumerate(text.splitlines(), start=1):
            if not raw.strip():
                continue
            try:
                obj = json.loads(raw)
            except json.JSONDecodeError as e:
                raise BadData(f"not valid JSON ({e.msg} at column {e.colno})",
                              path=meta, line=number) from None
            if not isinstance(obj, dict):
                raise BadData(f"expected a JSON object, got {type(obj).__name__}",
                              path=meta, line=number)
            name = obj.get("file_name")
            if name is None:
                raise BadData("record has no 'file_name'", path=meta, line=number,
                              field="file_name")
            if not isinstance(name, str) or not name:
                raise BadData(f"expected a non-empty string, got {name!r}", path=meta,
                              line=number, field="file_name")
            key = "text" if "text" in obj else "caption"
            caption = obj.get(key, "")
            if not isinstance(caption, str):
                raise BadData(f"expected a string, got {caption!r}", path=meta,
                              line=number, field=key)
            label = obj.get("label")
            if label is not None and (isinstance(label, bool) or not isinstance(label, int)
                                      or label < 0):
                raise BadData(f"expected a non-negative integer, got {label!r}", path=meta,
                              line=number, field="label")
            file = self.root / name
            if not file.is_file():
                raise BadData(f"no such image file: {file}", path=meta, line=number,
                              field="file_name")
            try:
                with Image.open(file) as im:
                    im.size  # noqa: B018 - the header is parsed on open
            except (OSError, ValueError, Image.DecompressionBombError) as e:
                raise BadData(f"cannot read image {file}: {e}", path=meta,
                              line=number) from None
            records.append(_Record(file, caption, label, number))
        if not records:
            raise BadData("no records (one JSON object per line with 'file_name' and "
                          "'text')", path=meta)
        return records

    def _assign_labels(self) -> tuple[list[int], list[str]]:
        given = [r.label is not None for r in self._records]
        if any(given):
            if not all(given):
                first = self._records[given.index(False)]
                raise BadData("some records have a 'label' and this one has none; give "
                              "every record a label or none", path=str(self.metadata_path),
                              line=first.line, field="label")
            labels = [int(r.label) for r in self._records]  # type: ignore[arg-type]
            names: list[str | None] = [None] * (max(labels) + 1)
            for r in self._records:
                if names[r.label] is None and r.caption:  # type: ignore[index]
                    names[r.label] = r.caption  # type: ignore[index]
            return labels, [n if n is not None else f"class {k}" for k, n in enumerate(names)]
        distinct = sorted({r.caption for r in self._records})
        index = {c: k for k, c in enumerate(distinct)}
        return [index[r.caption] for r in self._records], distinct

    def _load(self, rec: _Record):
        try:
            with Image.open(rec.file) as im:
                im = im.convert("RGB" if self.channels == 3 else "L")
        except (OSError, ValueError, Image.DecompressionBombError) as e:
            raise BadData(f"cannot read image {rec.file}: {e}", path=str(self.metadata_path),
                          line=rec.line) from None
        w, h = im.size
        side = min(w, h)
        if (w, h) != (side, side):
            left, top = (w - side) // 2, (h - side) // 2
            im = im.crop((left, top, left + side, top + side))
        r = self.resolution
        if side != r:
            im = im.resize((r, r), Image.Resampling.BICUBIC)
        return uint8_to_unit(np.asarray(im, dtype=np.uint8))
