"""The one training loop every objective shares.

:func:`train` drives an :class:`~gaf.interfaces.Objective`: seeding, optimiser and
learning-rate schedule, gradient accumulation and clipping, bf16 autocast on CUDA,
``metrics.jsonl`` and a progress bar, atomic safetensors checkpoints and exact
resume, the training hooks, the final evaluation, plots and ``summary.json``.

A non-finite loss or gradient norm stops the run with :class:`~gaf.errors.NonFiniteLoss`
before the optimiser step, so the newest checkpoint on disk stays the last good one.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import platform
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from . import checkpoint, seeding
from .atomic import atomic_write_text
from .components import save_component
from .errors import GafError, Interrupted, NonFiniteLoss
from .interfaces import Objective
from .interfaces.training import objective_member
from .plots import plot_metrics, read_metrics
from .runs import RunContext
from .trainconfig import TrainConfig

__all__ = ["TrainConfig", "train", "make_optimizer", "lr_factor", "resolve_param_groups"]

#: The keys an entry of ``Objective.param_groups()`` may hold.
GROUP_KEYS = ("params", "lr", "betas", "weight_decay")


def lr_factor(cfg: TrainConfig, step: int) -> float:
    """Multiplier of ``cfg.lr`` after ``step`` scheduler steps (warm-up, then decay).

    With several parameter groups (``Objective.param_groups()``) it multiplies each
    group's own peak learning rate."""
    if cfg.warmup_steps and step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    if cfg.schedule == "constant":
        return 1.0
    span = max(1, cfg.steps - cfg.warmup_steps)
    progress = min(1.0, (step - cfg.warmup_steps) / span)
    if cfg.schedule == "linear":
        return 1.0 - progress
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def make_optimizer(cfg: TrainConfig, params: Iterable[Any]) -> Any:
    """The optimiser named by ``cfg.optimizer``.

    ``params`` is a list of tensors (one group with ``cfg``'s settings) or of
    parameter-group dicts as :func:`resolve_param_groups` returns them (each group's
    ``lr``, ``betas`` and ``weight_decay`` override ``cfg``'s)."""
    import torch

    params = list(params)
    tensors = [p for g in params for p in g["params"]] if params and isinstance(
        params[0], Mapping) else params
    # The fused Adam kernels (CPU and CUDA) beat the per-tensor loop (same update).
    fused = bool(tensors) and all(p.is_floating_point() and p.device.type in ("cpu", "cuda")
                                  for p in tensors)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay,
                                 fused=fused)
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay,
                                fused=fused)
    if cfg.optimizer == "rmsprop":
        return torch.optim.RMSprop(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.SGD(params, lr=cfg.lr, momentum=0.9, weight_decay=cfg.weight_decay)


def resolve_param_groups(cfg: TrainConfig, groups: Iterable[Any], modules: dict[str, Any],
                         translate: Any = None) -> list[dict[str, Any]]:
    """Check ``Objective.param_groups()``'s answer and make it torch parameter groups.

    Each entry of ``groups`` is a dict with ``"params"`` (a name of ``modules`` or an
    iterable of their parameters) and optionally ``"lr"``, ``"betas"`` and
    ``"weight_decay"``; an unspecified setting takes ``cfg``'s. Every trainable
    parameter of ``modules`` must be in exactly one group: a parameter in two groups,
    a trainable one in none, a parameter that is not a trainable one of ``modules``,
    an empty group, an unknown key or a bad value is a :class:`~gaf.errors.BadConfig`
    naming it (parameters as ``module.parameter``). ``translate(module, name, param)``
    maps each parameter to the tensor the optimiser steps (an FSDP shard); default:
    the parameter itself. Groups keep the order given, parameters the order of the
    entry."""
    from .errors import BadConfig, did_you_mean

    names: dict[int, str] = {}  # id of each trainable parameter -> "module.parameter"
    where: dict[int, tuple[str, str, Any]] = {}
    for mname, mod in modules.items():
        for pname, p in mod.named_parameters():
            if p.requires_grad and id(p) not in names:
                names[id(p)] = f"{mname}.{pname}"
                where[id(p)] = (mname, pname, p)
    translate = translate or (lambda mname, pname, p: p)
    owner: dict[int, int] = {}
    out: list[dict[str, Any]] = []
    for i, group in enumerate(groups):
        what = f"param_groups()[{i}]"
        if not isinstance(group, Mapping):
            raise BadConfig(f"{what} must be a dict with 'params', got {type(group).__name__}")
        for key in group:
            if key not in GROUP_KEYS:
                raise BadConfig(f"{what}: unknown key {key!r} (known: {', '.join(GROUP_KEYS)})"
                                f"{did_you_mean(str(key), GROUP_KEYS)}")
        if "params" not in group:
            raise BadConfig(f"{what} has no 'params' (a module name or a list of parameters)")
        spec = group["params"]
        if isinstance(spec, str):
            if spec not in modules:
                raise BadConfig(f"{what}: 'params' names no module {spec!r} (modules: "
                                f"{', '.join(modules)}){did_you_mean(spec, modules)}")
            members = [p for p in modules[spec].parameters() if p.requires_grad]
        else:
            members = list(spec)
        if not members:
            raise BadConfig(f"{what} has no trainable parameters")
        torch_group: dict[str, Any] = {"params": []}
        for p in members:
            if id(p) not in names:
                shape = tuple(getattr(p, "shape", ()))
                raise BadConfig(f"{what} holds a tensor of shape {shape} that is not a "
                                f"trainable parameter of the objective's modules "
                                f"({', '.join(modules)})")
            if id(p) in owner:
                raise BadConfig(f"parameter {names[id(p)]} is in two parameter groups "
                                f"(param_groups()[{owner[id(p)]}] and [{i}])")
            owner[id(p)] = i
            torch_group["params"].append(translate(*where[id(p)]))
        if "lr" in group:
            lr = group["lr"]
            if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not lr > 0:
                raise BadConfig(f"{what}: 'lr' must be a number > 0, got {lr!r}")
            torch_group["lr"] = float(lr)
        if "betas" in group:
            betas = group["betas"]
            if cfg.optimizer not in ("adam", "adamw"):
                raise BadConfig(f"{what} sets 'betas' but train.optimizer = "
                                f"{cfg.optimizer!r} has none (use adam or adamw)")
            try:
                b1, b2 = (float(b) for b in betas)
            except (TypeError, ValueError):
                raise BadConfig(f"{what}: 'betas' must be two numbers, got {betas!r}") from None
            if not (0 <= b1 < 1 and 0 <= b2 < 1):
                raise BadConfig(f"{what}: 'betas' must lie in [0, 1), got {betas!r}")
            torch_group["betas"] = (b1, b2)
        if "weight_decay" in group:
            wd = group["weight_decay"]
            if isinstance(wd, bool) or not isinstance(wd, (int, float)) or not wd >= 0:
                raise BadConfig(f"{what}: 'weight_decay' must be a number >= 0, got {wd!r}")
            torch_group["weight_decay"] = float(wd)
        out.append(torch_group)
    missing = [n for pid, n in names.items() if pid not in owner]
    if missing:
        raise BadConfig(f"trainable parameter {missing[0]} is in no parameter group"
                        + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else "")
                        + ": Objective.param_groups() must cover every trainable parameter "
                          "of modules() (freeze one with requires_grad_(False))")
    return out


