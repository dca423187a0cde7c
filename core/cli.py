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
from .errors import BadConfig, BadData, GafError, Interrupted
from .interfaces.training import objective_member
from .registry import REGISTRY

#: kinds that get no ``gaf run --<kind>`` option: objective has its own, loaders are
#: implicit, and a pipeline samples a finished run (``gaf sample --pipeline``)
NOT_SELECTABLE = {"objective", "loader", "pipeline"}
#: the pipeline of a ``pipeline.json`` without a ``"pipeline"`` key (runs from before it)
DEFAULT_PIPELINE = "diffusion"
PIPELINE_FILE = "pipeline.json"


class GafGroup(click.Group):
    """A click group that turns :class:`GafError` into a one-line message and exit code,
    prints plugin warnings as one line, and builds ``gaf run`` (whose options come from
    the registry's kinds) only when it is needed."""

    lazy_commands: dict[str, Any] = {}

    def main(self, args: Any = None, prog_name: str | None = None,
             complete_var: str | None = None, standalone_mode: bool = True,
             **extra: Any) -> Any:
        warnings.showwarning = _show_warning
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, False, **extra)
        try:
            code = super().main(args, prog_name, complete_var, False, **extra)
        except click.UsageError as exc:  # one line, like every other error
            where = f"; see {exc.ctx.command_path} --help" if exc.ctx is not None else ""
            click.secho(f"error: {exc.format_message()}{where}", fg="red", err=True)
            sys.exit(exc.exit_code)
        except click.ClickException as exc:
            click.secho(f"error: {exc.format_message()}", fg="red", err=True)
            sys.exit(exc.exit_code)
        except click.Abort:
            click.secho("error: interrupted", fg="red", err=True)
            sys.exit(Interrupted.exit_code)
        sys.exit(code if isinstance(code, int) else 0)

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
        except (click.exceptions.Exit, click.ClickException, click.Abort):
            raise
        except KeyboardInterrupt:
            if ctx.params.get("show_traceback"):
                raise
            click.secho("error: interrupted", fg="red", err=True)
            ctx.exit(Interrupted.exit_code)
        except Exception as exc:  # the last resort: one line, never a wall of text
            if ctx.params.get("show_traceback"):
                raise
            command = ctx.invoked_subcommand or "gaf"
            line = (f"error: gaf {command}: {type(exc).__name__}: {_one_line(exc)} "
                    f"(unexpected: run again as gaf --traceback {command} … to see where, "
                    f"and report it)")
            click.secho(line, fg="red", err=True)
            _record_error(1, line)
            ctx.exit(1)


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text[:300] + ("…" if len(text) > 300 else "") if text else "(no message)"


def _fail(ctx: click.Context, exc: GafError) -> None:
    click.secho(f"error: {exc}", fg="red", err=True)
    _record_error(exc.exit_code, f"error: {exc}")
    ctx.exit(exc.exit_code)


#: set by ``gaf run --nproc`` for its workers: where each rank records the error it
#: printed (``<path>.<rank>``), so that the launcher prints a line only when rank 0 did not
ERROR_FILE_ENV = "GAF_NPROC_ERROR_FILE"


def _record_error(code: int, line: str) -> None:
    base = os.environ.get(ERROR_FILE_ENV)
    if base:
        with contextlib.suppress(OSError):
            Path(f"{base}.{os.environ.get('RANK', '0')}").write_text(
                f"{code}\n{line}\n", encoding="utf-8")


def _show_warning(message, category, filename, lineno, file=None, line=None):  # noqa: ANN001
    """Every Python warning as one line of gaf's own (``warning: …``), with no source
    path: what to do is in the message itself. A deprecation notice from a library
    gaf uses (torch's, say) is dropped: its advice is for gaf's code, not the user."""
    deprecation = issubclass(category, (DeprecationWarning, PendingDeprecationWarning,
                                        FutureWarning))
    if deprecation and not _is_gaf_file(str(filename)):
        return
    text = " ".join(str(message).split())
    click.secho(f"warning: {text}", fg="yellow", err=True)


