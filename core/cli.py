"""The ``gaf`` command line (click). Importing this module does not import torch.

Commands: ``gaf list [KIND] [PATTERN]``, ``gaf show KIND NAME``, ``gaf run``,
``gaf sample``, ``gaf eval RUN_DIR``, ``gaf --version``. Errors a user can cause
print one line and exit with code 2 (3 for a non-finite loss); they never end in a
traceback.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import os
import signal
import sys
import warnings
from pathlib import Path
from typing import Any

import click

from . import config as _config
from ._version import __version__
from .device import DEVICE_FORMS, is_device_name
from .errors import BadConfig, GafError
from .interfaces.training import objective_member
from .registry import REGISTRY, PluginWarning

NOT_SELECTABLE = {"objective", "loader"}  # objective has its own option; loaders are implicit


class GafGroup(click.Group):
    """A click group that turns :class:`GafError` into a one-line message and exit code,
    prints plugin warnings as one line, and builds ``gaf run`` (whose options come from
    the registry's kinds) only when it is needed."""

    lazy_commands: dict[str, Any] = {}

    def main(self, *args: Any, **kwargs: Any) -> Any:
        warnings.showwarning = _show_plugin_warning
        return super().main(*args, **kwargs)

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self.lazy_commands})

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name in self.lazy_commands and name not in self.commands:
            try:
                self.add_command(self.lazy_commands[name](), name)
            except GafError as exc:
                _fail(ctx, exc)
        return super().get_command(ctx, name)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except GafError as exc:
            _fail(ctx, exc)


def _fail(ctx: click.Context, exc: GafError) -> None:
    click.secho(f"error: {exc}", fg="red", err=True)
    ctx.exit(exc.exit_code)


def _show_plugin_warning(message, category, filename, lineno, file=None, line=None):  # noqa: ANN001
    if issubclass(category, PluginWarning):
        click.secho(f"warning: {message}", fg="yellow", err=True)
    else:
        _default_showwarning(message, category, filename, lineno, file, line)


_default_showwarning = warnings.showwarning