def _trainable(modules: dict[str, Any]) -> list[Any]:
    seen: set[int] = set()
    out = []
    for mod in modules.values():
        for p in mod.parameters():
            if p.requires_grad and id(p) not in seen:
                seen.add(id(p))
                out.append(p)
    return out


def train(objective: Objective, ctx: RunContext, *, resume: bool = False,
          on_start: Callable[[], None] | None = None) -> dict[str, Any]:
    """Train ``objective`` in ``ctx``'s run directory; returns the summary (also written
    to ``summary.json``).

    The phases, in order: :func:`_set_up` (seeds, ``objective.setup``, modules,
    optimiser and schedule), :func:`_resume` (with ``resume``: the newest complete
    checkpoint's optimiser, schedule, RNG and objective state; the learning rate,
    betas and weight decay of the run's config win over the saved ones), ``on_start``
    (rank 0, once everything is set up and loaded: :func:`gaf.launch.execute` writes
    ``config.toml`` and points ``runs/latest`` there), :func:`_run_steps` (the step
    loop, with :func:`_save_checkpoint`, the non-finite stop and a checkpoint on
    Ctrl-C or SIGTERM) and :func:`_finish` (export, evaluation, plots and
    ``summary.json``)."""
    run = _set_up(objective, ctx, resume)
    if resume:
        _resume(run)
    run.last_good = checkpoint.latest_checkpoint(run.ckpt_dir)
    if on_start is not None and ctx.world.is_main:
        on_start()
    _run_steps(run)
    return _finish(run)