def _is_gaf_file(filename: str) -> bool:
    """Whether ``filename`` is gaf's own code (the core or the built-in plugins, which
    an editable install keeps in two folders)."""
    import importlib.util

    roots = [Path(__file__).resolve().parent]
    with contextlib.suppress(ImportError, ValueError):
        spec = importlib.util.find_spec("gaf.plugins")
        roots += [Path(p).resolve() for p in (spec.submodule_search_locations or [])]
    try:
        path = Path(filename).resolve()
    except (OSError, ValueError):
        return False
    return any(path.is_relative_to(root) for root in roots)


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
@click.option("--traceback", "show_traceback", is_flag=True,
              help="show the Python traceback of an unexpected error (for bug reports)")
def main(show_traceback: bool) -> None:
    """gaf: preference optimisation and text-to-image generation, one plugin registry.

    \b
    Quick start:
      gaf list                                   what is installed
      gaf run --objective sft --policy gpt2-tiny train a tiny GPT-2 (fits a laptop CPU)
      gaf sample --policy RUN_DIR --prompt "The film"
    """
    from .malloc import tune_malloc

    tune_malloc()  # fixed glibc thresholds for tensor work; GAF_MALLOC=system keeps glibc's


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
    call_options = _options_class(obj)
    if (cls is None or not _config.describe(cls)) and call_options is None:
        click.echo("\n  (no config options)")
        return
    if cls is not None and _config.describe(cls):
        defaults = _config.to_dict(REGISTRY.default_config(kind, entry.name))
        _options_table(f"options (--set {kind}.NAME=VALUE)", cls, defaults)
    if call_options is not None:  # a pipeline's call options (gaf sample --option)
        _options_table("call options (gaf sample --option KEY=VALUE)", call_options,
                       _config.to_dict(call_options()))
    if entry.defaults and cls is None:
        click.echo("\n  gaf sample load defaults: " + ", ".join(f"{k}={json.dumps(v)}"
                                                      for k, v in entry.defaults.items()))
    if kind == "objective":
        from .trainconfig import TrainConfig

        for kind, opts in objective_member(obj, "component_defaults").items():
            click.echo(f"\n  {kind} defaults: " + ", ".join(f"{k}={json.dumps(v)}"
                                                       for k, v in opts.items()))
        train = _config.to_dict(_config.from_dict(TrainConfig, objective_member(obj, "train_defaults")))
        click.echo("\n  train defaults: " + ", ".join(f"{k}={json.dumps(v)}" for k, v in train.items()))


def _options_class(obj: Any) -> type | None:
    """``obj.Options`` when it is an attrs class: the options of each call of a component
    (a pipeline's steps, guidance, temperature …), as ``Config`` holds those it is built
    with."""
    import attrs

    cls = getattr(obj, "Options", None)
    return cls if isinstance(cls, type) and attrs.has(cls) and _config.describe(cls) else None