def _complete(kind: str):  # noqa: ANN202
    def complete(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[Any]:
        from click.shell_completion import CompletionItem

        try:
            return [CompletionItem(n) for n in REGISTRY.names(kind, incomplete + "*")]
        except GafError:
            return []

    return complete


def _selectable_kinds() -> list[str]:
    return [k for k in REGISTRY.kinds() if k not in NOT_SELECTABLE]


@click.group(cls=GafGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="gaf")
def main() -> None:
    """gaf: preference optimisation and text-to-image generation, one plugin registry.

    \b
    Quick start:
      gaf list                                   what is installed
      gaf run --objective sft --policy gpt2-tiny train a tiny GPT-2 (fits a laptop CPU)
      gaf sample --policy RUN_DIR --prompt "The film"
    """


# ------------------------------------------------------------------------- list


@main.command("list")
@click.argument("kind", required=False, shell_complete=lambda c, p, i: [
    k for k in REGISTRY.kinds() if k.startswith(i)])
@click.argument("pattern", required=False, default="*")
@click.option("--json", "as_json", is_flag=True, help="one JSON object per line")
def list_cmd(kind: str | None, pattern: str, as_json: bool) -> None:
    """List registered components, optionally of one KIND and matching PATTERN (e.g. 'gpt2*')."""
    kinds = [kind] if kind else REGISTRY.kinds()
    rows = [(e.kind, e.name, e.summary, e.source) for k in kinds for e in REGISTRY.entries(k, pattern)]
    if as_json:
        for k, n, s, src in rows:
            click.echo(json.dumps({"kind": k, "name": n, "summary": s, "package": src}))
        return
    if not rows:
        click.echo(f"no {kind or 'component'} matches {pattern!r}")
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(box=None, header_style="bold")
    for col in ("kind", "name", "summary", "package"):
        table.add_column(col, overflow="fold")
    for row in rows:
        table.add_row(*row)
    Console().print(table)


# ------------------------------------------------------------------------- show


@main.command("show")
@click.argument("kind")
@click.argument("name")
def show_cmd(kind: str, name: str) -> None:
    """Show a component: summary, where it comes from, and its config fields."""
    entry = REGISTRY.entry(kind, name)
    click.echo(f"{entry.kind} {entry.name}: {entry.summary}")
    click.echo(f"  from:   {entry.source}")
    target = entry.target if isinstance(entry.target, str) else _qualname(entry.target)
    click.echo(f"  target: {target}")
    obj = entry.load()
    doc = inspect.cleandoc(getattr(obj, "__doc__", None) or "")
    if doc:
        click.echo("")
        for line in doc.splitlines():
            click.echo(f"  {line.rstrip()}")
    uses = objective_member(obj, "uses")
    if uses:
        click.echo("\n  uses: " + ", ".join(f"{k} (default {v!r})" for k, v in uses.items()))
    cls = REGISTRY.config_class(kind, entry.name)
    if cls is None or not _config.describe(cls):
        click.echo("\n  (no config options)")
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(box=None, header_style="bold", title=f"options (--set {kind}.NAME=VALUE)",
                  title_justify="left")
    for col in ("option", "type", "default", "allowed", "help"):
        table.add_column(col, overflow="fold")
    defaults = _config.to_dict(REGISTRY.default_config(kind, entry.name))
    for f in _config.describe(cls):
        table.add_row(f.name, f.type, json.dumps(defaults.get(f.name, f.default)), f.bounds,
                      f.help)
    click.echo("")
    Console().print(table)
    if kind == "objective":
        from .trainconfig import TrainConfig

        train = _config.to_dict(_config.from_dict(TrainConfig, objective_member(obj, "train_defaults")))
        click.echo("\n  train defaults: " + ", ".join(f"{k}={json.dumps(v)}" for k, v in train.items()))


def _qualname(obj: Any) -> str:
    return f"{getattr(obj, '__module__', '?')}:{getattr(obj, '__qualname__', repr(obj))}"


# -------------------------------------------------------------------------- run


def _run_options(func: Any) -> Any:
    for kind in reversed(_selectable_kinds()):
        func = click.option(f"--{kind}", f"comp_{kind.replace('-', '_')}", metavar="NAME|PATH",
                            shell_complete=_complete(kind),
                            help=f"{kind} to use: a registered name or a saved directory")(func)
    return func


class _DeviceName(click.ParamType):
    """``--device``: exactly the names the run spec accepts (``gaf.device.is_device_name``)."""

    name = "device"

    def get_metavar(self, param, ctx=None):  # noqa: ANN001 - click's signature
        return "[auto|cpu|cuda|cuda:N]"  # as typed (click would upper-case ``name``)

    def convert(self, value, param, ctx):  # noqa: ANN001 - click's signature
        if isinstance(value, str) and is_device_name(value):
            return value
        self.fail(f"must be one of: {DEVICE_FORMS}, got {value!r}", param, ctx)


DEVICE = _DeviceName()


@click.option("--objective", metavar="NAME", shell_complete=_complete("objective"),
              help="training recipe (gaf list objective)")
@click.option("--config", "config_file", type=click.Path(dir_okay=False), metavar="FILE",
              help="run file (TOML); a run's config.toml reproduces it")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE",
              help="override an option, e.g. train.lr=1e-3 or policy.dropout=0.1 (repeatable)")
@click.option("--data", type=click.Path(dir_okay=False), metavar="FILE",
              help="JSONL training data (shortcut for --task jsonl --set task.path=FILE)")
@click.option("--init", "init", type=click.Path(exists=True, file_okay=False), metavar="DIR",
              help="start from this trained policy: an SFT run directory, a saved policy "
                   "or a Hugging Face GPT-2 directory (shortcut for --policy DIR)")
@click.option("--device", type=DEVICE, default=None,
              help="where to train [default: auto]")
@click.option("--seed", type=int, default=None, help="random seed [default: 0]")
@click.option("--out", "out_dir", metavar="DIR", default=None, help="parent of run directories [default: runs]")
@click.option("--name", default=None, help="run directory name")
@click.option("--resume", type=click.Path(file_okay=False), metavar="RUN_DIR",
              help="continue an interrupted run from its last checkpoint")
@click.option("-q", "--quiet", is_flag=True, help="no progress bar")
@click.option("--nproc", type=click.IntRange(1), default=1, metavar="N",
              help="train data-parallel in N processes on this machine (launches torchrun; "
                   "see docs/distributed.md) [default: 1]")
