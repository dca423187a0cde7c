"""The registry: kinds × names → components, discovered lazily.

Discovery runs once, on first use (never at import time), in this order:

1. ``registry.toml`` — the built-in catalogue. Each ``[kind.name]`` table has a
   ``target = "module:attr"`` string, a ``summary`` and optionally ``defaults``
   (keyword overrides of the target's config, timm-style named configs),
   ``aliases`` and any other keys (kept in :attr:`Entry.meta`).
2. Entry points in groups ``gaf.<kind>``: one-line declarations
   ``name = "module:attr"``; nothing is imported until the component is used.
3. Entry points in group ``gaf``: modules implementing hooks; each is imported and
   its :func:`~gaf.hookspecs.gaf_register_components` is called. A module that fails
   to import is reported as a warning naming its distribution (set
   ``GAF_STRICT_PLUGINS=1`` to raise instead).
4. ``@gaf.register(kind, name)`` in scripts, at any time.

``GAF_DISABLE_PLUGIN_AUTOLOAD=1`` skips steps 2 and 3 (the test suite sets it so that
a user's installed plugins cannot leak in).

A target that is a class with a ``Config`` attribute (an attrs class) is built as
``target(Config(**defaults, **overrides))``; any other callable as
``target(**defaults, **overrides)``.

The registry knows nothing of files: saving a component and loading it back through a
registry (``gaf.save``, ``gaf.load``, ``--policy RUN_DIR``) is :mod:`gaf.components`,
which imports this module, never the other way round.
"""

from __future__ import annotations

import contextlib
import fnmatch
import importlib
import os
import warnings
from collections.abc import Callable, Iterable, Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

import attrs

from . import config as _config
from .errors import BadConfig, DuplicateComponent, PluginError, UnknownComponent

KINDS: dict[str, str] = {
    "objective": "training recipes driven by gaf.train (sft, dpo, ppo, ldm, …)",
    "policy": "language models that score and generate completions (Policy)",
    "reward": "reward functions: learned reward models and ground-truth scorers (RewardFn)",
    "sampler": "decoding strategies for language models (Sampler)",
    "task": "language tasks: prompts, SFT examples, true rewards (Task)",
    "dataset": "image datasets (Dataset)",
    "metric": "metrics (Metric)",
    "autoencoder": "image first stages: KL-VAE, VQGAN (Autoencoder)",
    "token-model": "autoregressive text-to-image transformers over image codes (TokenModel)",
    "noise-model": "diffusion noise models (NoiseModel)",
    "prior": "diffusion priors from a caption to a CLIP image embedding (Prior)",
    "scheduler": "diffusion schedulers and samplers (Scheduler)",
    "conditioner": "text and label encoders for conditioning (Conditioner)",
    "encoder": "joint image-text encoders trained on their own: CLIP (ImageTextEncoder)",
    "generator": "GAN generators: noise and a text embedding to an image (GANGenerator)",
    "discriminator": ("GAN discriminators: an image and a text embedding to a logit "
                      "(GANDiscriminator)"),
    "pipeline": "text-to-image samplers of a trained run (Pipeline)",
    "loader": "readers of foreign checkpoint formats, tried by gaf.load (Loader)",
    "style-features": ("fixed feature networks for style transfer: an image to named feature "
                       "maps (StyleFeatures)"),
    "stylizer": ("neural style transfer methods: a content and a style image to a stylised "
                 "one (Stylizer)"),
}
"""The kinds gaf knows, with what each holds. Plugins may add new kinds."""

BUILTIN_SOURCE = "gaf"
CATALOGUE = Path(__file__).with_name("registry.toml")