def _options_table(title: str, cls: type, defaults: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(box=None, header_style="bold", title=title, title_justify="left")
    for col in ("option", "type", "default", "allowed", "help"):
        table.add_column(col, overflow="fold")
    for f in _config.describe(cls):
        table.add_row(f.name, f.type, json.dumps(defaults.get(f.name, f.default)), f.bounds,
                      f.help)
    click.echo("")
    Console().print(table)


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


class _FiniteGuidance(click.ParamType):
    """``--guidance``: a finite number >= 0 (``inf`` or ``nan`` would make black images)."""

    name = "float"

    def convert(self, value, param, ctx):  # noqa: ANN001 - click's signature
        import math

        try:
            number = float(value)
        except (TypeError, ValueError):
            self.fail(f"{value!r} is not a number", param, ctx)
        if not math.isfinite(number) or number < 0:
            self.fail(f"must be a finite number >= 0, got {value!r}", param, ctx)
        return number


FINITE_GUIDANCE = _FiniteGuidance()


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

    launching = nproc > 1 and "WORLD_SIZE" not in os.environ
    if nproc > 1 and not launching and os.environ.get("WORLD_SIZE") != str(nproc):
        raise BadConfig(f"--nproc {nproc} under a launcher that started "
                        f"{os.environ.get('WORLD_SIZE')} processes; drop --nproc when you "
                        "call torchrun yourself")
    if not launching:
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
    if launching:  # everything checked here first: the workers would all fail alike
        from .launch import check_batch_split, check_run_target

        check_batch_split(spec, nproc)
        if not resume:
            check_run_target(spec, nproc)
        raise SystemExit(_launch_torchrun(nproc))
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
    """Run this same ``gaf run`` command under torchrun (``--standalone``, ``nproc``
    processes) and return the run's exit status.

    Rank 0 writes to this terminal; the other ranks' output goes to log files, so an
    error all ranks hit is printed once. When the run fails, the status is rank 0's
    (2, 3 or 130 pass through as they are); when only another rank failed, its
    ``error:`` line is printed, with the rank, and its log is kept. torchrun's own
    report (a traceback of ``ChildFailedError``) is not printed."""
    import logging
    import shutil
    import tempfile

    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import get_args_parser, run

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
    log_dir = tempfile.mkdtemp(prefix="gaf-nproc-")
    redirects = ",".join(f"{r}:3" for r in range(1, nproc))
    torchrun = ["--standalone", f"--nproc_per_node={nproc}", "--log-dir", log_dir,
                "--redirects", redirects, "-m", "gaf", "run", *kept]
    for name in [n for n in logging.root.manager.loggerDict if n.startswith("torch.distributed")]:
        logging.getLogger(name).setLevel(logging.CRITICAL)  # its banner and failure report
    warnings.simplefilter("ignore")  # the launcher's own (torch's deprecations); workers warn
    os.environ[ERROR_FILE_ENV] = str(Path(log_dir) / "error")  # the workers inherit it
    try:
        run(get_args_parser().parse_args(torchrun))
    except ChildFailedError as exc:
        return _worker_failure(exc, Path(log_dir))
    except KeyboardInterrupt:
        return Interrupted.exit_code
    except Exception as exc:  # the agent's own failure, e.g. a signal it received
        if type(exc).__name__ == "SignalException":
            return Interrupted.exit_code
        raise
    shutil.rmtree(log_dir, ignore_errors=True)
    return 0


def _worker_failure(exc: Any, log_dir: Path) -> int:
    """The exit status of a failed ``--nproc`` run, printing one line when rank 0 did
    not already print the error (see :func:`_launch_torchrun`). Each worker records the
    error line it printed in ``log_dir/error.<rank>``: rank 0's record means its line is
    on the terminal; else the first failed rank's record (or exit code) is printed."""
    import shutil

    known = (1, 2, 3, Interrupted.exit_code)
    said = _recorded_errors(log_dir)
    if 0 in said:  # rank 0 printed its own line
        shutil.rmtree(log_dir, ignore_errors=True)
        return said[0][0]
    rank, first = exc.get_first_failure()
    if said:
        rank = rank if rank in said else min(said)
        code, line = said[rank]
        click.secho(f"error: rank {rank}: {line.removeprefix('error:').strip()}", fg="red",
                    err=True)
        return code
    code = first.exitcode
    logs = sorted(log_dir.glob(f"*/attempt_*/{first.local_rank}/stderr.log"))
    how = f"was killed by signal {-code}" if code < 0 else f"exited with code {code}"
    where = f"; its log: {logs[-1]}" if logs else ""
    click.secho(f"error: rank {rank} {how}{where}", fg="red", err=True)
    return code if code in known else 1


def _recorded_errors(log_dir: Path) -> dict[int, tuple[int, str]]:
    """``{rank: (exit code, error line)}`` recorded by the workers."""
    out = {}
    for path in log_dir.glob("error.*"):
        with contextlib.suppress(OSError, ValueError):
            code, line = path.read_text(encoding="utf-8").split("\n", 1)
            out[int(path.suffix[1:])] = (int(code), line.strip())
    return out


def _build_run_command() -> click.Command:
    """``gaf run``, with one ``--<kind>`` option per selectable kind in the registry."""
    return click.command("run")(_run_options(run_cmd))


GafGroup.lazy_commands["run"] = _build_run_command
GafGroup.lazy_commands["stylize"] = lambda: __import__("gaf.cli_stylize", fromlist=["_"]).stylize_cmd  # noqa: E501 - named lazily, as registry targets are


def _fmt(value: float) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


# ----------------------------------------------------------------------- sample


@main.command("sample")
@click.option("--policy", metavar="NAME|PATH", shell_complete=_complete("policy"),
              help="text: a run directory, a saved policy, or a registered name (untrained)")
@click.option("--pipeline", metavar="RUN_DIR", type=click.Path(file_okay=False),
              help="images: a text-to-image run directory (e.g. gaf run --objective ldm); "
                   "its pipeline.json names the registered pipeline that samples it")
@click.option("--prompt", "prompts", multiple=True,
              help="prompt text, or a class label for a class-conditional pipeline "
                   "(repeatable)")
@click.option("--image", "images", multiple=True, metavar="PATH",
              type=click.Path(exists=True, dir_okay=False),
              help="images: a picture to work from (repeatable): the source of an "
                   "image-to-image run (low-resolution, grey or with a hole), a picture to "
                   "inpaint with --mask (a diffusion run: RePaint), or one to make "
                   "variations of (an unclip run)")
@click.option("--mask", "masks", multiple=True, metavar="PATH",
              type=click.Path(exists=True, dir_okay=False),
              help="images: with --image, where to generate: a black-and-white PNG of the "
                   "picture's size, white = generate (one for every --image, or one for all)")
@click.option("--sampler", default=None, shell_complete=_complete("sampler"),
              help="text: decoding strategy (gaf list sampler) [default: top-p]; images, "
                   "token models: the sampler of the image codes [default: the run's]")
@click.option("--scheduler", default=None, shell_complete=_complete("scheduler"),
              help="images, diffusion: sampler (gaf list scheduler) [default: ddim]")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE",
              help="sampler or scheduler option, e.g. --set p=0.95, --set k=32 or "
                   "--set eta=1.0")