def run_cmd(objective: str | None, config_file: str | None, sets: tuple[str, ...],
            data: str | None, init: str | None, device: str | None, seed: int | None,
            out_dir: str | None, name: str | None, resume: str | None, quiet: bool,
            nproc: int, **comps: str | None) -> None:
    """Train an objective (gaf run --objective sft --policy gpt2-tiny)."""
    from rich.console import Console

    from .distributed import env_world
    from .launch import execute, load_run_spec
    from .spec import resolve

    if nproc > 1 and "WORLD_SIZE" not in os.environ:
        raise SystemExit(_launch_torchrun(nproc))
    if nproc > 1 and os.environ.get("WORLD_SIZE") != str(nproc):
        raise BadConfig(f"--nproc {nproc} under a launcher that started "
                        f"{os.environ.get('WORLD_SIZE')} processes; drop --nproc when you "
                        "call torchrun yourself")
    with contextlib.suppress(ValueError):  # (not in the main thread: keep the default)
        signal.signal(signal.SIGTERM, _terminate)  # SIGTERM stops like Ctrl-C: resumable
    main_rank = env_world().is_main

    components = {k[len("comp_"):].replace("_", "-"): v for k, v in comps.items() if v}
    if data:
        if components.get("task", "jsonl") != "jsonl":
            raise BadConfig("--data reads JSONL; it cannot be combined with --task "
                            f"{components['task']!r}")
        components["task"] = "jsonl"
        sets = (f"task.path={json.dumps(str(data))}", *sets)
    if init:
        if components.get("policy"):
            raise BadConfig("--init DIR is the policy to start from; it cannot be combined "
                            "with --policy")
        components["policy"] = str(init)
    top = {"device": device, "seed": seed, "out_dir": out_dir, "name": name}
    console = Console(stderr=True, quiet=not main_rank)
    if resume:
        if objective or components or config_file or any(v is not None for v in top.values()):
            raise BadConfig("--resume continues a run as it was configured; only --set may "
                            "change it (e.g. --set train.steps=800)")
        spec = load_run_spec(Path(resume), sets)
    else:
        file_data = _config.read_toml(config_file) if config_file else None
        spec = resolve(file_data, objective=objective, components=components, sets=sets, top=top,
                       where=config_file or "config")
    if quiet:
        spec.progress = False
    console.print(f"[bold]gaf run[/bold] {spec.objective}: "
                  + ", ".join(f"{k}={c.name}" for k, c in spec.components.items()))
    run_dir, summary = execute(spec, resume=Path(resume) if resume else None, console=console)
    shown = {k: v for k, v in summary.items() if isinstance(v, (int, float)) and k != "steps"}
    console.print(" ".join(f"{k}={_fmt(v)}" for k, v in shown.items()))
    if main_rank:
        click.echo(f"run directory: {run_dir}")


def _terminate(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def _launch_torchrun(nproc: int) -> int:
    """Run this same ``gaf run`` command under ``torchrun --standalone`` with ``nproc``
    processes; returns torchrun's exit status."""
    import subprocess

    args = sys.argv[sys.argv.index("run") + 1:] if "run" in sys.argv else []
    kept: list[str] = []
    skip = False
    for arg in args:
        if skip:
            skip = False
        elif arg == "--nproc":
            skip = True
        elif not arg.startswith("--nproc="):
            kept.append(arg)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
           f"--nproc_per_node={nproc}", "-m", "gaf", "run", *kept]
    try:
        return subprocess.call(cmd)
    except KeyboardInterrupt:
        return 130


def _build_run_command() -> click.Command:
    """``gaf run``, with one ``--<kind>`` option per selectable kind in the registry."""
    return click.command("run")(_run_options(run_cmd))


GafGroup.lazy_commands["run"] = _build_run_command


def _fmt(value: float) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


# ----------------------------------------------------------------------- sample


@main.command("sample")
@click.option("--policy", metavar="NAME|PATH", shell_complete=_complete("policy"),
              help="text: a run directory, a saved policy, or a registered name (untrained)")
@click.option("--pipeline", metavar="RUN_DIR", type=click.Path(file_okay=False),
              help="images: a diffusion run directory (gaf run --objective ldm)")
@click.option("--prompt", "prompts", multiple=True, required=True,
              help="prompt text, or a class label for a class-conditional pipeline "
                   "(repeatable)")
@click.option("--sampler", default="top-p", show_default=True, shell_complete=_complete("sampler"),
              help="text: decoding strategy (gaf list sampler)")
@click.option("--scheduler", default=None, shell_complete=_complete("scheduler"),
              help="images: sampler (gaf list scheduler) [default: ddim]")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE",
              help="sampler or scheduler option, e.g. --set p=0.95 or --set eta=1.0")
@click.option("-n", "--num", default=1, show_default=True, type=click.IntRange(1),
              help="completions or images per prompt")
@click.option("--max-new-tokens", default=64, show_default=True, type=click.IntRange(1),
              help="text: tokens to generate")
@click.option("--steps", default=50, show_default=True, type=click.IntRange(1),
              help="images: denoising steps")
@click.option("--guidance", default=3.0, show_default=True, type=click.FloatRange(0),
              help="images: classifier-free guidance scale (1 = none)")
@click.option("--out", "out_path", default="samples.png", show_default=True,
              type=click.Path(dir_okay=False), help="images: the PNG grid to write")
