"""``idx``: MNIST-format IDX image and label files, with class-name captions.

By default it reads Fashion-MNIST (60,000 training and 10,000 test images, 28x28
grey, 10 classes) from ``/usr/share/datasets/fashion-mnist/``, where the Debian
package ``dataset-fashion-mnist`` puts it (``apt-get install dataset-fashion-mnist``);
any other MNIST-format directory works too (``path``, ``class_names``).

Files
-----
In the directory ``path``, split ``train`` reads ``train-images-idx3-ubyte`` and
``train-labels-idx1-ubyte``; split ``test`` (or ``eval``) reads ``t10k-images-idx3-ubyte``
and ``t10k-labels-idx1-ubyte``. Each may also be gzipped (``.gz``; the plain file wins
when both exist) or spelt with a dot (``train-images.idx3-ubyte``). An image file is
big-endian: magic number 2051, count, rows, columns, then ``count * rows * columns``
uint8 pixels; a label file: magic 2049, count, then ``count`` uint8 labels.

Split ``validation`` (for tuning; evaluations read ``eval``) is carved out of the
training file when ``validation_fraction`` is set: item ``i`` of the training file is
``validation`` when ``u_i < validation_fraction``, with ``u`` the uniform draws of the
``"idx-validation"`` stream of seed 0 (:func:`gaf.seeding.rng`; the same items for every
file of that length, and the items of a longer file extend those of a shorter one), and
``train`` then leaves those items out. The default ``validation_fraction = 0`` keeps all
of the training file in ``train`` (the Fashion-MNIST figures of docs/results.md trained
on all 60,000), so split ``validation`` needs it set, and a run tuned on validation must
set it in its training run too (the same option on both splits keeps them disjoint).

A missing directory or file, a bad gzip stream, a wrong magic number, a file whose
size disagrees with its header (truncated or with trailing bytes), a label count
that differs from the image count and a label ``>= num_classes`` each raise
:class:`gaf.errors.BadData` naming the file.

Items
-----
``ds[i]`` is ``{"image", "caption", "label"}``: ``image`` is float32 ``(channels, R,
R)`` with pixel ``x`` mapped to ``x / 127.5 - 1`` (0 → -1, 255 → 1) — exactly, when
``resolution`` is the stored size or ``stored + 4`` (then the image is zero-padded by 2
pixels on each side, i.e. with -1: the classic 32x32 layout of 28x28 digits); any
other resolution resizes bilinearly (anti-aliased when shrinking); ``resolution=0``
means the stored size (the longer side, if the stored images are not square). ``channels=3``
repeats the grey channel. ``label`` is the stored label; ``caption`` is ``caption``
formatted with ``{name}`` (the class name) and ``{a_name}`` (the name with "a"/"an").

``class_names`` defaults to the Fashion-MNIST names (:data:`FASHION_MNIST_CLASSES`,
lower case) when every label is below 10, else ``"class K"``; ``num_classes`` is
their number. ``limit`` keeps the first N items. The whole file is read into memory
as uint8 (47 MB for the Fashion-MNIST training images).
"""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path
from typing import Any

import attrs
import numpy as np
import torch

from gaf.config import option
from gaf.errors import BadConfig, BadData
from gaf.seeding import rng

from .common import check_channels, check_index, check_resolution, resize_square, uint8_to_unit

__all__ = ["IdxConfig", "IdxDataset", "FASHION_MNIST_CLASSES", "DEFAULT_PATH",
           "read_idx_images", "read_idx_labels"]

DEFAULT_PATH = "/usr/share/datasets/fashion-mnist/"
FASHION_MNIST_CLASSES = ("t-shirt/top", "trouser", "pullover", "dress", "coat", "sandal",
                         "shirt", "sneaker", "bag", "ankle boot")
IMAGE_MAGIC, LABEL_MAGIC = 2051, 2049
_PREFIX = {"train": "train", "validation": "train", "test": "t10k", "eval": "t10k"}
_INSTALL_HINT = ("; Fashion-MNIST comes from the Debian package dataset-fashion-mnist: "
                 "apt-get install dataset-fashion-mnist")