@click.option("--option", "pipe_options", multiple=True, metavar="KEY=VALUE",
              help="images: a call option of the run's pipeline, e.g. --option steps=20 "
                   "(gaf show pipeline NAME lists them; repeatable)")
@click.option("-n", "--num", default=1, show_default=True, type=click.IntRange(1),
              help="completions or images per prompt")
@click.option("--max-new-tokens", default=None, type=click.IntRange(1),
              help="text: tokens to generate [default: 64]")
@click.option("--steps", default=None, type=click.IntRange(1),
              help="images: denoising steps (--option steps=N) [default: the pipeline's, 50]")
@click.option("--guidance", default=None, type=FINITE_GUIDANCE,
              help="images: classifier-free guidance scale, 1 = none (--option guidance=S) "
                   "[default: the pipeline's, 3]")
@click.option("--out", "out_path", default=None, type=click.Path(dir_okay=False),
              help="images: the PNG grid to write [default: samples.png]")
@click.option("--ema/--no-ema", default=None,
              help="images, diffusion: sample with the moving-average weights [default: --ema]")
@click.option("--seed", default=0, show_default=True, type=click.IntRange(0, 2**63 - 1))
@click.option("--device", type=DEVICE, default="auto", show_default=True)
@click.option("--json", "as_json", is_flag=True, help="text: one JSON object per completion")
@click.option("-q", "--quiet", is_flag=True, help="images: no progress bar")
@click.option("--stages", "save_stages", is_flag=True,
              help="images, a cascade: also write each stage's own grid, OUT_stage1.png …")
