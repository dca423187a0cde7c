"""Pixel metrics of a reconstruction against its reference: ``psnr`` and ``ssim``.

Both metrics are called as ``metric(reference, reconstruction)`` with two batches of
the same shape ``(B, C, H, W)`` (a single ``(C, H, W)`` image is also accepted) whose
values are on gaf's image scale ``[-1, 1]``. They return a one-entry dict of floats,
``{"psnr": ...}`` or ``{"ssim": ...}``: the **mean over images of a per-image
value** (``per_image(reference, reconstruction)`` returns the ``(B,)`` values
themselves). Everything is computed in float64. Inputs are not clamped: clamp a
decoder's output to ``[-1, 1]`` first if it can overshoot, as the papers do.

PSNR
----
Per image, with the mean squared error taken over all ``C·H·W`` values::

    MSE  = mean((x − y)²)                  on the [-1, 1] scale
    PSNR = 10 · log10(R² / MSE),  R = 2    (the data range of [-1, 1])

which equals ``10 · log10(1 / MSE₀₁)`` on images mapped to ``[0, 1]`` by
``(x + 1) / 2``: the usual PSNR of 8-bit images scaled to ``[0, 1]``, without the
quantisation. Identical images (``MSE = 0``) would give ``+inf``; the per-image value
is capped at ``max_db`` (100 dB by default, an MSE of 4·10⁻¹⁰), so that one perfect
image cannot turn the mean into ``inf``. The reported number is the mean of the
capped per-image values, in dB (not the PSNR of the pooled MSE, which is lower
whenever the errors vary between images).

SSIM
----
Wang, Bovik, Sheikh & Simoncelli (2004), "Image quality assessment: from error
visibility to structural similarity", with their constants: images are mapped to
``[0, 1]`` (dynamic range ``L = 1``), ``C1 = (0.01·L)²``, ``C2 = (0.03·L)²``, and the
local statistics are weighted by an 11×11 circular-symmetric Gaussian window with
σ = 1.5 (normalised to sum 1; built as the outer product of a 1-D Gaussian, which is
the same window). At each window position, per channel::

    μx = Σ w·x,   σx² = Σ w·x² − μx²,   σxy = Σ w·x·y − μx·μy
    SSIM = (2·μx·μy + C1)(2·σxy + C2) / ((μx² + μy² + C1)(σx² + σy² + C2))

The map is evaluated only where the window fits inside the image (the "valid"
region, no padding: ``(H − 10) × (W − 10)`` positions), averaged over those
positions, then over channels (colour images are treated channel by channel, like
scikit-image's ``channel_axis`` mode), giving a per-image value; the reported
``ssim`` is the mean over images. SSIM(x, x) = 1 and SSIM ≤ 1 always; it is
symmetric in its two arguments. This is the single-scale SSIM of the paper; it
should equal ``skimage.metrics.structural_similarity(..., gaussian_weights=True,
sigma=1.5, use_sample_covariance=False, data_range=1, channel_axis=0)`` on the
``[0, 1]``-mapped images, whose final crop of 5 border pixels keeps exactly the valid
positions (not checked here: scikit-image is not a dependency; the tests compare
with an independent float64 loop instead). Images smaller than the window raise ``ValueError``
(set ``window_size`` smaller for tiny images, and say so when reporting).
"""

from __future__ import annotations

from typing import Any

import attrs
import torch
from torch import Tensor

from gaf.config import option, option_error

__all__ = ["PSNR", "SSIM", "psnr", "ssim", "gaussian_window"]

DATA_RANGE = 2.0  # [-1, 1]


def _pair(reference: Tensor, reconstruction: Tensor) -> tuple[Tensor, Tensor]:
    x = torch.as_tensor(reference)
    y = torch.as_tensor(reconstruction)
    if x.shape != y.shape:
        raise ValueError(f"reference and reconstruction differ in shape: "
                         f"{tuple(x.shape)} vs {tuple(y.shape)}")
    if x.dim() == 3:
        x, y = x.unsqueeze(0), y.unsqueeze(0)
    if x.dim() != 4:
        raise ValueError(f"expected images (B, C, H, W) or (C, H, W), got shape {tuple(x.shape)}")
    if x.numel() == 0:
        raise ValueError("empty image batch")
    x, y = x.detach().to("cpu", torch.float64), y.detach().to("cpu", torch.float64)
    if not (torch.isfinite(x).all() and torch.isfinite(y).all()):
        raise ValueError("images contain NaN or inf")
    return x, y