@dataclasses.dataclass(eq=False)
class _Training:
    """What the phases of one :func:`train` call share."""

    objective: Objective
    ctx: RunContext
    modules: dict[str, Any]
    params: list[Any]
    optimizer: Any
    scheduler: Any
    parallel: Any  # gaf.distributed routes when the world has several ranks, else None
    unit: str  # what a batch counts ("examples", "pairs" …), for the throughput keys
    t_start: float
    setup_s: float
    resume_from: Path | None = None  # the checkpoint to resume from, if any
    start: int = 0  # the last step already done
    last_good: Any = None  # the newest checkpoint on disk
    record: dict[str, Any] = dataclasses.field(default_factory=dict)  # the last step's metrics
    train_time: float = 0.0

    @property
    def cfg(self) -> TrainConfig:
        return self.ctx.spec.train

    @property
    def ckpt_dir(self) -> Path:
        return self.ctx.run_dir / "checkpoints"

    @property
    def metrics_path(self) -> Path:
        return self.ctx.run_dir / "metrics.jsonl"


def _set_up(objective: Objective, ctx: RunContext, resume: bool) -> _Training:
    """Seed, set the objective up, load resumed weights, build optimiser and schedule."""
    import torch

    cfg = ctx.spec.train
    world = ctx.world
    world.shard(0, cfg.batch_size)  # a batch that does not split evenly fails here
    t_start = time.perf_counter()
    torch.manual_seed(ctx.spec.seed)  # the same on every rank: identical models
    objective.setup(ctx)
    if world.enabled:
        torch.manual_seed(seeding.torch_seed(ctx.spec.seed, "rank-global-rng", world.rank))
    setup_s = time.perf_counter() - t_start
    modules = dict(objective.modules())
    unit = objective_member(objective, "unit")
    latest, note = (checkpoint.resume_point(ctx.run_dir / "checkpoints") if resume
                    else (None, ""))
    if note:
        ctx.log(f"[yellow]{note}[/yellow]")
    if latest is not None:  # weights first: a sharded model is built from them
        checkpoint.load_module_weights(latest, modules)
    for mod in modules.values():
        mod.train()  # (before wrapping: an FSDP shard copy keeps the mode)
    parallel = None
    if world.enabled:
        from .distributed import make_parallel

        parallel = make_parallel(cfg.parallel, modules, world, ctx.device)
    params = parallel.params if parallel is not None else _trainable(modules)
    groups = objective_member(objective, "param_groups")
    optimizer = make_optimizer(cfg, params if groups is None else resolve_param_groups(
        cfg, groups(), modules, _shard_of(parallel)))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(cfg, s))
    return _Training(objective, ctx, modules, params, optimizer, scheduler, parallel, unit,
                     t_start, setup_s, resume_from=latest)


def _shard_of(parallel: Any) -> Any:
    """``translate`` for :func:`resolve_param_groups`: FSDP steps a sharded copy of each
    parameter (found by its name), DDP and one process the parameter itself."""
    fqns = getattr(parallel, "fqns", None)
    if fqns is None:
        return None
    by_name = dict(zip(fqns, parallel.params))
    return lambda mname, pname, p: by_name[f"{mname}.inner.{pname}"]


