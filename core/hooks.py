"""The plugin manager that carries gaf's hooks (see :mod:`gaf.hookspecs`)."""

from __future__ import annotations

import pluggy

from . import hookspecs

hookimpl = pluggy.HookimplMarker("gaf")
"""Decorator for hook implementations: ``@gaf.hookimpl def gaf_step_end(step, metrics): ...``."""

_manager: pluggy.PluginManager | None = None


def plugin_manager() -> pluggy.PluginManager:
    """The process-wide plugin manager (created on first use)."""
    global _manager
    if _manager is None:
        _manager = pluggy.PluginManager("gaf")
        _manager.add_hookspecs(hookspecs)
    return _manager


def register(plugin: object, name: str | None = None) -> str | None:
    """Register an object or module whose ``gaf_*`` functions implement hooks."""
    return plugin_manager().register(plugin, name=name)


def unregister(plugin: object) -> None:
    plugin_manager().unregister(plugin)
