"""Data-parallel training on torch.distributed: torchrun, DDP, and the rank helpers.

``torchrun --nproc_per_node N -m gaf run …`` (or ``gaf run --nproc N``) starts N
processes with ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK`` set; :func:`current_world`
reads them and joins the process group once (gloo on CPU, nccl on CUDA, where each
process takes ``cuda:LOCAL_RANK``). A single process (no ``WORLD_SIZE`` or 1) never
touches torch.distributed.

What the shared training loop (:func:`gaf.train.train`) does with a world of N:

* every global batch of ``train.batch_size`` units is split into N equal shards,
  rank r taking the r-th (:meth:`World.shard`); the unit order is the same on every
  rank, so the N shards are exactly the single-process batch;
* the trainable modules are wrapped in ``DistributedDataParallel``
  (:class:`DDPRoutes`), which averages gradients across ranks during backward
  (``no_sync`` on all but the last gradient-accumulation micro-batch);
* losses that average over tokens normalise by the *global* token count
  (:meth:`World.sum`), so the averaged gradient equals the single-process one;
* logged metrics are averaged across ranks; a non-finite loss on any rank stops
  every rank at the same step;
* models are built with the run seed on every rank (identical initial weights and
  reference models); after setup each rank reseeds with ``seed + rank`` (dropout);
* only rank 0 writes ``metrics.jsonl``, checkpoints, exported modules, the final
  evaluation and ``summary.json``; the others wait for it.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import os
from collections.abc import Iterator, Mapping
from typing import Any

import attrs

from .errors import BadConfig

__all__ = ["World", "current_world", "DDPRoutes", "DDP_METHODS"]

#: methods of a trainable module that objectives call and that must run through DDP
DDP_METHODS = ("forward", "completion_logprobs")


@attrs.frozen
class World:
    """This process's place among the ranks of a run (``size`` 1 = not distributed)."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def shard(self, start: int, count: int) -> tuple[int, int]:
        """This rank's ``(start, count)`` of the ``count`` units from ``start``."""
        if count % self.size:
            raise BadConfig(f"train.batch_size ({count}) must be a multiple of the number of "
                            f"processes ({self.size}) so every rank gets an equal shard")
        per = count // self.size
        return start + self.rank * per, per

    def sum(self, value: Any) -> Any:
        """``value`` (a tensor or a number) summed over the ranks."""
        if not self.enabled:
            return value
        import torch
        import torch.distributed as dist

        t = value.detach().clone() if torch.is_tensor(value) else torch.tensor(float(value))
        dist.all_reduce(t)
        return t if torch.is_tensor(value) else float(t)

    def mean(self, total: Any, count: Any) -> Any:
        """This rank's share of a mean over all ranks' items: ``total · size / Σ count``.

        ``total`` is the sum over this rank's items (a tensor with gradient), ``count``
        how many there are. DDP averages gradients over the ranks, so a loss written as
        this share has exactly the gradient of ``Σ total / Σ count``, the
        single-process mean, even when ranks hold different numbers of tokens. With
        one process it is ``total / count``.
        """
        import torch

        if not self.enabled:
            return total / count.clamp_min(1) if torch.is_tensor(count) else total / max(count, 1)
        n = self.sum(count.detach().float() if torch.is_tensor(count) else float(count))
        n = n.clamp_min(1) if torch.is_tensor(n) else max(n, 1.0)
        return total * self.size / n

    def mean_metrics(self, metrics: Mapping[str, float]) -> dict[str, float]:
        """Each metric averaged over the ranks that report it."""
        if not self.enabled:
            return dict(metrics)
        sums: dict[str, float] = {}
        seen: dict[str, int] = {}
        for part in self.gather({k: float(v) for k, v in metrics.items()}):
            for k, v in part.items():
                sums[k] = sums.get(k, 0.0) + v
                seen[k] = seen.get(k, 0) + 1
        return {k: sums[k] / seen[k] for k in metrics}

    def any(self, flag: bool) -> bool:
        """True on every rank if ``flag`` is true on any rank."""
        if not self.enabled:
            return flag
        import torch
        import torch.distributed as dist

        t = torch.tensor([1.0 if flag else 0.0])
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t.item())

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every rank (picklable objects)."""
        if not self.enabled:
            return obj
        import torch.distributed as dist

        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def gather(self, obj: Any) -> list[Any]:
        """Every rank's ``obj``, in rank order, on every rank."""
        if not self.enabled:
            return [obj]
        import torch.distributed as dist

        out: list[Any] = [None] * self.size
        dist.all_gather_object(out, obj)
        return out

    def barrier(self) -> None:
        if self.enabled:
            import torch.distributed as dist

            dist.barrier()