def sample_cmd(policy: str | None, pipeline: str | None, prompts: tuple[str, ...],
               images: tuple[str, ...], masks: tuple[str, ...], sampler: str | None,
               scheduler: str | None, sets: tuple[str, ...],
               pipe_options: tuple[str, ...], num: int, max_new_tokens: int | None,
               steps: int | None, guidance: float | None, out_path: str | None,
               ema: bool | None, seed: int, device: str, as_json: bool, quiet: bool,
               save_stages: bool = False) -> None:
    """Generate text from a policy or images from a text-to-image run.

    \b
    gaf sample --policy RUN_DIR --prompt "The film"
    gaf sample --pipeline RUN_DIR --prompt "a red circle above a blue square" \\
               --scheduler ddim --steps 50 --guidance 3 --seed 0 --out grid.png
    gaf sample --pipeline UNCLIP_RUN_DIR --image picture.png -n 8
    gaf sample --pipeline IMAGEN_RUN_DIR --prompt "a red circle" --stages
    gaf sample --pipeline IMAGE_TO_IMAGE_RUN_DIR --image in.png --mask mask.png \
               --prompt "a red circle in the top left" --out out.png
    """
    if (policy is None) == (pipeline is None):
        raise BadConfig("gaf sample needs exactly one of --policy (text) and --pipeline "
                        "(images)")
    if pipeline is not None and not prompts and not images:
        raise BadConfig("gaf sample --pipeline needs --prompt (images from text) or --image "
                        "(images from a picture)")
    if masks and not images:
        raise BadConfig("--mask needs --image: the picture whose white region is generated")
    if policy is not None and not prompts:
        raise BadConfig("gaf sample --policy needs --prompt")
    other = ({"--max-new-tokens": max_new_tokens, "--json": as_json or None}
             if pipeline is not None else
             {"--steps": steps, "--guidance": guidance, "--scheduler": scheduler,
              "--ema/--no-ema": ema, "--out": out_path, "-q": quiet or None,
              "--image": images or None, "--mask": masks or None,
              "--stages": save_stages or None})
    misplaced = [flag for flag, value in other.items() if value is not None]
    if misplaced:
        mode, its = (("--pipeline (images)", "--policy (text)") if pipeline is not None
                     else ("--policy (text)", "--pipeline (images)"))
        raise BadConfig(f"{', '.join(misplaced)} "
                        f"{'applies' if len(misplaced) == 1 else 'apply'} to "
                        f"{its}, not to {mode}; see gaf sample --help")
    options = {}
    for item in sets:
        key, value = _config.parse_assignment(item)
        options[key.removeprefix("sampler.").removeprefix("scheduler.")] = value
    if pipeline is not None:
        load = {"scheduler": scheduler, "sampler": sampler, "options": options or None,
                "ema": ema}
        flags = {"scheduler": "--scheduler", "sampler": "--sampler", "options": "--set",
                 "ema": "--ema/--no-ema"}
        given = {k: v for k, v in load.items() if v is not None}
        call = [("steps", steps, "--steps"), ("guidance", guidance, "--guidance")]
        call += [(*_config.parse_assignment(item), "--option") for item in pipe_options]
        _sample_images(pipeline, prompts, given, flags, call, num, out_path or "samples.png",
                       seed, device, quiet, images, save_stages, masks)
        return
    if pipe_options:
        raise BadConfig("--option sets a call option of an image pipeline; for text use "
                        "--set (the sampler's options)")
    decoder = REGISTRY.create("sampler", sampler or "top-p", **options)
    max_new_tokens = max_new_tokens or 64
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


