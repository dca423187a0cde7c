"""The ``idx`` dataset on tiny IDX files written by the tests."""

from __future__ import annotations

import gzip
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

import gaf
from gaf import interfaces as I
from gaf.errors import BadConfig, BadData
from gaf.plugins.images.idx import DEFAULT_PATH, FASHION_MNIST_CLASSES


def idx_images(images: np.ndarray) -> bytes:
    n, rows, cols = images.shape
    header = b"".join(v.to_bytes(4, "big") for v in (2051, n, rows, cols))
    return header + images.astype(np.uint8).tobytes()


def idx_labels(labels: np.ndarray) -> bytes:
    return (2049).to_bytes(4, "big") + len(labels).to_bytes(4, "big") + \
        labels.astype(np.uint8).tobytes()


def write(directory: Path, images: np.ndarray, labels: np.ndarray, *, prefix="train",
          gz=False, image_bytes=None, label_bytes=None) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    ext = ".gz" if gz else ""
    pack = gzip.compress if gz else (lambda b: b)
    (directory / f"{prefix}-images-idx3-ubyte{ext}").write_bytes(
        pack(image_bytes if image_bytes is not None else idx_images(images)))
    (directory / f"{prefix}-labels-idx1-ubyte{ext}").write_bytes(
        pack(label_bytes if label_bytes is not None else idx_labels(labels)))
    return directory


def sample(n=5, size=28, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.integers(0, 256, (n, size, size), dtype=np.uint8),
            rng.integers(0, 10, n, dtype=np.uint8))


def make(path, **options):
    return gaf.create("dataset", "idx", path=str(path), **options)


@pytest.mark.parametrize("gz", [False, True])
def test_round_trip_of_pixels_labels_and_captions(tmp_path, gz):
    images, labels = sample()
    labels[:2] = [0, 9]
    ds = make(write(tmp_path, images, labels, gz=gz))
    assert isinstance(ds, I.Dataset) and ds.gaf_name == "idx"
    assert (len(ds), ds.num_classes, ds.resolution, ds.channels) == (5, 10, 28, 1)
    assert ds.class_names == list(FASHION_MNIST_CLASSES)
    for i in range(5):
        item = ds[i]
        assert item["image"].dtype == torch.float32 and item["image"].shape == (1, 28, 28)
        expected = torch.from_numpy(images[i].astype(np.float32)) / 127.5 - 1
        assert torch.equal(item["image"][0], expected)
        assert item["label"] == int(labels[i])
        assert item["caption"] == "a photo of " + (
            "an " if FASHION_MNIST_CLASSES[labels[i]][0] in "aeiou" else "a ") + \
            FASHION_MNIST_CLASSES[labels[i]]
    assert ds[0]["caption"] == "a photo of a t-shirt/top"
    assert ds[1]["caption"] == "a photo of an ankle boot"
    assert ds.labels() == labels.tolist() and len(ds.captions()) == 5
    with pytest.raises(IndexError):
        ds[5]


@given(images=st.integers(1, 6).flatmap(
    lambda side: arrays(np.uint8, st.tuples(st.integers(1, 4), st.just(side), st.just(side)))),
       gz=st.booleans())
def test_any_uint8_image_maps_exactly_to_minus_one_one(images, gz):
    labels = np.arange(len(images), dtype=np.uint8) % 10
    with tempfile.TemporaryDirectory() as tmp:
        ds = make(write(Path(tmp), images, labels, gz=gz), resolution=0)
        for i in range(len(images)):
            img = ds[i]["image"]
            assert img.shape == (1, *images.shape[1:])
            assert torch.equal(img[0], torch.from_numpy(images[i].astype(np.float32)) / 127.5 - 1)
            assert img.min() >= -1 and img.max() <= 1


def test_resolution_32_pads_with_black_and_other_sizes_resize(tmp_path):
    images, labels = sample(3)
    write(tmp_path, images, labels)
    plain, padded = make(tmp_path), make(tmp_path, resolution=32)
    img = padded[1]["image"]
    assert img.shape == (1, 32, 32) and padded.resolution == 32
    assert torch.equal(img[:, 2:30, 2:30], plain[1]["image"])
    border = torch.ones(32, 32, dtype=torch.bool)
    border[2:30, 2:30] = False
    assert (img[0][border] == -1).all()
    small = make(tmp_path, resolution=14, channels=3)[0]["image"]
    assert small.shape == (3, 14, 14) and small.min() >= -1 and small.max() <= 1
    assert torch.equal(small[0], small[2])
    big = make(tmp_path, resolution=40)[0]["image"]
    assert big.shape == (1, 40, 40)


def test_test_split_class_names_caption_and_limit(tmp_path):
    images, labels = sample(6)
    write(tmp_path, images, labels, prefix="t10k", gz=True)
    ds = make(tmp_path, split="test", class_names=[f"digit {k}" for k in range(10)],
              caption="{name}", limit=4)
    assert len(ds) == 4 and ds.class_names[3] == "digit 3"
    assert ds[2]["caption"] == f"digit {labels[2]}"
    assert len(make(tmp_path, split="eval")) == 6
    with pytest.raises(BadData, match="train-images-idx3-ubyte"):
        make(tmp_path, split="train")


