"""Configs: TOML round-trips, value parsing, validation; run specs and their precedence."""

from __future__ import annotations

import json
import math
import textwrap
from typing import Literal

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from gaf import config as C
from gaf.errors import BadConfig
from gaf.registry import Registry
from gaf.spec import resolve
from gaf.train import TrainConfig

from toy_objective import Toy  # noqa: E402

keys = st.text(alphabet="abcdefghijklmnopqrstuvwxyz_-0123456789", min_size=1, max_size=12)
scalars = st.one_of(st.booleans(), st.integers(-2**62, 2**62),
                    st.floats(allow_nan=False), st.text(max_size=30))
values = st.one_of(scalars, st.lists(st.integers(-1000, 1000), max_size=5),
                   st.lists(st.text(max_size=8), max_size=4))
tables = st.dictionaries(keys, values, max_size=6)
documents = st.dictionaries(keys, st.one_of(values, tables), max_size=6)


@given(documents)
def test_toml_round_trip(doc):
    assert C.loads_toml(C.dumps_toml(doc)) == doc


@given(scalars.filter(lambda v: not isinstance(v, str)))
def test_parse_value_reads_toml_literals(value):
    text = C.dumps_toml({"v": value}).split("=", 1)[1].strip()
    parsed = C.parse_value(text)
    if isinstance(value, float) and math.isinf(value):
        assert parsed == value
    else:
        assert parsed == value and type(parsed) is type(value)


def test_parse_value_falls_back_to_strings():
    assert C.parse_value("gpt2-tiny") == "gpt2-tiny"
    assert C.parse_value("runs/a b") == "runs/a b"
    assert C.parse_value('"3"') == "3"
    assert C.parse_value("[1, 2]") == [1, 2]
    assert C.parse_assignment("train.lr = 1e-4") == ("train.lr", 1e-4)
    with pytest.raises(BadConfig, match="KEY=VALUE"):
        C.parse_assignment("lr")


@attrs.define
class Sub:
    depth: int = C.option(2, "levels")


@attrs.define
class Example:
    rate: float = C.option(0.1, "a rate")
    size: int = C.option(4, "a size")
    mode: Literal["a", "b"] = C.option("a", "a mode")
    pair: tuple[float, float] = C.option((0.9, 0.99), "two numbers")
    name: str | None = C.option(None, "optional")
    sub: Sub = C.option(factory=Sub, help="nested")


@given(rate=st.floats(-1e6, 1e6), size=st.integers(0, 10**6), mode=st.sampled_from("ab"),
       pair=st.tuples(st.floats(0, 1), st.floats(0, 1)), depth=st.integers(0, 9))
def test_config_round_trips_through_toml(rate, size, mode, pair, depth):
    cfg = Example(rate=rate, size=size, mode=mode, pair=pair, sub=Sub(depth))
    back = C.from_dict(Example, C.loads_toml(C.dumps_toml(C.to_dict(cfg))))
    assert back == cfg


def test_from_dict_validates():
    assert C.from_dict(Example, {"rate": 1, "pair": [1, 0]}).rate == 1.0
    assert C.from_dict(Example, {"pair": [1, 0]}).pair == (1.0, 0.0)
    with pytest.raises(BadConfig, match="unknown key 'rat'; did you mean 'rate'.*valid keys: rate, size"):
        C.from_dict(Example, {"rat": 1})
    with pytest.raises(BadConfig, match="^mode must be one of: a, b, got 'c'$"):
        C.from_dict(Example, {"mode": "c"})
    with pytest.raises(BadConfig, match="size: expected an integer"):
        C.from_dict(Example, {"size": 1.5})
    with pytest.raises(BadConfig, match="rate: expected a number"):
        C.from_dict(Example, {"rate": "fast"})
    with pytest.raises(BadConfig, match="depth"):
        C.from_dict(Example, {"sub": {"depth": "deep"}})


def test_describe_lists_fields_with_help():
    info = {f.name: f for f in C.describe(Example)}
    assert info["rate"].default == 0.1 and info["rate"].help == "a rate"
    assert info["mode"].type == "'a' | 'b'"
    assert info["sub"].default == Sub()


