"""class conditioner: shapes, accepted label types, bad labels, the null embedding,
gradients, determinism, configs and saving."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import gaf
from gaf.components import load_from, save_component
from gaf.config import OptionError
from gaf.errors import BadConfig, BadData
from gaf.interfaces import Conditioner
from gaf.plugins.conditioners import ClassEmbedding, ClassEmbeddingConfig
from gaf.plugins.images.shapes import ShapesConfig, ShapesDataset
from gaf.registry import Registry


def embedding(seed: int = 0, **kwargs) -> ClassEmbedding:
    torch.manual_seed(seed)
    return ClassEmbedding(ClassEmbeddingConfig(**kwargs))


def test_defaults_and_contract():
    c = embedding()
    assert isinstance(c, Conditioner)
    assert (c.condition_key, c.tokens, c.width, c.trainable) == ("label", 1, 64, True)
    assert c.config.num_classes == 30
    assert sum(p.numel() for p in c.parameters()) == 30 * 64 + 64


def test_default_fits_the_shapes_labels():
    ds = ShapesDataset(ShapesConfig(size=200))
    assert ds.num_classes == embedding().config.num_classes
    assert embedding()(ds.labels()).shape == (200, 1, 64)


@settings(max_examples=20, deadline=None)
@given(num_classes=st.integers(1, 40), width=st.integers(1, 16), tokens=st.integers(1, 4),
       data=st.data())
def test_shapes_and_rows(num_classes, width, tokens, data):
    c = embedding(num_classes=num_classes, width=width, tokens=tokens)
    labels = data.draw(st.lists(st.integers(0, num_classes - 1), max_size=6))
    out = c(labels)
    assert out.shape == (len(labels), tokens, width) and out.dtype == torch.float32
    for row, label in zip(out, labels):
        assert torch.equal(row.flatten(), c.embedding.weight[label])
    assert c.null(len(labels)).shape == (len(labels), tokens, width)


@pytest.mark.parametrize("labels", [
    [3, 0, 29],
    (3, 0, 29),
    [np.int64(3), np.int32(0), np.uint8(29)],
    np.array([3, 0, 29]),
    torch.tensor([3, 0, 29]),
    torch.tensor([3, 0, 29], dtype=torch.int32),
    ["3", " 0", "29 "],
    [torch.tensor(3), "0", 29],
])
def test_accepted_label_types(labels):
    c = embedding()
    want = c.embedding.weight[[3, 0, 29]].view(3, 1, 64)
    assert torch.equal(c(labels), want)


@pytest.mark.parametrize("labels,message", [
    ([30], r"label 30 is outside \[0, 30\)"),
    ([0, -1], r"label -1 is outside \[0, 30\)"),
    (["31"], r"label 31 is outside \[0, 30\)"),
    (torch.tensor([5, 99]), r"label 99 is outside \[0, 30\)"),
    (["abc"], r"label 'abc' is not an integer"),
    (["3.0"], r"label '3.0' is not an integer"),
    ([""], r"label '' is not an integer"),
    ([1.0], r"label 1.0 is not an integer"),
    ([None], r"label None is not an integer"),
    ([True], r"label True is a boolean"),
    (torch.tensor([1.0, 2.0]), r"1-D integer tensor"),
    (torch.tensor([[1, 2]]), r"1-D integer tensor"),
    (torch.tensor(3), r"1-D integer tensor"),
    ("3", r"expected a sequence of labels, got str"),
    (3, r"expected a sequence of labels, got int"),
])
def test_bad_labels_are_bad_data(labels, message):
    with pytest.raises(BadData, match=message):
        embedding()(labels)


def test_null_is_a_learned_extra_embedding():
    c = embedding()
    null = c.null(4)
    assert null.shape == (4, 1, 64)
    assert all(torch.equal(null[i], null[0]) for i in range(4))
    classes = c(list(range(30)))
    assert ((classes - null[:1]).abs().amax(dim=(1, 2)) > 0.1).all()
    with torch.no_grad():
        c.embedding.weight.normal_()
    assert torch.equal(c.null(1), null[:1])
    (c.null(2) * torch.randn(2, 1, 64)).sum().backward()
    assert c.null_embedding.grad is not None and c.null_embedding.grad.abs().amin() > 0
    assert c.embedding.weight.grad is None
    assert c.null(0).shape == (0, 1, 64)
    with pytest.raises(BadData, match="batch size"):
        c.null(-2)


def test_gradients_reach_only_the_rows_used():
    c = embedding(tokens=2)
    out = c([4, 7, 4])
    (out * torch.randn_like(out)).sum().backward()
    rows = (c.embedding.weight.grad.abs().sum(dim=1) > 0).nonzero().flatten().tolist()
    assert rows == [4, 7] and c.null_embedding.grad is None


def test_deterministic():
    a, b = embedding(seed=3), embedding(seed=3)
    assert torch.equal(a([1, 2, 3]), a([1, 2, 3]))
    assert torch.equal(a([1, 2, 3]), b([1, 2, 3])) and torch.equal(a.null(1), b.null(1))
    assert not torch.equal(a([1]), embedding(seed=4)([1]))
    assert torch.equal(a([5, 6])[1], a([6])[0])  # a row does not depend on the batch


def test_tokens_reshape_each_class_row():
    c = embedding(tokens=3, width=4)
    out = c([2])
    assert torch.equal(out[0], c.embedding.weight[2].view(3, 4))


@pytest.mark.parametrize("field,value", [("num_classes", 0), ("width", 0), ("tokens", -1)])
def test_bad_config_names_the_field(field, value):
    with pytest.raises(OptionError, match=f"^{field} must be >= 1, got {value}$"):
        ClassEmbeddingConfig(**{field: value})
    with pytest.raises(OptionError, match=f"^conditioner class: {field} must be >= 1, got {value}$"):
        gaf.create("conditioner", "class", **{field: value})


@pytest.mark.parametrize("field,value", [("tokens", 1.5), ("width", True)])
def test_non_integers_are_refused_where_data_becomes_a_config(field, value):
    with pytest.raises(BadConfig, match=f"conditioner class: {field}: expected an integer"):
        gaf.create("conditioner", "class", **{field: value})


def test_labels_follow_the_parameters_device():
    c = embedding().to("meta")
    out = c([1, 2])
    assert out.device.type == "meta" and out.shape == (2, 1, 64)


def test_state_dict_round_trip():
    a, b = embedding(seed=0), embedding(seed=1)
    assert not torch.equal(a([1]), b([1]))
    b.load_state_dict(a.state_dict())
    assert torch.equal(a(list(range(30))), b(list(range(30))))
    assert torch.equal(a.null(2), b.null(2))


def test_save_and_load_through_a_registry(tmp_path):
    registry = Registry(catalogue=None, autoload=False)
    registry.register("conditioner", "class")(ClassEmbedding)
    a = registry.create("conditioner", "class", num_classes=10, tokens=2)
    save_component(a, tmp_path / "c")
    b = load_from(registry, "conditioner", tmp_path / "c")
    assert b.config == a.config
    assert torch.equal(a(list(range(10))), b(list(range(10))))
    assert torch.equal(a.null(1), b.null(1))
