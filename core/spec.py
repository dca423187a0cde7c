"""Run specifications: what ``gaf run`` trains, resolved from defaults, a TOML file and ``--set``.

A run file looks like this (every section optional; ``gaf run`` writes the fully
resolved version to ``RUN_DIR/config.toml``, and feeding that back reproduces the run)::

    seed = 0
    device = "auto"
    out_dir = "runs"

    [objective]
    name = "sft"            # the objective's own options follow

    [policy]
    name = "gpt2-tiny"      # a registered name, or a path to a saved component
    dropout = 0.0           # options of that component's config

    [train]                 # gaf.train.TrainConfig
    steps = 400
    lr = 0.003

Precedence: defaults (the objective's ``uses``, ``component_defaults`` and
``train_defaults``) < the file < component options on the command line (``--policy
NAME``) < ``--set KEY=VALUE``.
``--set`` keys are dotted (``train.lr``, ``policy.dropout``, ``objective.beta``) or,
when unambiguous, bare (``lr``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs

from . import config as _conf  # not "_config": attrs' generated __init__ uses that global name
from .config import option
from .device import is_device_name
from .errors import BadConfig, did_you_mean
from .interfaces.training import objective_member
from .registry import REGISTRY, Registry
from .trainconfig import TrainConfig

TOP_LEVEL = ("seed", "device", "out_dir", "name", "progress")


@attrs.define
class ComponentSpec:
    """A component chosen for a run: registry ``name`` (or a path) and its options."""

    name: str
    options: dict[str, Any] = attrs.field(factory=dict)


@attrs.define
class RunSpec:
    """A fully resolved run."""

    objective: str
    objective_config: Any
    components: dict[str, ComponentSpec]
    train: TrainConfig
    seed: int = option(0, "seed for every random number in the run", ge=0, lt=2**63)
    device: str = option("auto", "auto, cpu or cuda")
    out_dir: str = option("runs", "where run directories are created")
    name: str = option("", "run directory name (default: <date>-<objective>-<id>)")
    progress: bool = option(True, "show a progress bar")

    def to_dict(self) -> dict[str, Any]:
        """Plain data for ``config.toml``: every option written out, defaults included."""
        # ``name`` is left out: feeding the file back makes a new run directory.
        out: dict[str, Any] = {k: getattr(self, k) for k in TOP_LEVEL if k != "name"}
        options = {} if self.objective_config is None else _conf.to_dict(self.objective_config)
        out["objective"] = {"name": self.objective, **options}
        for kind, comp in self.components.items():
            out[kind] = {"name": comp.name, **comp.options}
        out["train"] = _conf.to_dict(self.train)
        return out


def resolve(data: Mapping[str, Any] | None = None, *, objective: str | None = None,
            components: Mapping[str, str | None] | None = None,
            sets: Sequence[str] = (), top: Mapping[str, Any] | None = None,
            registry: Registry = REGISTRY, where: str = "config") -> RunSpec:
    """Resolve a run: ``data`` (a parsed run file), component names from the command
    line, ``top`` values (``seed``, ``device`` … from CLI flags) and ``--set`` items."""
    if data is not None and not isinstance(data, Mapping):
        raise BadConfig(f"{where}: a run file must be a table of sections, got "
                        f"{type(data).__name__}")
    if isinstance(sets, str) or not isinstance(sets, Sequence):
        raise BadConfig(f"sets must be a list of 'KEY=VALUE' strings, got {sets!r}")
    data = {k: (dict(v) if isinstance(v, Mapping) else v) for k, v in (data or {}).items()}
    for key, value in (components or {}).items():
        if value is not None and not isinstance(value, str):
            raise BadConfig(f"{key}: a component is a registered name or a path (a string), "
                            f"got {value!r}")
    cli_components = {k: v for k, v in (components or {}).items() if v}
    overrides = [_conf.parse_assignment(s) for s in sets]
    if objective is not None and not isinstance(objective, str):
        raise BadConfig(f"the objective is a registered name (a string), got {objective!r}")

    obj_section = _section(data, "objective", where)
    file_objective = obj_section.pop("name", None)
    _check_name(file_objective, "objective", where)
    obj_name = objective or file_objective
    if file_objective is not None and file_objective != obj_name:
        obj_section = {}  # the file's options belong to the objective the CLI replaced
    if not obj_name:
        raise BadConfig("no objective given: pass --objective NAME (known: "
                        + ", ".join(registry.names("objective")) + ")")
    obj_cls = registry.get("objective", obj_name)
    uses: dict[str, str] = dict(objective_member(obj_cls, "uses"))
    component_defaults = objective_member(obj_cls, "component_defaults")

    for kind in cli_components:
        if kind not in uses:
            raise BadConfig(f"objective {obj_name!r} does not use a {kind} "
                            f"(it uses: {', '.join(uses) or 'nothing'})")

    # Sections of the file, per component kind.
    sections: dict[str, dict[str, Any]] = {}
    for kind, default in uses.items():
        section = _section(data, kind, where)
        file_name = section.pop("name", None)
        _check_name(file_name, kind, where)
        name = cli_components.get(kind) or file_name or default
        if file_name is not None and file_name != name:
            section = {}  # the file's options belong to the component the CLI replaced
        own = dict(component_defaults.get(kind, {})) if name == default else {}
        sections[kind] = {"name": name, **own, **section}
    train_section = _section(data, "train", where)
    top_values = {k: data.pop(k) for k in TOP_LEVEL if k in data}
    top_values.update({k: v for k, v in (top or {}).items() if v is not None})
    if data:
        valid = [*TOP_LEVEL, "objective", "train", *uses]
        key = next(iter(data))
        raise BadConfig(f"{where}: unknown key {key!r}{did_you_mean(key, valid)} "
                        f"(valid keys: {', '.join(valid)})")

    # --set overrides.
    obj_cfg_cls = objective_member(obj_cls, "Config")
    obj_fields = _conf.field_names(obj_cfg_cls) if obj_cfg_cls is not None else []
    train_fields = _conf.field_names(TrainConfig)
    for key, value in overrides:
        section, _, field = key.partition(".")
        if not field:
            section, field = _locate(key, obj_fields, train_fields, uses)
        if section == "":
            top_values[field] = value
        elif section == "objective":
            obj_section[field] = value
        elif section == "train":
            train_section[field] = value
        elif section in sections:
            sections[section][field] = value
        else:
            valid = ["objective.*", "train.*", *(f"{k}.*" for k in uses), *TOP_LEVEL]
            raise BadConfig(f"--set {key}: unknown section {section!r}"
                            f"{did_you_mean(section, ['objective', 'train', *uses])} "
                            f"(valid keys: {', '.join(valid)})")

    # Build and validate.
    objective_config = (_conf.from_dict(obj_cfg_cls, obj_section, where=f"objective {obj_name}")
                        if obj_cfg_cls is not None else None)
    if obj_cfg_cls is None and obj_section:
        raise BadConfig(f"objective {obj_name!r} has no options (got {', '.join(obj_section)})")
    train_defaults = dict(objective_member(obj_cls, "train_defaults"))
    train = _conf.from_dict(TrainConfig, {**train_defaults, **train_section}, where="train")
    comps = {kind: _component(registry, kind, sec) for kind, sec in sections.items()}
    for key in top_values:
        if key not in TOP_LEVEL:
            raise BadConfig(f"unknown key {key!r}{did_you_mean(key, TOP_LEVEL)} "
                            f"(valid keys: {', '.join(TOP_LEVEL)})")
    top_kwargs = {k: _conf.coerce(v, _TOP_TYPES[k], k) for k, v in top_values.items()}
    spec = RunSpec(objective=obj_name, objective_config=objective_config, components=comps,
                   train=train, **top_kwargs)
    if not is_device_name(spec.device):
        raise BadConfig(f"device must be one of: auto, cpu, cuda, cuda:N, got {spec.device!r}")
    return spec


_TOP_TYPES = {"seed": int, "device": str, "out_dir": str, "name": str, "progress": bool}


def _section(data: dict[str, Any], key: str, where: str) -> dict[str, Any]:
    """``data[key]`` (removed from ``data``) as a table; anything else is a BadConfig."""
    value = data.pop(key, None)
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise BadConfig(f"{where}: [{key}] must be a table of options, got {value!r}")
    return dict(value)


def _check_name(name: Any, kind: str, where: str) -> None:
    if name is not None and (not isinstance(name, str) or not name):
        raise BadConfig(f"{where}: [{kind}] name must be a registered name or a path (a "
                        f"non-empty string), got {name!r}")


def _component(registry: Registry, kind: str, section: dict[str, Any]) -> ComponentSpec:
    name = section.pop("name")
    if registry.is_path(kind, name):
        if section:
            raise BadConfig(f"{kind} {name!r} is loaded from disk; its options cannot be set "
                            f"({', '.join(section)})")
        return ComponentSpec(str(Path(name).resolve()), {})  # config.toml works from any cwd
    cls = registry.config_class(kind, name)  # unknown names fail here, with close matches
    if cls is None:
        return ComponentSpec(name, section)
    cfg = registry.default_config(kind, name, **section)
    return ComponentSpec(name, _conf.to_dict(cfg))


def _locate(key: str, obj_fields: list[str], train_fields: list[str],
            uses: Mapping[str, str]) -> tuple[str, str]:
    """Find the section of a bare ``--set`` key (top level, objective or train)."""
    hits = []
    if key in TOP_LEVEL:
        hits.append("")
    if key in obj_fields:
        hits.append("objective")
    if key in train_fields:
        hits.append("train")
    if len(hits) == 1:
        return hits[0], key
    if len(hits) > 1:
        raise BadConfig(f"--set {key}: ambiguous; write one of "
                        + ", ".join(f"{h}.{key}" if h else key for h in hits))
    valid = [*TOP_LEVEL, *(f"objective.{f}" for f in obj_fields),
             *(f"train.{f}" for f in train_fields), *(f"{k}.<option>" for k in uses)]
    raise BadConfig(f"--set {key}: unknown key{did_you_mean(key, [*TOP_LEVEL, *obj_fields, *train_fields])} "
                    f"(valid keys: {', '.join(valid)})")