def _resume(run: _Training) -> None:
    """Restore optimiser, schedule, RNG and objective state from the checkpoint (if there
    is one) and drop the metrics logged after it."""
    ctx, world, latest = run.ctx, run.ctx.world, run.resume_from
    if latest is not None:
        configured = [{k: g[k] for k in ("initial_lr", "betas", "weight_decay") if k in g}
                      for g in run.optimizer.param_groups]
        opt_state = checkpoint.read_optimizer_state(latest)
        if run.parallel is not None:
            run.parallel.load_optimizer(run.optimizer, opt_state)
        else:
            run.optimizer.load_state_dict(opt_state)
            checkpoint.match_state_layout(run.optimizer)
        state = checkpoint.load_schedule_and_rng(latest, run.scheduler, world.rank)
        run.start = state["step"]
        _apply_configured(run, configured)
        saved = state.get("extra", {}).get("objective")
        load_state = objective_member(run.objective, "load_training_state")
        if saved is not None and load_state is not None:
            load_state(saved)
        ctx.log(f"resuming from {latest} (step {run.start})")
    world.barrier()  # every rank has read the checkpoint before rank 0 edits the log
    if world.is_main:
        _truncate_metrics(run.metrics_path, run.start)


def _apply_configured(run: _Training, configured: list[dict[str, Any]]) -> None:
    """Give the restored optimiser the peak learning rate, betas and weight decay of
    the run's config (``--resume --set train.lr=…``), and the schedule's value at the
    restored step. Unchanged settings give back exactly the saved values."""
    sched = run.scheduler
    for i, (group, want) in enumerate(zip(run.optimizer.param_groups, configured)):
        group.update(want)
        sched.base_lrs[i] = want["initial_lr"]
        group["lr"] = want["initial_lr"] * lr_factor(run.cfg, sched.last_epoch)
    sched._last_lr = [g["lr"] for g in run.optimizer.param_groups]


def _run_steps(run: _Training) -> None:
    """Steps ``start + 1 .. cfg.steps``: hooks, ``metrics.jsonl``, progress, checkpoints.

    A non-finite loss or gradient norm writes a failed ``summary.json`` (naming the
    last good checkpoint) and propagates."""
    ctx, cfg, world, parallel = run.ctx, run.cfg, run.ctx.world, run.parallel
    ctx.hook.gaf_train_start(ctx=ctx)
    progress = _progress(ctx, cfg.steps, run.start) if world.is_main else None
    try:
        with contextlib.ExitStack() as files, _StopRequest() as stop:
            log = (files.enter_context(run.metrics_path.open("a", encoding="utf-8"))
                   if world.is_main else None)
            for step in range(run.start + 1, cfg.steps + 1):
                t0 = time.perf_counter()
                record = _step(run.objective, ctx, run.optimizer, run.params, step,
                               run.last_good, parallel,
                               check_sync=parallel is not None and step == run.start + 1)
                run.record = record
                run.scheduler.step()
                dt = time.perf_counter() - t0
                run.train_time += dt
                record[f"{run.unit}_per_s"] = round(cfg.batch_size * cfg.grad_accum / dt, 2)
                record["elapsed_s"] = round(time.perf_counter() - run.t_start, 3)
                ctx.hook.gaf_step_end(ctx=ctx, step=step, metrics=record)
                if log is not None and (step % cfg.log_every == 0 or step == cfg.steps):
                    log.write(json.dumps(record) + "\n")
                    log.flush()
                saved = step == cfg.steps or bool(cfg.save_every and step % cfg.save_every == 0)
                if saved:
                    _save_checkpoint(run, step)
                if progress is not None:
                    progress.advance(record)
                if step < cfg.steps and (world.any(stop.requested) if world.enabled
                                         else stop.requested):
                    if not saved:
                        _save_checkpoint(run, step)
                    raise Interrupted(f"interrupted after step {step} of {cfg.steps}; "
                                      f"checkpoint step-{step:08d} saved")
    except NonFiniteLoss as exc:
        if world.is_main:
            _write_summary(ctx, {"status": "failed", "error": str(exc),
                                 "last_checkpoint": str(run.last_good) if run.last_good else None})
        raise
    finally:
        if progress is not None:
            progress.close()
        if parallel is not None:
            parallel.remove()


