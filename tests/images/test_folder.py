"""The ``folder`` dataset (imagefolder layout) on tiny images written by the tests."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from PIL import Image

import gaf
from gaf import interfaces as I
from gaf.errors import BadConfig, BadData


def png(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def metadata(directory: Path, records) -> None:
    lines = [r if isinstance(r, str) else json.dumps(r) for r in records]
    (directory / "metadata.jsonl").write_text("\n".join(lines) + "\n")


def make(path, **options):
    return gaf.create("dataset", "folder", path=str(path), **options)


def rgb(seed, h=8, w=8):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


@pytest.fixture
def folder(tmp_path):
    png(tmp_path / "a.png", rgb(0))
    png(tmp_path / "sub" / "b.png", rgb(1))
    png(tmp_path / "c.png", rgb(2, 12, 6))
    metadata(tmp_path, [{"file_name": "a.png", "text": "a red circle"},
                        {"file_name": "sub/b.png", "caption": "a blue square"},
                        "",
                        {"file_name": "c.png", "text": "a red circle", "extra": 1}])
    return tmp_path


def test_items_round_trip_pixels_captions_and_labels(folder):
    ds = make(folder, resolution=8)
    assert isinstance(ds, I.Dataset) and ds.gaf_name == "folder"
    assert (len(ds), ds.resolution, ds.channels) == (3, 8, 3)
    assert ds.class_names == ["a blue square", "a red circle"] and ds.num_classes == 2
    assert ds.captions() == ["a red circle", "a blue square", "a red circle"]
    assert ds.labels() == [1, 0, 1]
    item = ds[0]
    assert item["image"].dtype == torch.float32 and item["image"].shape == (3, 8, 8)
    expected = torch.from_numpy(rgb(0).astype(np.float32)).permute(2, 0, 1) / 127.5 - 1
    assert torch.equal(item["image"], expected)
    assert (item["caption"], item["label"]) == ("a red circle", 1)
    with pytest.raises(IndexError):
        ds[3]


def test_centre_crop_then_resize(folder):
    ds = make(folder, resolution=6)
    tall = ds[2]["image"]  # 12x6 → middle 6x6 rows 3..8, no resize
    expected = torch.from_numpy(rgb(2, 12, 6)[3:9].astype(np.float32)).permute(2, 0, 1)
    assert torch.equal(tall, expected / 127.5 - 1)
    big = make(folder, resolution=16)[0]["image"]
    assert big.shape == (3, 16, 16) and big.min() >= -1 and big.max() <= 1


def test_grey_channel(folder):
    img = make(folder, resolution=8, channels=1)[0]["image"]
    grey = np.asarray(Image.fromarray(rgb(0)).convert("L"), dtype=np.float32)
    assert img.shape == (1, 8, 8)
    assert torch.equal(img[0], torch.from_numpy(grey) / 127.5 - 1)


@given(images=st.lists(arrays(np.uint8, st.tuples(st.integers(1, 7), st.integers(1, 7),
                                                  st.just(3))), min_size=1, max_size=3),
       resolution=st.integers(1, 9))
def test_any_image_gives_a_square_tensor_in_range(images, resolution):
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for k, a in enumerate(images):
            png(root / f"{k}.png", a)
        metadata(root, [{"file_name": f"{k}.png", "text": f"caption {k % 2}"}
                        for k in range(len(images))])
        ds = make(root, resolution=resolution)
        for k, a in enumerate(images):
            img = ds[k]["image"]
            assert img.shape == (3, resolution, resolution) and img.dtype == torch.float32
            assert img.min() >= -1 and img.max() <= 1
            side = min(a.shape[:2])
            if side == resolution:
                top, left = (a.shape[0] - side) // 2, (a.shape[1] - side) // 2
                crop = a[top:top + side, left:left + side].astype(np.float32)
                assert torch.equal(img, torch.from_numpy(crop).permute(2, 0, 1) / 127.5 - 1)
        assert ds.labels() == [k % 2 for k in range(len(images))]


def test_explicit_labels(tmp_path):
    for k in range(3):
        png(tmp_path / f"{k}.png", rgb(k))
    metadata(tmp_path, [{"file_name": "0.png", "text": "cat", "label": 3},
                        {"file_name": "1.png", "text": "dog", "label": 0},
                        {"file_name": "2.png", "label": 3}])
    ds = make(tmp_path)
    assert ds.labels() == [3, 0, 3] and ds.num_classes == 4
    assert ds.class_names == ["dog", "class 1", "class 2", "cat"]
    assert ds[2]["caption"] == ""


# ---------------------------------------------------------------------- errors


def test_missing_directory_and_metadata(tmp_path):
    with pytest.raises(BadConfig, match="path"):
        gaf.create("dataset", "folder")
    with pytest.raises(BadData, match="no such directory"):
        make(tmp_path / "nope")
    with pytest.raises(BadData, match="metadata.jsonl"):
        make(tmp_path)


@pytest.mark.parametrize("line, message", [
    ("{not json", r"metadata.jsonl:2: not valid JSON"),
    ("[1, 2]", r"metadata.jsonl:2: expected a JSON object"),
    ('{"text": "x"}', r"metadata.jsonl:2: field 'file_name': record has no 'file_name'"),
    ('{"file_name": 3}', r"metadata.jsonl:2: field 'file_name'"),
    ('{"file_name": "gone.png", "text": "x"}', r"metadata.jsonl:2: field 'file_name': no such"),
    ('{"file_name": "bad.png", "text": "x"}', r"metadata.jsonl:2: cannot read image .*bad.png"),
    ('{"file_name": "a.png", "text": 5}', r"metadata.jsonl:2: field 'text'"),
    ('{"file_name": "a.png", "label": -1}', r"metadata.jsonl:2: field 'label'"),
    ('{"file_name": "a.png", "label": true}', r"metadata.jsonl:2: field 'label'"),
])
def test_bad_records_name_file_and_line(tmp_path, line, message):
    png(tmp_path / "a.png", rgb(0))
    (tmp_path / "bad.png").write_bytes(b"this is not a png")
    metadata(tmp_path, [{"file_name": "a.png", "text": "ok"}, line])
    with pytest.raises(BadData, match=message):
        make(tmp_path)


def test_labels_on_some_records_only_and_empty_metadata(tmp_path):
    png(tmp_path / "a.png", rgb(0))
    metadata(tmp_path, [{"file_name": "a.png", "label": 1}, {"file_name": "a.png"}])
    with pytest.raises(BadData, match=r"metadata.jsonl:2: field 'label'"):
        make(tmp_path)
    metadata(tmp_path, ["", "  "])
    with pytest.raises(BadData, match="no records"):
        make(tmp_path)


def test_image_broken_after_building_is_reported_on_access(folder):
    ds = make(folder, resolution=8)
    (folder / "a.png").write_bytes((folder / "a.png").read_bytes()[:40])
    with pytest.raises(BadData, match=r"metadata.jsonl:1: cannot read image"):
        ds[0]


@pytest.mark.parametrize("options", [{"channels": 4}, {"resolution": 0}])
def test_bad_options(folder, options):
    with pytest.raises(BadConfig):
        make(folder, **options)
