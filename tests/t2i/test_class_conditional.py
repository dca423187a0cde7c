"""The class-wise evaluation (gaf.plugins.t2i.class_conditional): the sets, the
accuracy and FD bookkeeping against hand-computed references on a fake classifier and a
fake generator, the guidance sweep, and a tiny ``ldm`` run on IDX files through it."""

from __future__ import annotations

import json
import math
import struct

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

import gaf
from gaf.config import OptionError
from gaf.errors import BadConfig
from gaf.plugins.metrics.frechet import fd_from_features, kid_with_se
from gaf.plugins.t2i import class_conditional as C

#: per-class FD on a handful of samples: singular covariances, by design of the fakes
pytestmark = pytest.mark.filterwarnings("ignore:FD from .* samples")

K = 3  # classes of the fake data


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny tensors: one intra-op thread (on a busy machine, more wait on each other)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
SIDE = 4


# ------------------------------------------------------------------------- the sets


@given(st.lists(st.integers(0, 4), max_size=60), st.integers(1, 12))
def test_class_sets_are_the_first_items_of_each_class_disjoint_and_equal_sized(labels,
                                                                              per_class):
    sets = C.class_sets(labels, per_class)
    counts = {k: labels.count(k) for k in set(labels)}
    assert sets.classes == tuple(sorted(counts))
    assert sets.n == (min([per_class, *(c // 2 for c in counts.values())]) if counts else 0)
    for k in sets.classes:
        of_k = [i for i, y in enumerate(labels) if y == k]
        assert list(sets.a[k]) == of_k[:sets.n]  # the first n of class k, in order
        assert list(sets.b[k]) == of_k[sets.n:2 * sets.n]  # the next n: disjoint
    a, b = sets.flat_a(), sets.flat_b()
    assert not set(a) & set(b) and len(set(a)) == len(a) == len(b)
    assert [labels[i] for i in a] == sets.labels() == [labels[i] for i in b]


def test_class_sets_refuse_an_empty_request():
    with pytest.raises(ValueError, match="per_class"):
        C.class_sets([0, 1], 0)


# ------------------------------------------------------------------- the accuracy


def test_accuracy_scores_against_hand_counts_and_the_binomial_formula():
    labels = [0, 0, 0, 0, 1, 1, 2, 2, 2, 2]
    pred = [0, 0, 1, 0, 1, 2, 2, 2, 2, 2]
    out = C.accuracy_scores(torch.tensor(pred), labels, (0, 1, 2), suffix="_real")
    assert out["class_accuracy_real"] == pytest.approx(8 / 10)
    assert out["class_accuracy_real_se"] == pytest.approx(math.sqrt(0.8 * 0.2 / 10))
    assert out["class0_accuracy_real"] == pytest.approx(3 / 4)
    assert out["class0_accuracy_real_se"] == pytest.approx(math.sqrt(0.75 * 0.25 / 4))
    assert out["class1_accuracy_real"] == 0.5
    assert out["class1_accuracy_real_se"] == pytest.approx(math.sqrt(0.25 / 2))
    assert out["class2_accuracy_real"] == 1.0 and out["class2_accuracy_real_se"] == 0.0
    with pytest.raises(ValueError, match="3 predictions for 2 labels"):
        C.accuracy_scores([0, 1, 2], [0, 1], (0, 1))


@given(st.lists(st.tuples(st.integers(0, 3), st.integers(0, 3)), min_size=1, max_size=40))
def test_the_overall_accuracy_is_the_count_weighted_mean_of_the_classes(pairs):
    pred, labels = [p for p, _ in pairs], [y for _, y in pairs]
    classes = sorted(set(labels))
    out = C.accuracy_scores(pred, labels, classes)
    weighted = sum(out[f"class{k}_accuracy"] * labels.count(k) for k in classes)
    assert out["class_accuracy"] == pytest.approx(weighted / len(labels))
    assert 0.0 <= out["class_accuracy"] <= 1.0


# ------------------------------------------------- the evaluation on fake parts


class FakeNet(nn.Module):
    """A "feature net" that reads an image's class from pixel (0, 0) (value ``k / 10``)
    and whose features are the image's 16 pixels (float64)."""

    def __init__(self):
        super().__init__()
        self.calls = 0

    def check_images(self, images):
        assert images.shape[1:] == (1, SIDE, SIDE)

    def forward(self, images):
        assert not self.training  # classified in eval mode
        k = images[:, 0, 0, 0] * 10
        return -(k[:, None] - torch.arange(K, dtype=images.dtype)) ** 2

    def features(self, images):
        self.check_images(images)
        return images.flatten(1).double()


class EvalSet:
    """An eval split: image ``i`` has label ``labels[i]`` in pixel (0, 0) and its index
    spread over the other pixels (so every image is different)."""

    def __init__(self, labels):
        self._labels = list(labels)

    def __len__(self):
        return len(self._labels)

    def labels(self):
        return list(self._labels)

    def __getitem__(self, i):
        g = torch.Generator().manual_seed(10_000 + i)
        image = torch.rand(1, SIDE, SIDE, generator=g) * 2 - 1
        image[0, 0, 0] = self._labels[i] / 10
        return {"image": image, "label": self._labels[i]}


class FakeGenerator:
    """Samples whose pixel (0, 0) is the conditioning class, except when the seed is a
    multiple of 3 (then the next class); ``guidance == 0`` ignores the class (class 0
    always). Records every call."""

    def __init__(self):
        self.calls = []

    def __call__(self, conditions, *, generators, **options):
        seeds = [g.initial_seed() for g in generators]
        self.calls.append((list(conditions), seeds, dict(options)))
        out = torch.stack([torch.rand(1, SIDE, SIDE, generator=g) * 2 - 1 for g in generators])
        for j, (c, s) in enumerate(zip(conditions, seeds)):
            k = 0 if options["guidance"] == 0 else (int(c) + (s % 3 == 0)) % K
            out[j, 0, 0, 0] = k / 10
        return out


class RealOfSeed:
    """The "perfect generator": the real image of eval item ``seed − base``."""

    def __init__(self, dataset, base):
        self.dataset, self.base = dataset, base

    def __call__(self, conditions, *, generators, **options):
        return torch.stack([self.dataset[g.initial_seed() - self.base]["image"]
                            for g in generators])


LABELS = [0, 1, 2, 0, 0, 1, 2, 2, 1, 0, 1, 2, 0, 1, 2, 2, 0, 1, 1, 0, 2, 0]


def evaluate(pipe, eval_ds, **kw):
    opts = {"steps": 2, "guidance": 3.0}
    kw.setdefault("sweep", {"g0": {"steps": 2, "guidance": 0.0},
                            "g3": {"steps": 2, "guidance": 3.0}})
    kw.setdefault("per_class", 3)
    return C.evaluate_classes(pipe, opts, eval_ds=eval_ds, feature_net=FakeNet(), seed=5,
                              batch_size=4, log=lambda m: None, **kw)


def drawn(pipe, sets, guidance):
    """The samples of A one at a time, each seeded 5 + its eval index."""
    return torch.cat([pipe([k], generators=[torch.Generator().manual_seed(5 + i)],
                           guidance=guidance) for k, i in zip(sets.labels(), sets.flat_a())])


def test_accuracy_fd_and_floors_against_hand_computed_references():
    ds, pipe = EvalSet(LABELS), FakeGenerator()
    out = evaluate(pipe, ds)
    sets = C.class_sets(LABELS, 3)
    assert sets.n == 3 and out["class_per_class"] == 3 and out["class_n"] == 9
    assert out["class_classes"] == K
    a, b = sets.flat_a(), sets.flat_b()
    # each item i of A sampled once at the headline options, seeded seed + i
    first = pipe.calls[:3]  # 9 samples in batches of 4
    assert sum((c[1] for c in first), []) == [5 + i for i in a]
    assert sum((c[0] for c in first), []) == sets.labels()
    wrong = {i for i in a if (5 + i) % 3 == 0}
    for k in range(K):
        hits = sum(i not in wrong for i in sets.a[k])
        p = hits / 3
        assert out[f"class{k}_accuracy"] == pytest.approx(p)
        assert out[f"class{k}_accuracy_se"] == pytest.approx(math.sqrt(p * (1 - p) / 3))
        assert out[f"class{k}_accuracy_real"] == 1.0  # the fake net reads real images right
    p = (9 - len(wrong)) / 9
    assert out["class_accuracy"] == pytest.approx(p)
    assert out["class_accuracy_se"] == pytest.approx(math.sqrt(p * (1 - p) / 9))
    # FD per class: samples of A_k against the real images of B_k; floor: A_k real vs B_k
    feats = drawn(pipe, sets, 3.0).flatten(1).double()
    real = {i: ds[i]["image"].flatten().double() for i in a + b}
    for k in range(K):
        fa = torch.stack([real[i] for i in sets.a[k]])
        fb = torch.stack([real[i] for i in sets.b[k]])
        rows = [j for j, i in enumerate(a) if i in sets.a[k]]
        assert out[f"class{k}_fd"] == pytest.approx(fd_from_features(feats[rows], fb))
        assert out[f"class{k}_fd_floor"] == pytest.approx(fd_from_features(fa, fb))
        assert f"class{k}_kid" not in out  # 3 a side: too few for KID's half subsets
    fa, fb = torch.stack([real[i] for i in a]), torch.stack([real[i] for i in b])
    assert out["class_fd"] == pytest.approx(fd_from_features(feats, fb))
    assert out["class_fd_floor"] == pytest.approx(fd_from_features(fa, fb))
    assert out["class_kid"] == pytest.approx(kid_with_se(feats, fb, seed=5)["kid"])
    assert out["class_kid_floor"] == pytest.approx(kid_with_se(fa, fb, seed=5)["kid"])


def test_the_guidance_sweep_reuses_the_headline_samples_and_draws_the_others():
    pipe = FakeGenerator()
    out = evaluate(pipe, EvalSet(LABELS))
    guidances = [c[2]["guidance"] for c in pipe.calls]
    assert guidances == [3.0] * 3 + [0.0] * 3  # g3 is the headline's: drawn once
    for key in ("class_accuracy", "class_accuracy_se", "class_fd", "class_kid",
                "class_kid_se"):
        assert out[f"g3_{key}"] == out[key]
    # guidance 0 ignores the class: every sample is read as class 0
    assert out["g0_class_accuracy"] == pytest.approx(1 / 3)
    assert out["g0_class_accuracy_se"] == pytest.approx(math.sqrt(2 / 9 / 9))
    assert "g0_class_fd_floor" not in out and "g0_class0_accuracy" not in out
    sets = C.class_sets(LABELS, 3)
    g0 = drawn(FakeGenerator(), sets, 0.0).flatten(1).double()
    fb = torch.stack([EvalSet(LABELS)[i]["image"].flatten().double() for i in sets.flat_b()])
    assert out["g0_class_fd"] == pytest.approx(fd_from_features(g0, fb))
    assert out["g0_class_kid"] == pytest.approx(kid_with_se(g0, fb, seed=5)["kid"])


def test_a_generator_of_the_real_images_of_a_scores_exactly_the_floors():
    ds = EvalSet(LABELS * 2)
    out = evaluate(RealOfSeed(ds, 5), ds, sweep={}, per_class=5)
    assert out["class_per_class"] == 5
    for name in ["class"] + [f"class{k}" for k in range(K)]:
        assert out[f"{name}_accuracy"] == out[f"{name}_accuracy_real"] == 1.0
        assert out[f"{name}_fd"] == out[f"{name}_fd_floor"]
        assert out[f"{name}_kid"] == out[f"{name}_kid_floor"]
    assert out["class_fd_floor"] > 0  # B is a different set of images from A


def test_the_grid_has_one_row_per_class(tmp_path):
    from PIL import Image

    evaluate(FakeGenerator(), EvalSet(LABELS), sweep={}, out_dir=tmp_path, grid_columns=2)
    width, height = Image.open(tmp_path / "samples" / "classes.png").size
    assert (width, height) == (2 * (SIDE + 2) + 2, K * (SIDE + 2) + 2)


def test_too_few_items_of_a_class_skip_the_evaluation():
    logged = []
    out = C.evaluate_classes(FakeGenerator(), {"guidance": 3.0}, eval_ds=EvalSet([0, 0, 0, 0, 1]),
                             per_class=3, feature_net=FakeNet(), log=logged.append)
    assert out == {} and "fewer than 4" in logged[0]


class Objective:
    def __init__(self, key, per_class=5):
        self.conditioner = type("Cond", (), {"condition_key": key})()
        self.config = type("Cfg", (), {"eval_per_class": per_class})()


@pytest.mark.parametrize("key, per_class, evaluator", [("caption", 5, False),
                                                        ("label", 0, False),
                                                        ("label", 5, True)])
def test_runs_that_are_not_class_label_runs_without_an_evaluator_get_nothing(key, per_class,
                                                                            evaluator):
    ds = EvalSet(LABELS)
    if evaluator:
        ds.evaluator = lambda: None
    assert C.class_figures_of_run(Objective(key, per_class), None, None, {}, ds) == {}


# ------------------------------------------------------- a tiny run on IDX files


def write_idx(directory, prefix, images, labels):
    directory.mkdir(parents=True, exist_ok=True)
    n, rows, cols = images.shape
    (directory / f"{prefix}-images-idx3-ubyte").write_bytes(
        struct.pack(">4I", 2051, n, rows, cols) + images.astype(np.uint8).tobytes())
    (directory / f"{prefix}-labels-idx1-ubyte").write_bytes(
        struct.pack(">2I", 2049, n) + labels.astype(np.uint8).tobytes())


def idx_dir(path):
    """Garment-like 28x28 blobs of three classes: a bar, a block and a ring."""
    rng = np.random.default_rng(0)

    def images(labels):
        out = rng.integers(0, 40, (len(labels), 28, 28))
        for img, k in zip(out, labels):
            if k == 0:
                img[4:24, 12:16] = 220
            elif k == 1:
                img[8:20, 8:20] = 220
            else:
                img[6:22, 6:22] = 220
                img[10:18, 10:18] = 30
        return out

    train, test = np.arange(60) % 3, np.arange(24) % 3
    write_idx(path, "train", images(train), train)
    write_idx(path, "t10k", images(test), test)
    return path


TINY = ["dataset.resolution=16", "autoencoder.in_channels=1", "noise-model.in_channels=1", "noise-model.channels=[8, 16]",
        "noise-model.norm_groups=4", "noise-model.heads=2", "noise-model.context_dim=16",
        "conditioner.width=16", "conditioner.num_classes=10", "train.steps=2",
        "train.batch_size=8", "train.log_every=1", "train.warmup_steps=0",
        "objective.eval_images=4", "objective.eval_steps=2", "objective.eval_batch_size=8",
        "objective.throughput_batch=0", "objective.eval_per_class=4",
        "objective.eval_guidance=[1.0, 3.0]", "objective.grid_prompts=2", "progress=false"]


@pytest.fixture(scope="module")
def idx_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("classcond")
    data = idx_dir(root / "idx")
    sets = [f"out_dir={json.dumps(str(root))}", "name=\"run\"",
            f"dataset.path={json.dumps(str(data))}", *TINY]
    return gaf.run("ldm", dataset="idx", conditioner="class", autoencoder="none", sets=sets)


def test_a_tiny_ldm_run_on_idx_files_is_evaluated_class_by_class(idx_run):
    run_dir, summary = idx_run
    assert summary["status"] == "completed"
    assert summary["class_classes"] == 3 and summary["class_per_class"] == 4
    assert summary["class_n"] == 12
    for name in ["class"] + [f"class{k}" for k in range(3)]:
        for key in ("accuracy", "accuracy_real"):
            assert 0.0 <= summary[f"{name}_{key}"] <= 1.0
        assert summary[f"{name}_fd"] >= 0.0 and summary[f"{name}_fd_floor"] >= 0.0
    for g in ("g1", "g3"):
        assert 0.0 <= summary[f"{g}_class_accuracy"] <= 1.0 and f"{g}_class_fd" in summary
    assert summary["g3_class_accuracy"] == summary["class_accuracy"]  # fd_guidance = 3
    # the shared evaluation ran too (its FD, on the same feature net) without attributes
    assert "fd" in summary and "eval_colour" not in summary and "eval_shape" not in summary
    assert (run_dir / "samples" / "classes.png").is_file()
    assert (run_dir / "features" / "feature_net.json").is_file()


def test_gaf_eval_reads_eval_per_class(idx_run):
    from gaf.launch import evaluate_run

    run_dir, summary = idx_run
    again = evaluate_run(run_dir, ("objective.eval_per_class=2", "objective.fd=false",
                                   "objective.grid_prompts=0"))
    assert again["class_per_class"] == 2 and again["class_n"] == 6
    none = evaluate_run(run_dir, ("objective.eval_per_class=0", "objective.fd=false",
                                  "objective.grid_prompts=0"))
    assert not any(k.startswith("class") for k in none)


def test_a_negative_eval_per_class_is_refused(tmp_path):
    with pytest.raises((BadConfig, OptionError), match="eval_per_class"):
        gaf.run("ldm", sets=[f"out_dir={json.dumps(str(tmp_path))}",
                             "objective.eval_per_class=-1"])


def test_the_example_run_file_resolves_to_a_class_conditional_fashion_run():
    from pathlib import Path

    from gaf.config import read_toml
    from gaf.spec import resolve

    path = Path(__file__).resolve().parents[2] / "examples" / "fashion_classes.toml"
    spec = resolve(read_toml(path), where=str(path))
    comps = spec.components
    assert spec.objective == "ldm" and comps["dataset"].name == "idx"
    assert comps["conditioner"].name == "class"
    assert comps["conditioner"].options["num_classes"] == 10
    assert comps["dataset"].options["resolution"] == 32  # f = 4 needs a side divisible by 8
    assert comps["autoencoder"].options["in_channels"] == 1  # grey
    cfg = spec.objective_config
    assert cfg.fd_guidance in cfg.eval_guidance and cfg.eval_per_class == 100