@attrs.define
class IdxConfig:
    """Options of the ``idx`` dataset."""

    path: str = option(DEFAULT_PATH, "directory holding the IDX files (plain or .gz)")
    split: str = option("train", "train, validation (a part of the train files, see "
                        "validation_fraction), or test (also called eval): the t10k files")
    validation_fraction: float = option(0.0, "fraction of the train files held out as the "
                                             "validation split (0 = none: train is all of "
                                             "them)", ge=0, lt=1)
    resolution: int = option(28, "image side: 0 or the stored size = as stored (the longer "
                             "side if not square); stored+4 = "
                             "zero-pad by 2 (28 → 32); anything else = bilinear resize")
    channels: int = option(1, "1 (grey) or 3 (grey repeated)")
    class_names: tuple[str, ...] = option((), "names of the classes, by label (default: the "
                                          "Fashion-MNIST names when all labels are < 10)")
    caption: str = option("a photo of {a_name}", "caption template: {name} = class name, "
                          "{a_name} = the name with 'a' or 'an'")
    limit: int = option(0, "keep only the first N items (0 = all)")


def _a(name: str) -> str:
    return ("an " if name[:1].lower() in "aeiou" and name else "a ") + name


def _read_bytes(path: Path) -> bytes:
    try:
        data = path.read_bytes()
    except OSError as e:
        raise BadData(f"cannot read: {e.strerror or e}", path=str(path)) from None
    if path.suffix == ".gz":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as e:
            raise BadData(f"not a valid gzip file ({e})", path=str(path)) from None
    return data


def _header(data: bytes, path: Path, magic: int, ndim: int, what: str) -> list[int]:
    need = 4 * (1 + ndim)
    found = int.from_bytes(data[0:4], "big") if len(data) >= 4 else None
    if found is not None and found != magic:
        other = {IMAGE_MAGIC: "an image", LABEL_MAGIC: "a label"}.get(found)
        hint = f" (that of {other} file)" if other else ""
        raise BadData(f"bad magic number {found}{hint}; an IDX {what} file starts with "
                      f"{magic}", path=str(path))
    if len(data) < need:
        raise BadData(f"truncated: {len(data)} bytes, shorter than the {need}-byte header "
                      f"of an IDX {what} file", path=str(path))
    return [int.from_bytes(data[4 + 4 * k: 8 + 4 * k], "big") for k in range(ndim)]


def read_idx_images(path: str | Path) -> np.ndarray:
    """An IDX image file (magic 2051, plain or .gz) → uint8 array ``(N, rows, cols)``."""
    path = Path(path)
    data = _read_bytes(path)
    n, rows, cols = _header(data, path, IMAGE_MAGIC, 3, "image")
    expected = 16 + n * rows * cols
    if len(data) != expected:
        state = "truncated" if len(data) < expected else "too long"
        raise BadData(f"{state}: the header announces {n} images of {rows}x{cols} "
                      f"({expected} bytes with the header) but the file has {len(data)} "
                      "bytes", path=str(path))
    return np.frombuffer(data, np.uint8, offset=16).reshape(n, rows, cols)


def read_idx_labels(path: str | Path) -> np.ndarray:
    """An IDX label file (magic 2049, plain or .gz) → uint8 array ``(N,)``."""
    path = Path(path)
    data = _read_bytes(path)
    (n,) = _header(data, path, LABEL_MAGIC, 1, "label")
    if len(data) != 8 + n:
        state = "truncated" if len(data) < 8 + n else "too long"
        raise BadData(f"{state}: the header announces {n} labels ({8 + n} bytes with the "
                      f"header) but the file has {len(data)} bytes", path=str(path))
    return np.frombuffer(data, np.uint8, offset=8)


def _find(directory: Path, prefix: str, kind: str, hint: str) -> Path:
    dim = 3 if kind == "images" else 1
    names = [f"{prefix}-{kind}-idx{dim}-ubyte", f"{prefix}-{kind}.idx{dim}-ubyte"]
    candidates = [n + ext for ext in ("", ".gz") for n in names]
    for name in candidates:
        if (directory / name).is_file():
            return directory / name
    raise BadData(f"no {kind} file: looked for {', '.join(candidates)}{hint}",
                  path=str(directory))


