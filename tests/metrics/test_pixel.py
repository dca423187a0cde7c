"""psnr and ssim against independent float64 references, closed forms and properties."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import gaf
from gaf import interfaces as I
from gaf.config import OptionError
from gaf.plugins.metrics.pixel import PSNR, SSIM


# ------------------------------------------------------------ independent references


def ref_psnr(x: np.ndarray, y: np.ndarray) -> float:
    """Mean over images of 10·log10(1 / MSE) on [0, 1]-mapped images, by loops."""
    values = []
    for a, b in zip(x.astype(np.float64), y.astype(np.float64)):
        a01, b01 = (a + 1) / 2, (b + 1) / 2
        total = 0.0
        for v in np.nditer(a01 - b01):
            total += float(v) ** 2
        mse = total / a.size
        values.append(10 * math.log10(1.0 / mse))
    return float(np.mean(values))


def ref_window() -> np.ndarray:
    w = np.empty((11, 11))
    for i in range(11):
        for j in range(11):
            w[i, j] = math.exp(-((i - 5) ** 2 + (j - 5) ** 2) / (2 * 1.5 ** 2))
    return w / w.sum()


def ref_ssim(x: np.ndarray, y: np.ndarray) -> float:
    """Wang et al. 2004 by direct loops over every valid window position."""
    w = ref_window()
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    per_image = []
    for a, b in zip(x.astype(np.float64), y.astype(np.float64)):
        a, b = (a + 1) / 2, (b + 1) / 2
        per_channel = []
        for ca, cb in zip(a, b):
            h, wd = ca.shape
            vals = []
            for i in range(h - 10):
                for j in range(wd - 10):
                    pa, pb = ca[i:i + 11, j:j + 11], cb[i:i + 11, j:j + 11]
                    ma, mb = (w * pa).sum(), (w * pb).sum()
                    va = (w * (pa - ma) ** 2).sum()
                    vb = (w * (pb - mb) ** 2).sum()
                    cov = (w * (pa - ma) * (pb - mb)).sum()
                    vals.append((2 * ma * mb + c1) * (2 * cov + c2)
                                / ((ma ** 2 + mb ** 2 + c1) * (va + vb + c2)))
            per_channel.append(np.mean(vals))
        per_image.append(np.mean(per_channel))
    return float(np.mean(per_image))


def structured(b=2, c=3, h=16, w=18):
    """Gradients, a checkerboard and a disc: images with real structure."""
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, h), torch.linspace(-1, 1, w), indexing="ij")
    checker = ((torch.arange(h)[:, None] // 3 + torch.arange(w)[None, :] // 3) % 2) * 2.0 - 1
    disc = ((xx ** 2 + yy ** 2) < 0.4).float() * 2 - 1
    chans = [xx, yy, checker, disc, xx * yy]
    imgs = torch.stack([torch.stack([chans[(i + k) % len(chans)] for k in range(c)])
                        for i in range(b)])
    return imgs.float()


# ------------------------------------------------------------------------ PSNR


def test_psnr_matches_reference_on_random_images():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(4, 3, 8, 9, generator=g) * 2 - 1
    y = (x + 0.1 * torch.randn(4, 3, 8, 9, generator=g)).clamp(-1, 1)
    got = PSNR()(x, y)["psnr"]
    assert got == pytest.approx(ref_psnr(x.numpy(), y.numpy()), rel=1e-9)


def test_psnr_of_a_constant_offset():
    x = structured() * 0.5
    for delta in (0.02, 0.1, 0.5):
        # offset delta on [-1, 1] = delta/2 on [0, 1]: PSNR = 10 log10(4 / delta^2)
        expected = 10 * math.log10(4 / delta ** 2)
        assert PSNR()(x, x + delta)["psnr"] == pytest.approx(expected, abs=1e-4)


def test_psnr_of_identical_images_is_capped():
    x = structured()
    assert PSNR()(x, x) == {"psnr": 100.0}
    assert PSNR(PSNR.Config(max_db=60.0))(x, x)["psnr"] == 60.0
    # one perfect image and one at 20 dB: the mean of the capped values
    y = x.clone()
    y[1] = x[1] + 0.2  # 10 log10(4 / 0.04) = 20 dB
    assert PSNR()(x, y)["psnr"] == pytest.approx((100 + 20) / 2, abs=1e-4)


@given(seed=st.integers(0, 2 ** 31 - 1), s1=st.floats(0.01, 1.0), factor=st.floats(1.01, 5.0))
def test_psnr_decreases_as_noise_grows(seed, s1, factor):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(2, 1, 6, 6, generator=g) * 2 - 1
    n = torch.randn(2, 1, 6, 6, generator=g)
    p = PSNR(PSNR.Config(max_db=1e9))
    assert p(x, x + s1 * n)["psnr"] > p(x, x + s1 * factor * n)["psnr"]


# ------------------------------------------------------------------------ SSIM


def test_ssim_matches_reference_on_random_images():
    g = torch.Generator().manual_seed(1)
    x = torch.rand(2, 3, 14, 15, generator=g) * 2 - 1
    y = (x + 0.3 * torch.randn(2, 3, 14, 15, generator=g)).clamp(-1, 1)
    got = SSIM()(x, y)["ssim"]
    assert got == pytest.approx(ref_ssim(x.numpy(), y.numpy()), abs=1e-10)


def test_ssim_matches_reference_on_structured_images():
    x = structured()
    y = torch.roll(x, 1, dims=-1) * 0.8 + 0.05
    got = SSIM()(x, y)["ssim"]
    want = ref_ssim(x.numpy(), y.numpy())
    assert got == pytest.approx(want, abs=1e-10)
    assert 0.0 < want < 0.99
    # a single (C, H, W) image is a batch of one
    assert SSIM()(x[0], y[0])["ssim"] == pytest.approx(ref_ssim(x[:1].numpy(), y[:1].numpy()),
                                                       abs=1e-10)


def test_ssim_of_identical_images_is_one():
    x = structured()
    assert SSIM()(x, x)["ssim"] == pytest.approx(1.0, abs=1e-12)
    flat = torch.zeros(1, 1, 11, 11)  # constant: (C1)(C2)/(C1)(C2)
    assert SSIM()(flat, flat)["ssim"] == pytest.approx(1.0, abs=1e-12)


def test_ssim_of_negated_image_is_low():
    x = structured()
    assert SSIM()(x, -x)["ssim"] < 0.0


@given(seed=st.integers(0, 2 ** 31 - 1), noise=st.floats(0.0, 2.0))
def test_ssim_is_symmetric_and_at_most_one(seed, noise):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(2, 2, 12, 13, generator=g) * 2 - 1
    y = (x + noise * torch.randn(2, 2, 12, 13, generator=g)).clamp(-1, 1)
    m = SSIM()
    a, b = m(x, y)["ssim"], m(y, x)["ssim"]
    assert a == pytest.approx(b, abs=1e-12)
    assert a <= 1.0 + 1e-12
    assert a >= -1.0 - 1e-12


@given(perm_seed=st.integers(0, 1000))
def test_metrics_do_not_depend_on_batch_order(perm_seed):
    g = torch.Generator().manual_seed(7)
    x = torch.rand(5, 3, 11, 12, generator=g) * 2 - 1
    y = (x + 0.2 * torch.randn(5, 3, 11, 12, generator=g)).clamp(-1, 1)
    perm = torch.randperm(5, generator=torch.Generator().manual_seed(perm_seed))
    for m in (PSNR(), SSIM()):
        key = next(iter(m(x, y)))
        assert m(x[perm], y[perm])[key] == pytest.approx(m(x, y)[key], rel=1e-12)
        assert torch.allclose(m.per_image(x, y)[perm], m.per_image(x[perm], y[perm]))


def test_smaller_window_for_tiny_images():
    x = torch.rand(1, 1, 8, 8) * 2 - 1
    with pytest.raises(ValueError, match="window"):
        SSIM()(x, x)
    assert SSIM(SSIM.Config(window_size=7))(x, x)["ssim"] == pytest.approx(1.0)


# ------------------------------------------------------------------ registry, errors


def test_built_through_the_registry():
    for name, key in (("psnr", "psnr"), ("ssim", "ssim")):
        m = gaf.create("metric", name)
        assert isinstance(m, I.Metric)
        x = structured()
        out = m(x, x * 0.9)
        assert set(out) == {key} and isinstance(out[key], float)


def test_bad_inputs_and_configs():
    x = structured()
    with pytest.raises(ValueError, match="shape"):
        PSNR()(x, x[:, :2])
    with pytest.raises(ValueError, match="NaN"):
        SSIM()(x, x * float("nan"))
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        PSNR()(x[0, 0], x[0, 0])


@pytest.mark.parametrize("name, options, message", [
    ("ssim", {"window_size": 10}, "window_size must be odd, got 10"),
    ("ssim", {"window_size": -1}, "window_size must be >= 1, got -1"),
    ("ssim", {"sigma": 0}, "sigma must be > 0, got 0"),
    ("ssim", {"sigma": float("inf")}, "sigma must be finite, got inf"),
    ("psnr", {"max_db": 0}, "max_db must be > 0, got 0"),
    ("psnr", {"max_db": float("nan")}, "max_db must be > 0, got nan"),
])
def test_bad_options(name, options, message):
    with pytest.raises(OptionError, match=f"^metric {name}: {re.escape(message)}$"):
        gaf.create("metric", name, **options)