class _StopRequest:
    """Ctrl-C or SIGTERM during the step loop asks the loop to stop after the current
    step, with a checkpoint of it, so that an interrupted run can always be resumed
    (a second Ctrl-C stops at once). Outside the main thread (signals cannot be
    caught there) it does nothing and a signal interrupts as usual."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> _StopRequest:
        import signal

        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                if signal.getsignal(sig) is signal.SIG_IGN:
                    continue  # e.g. a background job's SIGINT: it stays ignored
                self._previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread
                break
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def __exit__(self, *exc: Any) -> None:
        import signal

        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def _save_checkpoint(run: _Training, step: int) -> None:
    """Checkpoint ``step`` (every rank gathers; rank 0 writes) and call the hook."""
    ctx, world, parallel = run.ctx, run.ctx.world, run.parallel
    rng = world.gather(_rng_state())
    weights, opt_state = (parallel.gather(run.optimizer) if parallel is not None
                          else (None, None))
    state = objective_member(run.objective, "training_state")
    extra = {"objective": state()} if state is not None else None
    if world.is_main:
        run.last_good = checkpoint.save_training_state(
            run.ckpt_dir, step, run.modules, run.optimizer, run.scheduler, extra=extra,
            keep=run.cfg.keep_checkpoints, rank_rng=rng, weights=weights,
            optimizer_state=opt_state)
        ctx.hook.gaf_checkpoint_saved(ctx=ctx, step=step, path=run.last_good)


def _finish(run: _Training) -> dict[str, Any]:
    """Export the registry-built modules, evaluate, plot, write ``summary.json``; every
    rank returns rank 0's summary."""
    import torch

    ctx, cfg, world = run.ctx, run.cfg, run.ctx.world
    for mod in run.modules.values():
        mod.eval()
    eval_metrics: dict[str, Any] = {}
    t_eval = time.perf_counter()
    if world.is_main:  # the other ranks wait at the barrier below
        for name, mod in run.modules.items():  # registry-built modules become components
            if getattr(mod, "gaf_name", None):
                save_component(mod, ctx.run_dir / name, kind=getattr(mod, "gaf_kind", name))
        with torch.no_grad():
            eval_metrics = run.objective.evaluate(ctx) or {}
        ctx.hook.gaf_eval_end(ctx=ctx, step=cfg.steps, metrics=eval_metrics)
    eval_s = time.perf_counter() - t_eval
    if not world.is_main:
        world.barrier()
        return world.broadcast(None)

    summary = _summary(run, eval_metrics, eval_s)
    _write_summary(ctx, summary)
    ctx.hook.gaf_train_end(ctx=ctx, summary=summary)
    world.barrier()
    return world.broadcast(summary)


def _summary(run: _Training, eval_metrics: dict[str, Any], eval_s: float) -> dict[str, Any]:
    """Plot the training curves and put the summary together (rank 0)."""
    ctx, cfg, world = run.ctx, run.cfg, run.ctx.world
    records = read_metrics(run.metrics_path)
    plot_metrics(records, ctx.run_dir / "plots" / "training.png",
                 keys=objective_member(run.objective, "plot_keys"),
                 title=f"{ctx.spec.objective} — {ctx.run_dir.name}")
    train_time = run.train_time
    steps_done = cfg.steps - run.start
    examples = steps_done * cfg.batch_size * cfg.grad_accum
    summary = {
        "status": "completed",
        "objective": ctx.spec.objective,
        "steps": cfg.steps,
        "final": {k: v for k, v in run.record.items() if k != "elapsed_s"},
        **eval_metrics,
        "setup_s": round(run.setup_s, 3),
        "train_s": round(train_time, 3),
        "eval_s": round(eval_s, 3),
        "wall_s": round(time.perf_counter() - run.t_start, 3),
        "steps_per_s": round(steps_done / train_time, 4) if train_time else None,
        "examples_per_s": round(examples / train_time, 2) if train_time else None,
        f"train_{run.unit}_per_s": round(examples / train_time, 2) if train_time else None,
        "parameters": sum(p.numel() for p in run.params),
        "peak_rss_mb": _peak_rss_mb(),
        "device": str(ctx.device),
        "versions": _versions(),
    }
    summary["world_size"] = world.size
    return summary


def _peak_rss_mb() -> float | None:
    """This process's peak resident memory in MiB so far (``getrusage``; the run and
    anything the process ran before it, an earlier stage included); ``None`` where the
    ``resource`` module is missing (Windows)."""
    try:
        import resource
    except ImportError:
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(peak / (2 ** 20 if sys.platform == "darwin" else 2 ** 10), 1)  # bytes / KiB


def _rng_state() -> Any:
    import torch

    return torch.get_rng_state()