@attrs.define
class Entry:
    """One registered component: where it lives and how to describe it."""

    kind: str
    name: str
    target: Any  # "module:attr" string or the object itself
    summary: str = ""
    source: str = BUILTIN_SOURCE  # distribution that provided it, or "script"
    defaults: dict[str, Any] = attrs.field(factory=dict)
    aliases: tuple[str, ...] = ()
    meta: dict[str, Any] = attrs.field(factory=dict)

    def load(self) -> Any:
        """Import and return the target object (cached)."""
        if not isinstance(self.target, str):
            return self.target
        module_name, _, attr = self.target.partition(":")
        try:
            obj: Any = importlib.import_module(module_name)
            for part in attr.split(".") if attr else ():
                obj = getattr(obj, part)
        except Exception as exc:  # a broken plugin must not look like a gaf bug
            where = "" if self.source == BUILTIN_SOURCE else f" from distribution {self.source!r}"
            raise PluginError(f"{self.kind} {self.name!r}{where}: cannot import "
                              f"{self.target!r}: {type(exc).__name__}: {exc}") from exc
        self.target = obj
        return obj

    @property
    def loaded(self) -> bool:
        return not isinstance(self.target, str)


class Registry:
    """Kinds × names of components. Use the module-level :data:`REGISTRY` normally."""

    def __init__(self, *, catalogue: Path | None = CATALOGUE, autoload: bool | None = None):
        self._entries: dict[str, dict[str, Entry]] = {}
        self._aliases: dict[str, dict[str, str]] = {}
        self._catalogue = catalogue
        self._autoload = autoload
        self._discovered = False
        self._discovering = False
        self._source: str | None = None  # distribution whose hook is registering now

    # ------------------------------------------------------------------ discovery

    def discover(self) -> None:
        """Read the catalogue, entry points and hook plugins (once)."""
        if self._discovered or self._discovering:
            return
        self._discovering = True
        try:
            if self._catalogue is not None:
                self._read_catalogue(self._catalogue)
            if self._autoload_enabled():
                self._read_entry_points()
            self._discovered = True
        except BaseException:  # start clean next time rather than half-discovered
            self._entries.clear()
            self._aliases.clear()
            raise
        finally:
            self._discovering = False

    def _autoload_enabled(self) -> bool:
        if self._autoload is not None:
            return self._autoload
        return os.environ.get("GAF_DISABLE_PLUGIN_AUTOLOAD", "") in ("", "0")

    def _read_catalogue(self, path: Path) -> None:
        data = _config.read_toml(path)
        for kind, table in data.items():
            if not isinstance(table, Mapping):
                raise BadConfig(f"{path}: [{kind}] must be a table of components")
            for name, spec in table.items():
                spec = dict(spec)
                try:
                    target = spec.pop("target")
                except KeyError:
                    raise BadConfig(f"{path}: [{kind}.{name}] has no 'target'") from None
                self.add(kind, name, target, summary=spec.pop("summary", ""),
                         defaults=spec.pop("defaults", {}), aliases=spec.pop("aliases", ()),
                         source=BUILTIN_SOURCE, meta=spec)

    def _read_entry_points(self) -> None:
        from . import hooks

        declarative, hook_modules = _gaf_entry_points()
        for ep, dist, dist_summary in declarative:
            kind = ep.group[len("gaf."):]
            try:
                self.add(kind, ep.name, ep.value, summary=dist_summary, source=dist)
            except DuplicateComponent as exc:
                self._plugin_problem(f"gaf plugin from distribution {dist!r}: {exc}", exc)
        pm = hooks.plugin_manager()
        dists: dict[str, str] = {}
        for ep, dist, _ in hook_modules:
            dists[ep.name] = dist
            if pm.has_plugin(ep.name):
                continue
            try:
                module = ep.load()
                pm.register(module, name=ep.name)
            except Exception as exc:
                self._plugin_problem(f"gaf plugin {ep.name!r} from distribution {dist!r} "
                                     f"failed to load and is skipped: "
                                     f"{type(exc).__name__}: {exc}", exc)
        # Each plugin's registration runs on its own, so one failure skips only that plugin.
        for impl in pm.hook.gaf_register_components.get_hookimpls():
            dist = dists.get(impl.plugin_name, "script")
            self._source = dist
            try:
                impl.function(registry=self)
            except Exception as exc:
                self._plugin_problem(f"gaf plugin {impl.plugin_name!r} from distribution "
                                     f"{dist!r} failed in gaf_register_components and is "
                                     f"skipped: {type(exc).__name__}: {exc}", exc)
            finally:
                self._source = None

    @staticmethod
    def _plugin_problem(message: str, exc: Exception) -> None:
        if os.environ.get("GAF_STRICT_PLUGINS", "") not in ("", "0"):
            raise PluginError(message) from exc
        warnings.warn(message, PluginWarning, stacklevel=3)

    # --------------------------------------------------------------- registration

    def add(self, kind: str, name: str, target: Any, *, summary: str = "",
            source: str | None = None, defaults: Mapping[str, Any] | None = None,
            aliases: Iterable[str] = (), meta: Mapping[str, Any] | None = None,
            replace: bool = False) -> Entry:
        """Register ``target`` as ``kind``/``name``. Duplicates raise unless ``replace``.

        ``source`` (shown by ``gaf list``) defaults to the distribution whose
        ``gaf_register_components`` is running, else ``"script"``.
        """
        source = source or self._source or "script"
        if not kind or not name:
            raise BadConfig("a component needs a kind and a name")
        table = self._entries.setdefault(kind, {})
        aliases = tuple(aliases)
        if not replace:
            for n in (name, *aliases):
                if n in table or n in self._aliases.get(kind, {}):
                    owner = table.get(n) or table[self._aliases[kind][n]]
                    raise DuplicateComponent(
                        f"{kind} {n!r} is already registered (by {owner.source}); "
                        f"pass replace=True to replace it")
        if not summary and not isinstance(target, str):
            summary = _first_line(getattr(target, "__doc__", None))
        entry = Entry(kind, name, target, summary=summary, source=source,
                      defaults=dict(defaults or {}), aliases=aliases, meta=dict(meta or {}))
        table[name] = entry
        for alias in aliases:
            self._aliases.setdefault(kind, {})[alias] = name
        return entry

    def register(self, kind: str, name: str | None = None, *, replace: bool = False,
                 summary: str = "", **defaults: Any) -> Callable[[Any], Any]:
        """Decorator: ``@registry.register("sampler", "my-sampler")`` on a class or factory.

        ``name`` defaults to the object's ``__name__`` in lower case; keyword
        arguments become the entry's ``defaults``.
        """

        def decorate(obj: Any) -> Any:
            self.discover()
            self.add(kind, name or obj.__name__.lower(), obj, summary=summary,
                     source="script", defaults=defaults, replace=replace)
            return obj

        return decorate

    # -------------------------------------------------------------------- queries

    def kinds(self) -> list[str]:
        """All kinds: the built-in ones, then any that plugins added."""
        self.discover()
        extra = sorted(k for k in self._entries if k not in KINDS)
        return [*KINDS, *extra]

    def names(self, kind: str, pattern: str = "*") -> list[str]:
        """Sorted names of ``kind`` matching the shell-style ``pattern`` (e.g. ``"gpt2*"``)."""
        self.discover()
        self._check_kind(kind)
        _check_text("pattern", pattern)
        return sorted(n for n in self._entries.get(kind, {}) if fnmatch.fnmatchcase(n, pattern))

    def entries(self, kind: str, pattern: str = "*") -> list[Entry]:
        return [self._entries[kind][n] for n in self.names(kind, pattern)]

    def entry(self, kind: str, name: str) -> Entry:
        """The entry for ``kind``/``name`` (aliases resolved), or :class:`UnknownComponent`."""
        self.discover()
        self._check_kind(kind)
        _check_text(f"a {kind} name", name)
        table = self._entries.get(kind, {})
        name = self._aliases.get(kind, {}).get(name, name)
        if name not in table:
            raise UnknownComponent(kind, name, {*table, *self._aliases.get(kind, {})})
        return table[name]

    def get(self, kind: str, name: str) -> Any:
        """The loaded target object (class or factory) of ``kind``/``name``."""
        return self.entry(kind, name).load()

    def config_class(self, kind: str, name: str) -> type | None:
        """The attrs config class of a component, or ``None`` for plain factories."""
        cls = getattr(self.get(kind, name), "Config", None)
        return cls if cls is not None and attrs.has(cls) else None

    def default_config(self, kind: str, name: str, **overrides: Any) -> Any:
        """The component's config with its named defaults and ``overrides`` applied."""
        entry = self.entry(kind, name)
        cls = self.config_class(kind, name)
        if cls is None:
            raise BadConfig(f"{kind} {name!r} has no config class")
        return _config.from_dict(cls, {**entry.defaults, **overrides}, where=f"{kind} {name}")

    def create(self, kind: str, name: str, *, config: Any = None, **overrides: Any) -> Any:
        """Build component ``kind``/``name`` with its defaults, ``config`` and ``overrides``."""
        entry = self.entry(kind, name)
        target = entry.load()
        cls = getattr(target, "Config", None)
        if cls is not None and attrs.has(cls):
            if config is None:
                config = self.default_config(kind, entry.name, **overrides)
            elif overrides:
                config = _config.evolve(config, overrides, where=f"{kind} {name}")
            obj = target(config)
        else:
            if config is not None:
                raise BadConfig(f"{kind} {name!r} takes keyword options, not a config object")
            obj = target(**{**entry.defaults, **overrides})
        return stamp(obj, kind, entry.name)

    def is_path(self, kind: str, name: str) -> bool:
        """True when ``name`` is not a registered name but an existing path."""
        self.discover()
        if not isinstance(name, (str, os.PathLike)):
            return False
        name = os.fspath(name)
        if name in self._entries.get(kind, {}) or name in self._aliases.get(kind, {}):
            return False
        return os.path.sep in name or name.startswith(".") or Path(name).exists()

    def _check_kind(self, kind: str) -> None:
        _check_text("a kind", kind)
        if kind not in KINDS and kind not in self._entries:
            raise UnknownComponent("kind", kind, {*KINDS, *self._entries})


