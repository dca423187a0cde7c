"""In-domain FD and KID: the maths against float64 references, the feature network, floors."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import gaf
from gaf import interfaces as I
from gaf.config import OptionError
from gaf.errors import BadConfig, BadData
from gaf.plugins.metrics.features import (FeatureNet, FeatureNetConfig, load_images,
                                          train_feature_net)
from gaf.plugins.metrics.frechet import (InDomainFD, fd_from_features,
                                         feature_statistics, frechet_distance,
                                         kid_from_features, mmd2_unbiased, sqrtm_psd,
                                         trace_sqrt_product)


def random_psd(d: int, rank: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((d, rank))
    return a @ a.T


# ------------------------------------------------------------------ matrix square root


@pytest.mark.parametrize("rank", [6, 3, 0])
def test_sqrtm_psd_matches_an_eigen_reference(rank):
    a = random_psd(6, rank, seed=rank)
    w, v = np.linalg.eigh(a)
    ref = v @ np.diag(np.sqrt(np.clip(w, 0, None))) @ v.T
    got = sqrtm_psd(torch.from_numpy(a)).numpy()
    assert np.allclose(got, ref, atol=1e-10)
    assert np.allclose(got @ got, a, atol=1e-10)
    assert np.allclose(got, got.T)


@pytest.mark.parametrize("r1, r2", [(5, 5), (2, 5), (2, 3)])
def test_trace_sqrt_product_matches_eigenvalues_of_the_product(r1, r2):
    s1, s2 = random_psd(5, r1, 1), random_psd(5, r2, 2)
    # reference: the eigenvalues of the (non-symmetric) product itself
    lam = np.linalg.eigvals(s1 @ s2)
    ref = np.sqrt(np.clip(lam.real, 0, None)).sum()
    got = trace_sqrt_product(torch.from_numpy(s1), torch.from_numpy(s2))
    assert got == pytest.approx(ref, rel=1e-7, abs=1e-7)


# --------------------------------------------------------------------- Fréchet distance


def ref_fd(f1: np.ndarray, f2: np.ndarray) -> float:
    """FD from numpy statistics and a complex eigendecomposition of Σ1Σ2."""
    m1, m2 = f1.mean(0), f2.mean(0)
    c1, c2 = np.cov(f1, rowvar=False), np.cov(f2, rowvar=False)
    lam = np.linalg.eigvals(c1 @ c2)
    tr_sqrt = np.sqrt(np.clip(lam.real, 0, None)).sum()
    return float(((m1 - m2) ** 2).sum() + np.trace(c1) + np.trace(c2) - 2 * tr_sqrt)


def test_fd_closed_form_for_diagonal_gaussians():
    # N(m1, diag v1) vs N(m2, diag v2): Σ1Σ2 is diagonal, (Σ1Σ2)^½ = diag(√(v1 v2)), so
    # FD = Σ(m1 − m2)² + Σ(v1 + v2 − 2√(v1 v2)) = Σ(m1 − m2)² + Σ(√v1 − √v2)².
    m1, m2 = torch.tensor([0.0, 1.0, -2.0, 0.5]), torch.tensor([1.0, 1.0, 0.0, -0.5])
    v1, v2 = torch.tensor([1.0, 4.0, 0.25, 2.0]), torch.tensor([9.0, 1.0, 0.25, 0.0])
    closed = float(((m1 - m2) ** 2).sum() + ((v1.sqrt() - v2.sqrt()) ** 2).sum())
    got = frechet_distance(m1, torch.diag(v1), m2, torch.diag(v2))
    assert got == pytest.approx(closed, rel=1e-12)
    assert closed == pytest.approx(1 + 0 + 4 + 1 + (1 - 3) ** 2 + 1 + 0 + 2)

    # the same from samples: matches a numpy reference on the sample statistics and,
    # with many samples, the population closed form
    g = torch.Generator().manual_seed(0)
    n = 20000
    f1 = m1 + v1.sqrt() * torch.randn(n, 4, generator=g, dtype=torch.float64)
    f2 = m2 + v2.sqrt() * torch.randn(n, 4, generator=g, dtype=torch.float64)
    sample = fd_from_features(f1, f2)
    # one variance is exactly 0: a round-off eigenvalue ~1e-16 becomes ~1e-8 under √
    assert sample == pytest.approx(ref_fd(f1.numpy(), f2.numpy()), rel=1e-7)
    assert sample == pytest.approx(closed, rel=0.02)


def test_fd_matches_reference_on_correlated_features():
    g = torch.Generator().manual_seed(3)
    mix1 = torch.randn(8, 8, generator=g, dtype=torch.float64)
    mix2 = torch.randn(8, 8, generator=g, dtype=torch.float64)
    f1 = torch.randn(300, 8, generator=g, dtype=torch.float64) @ mix1
    f2 = torch.randn(200, 8, generator=g, dtype=torch.float64) @ mix2 + 0.3
    assert fd_from_features(f1, f2) == pytest.approx(ref_fd(f1.numpy(), f2.numpy()), rel=1e-9)
    mu, cov = feature_statistics(f1)
    assert np.allclose(cov.numpy(), np.cov(f1.numpy(), rowvar=False))
    assert np.allclose(mu.numpy(), f1.numpy().mean(0))


@given(seed=st.integers(0, 2 ** 31 - 1), n1=st.integers(2, 30), n2=st.integers(2, 30),
       d=st.integers(1, 12), shift=st.floats(-3, 3))
def test_fd_properties(seed, n1, n2, d, shift):
    # zero on itself, symmetric, non-negative; also with singular covariances (n < d)
    g = torch.Generator().manual_seed(seed)
    f1 = torch.randn(n1, d, generator=g, dtype=torch.float64)
    f2 = torch.randn(n2, d, generator=g, dtype=torch.float64) * 2 + shift
    # with singular covariances a round-off eigenvalue ε·scale² becomes √ε·scale ≈ 1e-8·scale
    scale = 1 + float(f1.pow(2).sum() / n1) + float(f2.pow(2).sum() / n2)
    assert fd_from_features(f1, f1) == pytest.approx(0.0, abs=1e-6 * scale)
    a, b = fd_from_features(f1, f2), fd_from_features(f2, f1)
    assert a >= 0.0
    assert a == pytest.approx(b, rel=1e-8, abs=1e-6 * scale)


# ------------------------------------------------------------------------------ KID


def ref_mmd2(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased MMD², cubic kernel, by a direct O(n²) float64 loop."""
    d = x.shape[1]

    def k(a, b):
        return (sum(float(a[i]) * float(b[i]) for i in range(d)) / d + 1.0) ** 3

    m, n = len(x), len(y)
    xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(k(y[i], y[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(n)) / (m * n)
    return xx + yy - 2 * xy


def test_kid_matches_a_direct_loop():
    g = torch.Generator().manual_seed(5)
    x = torch.randn(12, 5, generator=g, dtype=torch.float64)
    y = torch.randn(9, 5, generator=g, dtype=torch.float64) * 1.5 + 0.4
    ref = ref_mmd2(x.numpy(), y.numpy())
    assert mmd2_unbiased(x, y) == pytest.approx(ref, rel=1e-10)
    # subsets covering both sets are the sets themselves: mean = the value, std = 0
    out = kid_from_features(x, y, subsets=3, subset_size=100)
    assert set(out) == {"kid", "kid_std"}
    sub = kid_from_features(x[:9], y, subsets=3, subset_size=100)
    assert sub["kid"] == pytest.approx(ref_mmd2(x[:9].numpy(), y.numpy()), rel=1e-10)
    assert sub["kid_std"] == pytest.approx(0.0, abs=1e-12)


def test_kid_is_unbiased_for_one_distribution():
    g = torch.Generator().manual_seed(11)
    draws, biased = [], []
    for _ in range(400):
        x = torch.randn(16, 4, generator=g, dtype=torch.float64)
        y = torch.randn(16, 4, generator=g, dtype=torch.float64)
        draws.append(mmd2_unbiased(x, y))
        kxx = (x @ x.T / 4 + 1) ** 3
        kyy = (y @ y.T / 4 + 1) ** 3
        kxy = (x @ y.T / 4 + 1) ** 3
        biased.append(float(kxx.mean() + kyy.mean() - 2 * kxy.mean()))
    d, b = torch.tensor(draws), torch.tensor(biased)
    se = float(d.std() / math.sqrt(len(d)))
    assert abs(float(d.mean())) < 4 * se
    assert float(b.mean()) > 10 * float(b.std() / math.sqrt(len(b)))  # the test has power


def test_kid_sees_a_different_distribution():
    g = torch.Generator().manual_seed(2)
    x = torch.randn(200, 8, generator=g, dtype=torch.float64)
    y = torch.randn(200, 8, generator=g, dtype=torch.float64) * 1.3 + 0.5
    out = kid_from_features(x, y, subsets=20, subset_size=50, seed=1)
    assert out["kid"] > 5 * out["kid_std"] / math.sqrt(20) > 0  # 5 standard errors
    assert kid_from_features(x, y, subsets=20, subset_size=50, seed=1) == out  # seeded


# -------------------------------------------------------------- the feature network


class Shapes:
    """Coloured squares (label 0) and discs (label 1) on a dark background, 16×16."""

    num_classes, channels, resolution = 2, 3, 16
    description = "test shapes: squares vs discs, 16x16"

    def __init__(self, n: int, seed: int):
        g = torch.Generator().manual_seed(seed)
        r = self.resolution
        yy, xx = torch.meshgrid(torch.arange(r) + 0.5, torch.arange(r) + 0.5, indexing="ij")
        self.items = []
        for i in range(n):
            label = i % 2
            size = 3 + float(torch.rand((), generator=g)) * 3
            cy, cx = (size + torch.rand(2, generator=g) * (r - 2 * size)).tolist()
            if label == 0:
                mask = ((yy - cy).abs() <= size) & ((xx - cx).abs() <= size)
            else:
                mask = (yy - cy) ** 2 + (xx - cx) ** 2 <= size ** 2
            colour = torch.rand(3, generator=g) * 1.4 - 0.4
            img = torch.full((3, r, r), -0.8) + 0.05 * torch.randn(3, r, r, generator=g)
            img = torch.where(mask, colour[:, None, None], img).clamp(-1, 1)
            self.items.append({"image": img, "caption": ["square", "disc"][label],
                               "label": label})

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    train, held = Shapes(400, seed=0), Shapes(200, seed=1)
    net = train_feature_net(train, held, epochs=10, batch_size=32, lr=1e-3, seed=0,
                            width=8, feature_dim=32, floor_subsets=5, floor_subset_size=50,
                            num_threads=1)
    path = net.save(tmp_path_factory.mktemp("features") / "shapes")
    return net, path


def test_feature_net_learns_and_records_its_accuracy(trained):
    net, path = trained
    assert net.accuracy >= 0.9
    meta = json.loads((path / "feature_net.json").read_text())
    assert meta["format"] == "gaf.feature_net"
    assert meta["accuracy"] == net.accuracy
    assert meta["dataset"] == "test shapes: squares vs discs, 16x16"
    assert (meta["n_train"], meta["n_eval"]) == (400, 200)
    assert meta["version"] == 2
    assert meta["config"] == {"in_channels": 3, "num_classes": 2, "width": 8,
                              "feature_dim": 32, "resolution": 16, "variant": "layout",
                              "layout_head": False}  # these items have no attributes
    floor = meta["floor"]
    assert floor["n_per_side"] == 100 and floor["fd"] >= 0 and math.isfinite(floor["kid"])
    assert sorted(p.name for p in path.iterdir()) == ["feature_net.json", "model.safetensors"]


def test_feature_net_saves_and_loads_with_identical_features(trained):
    net, path = trained
    loaded = FeatureNet.load(path)
    images, labels = load_images(Shapes(40, seed=9))
    assert labels.tolist() == [i % 2 for i in range(40)]
    a, b = net.features(images), loaded.features(images)
    assert a.dtype == torch.float64 and a.shape == (40, 32)
    assert torch.equal(a, b)
    # other batch sizes: the same up to float32 rounding (oneDNN picks its convolution
    # kernels by batch size, and on some CPUs they round differently)
    c = loaded.features(images, batch_size=7)
    assert torch.allclose(a, c, rtol=1e-5, atol=1e-5)
    assert loaded.info == json.loads(json.dumps(net.info))


def test_feature_net_is_deterministic_per_seed():
    train, held = Shapes(64, seed=0), Shapes(16, seed=1)
    kw = dict(epochs=1, batch_size=32, width=4, feature_dim=8, compute_floor=False,
              num_threads=1)
    a = train_feature_net(train, held, seed=3, **kw)
    b = train_feature_net(train, held, seed=3, **kw)
    threads = torch.get_num_threads()
    c = train_feature_net(train, held, seed=4, **kw)
    assert torch.get_num_threads() == threads  # num_threads is restored
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)


def test_fd_and_kid_separate_real_from_fake_far_above_the_floor(trained):
    _, path = trained
    real, real2 = Shapes(120, seed=2), Shapes(120, seed=3)
    # "fake": the same layouts with the shape blurred out into a flat mean colour
    fake = [{"image": it["image"].mean(dim=(1, 2), keepdim=True).expand(3, 16, 16).clone(),
             "label": it["label"]} for it in Shapes(120, seed=4)]
    fd = gaf.create("metric", "fd", features=str(path))
    out = fd(real, fake, real2)
    assert set(out) == {"fd", "fd_floor", "floor_n", "n_real", "n_fake", "feature_accuracy"}
    assert out["fd"] > 10 * out["fd_floor"] > 0
    assert (out["floor_n"], out["n_real"], out["n_fake"]) == (120.0, 120.0, 120.0)
    assert out["feature_accuracy"] >= 0.9
    halves = fd(real, fake)  # floor from two halves of `real`
    assert halves["floor_n"] == 60.0 and halves["fd"] == out["fd"]
    assert fd.floor(real) == {"fd_floor": halves["fd_floor"], "floor_n": 60.0}
    assert out["fd"] > 10 * halves["fd_floor"]

    kid = gaf.create("metric", "kid", features=str(path), subsets=10, subset_size=50)
    k = kid(real, fake, real2)
    assert set(k) == {"kid", "kid_std", "kid_floor", "kid_floor_std", "floor_n", "n_real",
                      "n_fake", "feature_accuracy"}
    # far above the floor: by 5 standard errors of the subset means (and the floor ≈ 0)
    se = (k["kid_std"] + k["kid_floor_std"]) / math.sqrt(10)
    assert k["kid"] - k["kid_floor"] > 5 * se
    assert k["kid"] > 3 * abs(k["kid_floor"])
    kf = kid.floor(real)
    assert kf["floor_n"] == 60.0 and abs(kf["kid_floor"]) < k["kid"] / 3


def test_images_as_tensors_and_batches(trained):
    net, _ = trained
    images, _ = load_images(Shapes(30, seed=5))
    fd = InDomainFD(net=net)
    batches = [images[i:i + 8] for i in range(0, 30, 8)]
    assert torch.equal(fd.features(batches), fd.features(images))
    assert torch.equal(fd.features(images), net.features(images))
    with pytest.raises(ValueError, match="16x16"):
        fd.features(torch.zeros(4, 3, 8, 8))
    with pytest.raises(ValueError, match="3, H, W"):
        fd.features(torch.zeros(4, 1, 16, 16))


# --------------------------------------------------------------- registry and errors


def test_registry_builds_them_and_asks_for_a_feature_net():
    for name in ("fd", "kid"):
        m = gaf.create("metric", name)
        assert isinstance(m, I.Metric)
        with pytest.raises(BadConfig, match="train_feature_net") as err:
            m(torch.zeros(4, 3, 16, 16), torch.zeros(4, 3, 16, 16))
        assert "real training split" in str(err.value)
    with pytest.raises(BadConfig, match="not a directory"):
        gaf.create("metric", "fd", features="/nonexistent/feature-net")
    with pytest.raises(BadConfig, match="subset_size"):
        gaf.create("metric", "kid", subset_size=1)
    with pytest.raises(BadConfig, match="batch_size"):
        InDomainFD(InDomainFD.Config(batch_size=0))


@pytest.mark.parametrize("name, option, value, rule", [
    ("fd", "batch_size", 0, ">= 1"), ("kid", "batch_size", -1, ">= 1"),
    ("kid", "subsets", 0, ">= 1"), ("kid", "subset_size", 1, ">= 2")])
def test_metric_options_are_declared(name, option, value, rule):
    with pytest.raises(OptionError, match=rf"^metric {name}: {option} must be {rule}, got {value}$"):
        gaf.create("metric", name, **{option: value})


def test_feature_net_config_declares_its_sizes():
    with pytest.raises(OptionError, match="^num_classes must be >= 2, got 1$"):
        FeatureNetConfig(num_classes=1)
    with pytest.raises(OptionError, match="^feature_dim must be >= 1, got 0$"):
        FeatureNetConfig(feature_dim=0)
    # the JSON sidecar reaches it without coercion: a float or bool size is refused
    with pytest.raises(OptionError, match="^width must be an integer, not a float"):
        FeatureNetConfig(width=16.0)
    with pytest.raises(OptionError, match="^in_channels must be an integer, not a bool"):
        FeatureNetConfig(in_channels=True)


def test_a_directory_that_is_not_a_feature_net(tmp_path):
    fd = gaf.create("metric", "fd", features=str(tmp_path))
    with pytest.raises(BadData, match="train_feature_net"):
        fd(torch.zeros(4, 3, 16, 16), torch.zeros(4, 3, 16, 16))
    (tmp_path / "feature_net.json").write_text('{"format": "something else"}')
    with pytest.raises(BadData, match="format"):
        FeatureNet.load(tmp_path)


def test_score_features_needs_enough_real_images_for_a_floor():
    f = torch.randn(3, 2, dtype=torch.float64)
    with pytest.raises(ValueError, match="at least 4"):
        InDomainFD().score_features(f, f)
    out = InDomainFD().score_features(f, f, f)
    assert out["fd"] == pytest.approx(0, abs=1e-12) and out["fd_floor"] == out["fd"]


def test_training_refuses_what_would_make_it_dishonest():
    train = Shapes(8, seed=0)
    with pytest.raises(BadConfig, match="held-out"):
        train_feature_net(train, train)
    unlabelled = [{"image": it["image"]} for it in train]
    with pytest.raises(BadData, match="labelled"):
        train_feature_net(unlabelled, Shapes(4, seed=1))
    batches = [{"image": torch.stack([train[i]["image"], train[i + 1]["image"]]),
                "label": torch.tensor([train[i]["label"], train[i + 1]["label"]])}
               for i in range(0, 8, 2)]
    images, labels = load_images(batches, limit=5)
    assert images.shape == (5, 3, 16, 16) and labels.tolist() == [0, 1, 0, 1, 0]