def _step(objective: Objective, ctx: RunContext, optimizer: Any, params: list[Any], step: int,
          last_good: Any, parallel: Any = None, check_sync: bool = False) -> dict[str, Any]:
    import torch

    cfg = ctx.spec.train
    world = ctx.world
    optimizer.zero_grad(set_to_none=True)
    totals: dict[str, float] = {}
    for micro in range(cfg.grad_accum):
        batch = objective.train_batch((step - 1) * cfg.grad_accum + micro)
        last = micro == cfg.grad_accum - 1
        with contextlib.ExitStack() as stack:
            if parallel is not None:
                stack.enter_context(parallel.no_sync(skip=not last))
            with ctx.autocast():
                loss, metrics = objective.loss(batch)
            bad = not bool(torch.isfinite(loss.detach()).all())
            if world.any(bad):  # every rank stops at the same step
                value = loss.item() if bad else float("nan")
                raise NonFiniteLoss(_nonfinite("loss", value, step, last_good))
            (loss / cfg.grad_accum).backward()
        for key, value in {"loss": loss.item(), **metrics}.items():
            totals[key] = totals.get(key, 0.0) + float(value) / cfg.grad_accum
    totals = world.mean_metrics(totals)
    max_norm = cfg.max_grad_norm if cfg.max_grad_norm > 0 else math.inf
    norm = torch.nn.utils.clip_grad_norm_(params, max_norm)
    grad_norm = float(norm.full_tensor() if hasattr(norm, "full_tensor") else norm)
    if not math.isfinite(grad_norm):
        raise NonFiniteLoss(_nonfinite("gradient norm", grad_norm, step, last_good))
    if check_sync:  # once: averaged gradients have the same norm on every rank
        norms = world.gather(grad_norm)
        if max(norms) - min(norms) > 1e-4 * max(1.0, max(norms)):
            raise GafError(
                f"gradient norms differ across ranks after step {step} ({norms}): the "
                f"objective calls a method of a trained module that is not routed through "
                f"DDP, so gradients were not averaged; add its name to the module's "
                f"gaf_ddp_methods (docs/distributed.md)")
    optimizer.step()
    after = objective_member(objective, "after_step")
    if after is not None:  # e.g. an EMA update of the weights just stepped
        after(step)
    return {"step": step, **totals, "lr": optimizer.param_groups[0]["lr"], "grad_norm": grad_norm}


def _nonfinite(what: str, value: float, step: int, last_good: Any) -> str:
    kept = f"the last good checkpoint is {last_good}" if last_good else "no checkpoint was written"
    return f"non-finite {what} ({value}) at step {step}; the run stopped and {kept}"


def _truncate_metrics(path: Any, step: int) -> None:
    """Drop records logged after the checkpoint we resume from (they will be redone)."""
    if not path.is_file():
        return
    keep = [r for r in read_metrics(path) if r.get("step", 0) <= step]
    atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in keep))


def _write_summary(ctx: RunContext, summary: dict[str, Any]) -> None:
    atomic_write_text(ctx.run_dir / "summary.json",
                      json.dumps(summary, indent=2, default=str) + "\n")


def _versions() -> dict[str, str]:
    import torch

    from ._version import __version__

    return {"gaf": __version__, "torch": torch.__version__, "python": platform.python_version()}


class _Progress:
    def __init__(self, total: int, start: int, console: Any):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, \
            TimeElapsedColumn, TimeRemainingColumn

        self._progress = Progress(TextColumn("[bold]train"), BarColumn(), MofNCompleteColumn(),
                                  TimeElapsedColumn(), TimeRemainingColumn(),
                                  TextColumn("{task.fields[info]}"), console=console,
                                  transient=False)
        self._task = self._progress.add_task("train", total=total, completed=start, info="")
        self._progress.start()

    def advance(self, record: dict[str, Any]) -> None:
        self._progress.update(self._task, advance=1, info=f"loss {record.get('loss', 0.0):.4f}")

    def close(self) -> None:
        self._progress.stop()


def _progress(ctx: RunContext, total: int, start: int) -> _Progress | None:
    if not ctx.spec.progress or ctx.console is None:
        return None
    return _Progress(total, start, ctx.console)