def _check_text(what: str, value: Any) -> None:
    """A name the registry is asked for must be a string (``gaf.create(3, …)`` is a
    :class:`~gaf.errors.BadConfig`, not a ``TypeError``)."""
    if not isinstance(value, str):
        raise BadConfig(f"{what} must be a string, got {value!r} ({type(value).__name__})")


def stamp(obj: Any, kind: str, name: str | None) -> Any:
    """Record on ``obj`` the kind and registry name that rebuild it (used by ``gaf.save``;
    :func:`gaf.components.load_from` stamps what a loader returns)."""
    with contextlib.suppress(AttributeError, TypeError):  # objects without a __dict__
        obj.gaf_kind, obj.gaf_name = kind, name
    return obj


class PluginWarning(UserWarning):
    """A third-party plugin could not be loaded; gaf goes on without it."""


_Found = list[tuple[metadata.EntryPoint, str, str]]


def _gaf_entry_points() -> tuple[_Found, _Found]:
    """Entry points of every installed distribution: (``gaf.<kind>`` ones, ``gaf`` ones),
    each with its distribution's name and summary; a distribution seen twice counts once."""
    declarative, hook_modules = [], []
    seen: set[tuple[str, str, str]] = set()
    for dist in metadata.distributions():
        dist_name = dist.metadata["Name"] or "unknown distribution"
        summary = dist.metadata.get("Summary") or ""
        for ep in dist.entry_points:
            key = (ep.group, ep.name, ep.value)
            if key in seen:
                continue
            if ep.group.startswith("gaf."):
                declarative.append((ep, dist_name, summary))
            elif ep.group == "gaf":
                hook_modules.append((ep, dist_name, summary))
            else:
                continue
            seen.add(key)
    return declarative, hook_modules


def _first_line(doc: str | None) -> str:
    return doc.strip().splitlines()[0].strip() if doc and doc.strip() else ""


REGISTRY = Registry()
"""The process-wide registry that :func:`gaf.create` and friends use."""


def create(kind: str, name: str, **overrides: Any) -> Any:
    """Build a registered component: ``gaf.create("policy", "gpt2-tiny", dropout=0.1)``."""
    return REGISTRY.create(kind, name, **overrides)


def names(kind: str, pattern: str = "*") -> list[str]:
    """Registered names of ``kind`` matching ``pattern``: ``gaf.names("policy", "gpt2*")``."""
    return REGISTRY.names(kind, pattern)


def register(kind: str, name: str | None = None, *, replace: bool = False, summary: str = "",
             **defaults: Any) -> Callable[[Any], Any]:
    """Decorator registering a class or factory: ``@gaf.register("sampler", "my-top-k")``."""
    return REGISTRY.register(kind, name, replace=replace, summary=summary, **defaults)