@click.option("--ema/--no-ema", default=True, show_default=True,
              help="images: sample with the moving-average weights")
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--device", type=DEVICE, default="auto", show_default=True)
@click.option("--json", "as_json", is_flag=True, help="text: one JSON object per completion")
@click.option("-q", "--quiet", is_flag=True, help="images: no progress bar")
def sample_cmd(policy: str | None, pipeline: str | None, prompts: tuple[str, ...], sampler: str,
               scheduler: str | None, sets: tuple[str, ...], num: int, max_new_tokens: int,
               steps: int, guidance: float, out_path: str, ema: bool, seed: int, device: str,
               as_json: bool, quiet: bool) -> None:
    """Generate text from a policy or images from a diffusion run.

    \b
    gaf sample --policy RUN_DIR --prompt "The film"
    gaf sample --pipeline RUN_DIR --prompt "a red circle above a blue square" \\
               --scheduler ddim --steps 50 --guidance 3 --seed 0 --out grid.png
    """
    if (policy is None) == (pipeline is None):
        raise BadConfig("gaf sample needs exactly one of --policy (text) and --pipeline "
                        "(images)")
    options = {}
    for item in sets:
        key, value = _config.parse_assignment(item)
        options[key.removeprefix("sampler.").removeprefix("scheduler.")] = value
    if pipeline is not None:
        _sample_images(pipeline, prompts, scheduler, options, num, steps, guidance, out_path,
                       ema, seed, device, quiet)
        return
    decoder = REGISTRY.create("sampler", sampler, **options)
    import torch

    from .device import resolve_device

    from .components import create_or_load

    dev = resolve_device(device)
    model = create_or_load(REGISTRY, "policy", policy).to(dev).eval()
    generator = torch.Generator(device=dev).manual_seed(seed)
    batch = [p for p in prompts for _ in range(num)]
    completions = model.generate(batch, sampler=decoder, max_new_tokens=max_new_tokens,
                                 generator=generator)
    for p, c in zip(batch, completions):
        if as_json:
            click.echo(json.dumps({"prompt": p, "completion": c}, ensure_ascii=False))
        else:
            click.echo(f"{p}{click.style(c, fg='green')}")


def _sample_images(run_dir: str, prompts: tuple[str, ...], scheduler: str | None,
                   options: dict[str, Any], num: int, steps: int, guidance: float,
                   out_path: str, ema: bool, seed: int, device: str, quiet: bool) -> None:
    """``gaf sample --pipeline``: one row of ``num`` images per prompt, written as a PNG."""
    if scheduler is not None:
        REGISTRY.entry("scheduler", scheduler)  # unknown names fail with close matches
    from .device import resolve_device

    try:
        from gaf.plugins.t2i.diffusion_pipeline import DiffusionPipeline
    except ImportError as exc:  # pragma: no cover - plugins not installed
        raise BadConfig(f"image sampling needs gaf's t2i plugins: {exc}") from None
    pipe = DiffusionPipeline.from_run(run_dir, scheduler=scheduler or "ddim",
                                      scheduler_options=options, ema=ema,
                                      device=resolve_device(device))
    batch = [p for p in prompts for _ in range(num)]
    images = pipe(batch, steps=steps, guidance=guidance, seed=seed, progress=not quiet)
    from gaf.plugins.images.grid import save_grid

    rows = images.reshape(len(prompts), num, *images.shape[1:])
    path = save_grid(rows, Path(out_path))
    for i, p in enumerate(prompts):
        click.echo(f"row {i + 1}: {p}")
    click.echo(f"{len(batch)} image(s) written to {path}")


# ------------------------------------------------------------------------- eval


@main.command("eval")
@click.argument("run_dir", type=click.Path(file_okay=False))
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE",
              help="change an evaluation option, e.g. objective.eval_images=200 (repeatable)")
@click.option("--device", type=DEVICE, default=None,
              help="where to evaluate [default: the run's device]")
@click.option("--json", "as_json", is_flag=True, help="print the metrics as one JSON object")
def eval_cmd(run_dir: str, sets: tuple[str, ...], device: str | None, as_json: bool) -> None:
    """Re-run a finished run's evaluation on its saved model (gaf eval RUN_DIR).

    Rebuilds the run's objective from RUN_DIR/config.toml, loads the trained weights
    (the exported RUN_DIR/<module>/ components, else the newest checkpoint), runs the
    objective's evaluation and writes the metrics to RUN_DIR/eval.json.
    """
    from rich.console import Console

    from .launch import evaluate_run

    metrics = evaluate_run(run_dir, sets, device=device, console=Console(stderr=True))
    if as_json:
        click.echo(json.dumps(metrics, default=str))
        return
    for key, value in metrics.items():
        click.echo(f"{key}: {_fmt(value)}")
    click.echo(f"metrics written to {Path(run_dir) / 'eval.json'}")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
