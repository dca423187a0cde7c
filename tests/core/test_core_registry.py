"""Registry: lazy catalogue, duplicates, close matches, entry-point discovery (broken ones too)."""

from __future__ import annotations

import sys
import textwrap
import warnings
from importlib import metadata
from pathlib import Path

import attrs
import pytest

import gaf
from gaf import registry as reg
from gaf.config import option
from gaf.errors import BadConfig, DuplicateComponent, PluginError, UnknownComponent


def write_catalogue(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "registry.toml"
    path.write_text(textwrap.dedent(text))
    return path


@attrs.define
class WidgetConfig:
    size: int = option(3, "how big")
    scale: float = option(1.0, "how much")


class Widget:
    """A widget for tests."""

    Config = WidgetConfig

    def __init__(self, config: WidgetConfig):
        self.config = config


def test_catalogue_is_lazy(tmp_path, monkeypatch):
    module = tmp_path / "lazy_widget_mod.py"
    module.write_text("IMPORTED = True\nclass Thing:\n    def __init__(self, **kw):\n        self.kw = kw\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    cat = write_catalogue(tmp_path, """
        [policy.thing]
        target = "lazy_widget_mod:Thing"
        summary = "a thing"
        defaults = { a = 1 }
    """)
    r = reg.Registry(catalogue=cat, autoload=False)
    assert r.names("policy") == ["thing"]
    assert "lazy_widget_mod" not in sys.modules  # listing imports nothing
    obj = r.create("policy", "thing", b=2)
    assert "lazy_widget_mod" in sys.modules
    assert obj.kw == {"a": 1, "b": 2}
    assert obj.gaf_name == "thing" and obj.gaf_kind == "policy"


def test_builtin_catalogue_lists_without_importing_plugins():
    r = reg.Registry(autoload=False)
    assert "gpt2-tiny" in r.names("policy")
    assert r.names("sampler", "top*") == ["top-k", "top-p"]
    assert not any(e.loaded for k in r.kinds() for e in r.entries(k))


def test_config_class_targets_get_defaults_and_overrides(tmp_path):
    r = reg.Registry(catalogue=None, autoload=False)
    r.add("policy", "widget-big", Widget, defaults={"size": 10})
    w = r.create("policy", "widget-big", scale=2)
    assert w.config == WidgetConfig(size=10, scale=2.0)
    assert isinstance(w.config.scale, float)
    with pytest.raises(BadConfig, match="valid keys: size, scale"):
        r.create("policy", "widget-big", sise=1)
    with pytest.raises(BadConfig, match="did you mean 'size'"):
        r.create("policy", "widget-big", sise=1)
    with pytest.raises(BadConfig, match="expected an integer"):
        r.create("policy", "widget-big", size="big")


def test_duplicates_raise_unless_replaced():
    r = reg.Registry(catalogue=None, autoload=False)
    r.add("sampler", "mine", Widget)
    with pytest.raises(DuplicateComponent, match="already registered"):
        r.add("sampler", "mine", Widget)
    r.add("sampler", "mine", dict, replace=True)
    assert r.get("sampler", "mine") is dict


def test_register_decorator_and_aliases():
    r = reg.Registry(catalogue=None, autoload=False)

    @r.register("sampler", "my-sampler", size=5)
    class MySampler(Widget):
        """Samples mine."""

    assert r.create("sampler", "my-sampler").config.size == 5
    assert r.entry("sampler", "my-sampler").summary == "Samples mine."
    r.add("policy", "long-name", Widget, aliases=("ln",))
    assert r.entry("policy", "ln").name == "long-name"
    with pytest.raises(DuplicateComponent):
        r.add("policy", "other", Widget, aliases=("ln",))


def test_unknown_names_suggest_close_matches():
    r = reg.Registry(autoload=False)
    with pytest.raises(UnknownComponent) as info:
        r.entry("policy", "gpt2-tyni")
    assert str(info.value) == "unknown policy 'gpt2-tyni'; did you mean 'gpt2-tiny' or 'gpt2'?"
    with pytest.raises(UnknownComponent, match="unknown kind 'polcy'; did you mean 'policy'"):
        r.names("polcy")
    with pytest.raises(UnknownComponent, match="known: greedy"):
        r.entry("sampler", "zzzzzz")


def test_wildcards():
    r = reg.Registry(catalogue=None, autoload=False)
    for n in ("vit-small", "vit-base", "resnet"):
        r.add("policy", n, Widget)
    assert r.names("policy", "vit-*") == ["vit-base", "vit-small"]
    assert r.names("policy", "*net") == ["resnet"]
    assert r.names("policy", "nothing*") == []


def test_broken_target_is_a_plugin_error_naming_the_distribution():
    r = reg.Registry(catalogue=None, autoload=False)
    r.add("sampler", "broken", "no_such_module_xyz:Thing", source="gaf-broken-dist")
    with pytest.raises(PluginError, match="gaf-broken-dist.*no_such_module_xyz"):
        r.create("sampler", "broken")


# ----------------------------------------------------------------- entry points


class FakeDist:
    def __init__(self, name: str, eps: list[metadata.EntryPoint], summary: str = ""):
        self.metadata = {"Name": name, "Summary": summary}
        self.entry_points = eps


def fake_distributions(monkeypatch, dists):
    monkeypatch.setattr(reg.metadata, "distributions", lambda: iter(dists))


def test_entry_point_plugins_are_discovered_even_when_one_is_broken(tmp_path, monkeypatch):
    good = tmp_path / "good_gaf_plugin.py"
    good.write_text(textwrap.dedent("""
        import gaf

        class Loud:
            def __init__(self, **kw):
                self.kw = kw

        @gaf.hookimpl
        def gaf_register_components(registry):
            registry.add("sampler", "loud", Loud, summary="a loud sampler", source="good-dist")
    """))
    (tmp_path / "bad_gaf_plugin.py").write_text("raise ImportError('kaboom')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    dists = [
        FakeDist("good-dist", [metadata.EntryPoint("good", "good_gaf_plugin", "gaf")]),
        FakeDist("bad-dist", [metadata.EntryPoint("bad", "bad_gaf_plugin", "gaf")]),
        FakeDist("decl-dist", [metadata.EntryPoint("quiet", "somewhere_else:Quiet", "gaf.sampler")],
                 summary="Declarative sampler package"),
    ]
    fake_distributions(monkeypatch, dists)
    r = reg.Registry(catalogue=None, autoload=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        names = r.names("sampler")
    assert names == ["loud", "quiet"]
    messages = [str(w.message) for w in caught if issubclass(w.category, reg.PluginWarning)]
    assert len(messages) == 1 and "bad-dist" in messages[0] and "kaboom" in messages[0]
    assert r.entry("sampler", "quiet").source == "decl-dist"
    assert r.entry("sampler", "quiet").summary == "Declarative sampler package"
    assert r.create("sampler", "loud", x=1).kw == {"x": 1}
    gaf.hooks.plugin_manager().unregister(name="good")


def test_strict_plugins_raise(tmp_path, monkeypatch):
    (tmp_path / "bad_gaf_plugin2.py").write_text("raise ImportError('kaboom2')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    fake_distributions(monkeypatch, [FakeDist("bad-dist", [
        metadata.EntryPoint("bad2", "bad_gaf_plugin2", "gaf")])])
    monkeypatch.setenv("GAF_STRICT_PLUGINS", "1")
    with pytest.raises(PluginError, match="bad-dist"):
        reg.Registry(catalogue=None, autoload=True).names("sampler")


def test_autoload_switch(monkeypatch):
    fake_distributions(monkeypatch, [FakeDist("d", [
        metadata.EntryPoint("x", "m:X", "gaf.sampler")])])
    monkeypatch.setenv("GAF_DISABLE_PLUGIN_AUTOLOAD", "1")
    assert "x" not in reg.Registry(catalogue=None).names("sampler")
    monkeypatch.setenv("GAF_DISABLE_PLUGIN_AUTOLOAD", "0")
    assert "x" in reg.Registry(catalogue=None).names("sampler")


def test_new_kinds_from_plugins():
    r = reg.Registry(catalogue=None, autoload=False)
    r.add("vocoder", "tiny", Widget)
    assert "vocoder" in r.kinds() and r.names("vocoder") == ["tiny"]