def test_read_toml_names_file_and_line(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text("seed = 1\n[train\n")
    with pytest.raises(BadConfig, match=r"run\.toml.*line 2"):
        C.read_toml(path)


def test_train_config_rejects_nonsense():
    with pytest.raises(BadConfig, match=r"^steps must be in \[1, 1000000000\], got 0$"):
        TrainConfig(steps=0)
    with pytest.raises(BadConfig, match="^lr must be > 0, got -1$"):
        TrainConfig(lr=-1.0)
    with pytest.raises(BadConfig, match="^train: lr must be > 0, got nan$"):
        C.from_dict(TrainConfig, {"lr": math.nan}, where="train")
    with pytest.raises(BadConfig, match="^parallel must be one of: ddp, fsdp, got 'mpi'$"):
        TrainConfig(parallel="mpi")  # a Literal is checked on direct construction too


# ------------------------------------------------------------- declared checks


@attrs.define
class Bounded:
    low: int = C.option(0, "ge", ge=0)
    pos: float = C.option(1.0, "gt", gt=0)
    frac: float = C.option(0.5, "ge/lt", ge=0, lt=1)
    top: float = C.option(1.0, "le", le=1)
    under: int = C.option(0, "lt", lt=10)
    pick: str = C.option("a", "choices", choices=("a", "b"))
    widths: tuple[int, ...] = C.option((1, 2), "entries", ge=1)
    limit: float = C.option(math.inf, "may be infinite", finite=False, gt=0)
    free: float = C.option(0.0, "no bounds")
    maybe: float | None = C.option(None, "optional")


@pytest.mark.parametrize("changes, message", [
    ({"low": -1}, "low must be >= 0, got -1"),
    ({"pos": 0}, "pos must be > 0, got 0"),
    ({"pos": -1e-9}, "pos must be > 0, got -1e-09"),
    ({"frac": 1}, "frac must be in [0, 1), got 1"),
    ({"frac": -0.1}, "frac must be in [0, 1), got -0.1"),
    ({"top": 1.5}, "top must be <= 1, got 1.5"),
    ({"under": 10}, "under must be < 10, got 10"),
    ({"pick": "c"}, "pick must be one of: a, b, got 'c'"),
    ({"widths": [1, 0]}, "widths must be >= 1 (each entry), got [1, 0]"),
    ({"limit": 0}, "limit must be > 0, got 0"),
    ({"free": math.inf}, "free must be finite, got inf"),
    ({"free": -math.inf}, "free must be finite, got -inf"),
    ({"free": math.nan}, "free must be finite, got nan"),
    ({"pos": math.nan}, "pos must be > 0, got nan"),
    ({"maybe": math.nan}, "maybe must be finite, got nan"),
])
def test_declared_checks_reject_with_one_message_form(changes, message):
    with pytest.raises(BadConfig) as exc:
        C.from_dict(Bounded, changes, where="thing x")
    assert str(exc.value) == f"thing x: {message}"
    with pytest.raises(BadConfig) as exc:  # direct construction: the same rule, no prefix
        Bounded(**{k: tuple(v) if isinstance(v, list) else v for k, v in changes.items()})
    assert str(exc.value).partition(", got")[0] == message.partition(", got")[0]
    with pytest.raises(BadConfig, match="^thing x: "):  # evolve as well
        C.evolve(Bounded(), changes, where="thing x")


def test_declared_checks_accept_the_edges():
    cfg = C.from_dict(Bounded, {"low": 0, "frac": 0, "top": 1, "under": 9, "pick": "b",
                                "limit": math.inf, "free": -1e300, "maybe": 2})
    assert cfg.limit == math.inf and cfg.maybe == 2.0


def test_describe_shows_the_declared_rules():
    rules = {f.name: f.bounds for f in C.describe(Bounded)}
    assert rules == {"low": ">= 0", "pos": "> 0", "frac": "in [0, 1)", "top": "<= 1",
                     "under": "< 10", "pick": "one of: a, b", "widths": ">= 1",
                     "limit": "> 0", "free": "", "maybe": ""}


def _finite_float_options():
    """(kind, name, option) for every float option declared finite, on every registered
    component with a config and on the [train] section."""
    from gaf.registry import REGISTRY

    out = [("train", None, f.name) for f in attrs.fields(TrainConfig)
           if C._hints(TrainConfig)[f.name] is float]
    for kind in REGISTRY.kinds():
        for name in REGISTRY.names(kind):
            cls = REGISTRY.config_class(kind, name)
            if cls is None:
                continue
            hints = C._hints(cls)
            for f in attrs.fields(cls):
                checks = f.metadata.get(C._CHECKS)
                if hints.get(f.name) in (float, float | None) and checks and checks.finite:
                    out.append((kind, name, f.name))
    return out


FINITE_OPTIONS = _finite_float_options()


def test_the_property_covers_many_options():
    assert len(FINITE_OPTIONS) > 50 and ("train", None, "lr") in FINITE_OPTIONS


@given(target=st.sampled_from(FINITE_OPTIONS),
       value=st.sampled_from([math.nan, math.inf, -math.inf]))
def test_every_finite_float_option_rejects_non_finite_values(target, value):
    from gaf.registry import REGISTRY

    kind, name, field = target
    with pytest.raises(BadConfig) as exc:
        if name is None:
            C.from_dict(TrainConfig, {field: value}, where="train")
        else:
            REGISTRY.default_config(kind, name, **{field: value})
    prefix = "train" if name is None else f"{kind} {name}"
    assert str(exc.value).startswith(f"{prefix}: {field} must be "), str(exc.value)


# ------------------------------------------------------------------------ specs


@pytest.fixture()
def registry():
    r = Registry(catalogue=None, autoload=False)

    class Uses(Toy):
        uses = {"policy": "base"}

    @attrs.define
    class PolicyConfig:
        width: int = C.option(8, "width")
        dropout: float = C.option(0.0, "dropout")

    class Policy:
        Config = PolicyConfig

        def __init__(self, config):
            self.config = config

    r.add("objective", "toy", Toy)
    r.add("objective", "uses", Uses)
    r.add("policy", "base", Policy)
    r.add("policy", "wide", Policy, defaults={"width": 64})
    return r


def test_precedence_defaults_file_cli_set(registry, tmp_path):
    file = C.loads_toml(textwrap.dedent("""
        seed = 7
        [objective]
        name = "uses"
        [policy]
        name = "base"
        width = 16
        [train]
        lr = 0.5
        steps = 11
    """))
    spec = resolve(file, registry=registry)
    assert spec.seed == 7 and spec.train.lr == 0.5 and spec.train.steps == 11
    assert spec.train.batch_size == Toy.train_defaults["batch_size"]  # objective default
    assert spec.components["policy"].options == {"width": 16, "dropout": 0.0}
    spec = resolve(file, registry=registry, sets=["train.lr=0.25", "policy.dropout=0.1", "seed=1"])
    assert (spec.train.lr, spec.components["policy"].options["dropout"], spec.seed) == (0.25, 0.1, 1)
    # A CLI component replaces the file's section (its options belonged to another one).
    spec = resolve(file, registry=registry, components={"policy": "wide"})
    assert spec.components["policy"].options == {"width": 64, "dropout": 0.0}


def test_component_defaults_of_an_objective_sit_below_the_file_and_set(registry):
    class Wants(Toy):
        uses = {"policy": "base"}
        component_defaults = {"policy": {"width": 32}}

    registry.add("objective", "wants", Wants)
    assert resolve(objective="wants", registry=registry).components["policy"].options == {
        "width": 32, "dropout": 0.0}
    file = C.loads_toml('[objective]\nname = "wants"\n[policy]\nname = "base"\nwidth = 16\n')
    assert resolve(file, registry=registry).components["policy"].options["width"] == 16
    spec = resolve(objective="wants", registry=registry, sets=["policy.width=4"])
    assert spec.components["policy"].options["width"] == 4
    # another component's options are its own: the override belongs to "base"
    spec = resolve(objective="wants", registry=registry, components={"policy": "wide"})
    assert spec.components["policy"].options == {"width": 64, "dropout": 0.0}


def test_bare_set_keys_resolve_when_unambiguous(registry):
    spec = resolve(objective="toy", registry=registry, sets=["lr=0.3", "n=12", "device=cpu"])
    assert spec.train.lr == 0.3 and spec.objective_config.n == 12 and spec.device == "cpu"


def test_invalid_set_keys_list_valid_ones(registry):
    with pytest.raises(BadConfig, match=r"--set lrr: unknown key; did you mean .lr.. \(valid keys:.*train\.lr"):
        resolve(objective="toy", registry=registry, sets=["lrr=1"])
    with pytest.raises(BadConfig, match=r"train: unknown key 'lrr'.*valid keys: steps"):
        resolve(objective="toy", registry=registry, sets=["train.lrr=1"])
    with pytest.raises(BadConfig, match=r"unknown section 'trian'; did you mean 'train'"):
        resolve(objective="toy", registry=registry, sets=["trian.lr=1"])
    with pytest.raises(BadConfig, match=r"policy base: unknown key 'widht'.*valid keys: width, dropout"):
        resolve(objective="uses", registry=registry, sets=["policy.widht=3"])


def test_spec_errors(registry):
    with pytest.raises(BadConfig, match="no objective given"):
        resolve(registry=registry)
    with pytest.raises(BadConfig, match="does not use a policy"):
        resolve(objective="toy", components={"policy": "base"}, registry=registry)
    with pytest.raises(BadConfig, match="device"):
        resolve(objective="toy", registry=registry, sets=["device=tpu"])
    with pytest.raises(BadConfig, match="unknown key 'sead'; did you mean 'seed'"):
        resolve({"sead": 1, "objective": {"name": "toy"}}, registry=registry)


def test_resolved_spec_round_trips(registry):
    spec = resolve(objective="uses", components={"policy": "wide"}, registry=registry,
                   sets=["train.betas=[0.8, 0.9]", "policy.dropout=0.2"])
    text = C.dumps_toml(spec.to_dict())
    again = resolve(C.loads_toml(text), registry=registry)
    assert again.to_dict() == spec.to_dict()
    assert json.loads(json.dumps(spec.to_dict()))["train"]["betas"] == [0.8, 0.9]