class IdxDataset:
    """MNIST-format IDX files (Fashion-MNIST by default) with class-name captions.

    ``ds[i]`` → ``{"image" (channels, R, R) in [-1, 1], "caption", "label"}``; reads
    ``train-*`` or ``t10k-*`` (split test/eval) ``images-idx3-ubyte`` /
    ``labels-idx1-ubyte`` files, plain or gzipped, from ``path``.
    """

    Config = IdxConfig

    def __init__(self, config: IdxConfig | None = None):
        cfg = config if config is not None else IdxConfig()
        self.config = cfg
        what = "dataset idx"
        if cfg.split not in _PREFIX:
            raise BadConfig(f"{what}: unknown split {cfg.split!r}; valid splits: "
                            "train, validation, test, eval")
        if cfg.split == "validation" and cfg.validation_fraction == 0:
            raise BadConfig(f"{what}: split 'validation' needs validation_fraction > 0 "
                            f"(e.g. 0.1, set on the training run too)")
        check_resolution(cfg.resolution, what, allow_zero=True)
        check_channels(cfg.channels, what)
        if cfg.limit < 0:
            raise BadConfig(f"{what}: limit must be >= 0 (0 = all), got {cfg.limit}")
        try:
            cfg.caption.format(name="x", a_name="a x")
        except (KeyError, IndexError, ValueError) as e:
            raise BadConfig(f"{what}: caption template {cfg.caption!r} is not valid "
                            f"(placeholders: {{name}}, {{a_name}}): {e!r}") from None

        directory = Path(cfg.path)
        hint = _INSTALL_HINT if ("fashion-mnist" in str(directory)
                                 or cfg.path == DEFAULT_PATH) else ""
        if not directory.is_dir():
            raise BadData(f"no such directory{hint}", path=str(directory))
        prefix = _PREFIX[cfg.split]
        self.images_path = _find(directory, prefix, "images", hint)
        self.labels_path = _find(directory, prefix, "labels", hint)
        images = read_idx_images(self.images_path)
        labels = read_idx_labels(self.labels_path)
        if len(images) != len(labels):
            raise BadData(f"{len(labels)} labels but {len(images)} images in "
                          f"{self.images_path}", path=str(self.labels_path))

        if cfg.class_names:
            names = [str(n) for n in cfg.class_names]
        elif len(labels) == 0 or int(labels.max()) < len(FASHION_MNIST_CLASSES):
            names = list(FASHION_MNIST_CLASSES)
        else:
            names = [f"class {k}" for k in range(int(labels.max()) + 1)]
        bad = np.flatnonzero(labels >= len(names))
        if len(bad):
            raise BadData(f"label {int(labels[bad[0]])} of item {int(bad[0])} is out of range "
                          f"for {len(names)} classes (class_names)", path=str(self.labels_path))
        if cfg.validation_fraction > 0 and prefix == "train":
            held = rng(0, "idx-validation").random(len(labels)) < cfg.validation_fraction
            keep = held if cfg.split == "validation" else ~held
            images, labels = images[keep], labels[keep]
        if cfg.limit:
            images, labels = images[:cfg.limit], labels[:cfg.limit]
        self._images, self._labels = images, labels
        self.class_names = names
        self.num_classes = len(names)
        self.channels = cfg.channels
        self.stored_size = (int(images.shape[1]), int(images.shape[2]))
        stored = self.stored_size
        self.resolution = cfg.resolution or max(stored)
        self._pad = 0
        if stored[0] == stored[1] and self.resolution == stored[0] + 4:
            self._pad = 2
        self._captions = [cfg.caption.format(name=n, a_name=_a(n)) for n in names]

    def __len__(self) -> int:
        return len(self._labels)

    def __getitem__(self, index: int) -> dict[str, Any]:
        i = check_index(index, len(self), "idx")
        image = uint8_to_unit(self._images[i])
        if self._pad:
            image = torch.nn.functional.pad(image, (self._pad,) * 4, value=-1.0)
        elif image.shape[-2:] != (self.resolution, self.resolution):
            image = resize_square(image, self.resolution)
        if self.channels == 3:
            image = image.expand(3, -1, -1).contiguous()
        label = int(self._labels[i])
        return {"image": image, "caption": self._captions[label], "label": label}

    def labels(self) -> list[int]:
        """All labels, in order."""
        return self._labels.tolist()

    def captions(self) -> list[str]:
        """All captions, in order (no image decoding)."""
        return [self._captions[k] for k in self._labels.tolist()]