@given(n=st.integers(1, 60), fraction=st.floats(0.05, 0.95))
def test_validation_is_carved_from_the_train_file(n, fraction):
    images, labels = sample(n, size=4)
    images[:, 0, 0] = np.arange(n)  # each item's index is in its first pixel
    with tempfile.TemporaryDirectory() as tmp:
        write(Path(tmp), images, labels)
        opts = {"validation_fraction": fraction, "resolution": 4}
        train, val = make(tmp, **opts), make(tmp, split="validation", **opts)
        index = lambda ds: [round((float(ds[i]["image"][0, 0, 0]) + 1) * 127.5)  # noqa: E731
                            for i in range(len(ds))]
        got_train, got_val = index(train), index(val)
        assert sorted(got_train + got_val) == list(range(n))  # disjoint, all of the file
        from gaf.seeding import rng
        want = np.flatnonzero(rng(0, "idx-validation").random(n) < fraction).tolist()
        assert got_val == want
        assert train.labels() == [int(labels[i]) for i in got_train]
        assert len(make(tmp, resolution=4)) == n  # no fraction: train is the whole file


def test_labels_above_nine_get_generic_names(tmp_path):
    images, _ = sample(3)
    ds = make(write(tmp_path, images, np.array([0, 11, 3], np.uint8)))
    assert ds.num_classes == 12 and ds.class_names[11] == "class 11"


def test_dotted_file_names_are_found(tmp_path):
    images, labels = sample(2)
    (tmp_path / "train-images.idx3-ubyte").write_bytes(idx_images(images))
    (tmp_path / "train-labels.idx1-ubyte").write_bytes(idx_labels(labels))
    assert len(make(tmp_path)) == 2


# ---------------------------------------------------------------------- errors


def test_missing_default_directory_says_how_to_install():
    if Path(DEFAULT_PATH).is_dir():
        pytest.skip("Fashion-MNIST is installed here")
    with pytest.raises(BadData, match="apt-get install dataset-fashion-mnist") as e:
        gaf.create("dataset", "idx")
    assert DEFAULT_PATH.rstrip("/") in str(e.value)


def test_missing_directory_and_files_are_named(tmp_path):
    with pytest.raises(BadData, match="no such directory"):
        make(tmp_path / "nope")
    with pytest.raises(BadData, match="train-images-idx3-ubyte"):
        make(tmp_path)
    images, labels = sample(2)
    write(tmp_path, images, labels)
    (tmp_path / "train-labels-idx1-ubyte").unlink()
    with pytest.raises(BadData, match="no labels file"):
        make(tmp_path)


@pytest.mark.parametrize("gz", [False, True])
def test_bad_magic_numbers(tmp_path, gz):
    images, labels = sample(2)
    write(tmp_path, images, labels, gz=gz, image_bytes=idx_labels(labels))
    with pytest.raises(BadData, match=r"train-images-idx3-ubyte.*bad magic number 2049"):
        make(tmp_path)
    bad = b"\x00\x00\x08\x99" + idx_labels(labels)[4:]
    write(tmp_path, images, labels, gz=gz, label_bytes=bad)
    with pytest.raises(BadData, match=r"train-labels-idx1-ubyte.*bad magic number"):
        make(tmp_path)


@pytest.mark.parametrize("gz", [False, True])
def test_truncated_and_overlong_files(tmp_path, gz):
    images, labels = sample(3)
    write(tmp_path, images, labels, gz=gz, image_bytes=idx_images(images)[:-5])
    with pytest.raises(BadData, match=r"train-images.*truncated"):
        make(tmp_path)
    write(tmp_path, images, labels, gz=gz, image_bytes=idx_images(images)[:10])
    with pytest.raises(BadData, match=r"train-images.*truncated"):
        make(tmp_path)
    write(tmp_path, images, labels, gz=gz, label_bytes=idx_labels(labels)[:-1])
    with pytest.raises(BadData, match=r"train-labels.*truncated"):
        make(tmp_path)
    write(tmp_path, images, labels, gz=gz, label_bytes=idx_labels(labels) + b"\x00")
    with pytest.raises(BadData, match=r"train-labels.*too long"):
        make(tmp_path)


def test_corrupt_gzip_is_named(tmp_path):
    images, labels = sample(2)
    write(tmp_path, images, labels, gz=True)
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:20])
    with pytest.raises(BadData, match=r"train-images-idx3-ubyte.gz.*gzip"):
        make(tmp_path)


def test_label_count_mismatch_and_out_of_range(tmp_path):
    images, labels = sample(4)
    write(tmp_path, images, labels[:3])
    with pytest.raises(BadData, match=r"train-labels.*3 labels but 4 images"):
        make(tmp_path)
    labels[:] = [0, 1, 7, 2]
    write(tmp_path, images, labels)
    with pytest.raises(BadData, match=r"train-labels.*label 7 of item 2 is out of range"):
        make(tmp_path, class_names=["a", "b", "c"])


@pytest.mark.parametrize("options", [
    {"split": "validation"}, {"split": "valid"}, {"validation_fraction": 1.0},
    {"validation_fraction": -0.1}, {"channels": 2}, {"resolution": -1}, {"limit": -1},
    {"caption": "a {nom}"},
])
def test_bad_options(tmp_path, options):
    images, labels = sample(2)
    write(tmp_path, images, labels)
    with pytest.raises(BadConfig):
        make(tmp_path, **options)


def test_real_fashion_mnist_when_installed():
    if not Path(DEFAULT_PATH).is_dir():
        pytest.skip("dataset-fashion-mnist is not installed")
    ds = gaf.create("dataset", "idx", split="test", resolution=32, limit=100)
    assert len(ds) == 100 and ds[0]["image"].shape == (1, 32, 32)
    assert 0 <= ds[0]["label"] < 10