def psnr(reference: Tensor, reconstruction: Tensor, max_db: float = 100.0) -> Tensor:
    """Per-image PSNR in dB ``(B,)`` (float64) of images in ``[-1, 1]``, capped at ``max_db``."""
    x, y = _pair(reference, reconstruction)
    mse = (x - y).pow(2).flatten(1).mean(1)
    out = torch.full_like(mse, float(max_db))
    pos = mse > 0
    out[pos] = 10.0 * torch.log10(DATA_RANGE ** 2 / mse[pos])
    return out.clamp(max=float(max_db))


def gaussian_window(size: int = 11, sigma: float = 1.5) -> Tensor:
    """The 1-D Gaussian ``(size,)`` float64, centred, normalised to sum 1."""
    k = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-k.pow(2) / (2 * sigma ** 2))
    return g / g.sum()


def _band(length: int, g: Tensor) -> Tensor:
    """``(length − n + 1, length)`` band matrix: row ``i`` holds ``g`` at columns ``i…i+n−1``."""
    n = g.numel()
    rows = length - n + 1
    m = torch.zeros(rows, length, dtype=g.dtype)
    idx = torch.arange(rows)
    for k in range(n):
        m[idx, idx + k] = g[k]
    return m


def _filter_valid(x: Tensor, g: Tensor) -> Tensor:
    """Separable Gaussian filter of ``(..., H, W)``, valid region only (two float64 matmuls)."""
    h, w = x.shape[-2:]
    return _band(h, g) @ x @ _band(w, g).T


def ssim(reference: Tensor, reconstruction: Tensor, window_size: int = 11,
         sigma: float = 1.5, k1: float = 0.01, k2: float = 0.03) -> Tensor:
    """Per-image SSIM ``(B,)`` (float64) of images in ``[-1, 1]`` (see the module docstring)."""
    x, y = _pair(reference, reconstruction)
    b, c, h, w = x.shape
    if h < window_size or w < window_size:
        raise ValueError(f"SSIM with a {window_size}x{window_size} window needs images at least "
                         f"that large, got {h}x{w} (use a smaller window_size)")
    x, y = (x + 1) / 2, (y + 1) / 2  # [0, 1], L = 1
    g = gaussian_window(window_size, sigma)
    c1, c2 = k1 ** 2, k2 ** 2
    mx, my = _filter_valid(x, g), _filter_valid(y, g)
    vx = _filter_valid(x * x, g) - mx * mx
    vy = _filter_valid(y * y, g) - my * my
    cxy = _filter_valid(x * y, g) - mx * my
    num = (2 * mx * my + c1) * (2 * cxy + c2)
    den = (mx * mx + my * my + c1) * (vx + vy + c2)
    per_channel = (num / den).flatten(2).mean(2)  # (B, C)
    return per_channel.mean(1)


@attrs.define
class PSNRConfig:
    max_db: float = option(100.0, "cap on a per-image PSNR (identical images would be +inf)",
                           gt=0)


class PSNR:
    """``psnr(reference, reconstruction) -> {"psnr": mean per-image PSNR in dB}``.

    Images ``(B, C, H, W)`` in ``[-1, 1]`` (data range 2); see :mod:`gaf.plugins.metrics.pixel`.
    """

    Config = PSNRConfig

    def __init__(self, config: PSNRConfig | None = None):
        self.config = config or PSNRConfig()

    def per_image(self, reference: Tensor, reconstruction: Tensor) -> Tensor:
        return psnr(reference, reconstruction, self.config.max_db)

    def __call__(self, reference: Tensor, reconstruction: Tensor) -> dict[str, float]:
        return {"psnr": float(self.per_image(reference, reconstruction).mean())}


def _odd(inst: Any, attribute: Any, value: int) -> None:
    """The rule of ``window_size`` that a bound cannot say (runs after the bound)."""
    if value % 2 != 1:
        raise option_error(attribute.name, "must be odd", value)


@attrs.define
class SSIMConfig:
    window_size: int = option(11, "side of the Gaussian window (odd); 11 in Wang et al. 2004",
                              ge=1, validator=_odd)
    sigma: float = option(1.5, "standard deviation of the Gaussian window, pixels", gt=0)


class SSIM:
    """``ssim(reference, reconstruction) -> {"ssim": mean SSIM over images}``.

    Gaussian 11×11 window, σ = 1.5, K1 = 0.01, K2 = 0.03 on ``[0, 1]``-mapped images,
    valid region only, channel by channel; see :mod:`gaf.plugins.metrics.pixel`.
    """

    Config = SSIMConfig

    def __init__(self, config: SSIMConfig | None = None):
        self.config = config or SSIMConfig()

    def per_image(self, reference: Tensor, reconstruction: Tensor) -> Tensor:
        return ssim(reference, reconstruction, self.config.window_size, self.config.sigma)

    def __call__(self, reference: Tensor, reconstruction: Tensor) -> dict[str, float]:
        return {"ssim": float(self.per_image(reference, reconstruction).mean())}