def _sample_images(run_dir: str, prompts: tuple[str, ...], load: dict[str, Any],
                   flags: dict[str, str], call: list[tuple[str, Any, str]], num: int,
                   out_path: str, seed: int, device: str, quiet: bool,
                   pictures: tuple[str, ...] = (), save_stages: bool = False,
                   masks: tuple[str, ...] = ()) -> None:
    """``gaf sample --pipeline``: one row of ``num`` images per prompt, written as a PNG.

    With ``pictures`` (``--image``), a pipeline with ``edit`` (``image-to-image``; a
    ``diffusion`` run inpaints with RePaint) makes ``num`` images from each picture,
    its mask (``--mask``, white = generate: one per picture or one for all) and its
    prompt (one per picture or one for all; none = no caption), with ``edit(images,
    masks=…, conditions=…, seed=…, **call options)``, the call options checked against
    its ``EditOptions`` when it has them (else ``Options``). The pictures and masks must be
    exactly ``image_shape``'s size (no resizing: a wrong size is a :class:`BadData`), a
    mask exactly black and white (a JPEG's greys are refused), neither empty nor full;
    all are read and checked before any sampling, so a bad input writes nothing. A
    pipeline without ``edit`` makes ``num`` variations of each picture with
    ``variations(images, seed=…, **call options)`` (unCLIP; a picture of another size
    is resized, bicubic); a pipeline with neither is a :class:`BadConfig`.

    The run's ``pipeline.json`` names its pipeline (``diffusion`` when it names none),
    resolved through the registry, so a third-party pipeline samples its runs the same
    way. ``load`` (what the user set of ``--scheduler``, ``--set``, ``--ema``) goes to
    ``from_run`` on top of the entry's registry ``defaults``; ``call`` (``--steps``,
    ``--guidance``, ``--option``) to the pipeline's call, checked against its
    ``Options``. A flag the pipeline has no option for is a :class:`BadConfig`.

    ``save_stages`` (``--stages``): the pipeline's ``sample_stages`` gives every stage's
    images (a ``cascade``); each stage ``k`` but the last is written beside ``out_path``
    as ``<stem>_stage<k>.png``, the last to ``out_path``. A pipeline without stages is a
    :class:`BadConfig`.
    """
    from .atomic import read_json
    from .device import resolve_device

    out = check_output_file(Path(out_path), ".png")
    meta_path = Path(run_dir) / PIPELINE_FILE
    if not meta_path.is_file():
        raise BadConfig(f"{run_dir} is not a text-to-image run: it has no {PIPELINE_FILE} "
                        "(train one, e.g. gaf run --objective ldm)")
    meta = read_json(meta_path)
    name = meta.get("pipeline", DEFAULT_PIPELINE) if isinstance(meta, dict) else None
    if not isinstance(name, str):
        raise BadData('"pipeline" must name a registered pipeline', path=str(meta_path))
    entry = REGISTRY.entry("pipeline", name)  # unknown: exit 2 with close matches
    cls = entry.load()
    where = f"pipeline {entry.name!r} (named by {meta_path})"

    accepted = _parameters(cls.from_run)
    if "options" in load:  # --set: the options of what the pipeline samples with
        key = next((k for k in ("scheduler_options", "sampler_options") if k in accepted),
                   "scheduler_options")
        load[key] = load.pop("options")
        flags[key] = flags["options"]
    for key, value in load.items():
        if not _accepts(accepted, key):
            raise BadConfig(f"{flags[key]} does not apply to {where}: it has no load option "
                            f"{key!r} (from_run takes: {', '.join(_named(accepted)) or 'none'})")
    for kind in ("scheduler", "sampler"):
        if load.get(kind) is not None:
            REGISTRY.entry(kind, load[kind])  # unknown names fail with close matches
    options_cls = _options_class(cls)
    editing = bool(pictures) and callable(getattr(cls, "edit", None))
    if editing and isinstance(getattr(cls, "EditOptions", None), type):
        options_cls = cls.EditOptions  # what edit takes (RePaint's jump options …)
    known = _config.field_names(options_cls) if options_cls is not None else []
    given: dict[str, Any] = {}
    for key, value, flag in call:
        if value is None:
            continue
        if key not in known:
            from .errors import did_you_mean

            raise BadConfig(f"{flag} {key}: {where} has no option {key!r}"
                            f"{did_you_mean(key, known)} (its options: "
                            f"{', '.join(known) or 'none'})")
        given[key] = value
    if given:
        checked = _config.from_dict(options_cls, given, where=f"pipeline {entry.name}")
        given = {key: getattr(checked, key) for key in given}
    kwargs = {**{k: v for k, v in entry.defaults.items() if _accepts(accepted, k)}, **load}
    if save_stages and (pictures or not callable(getattr(cls, "sample_stages", None))):
        raise BadConfig(f"--stages: {where} has no stages to save (a cascade run has; "
                        f"and not with --image)")
    if not pictures and getattr(cls, "needs_image", False):
        raise BadConfig(f"{where} makes images from pictures: give --image (and --mask "
                        f"for a hole to fill; --prompt is optional)")
    if editing:
        _edit_images(cls, run_dir, kwargs, given, pictures, masks, prompts, num, out, seed,
                     device, quiet, where)
        return
    if pictures and (masks or prompts):
        raise BadConfig(f"{'--mask' if masks else '--prompt'} with --image: {where} does not "
                        f"edit pictures (an image-to-image run does; a diffusion run "
                        f"inpaints with --mask)")
    pipe = cls.from_run(run_dir, device=resolve_device(device), **kwargs)
    if pictures:
        if not callable(getattr(pipe, "variations", None)):
            raise BadConfig(f"--image: {where} makes no variations of an image (an unclip "
                            f"run does)")
        import numpy as np
        import torch

        shape = tuple(pipe.image_shape)
        rows = [read_image(Path(p), shape) for p in pictures]
        batch = torch.from_numpy(np.stack([r for r in rows for _ in range(num)]))
        if "progress" in _parameters(pipe.variations):
            given["progress"] = not quiet
        images = pipe.variations(batch, seed=seed, **given)
        labels = list(pictures)
    else:
        if "progress" in _parameters(cls.__call__):  # a named parameter, not any **options
            given["progress"] = not quiet
        batch = [p for p in prompts for _ in range(num)]
        labels = list(prompts)
        if save_stages:
            *earlier, images = pipe.sample_stages(batch, seed=seed, **given)
            for k, stage_images in enumerate(earlier, 1):
                written = write_grid(stage_images, len(labels), num,
                                     out.with_name(f"{out.stem}_stage{k}{out.suffix}"))
                click.echo(f"stage {k}: {tuple(stage_images.shape[1:])} images written to "
                           f"{written}")
        else:
            images = pipe(batch, seed=seed, **given)
    path = write_grid(images, len(labels), num, out)
    for i, p in enumerate(labels):
        click.echo(f"row {i + 1}: {p}")
    click.echo(f"{len(batch)} image(s) written to {path}")


