"""Gatys' losses against a float64 reference written from the paper's equations, and
their invariants as Hypothesis properties (symmetric PSD Gram matrices, a style loss
that is zero for identical statistics and blind to where features are)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from gaf.plugins.style.losses import (content_loss, gram_matrix, layer_style_loss, style_loss,
                                      uniform_weights)

shapes = st.tuples(st.integers(1, 3), st.integers(1, 6), st.integers(1, 5), st.integers(1, 5))


def maps_of(shape, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g)


def reference_gram(f: np.ndarray) -> np.ndarray:
    """G_ij = Σ_k F_ik F_jk, written out (float64)."""
    b, n = f.shape[:2]
    flat = f.reshape(b, n, -1).astype(np.float64)
    out = np.zeros((b, n, n))
    for x in range(b):
        for i in range(n):
            for j in range(n):
                out[x, i, j] = sum(flat[x, i, k] * flat[x, j, k] for k in range(flat.shape[2]))
    return out


def reference_style(maps: list[np.ndarray], styles: list[np.ndarray],
                    weights: list[float]) -> np.ndarray:
    """Σ_l w_l Σ_ij (G_ij − A_ij)² / (4 N² M²), eq. 4-5 of Gatys et al. (float64)."""
    total = np.zeros(maps[0].shape[0])
    for f, s, w in zip(maps, styles, weights, strict=True):
        n, m = f.shape[1], f.shape[2] * f.shape[3]
        g, a = reference_gram(f), reference_gram(s)[0]
        total += w * ((g - a) ** 2).sum(axis=(1, 2)) / (4.0 * n * n * m * m)
    return total


@given(shapes, st.integers(0, 2**16))
def test_gram_matrix_matches_float64_reference(shape, seed):
    f = maps_of(shape, seed)
    np.testing.assert_allclose(gram_matrix(f).numpy(), reference_gram(f.numpy()),
                               rtol=1e-5, atol=1e-5)


@given(st.lists(st.tuples(st.integers(1, 5), st.integers(1, 4), st.integers(1, 4)),
                min_size=1, max_size=3),
       st.integers(1, 3), st.integers(0, 2**16),
       st.lists(st.floats(0.0, 2.0), min_size=3, max_size=3))
def test_style_loss_matches_float64_reference(layers, batch, seed, raw_weights):
    maps = [maps_of((batch, *shape), seed + i) for i, shape in enumerate(layers)]
    styles = [maps_of((1, *shape), seed + 100 + i) for i, shape in enumerate(layers)]
    weights = raw_weights[:len(layers)]
    targets = [gram_matrix(s)[0] for s in styles]
    got = style_loss(maps, targets, weights).numpy()
    want = reference_style([m.numpy() for m in maps], [s.numpy() for s in styles], weights)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-7)
    default = style_loss(maps, targets).numpy()  # Gatys' equal weights 1/L
    want = reference_style([m.numpy() for m in maps], [s.numpy() for s in styles],
                           [1 / len(layers)] * len(layers))
    np.testing.assert_allclose(default, want, rtol=1e-4, atol=1e-7)


def test_layer_style_loss_closed_form():
    # F = c·1 (N maps, M positions): G = c² M everywhere; against A = 0 the loss is
    # N² (c² M)² / (4 N² M²) = c⁴ / 4 whatever N and M.
    for n, h, w, c in [(1, 1, 1, 2.0), (3, 2, 5, 0.5), (8, 4, 4, 1.5)]:
        f = torch.full((1, n, h, w), c, dtype=torch.float64)
        loss = layer_style_loss(gram_matrix(f), torch.zeros(n, n, dtype=torch.float64), h * w)
        assert float(loss[0]) == pytest.approx(c ** 4 / 4, rel=1e-12)


@given(shapes, st.integers(0, 2**16), st.floats(-3, 3))
def test_content_loss_closed_form_and_reference(shape, seed, shift):
    p = maps_of(shape[1:], seed).double()
    f = p + shift  # ½ Σ shift² over N·H·W entries
    got = content_loss(f[None].expand(shape[0], *shape[1:]), p)
    n = shape[1] * shape[2] * shape[3]
    np.testing.assert_allclose(got.numpy(), 0.5 * shift ** 2 * n, rtol=1e-9, atol=1e-9)
    g = maps_of(shape, seed + 1)
    want = 0.5 * ((g.double().numpy() - p.numpy()) ** 2).sum(axis=(1, 2, 3))
    np.testing.assert_allclose(content_loss(g, p.float()).numpy(), want, rtol=1e-5)


@given(shapes, st.integers(0, 2**16))
def test_gram_is_symmetric_positive_semidefinite(shape, seed):
    g = gram_matrix(maps_of(shape, seed).double())
    torch.testing.assert_close(g, g.transpose(1, 2), rtol=1e-12, atol=1e-12)
    eig = torch.linalg.eigvalsh(g)
    assert (eig >= -1e-9 * max(1.0, float(eig.abs().max()))).all()


@given(shapes, st.integers(0, 2**16))
def test_style_loss_is_zero_for_identical_statistics(shape, seed):
    f = maps_of((1, *shape[1:]), seed)
    assert float(style_loss([f], [gram_matrix(f)[0]])[0]) == 0.0


@given(shapes, st.integers(0, 2**16))
def test_style_loss_ignores_where_features_are(shape, seed):
    b, n, h, w = shape
    f = maps_of(shape, seed).double()
    target = gram_matrix(maps_of((1, n, h, w), seed + 1).double())[0]
    perm = torch.randperm(h * w, generator=torch.Generator().manual_seed(seed))
    moved = f.reshape(b, n, -1)[:, :, perm].reshape(b, n, h, w)
    np.testing.assert_allclose(style_loss([moved], [target]).numpy(),
                               style_loss([f], [target]).numpy(), rtol=1e-10, atol=1e-12)
    # ... while the content loss does see it (unless the permutation moves nothing)
    if not torch.equal(moved, f):
        assert float(content_loss(moved, f[0]).max()) > 0


def test_uniform_weights_and_shape_errors():
    assert uniform_weights(4) == (0.25,) * 4
    with pytest.raises(ValueError):
        uniform_weights(0)
    f = torch.zeros(1, 2, 3, 3)
    with pytest.raises(ValueError, match="does not match"):
        layer_style_loss(gram_matrix(f), torch.zeros(3, 3), 9)
    with pytest.raises(ValueError, match="targets"):
        style_loss([f, f], [torch.zeros(2, 2)])
    with pytest.raises(ValueError, match="weights"):
        style_loss([f], [torch.zeros(2, 2)], [0.5, 0.5])
    with pytest.raises(ValueError, match="does not match"):
        content_loss(f, torch.zeros(2, 3, 4))
    with pytest.raises(ValueError, match=r"\(B, N, H, W\)"):
        gram_matrix(torch.zeros(2, 3))