def _leave() -> None:
    import torch.distributed as dist

    if dist.is_initialized():
        dist.destroy_process_group()


def _env_world() -> World:
    def num(name: str, default: int) -> int:
        raw = os.environ.get(name, "")
        try:
            return int(raw) if raw else default
        except ValueError:
            raise BadConfig(f"environment variable {name}={raw!r} is not an integer") from None

    size = num("WORLD_SIZE", 1)
    rank = num("RANK", 0)
    if size < 1 or not 0 <= rank < size:
        raise BadConfig(f"RANK={rank} and WORLD_SIZE={size} are inconsistent")
    return World(rank=rank, size=size, local_rank=num("LOCAL_RANK", rank))


def current_world(device: Any = None) -> World:
    """The world this process belongs to, joining the process group on first use.

    ``device`` (a ``torch.device``) picks the backend: nccl for CUDA (and this process
    moves to ``cuda:LOCAL_RANK``), gloo otherwise.
    """
    world = _env_world()
    if world.enabled:
        import torch
        import torch.distributed as dist

        if not dist.is_initialized():
            cuda = device is not None and torch.device(device).type == "cuda"
            if cuda:
                torch.cuda.set_device(world.local_rank)
            dist.init_process_group("nccl" if cuda else "gloo")
            atexit.register(_leave)
    return world


def _method_module(module: Any) -> Any:
    import torch

    class MethodCall(torch.nn.Module):
        # DDP wraps this; its forward runs ``module.<name>(...)`` (a registered child,
        # so DDP sees the parameters), with the routes switched off inside.
        def __init__(self, inner: Any):
            super().__init__()
            self.inner = inner
            self.inside = False

        def forward(self, name: str, *args: Any, **kwargs: Any) -> Any:
            self.inside = True
            try:
                return getattr(type(self.inner), name)(self.inner, *args, **kwargs)
            finally:
                self.inside = False

    return MethodCall(module)


class DDPRoutes:
    """Wrap trainable modules in ``DistributedDataParallel`` without changing objectives.

    Objectives call methods of their modules (``policy.completion_logprobs(batch)``),
    not a wrapper's ``forward``. For each module with trainable parameters this wraps a
    small module whose ``forward(name, ...)`` calls ``module.name(...)`` in DDP, and
    routes the module's :data:`DDP_METHODS` (and a module's own
    ``gaf_ddp_methods``) through it, so gradients are averaged across ranks on
    backward. :meth:`remove` restores the plain modules (for evaluation and export).
    """

    def __init__(self, modules: Mapping[str, Any], world: World, device: Any):
        from torch.nn.parallel import DistributedDataParallel as DDP

        self.wrappers: list[Any] = []
        self._patched: list[tuple[Any, str]] = []
        for module in modules.values():
            if not any(p.requires_grad for p in module.parameters()):
                continue
            holder = _method_module(module)
            ids = [device.index] if getattr(device, "type", "cpu") == "cuda" else None
            ddp = DDP(holder, device_ids=ids, forward_sync_buffers=False)
            self.wrappers.append(ddp)
            names = tuple(getattr(module, "gaf_ddp_methods", ())) + DDP_METHODS
            for name in dict.fromkeys(names):
                if callable(getattr(type(module), name, None)):
                    setattr(module, name, functools.partial(_route, module, holder, ddp, name))
                    self._patched.append((module, name))

    @contextlib.contextmanager
    def no_sync(self, skip: bool) -> Iterator[None]:
        """Inside, backward accumulates gradients locally (when ``skip``)."""
        with contextlib.ExitStack() as stack:
            if skip:
                for ddp in self.wrappers:
                    stack.enter_context(ddp.no_sync())
            yield

    def remove(self) -> None:
        for module, name in self._patched:
            module.__dict__.pop(name, None)
        self._patched.clear()


def _route(module: Any, holder: Any, ddp: Any, name: str, *args: Any, **kwargs: Any) -> Any:
    if holder.inside:  # a call from inside a routed call: run it plainly
        return getattr(type(module), name)(module, *args, **kwargs)
    return ddp(name, *args, **kwargs)