def _edit_images(cls: Any, run_dir: str, kwargs: dict[str, Any], given: dict[str, Any],
                 pictures: tuple[str, ...], masks: tuple[str, ...], prompts: tuple[str, ...],
                 num: int, out: Path, seed: int, device: str, quiet: bool,
                 where: str) -> None:
    """``gaf sample --pipeline RUN --image …`` for a pipeline that edits pictures
    (:func:`_sample_images`' doc): every input is read and checked before the run's
    modules are loaded and before anything is sampled."""
    import numpy as np
    import torch

    from .device import resolve_device

    for flag, values in (("--mask", masks), ("--prompt", prompts)):
        if len(values) not in (0, 1, len(pictures)):
            raise BadConfig(f"{len(values)} {flag} for {len(pictures)} --image: give one "
                            f"for every picture, or one for all")
    pipe = cls.from_run(run_dir, device=resolve_device(device), **kwargs)
    if getattr(pipe, "image_shape", None) is None:
        raise BadConfig(f"--image: {where} cannot say the size of the pictures it takes")
    shape = tuple(pipe.image_shape)
    uses_masks = bool(getattr(pipe, "uses_masks", True))
    if uses_masks and not masks:
        raise BadConfig(f"--image: {where} generates the white region of a mask: give "
                        f"--mask")
    if masks and not uses_masks:
        raise BadConfig(f"--mask: {where} makes every pixel and takes no mask")
    rows = [read_image(Path(p), shape, resize=False) for p in pictures]
    holes = [read_mask(Path(p), shape[1:]) for p in masks]
    for i, picture in enumerate(pictures):
        if holes:
            hole = holes[i if len(holes) > 1 else 0]
            if hole.all() or not hole.any():
                name = masks[i if len(masks) > 1 else 0]
                raise BadData(f"the mask is {'full: nothing is known' if hole.all() else 'empty: nothing to generate'} "
                              f"(white = generate)", path=name)
    batch = torch.from_numpy(np.stack([r for r in rows for _ in range(num)]))
    mask_batch = None
    if holes:
        per = [holes[i if len(holes) > 1 else 0] for i in range(len(pictures))]
        mask_batch = torch.from_numpy(np.stack([m[None] for m in per for _ in range(num)]))
    conditions = None
    if prompts:
        conditions = [prompts[i if len(prompts) > 1 else 0]
                      for i in range(len(pictures)) for _ in range(num)]
    if "progress" in _parameters(pipe.edit):
        given["progress"] = not quiet
    images = pipe.edit(batch, masks=mask_batch, conditions=conditions, seed=seed, **given)
    path = write_grid(images, len(pictures), num, out)
    for i, p in enumerate(pictures):
        prompt = f" ({prompts[i if len(prompts) > 1 else 0]})" if prompts else ""
        click.echo(f"row {i + 1}: {p}{prompt}")
    click.echo(f"{len(batch)} image(s) written to {path}")


def read_mask(path: Path, size: tuple[int, int]) -> Any:
    """The mask at ``path`` as a float32 array ``(H, W)`` of exact 0s and 1s (white = 1 =
    generate): its size must be ``size`` and every pixel black (0) or white (255) in
    greyscale; a JPEG's or a resized mask's greys are refused, not thresholded. Each
    problem is a :class:`BadData` naming the file."""
    import numpy as np
    from PIL import Image, UnidentifiedImageError

    h, w = size
    try:
        with Image.open(path) as picture:
            if picture.size != (w, h):
                raise BadData(f"the mask is {picture.size[0]}x{picture.size[1]}; the "
                              f"pictures are {w}x{h}", path=str(path))
            array = np.asarray(picture.convert("L"), dtype=np.uint8)
    except (UnidentifiedImageError, OSError) as exc:
        raise BadData(f"cannot read the mask: {exc}", path=str(path)) from None
    grey = int(((array != 0) & (array != 255)).sum())
    if grey:
        raise BadData(f"the mask is not black and white: {grey} pixels are grey (a JPEG "
                      f"or a resized mask is not binary); save it as a PNG of pure black "
                      f"(keep) and white (generate)", path=str(path))
    return (array == 255).astype(np.float32)


