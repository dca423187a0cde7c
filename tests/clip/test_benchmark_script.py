"""benchmarks/clip_throughput.py runs and prints its two one-line results, and draws the
peer script's batch."""

from __future__ import annotations

import re

import torch

from script_module import load_script  # tests/ is on sys.path (conftest)

bench = load_script("benchmarks/clip_throughput.py")


def test_the_benchmark_prints_both_figures(capsys):
    bench.main(["1"])
    lines = capsys.readouterr().out.splitlines()
    assert re.match(r"gaf_clip train_img_per_s=[\d.]+ params=339969 ", lines[0])
    assert re.match(r"gaf_clip_cnn train_img_per_s=[\d.]+ params=\d+ ", lines[1])


def test_the_batch_is_the_peer_scripts():
    images, ids, mask = bench.batch()
    peer = load_script("benchmarks/clip_transformers_peer.py").batch \
        if _has_transformers() else None
    assert images.shape == (128, 3, 32, 32) and float(images.abs().max()) <= 1
    lengths = mask.sum(dim=1)
    assert int(lengths.min()) >= 3 and int(lengths.max()) <= 15
    assert bool((mask == (torch.arange(24) < lengths[:, None])).all())  # real tokens first
    assert bool((ids[torch.arange(128), lengths - 1] == bench.EOS).all())
    if peer is not None:
        for a, b in zip((images, ids, mask), peer()):
            assert torch.equal(a, b)


def _has_transformers() -> bool:
    try:
        import transformers  # noqa: F401
    except ImportError:
        return False
    return True