def read_image(path: Path, shape: tuple[int, int, int], resize: bool = True) -> Any:
    """The picture at ``path`` as a float32 array ``shape`` = ``(C, H, W)`` in ``[-1, 1]``
    (RGB for 3 channels, greyscale for 1; resized, bicubic, when its size differs, or with
    ``resize=False`` a :class:`BadData` saying the sizes); a file Pillow cannot read is a
    :class:`BadData` naming it."""
    import numpy as np
    from PIL import Image, UnidentifiedImageError

    c, h, w = shape
    if c not in (1, 3):
        raise BadConfig(f"--image: the pipeline takes {c}-channel images; only RGB (3) and "
                        f"greyscale (1) pictures can be read")
    try:
        with Image.open(path) as picture:
            if not resize and picture.size != (w, h):
                raise BadData(f"the picture is {picture.size[0]}x{picture.size[1]}; the "
                              f"run takes {w}x{h}", path=str(path))
            picture = picture.convert("RGB" if c == 3 else "L")
            if picture.size != (w, h):
                click.echo(f"{path}: resized from {picture.size[0]}x{picture.size[1]} to "
                           f"{w}x{h}", err=True)
                picture = picture.resize((w, h), Image.Resampling.BICUBIC)
            array = np.asarray(picture, dtype=np.float32) / 127.5 - 1.0
    except (UnidentifiedImageError, OSError) as exc:
        raise BadData(f"cannot read the image: {exc}", path=str(path)) from None
    return array[None] if c == 1 else array.transpose(2, 0, 1)


def check_output_file(path: Path, suffix: str) -> Path:
    """Check, before any work, that ``path`` can be written as a ``suffix`` file: it is
    not a directory, its suffix is right and its directory exists (or can be made) and
    is writable. Returns ``path``; a :class:`BadConfig` says what is wrong."""
    if path.suffix.lower() != suffix:
        raise BadConfig(f"--out {path}: the grid is written as {suffix.lstrip('.').upper()}; "
                        f"give a file name ending in {suffix}")
    if path.is_dir():
        raise BadConfig(f"--out {path} is a directory; give a file name ending in {suffix}")
    parent = path.parent
    probe = parent
    while not probe.exists() and probe.parent != probe:
        probe = probe.parent
    if not probe.is_dir():
        raise BadConfig(f"--out {path}: {probe} is a file, not a directory")
    if not os.access(probe, os.W_OK | os.X_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise BadConfig(f"--out {path}: {path if path.exists() else probe} is not writable")
    return path


def _parameters(func: Any) -> dict[str, inspect.Parameter]:
    return dict(inspect.signature(func).parameters)


def _accepts(params: dict[str, inspect.Parameter], key: str) -> bool:
    return key in params or any(p.kind is p.VAR_KEYWORD for p in params.values())


def _named(params: dict[str, inspect.Parameter]) -> list[str]:
    return [n for n, p in params.items() if p.kind is p.KEYWORD_ONLY]


def write_grid(images: Any, rows: int, cols: int, path: Path, pad: int = 2) -> Path:
    """Write ``rows × cols`` images ``(rows·cols, C, H, W)`` in ``[-1, 1]`` (a tensor or an
    array, row-major) as one PNG grid on a white background, ``pad`` pixels apart.

    The core's own writer (numpy and Pillow, imported here), so that ``gaf sample``
    needs no plugin module; it draws the same pixels as
    ``gaf.plugins.images.grid.save_grid`` (a test holds them equal).
    """
    import numpy as np
    from PIL import Image

    if hasattr(images, "detach"):  # a torch tensor, any dtype or device
        images = images.detach().float().cpu().numpy()
    array = np.asarray(images, dtype=np.float32)
    if array.ndim != 4 or array.shape[0] != rows * cols or array.shape[1] not in (1, 3, 4):
        raise BadData(f"the pipeline returned images of shape {tuple(array.shape)}; expected "
                      f"({rows * cols}, C, H, W) with C in 1, 3, 4")
    _, c, h, w = array.shape
    canvas = np.ones((c, rows * (h + pad) + pad, cols * (w + pad) + pad), np.float32)
    for i in range(rows):
        for j in range(cols):
            y, x = pad + i * (h + pad), pad + j * (w + pad)
            canvas[:, y:y + h, x:x + w] = (np.clip(array[i * cols + j], -1, 1) + 1) / 2
    pixels = np.round(canvas * 255).astype(np.uint8).transpose(1, 2, 0)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels[:, :, 0] if c == 1 else pixels).save(path)
    return path


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
