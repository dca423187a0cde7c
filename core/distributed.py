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

import abc
import atexit
import contextlib
import copy
import functools
import os
from collections.abc import Iterator, Mapping
from typing import Any

import attrs

from .errors import BadConfig

__all__ = ["World", "env_world", "current_world", "Parallel", "DDPRoutes", "FSDPRoutes", "make_parallel",
           "DDP_METHODS"]

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

        t = (value.detach().clone() if torch.is_tensor(value)
             else torch.tensor(float(value), device=_comm_device()))
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

        t = torch.tensor([1.0 if flag else 0.0], device=_comm_device())
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


def _comm_device() -> Any:
    """Where a collective's tensors must live: the current GPU for nccl, else CPU."""
    import torch
    import torch.distributed as dist

    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def _leave() -> None:
    """At exit: wait for every rank, then leave the group together, and free it.

    The group must be *freed*, not only deregistered, before the interpreter starts
    finalizing: gloo's worker threads are joined only by the group's destructor, and
    a process that exits with them alive, or frees the group during finalization,
    can abort in C++ ("terminate called without an active exception", SIGABRT), so
    a finished run exits non-zero. ``destroy_process_group`` drops torch's registry
    entries, but FSDP's device meshes keep the group alive from DTensor's caches, and
    reference cycles hold the FSDP state; both are released here first (the test
    ``test_distributed.py`` checks that the group is freed, for DDP and FSDP).
    """
    import datetime
    import gc

    import torch.distributed as dist

    if not dist.is_initialized():
        return
    with contextlib.suppress(Exception):  # a peer that died is torchrun's business
        if dist.get_backend() == "gloo":
            dist.monitored_barrier(timeout=datetime.timedelta(seconds=60))
        else:
            dist.barrier()
    _drop_cached_meshes()
    gc.collect()
    dist.destroy_process_group()
    gc.collect()


def _drop_cached_meshes() -> None:
    """Make the device meshes FSDP used let go of their process groups.

    DTensor's caches (sharding propagation, redistribution plans, mesh topology) keep
    those meshes alive for the life of the process, and each mesh holds its groups in
    ``_pg_registry``. Called after the last collective, when no mesh is used again.
    """
    import gc
    import sys

    if "torch.distributed.device_mesh" not in sys.modules:
        return  # no mesh was ever made (DDP, or one process)
    from torch.distributed.device_mesh import DeviceMesh

    for obj in gc.get_objects():
        if isinstance(obj, DeviceMesh):
            registry = getattr(obj, "_pg_registry", None)
            if isinstance(registry, dict):
                registry.clear()


def env_world() -> World:
    """The world that torchrun's ``RANK``/``WORLD_SIZE``/``LOCAL_RANK`` describe, without
    joining the process group (no torch import)."""

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
    world = env_world()
    if world.enabled:
        import torch
        import torch.distributed as dist

        if not dist.is_initialized():
            cuda = device is not None and torch.device(device).type == "cuda"
            if cuda:
                torch.cuda.set_device(world.local_rank)
            # imported before the group exists, so that its functions' default
            # arguments hold None, not the group (which would then outlive _leave)
            import torch.distributed.nn.functional  # noqa: F401

            dist.init_process_group("nccl" if cuda else "gloo")
            atexit.register(_leave)
    return world


def _method_module(module: Any) -> Any:
    import torch

    class MethodCall(torch.nn.Module):
        # The wrapper's forward runs ``module.<name>(...)`` (a registered child, so
        # DDP/FSDP see its parameters), with the routes switched off inside.
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


def _route(module: Any, holder: Any, wrapper: Any, name: str, *args: Any, **kwargs: Any) -> Any:
    if holder.inside:  # a call from inside a routed call: run it plainly
        return getattr(type(module), name)(module, *args, **kwargs)
    return wrapper(name, *args, **kwargs)


def _trainable(module: Any) -> bool:
    return any(p.requires_grad for p in module.parameters())


class Parallel(abc.ABC):
    """How the trainable modules of a run are shared by the ranks (the base does the
    bookkeeping of routed methods; :class:`DDPRoutes` and :class:`FSDPRoutes` wrap).

    Objectives call methods of their modules (``policy.completion_logprobs(batch)``),
    not a wrapper's ``forward``. Each trainable module's :data:`DDP_METHODS` (and a
    module's own ``gaf_ddp_methods``) are routed through a small wrapper module whose
    ``forward(name, ...)`` calls the method, so the wrapper's hooks run: DDP averages
    gradients on backward, FSDP gathers shards for the call. :meth:`remove` restores
    the plain modules (for evaluation and export).
    """

    params: list[Any]

    def __init__(self) -> None:
        self._patched: list[tuple[Any, str]] = []

    def _install(self, module: Any, holder: Any, wrapper: Any) -> None:
        names = tuple(getattr(module, "gaf_ddp_methods", ())) + DDP_METHODS
        for name in dict.fromkeys(names):
            if callable(getattr(type(module), name, None)):
                setattr(module, name, functools.partial(_route, module, holder, wrapper, name))
                self._patched.append((module, name))

    def _uninstall(self) -> None:
        for module, name in self._patched:
            module.__dict__.pop(name, None)
        self._patched.clear()

    @abc.abstractmethod
    def no_sync(self, skip: bool) -> contextlib.AbstractContextManager[None]:
        """Inside, backward keeps gradients local (when ``skip``: an accumulation
        micro-batch that is not the last)."""

    def gather(self, optimizer: Any) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
        """``(weights, optimizer_state)`` for a checkpoint (a collective: every rank
        calls it); ``(None, None)`` means the plain modules and optimizer hold them."""
        return None, None

    def load_optimizer(self, optimizer: Any, state: dict[str, Any]) -> None:
        """Load a checkpoint's ``optimizer.state_dict()`` (parameters numbered in module
        order) on every rank."""
        optimizer.load_state_dict(state)

    def remove(self) -> None:
        self._uninstall()


class DDPRoutes(Parallel):
    """``DistributedDataParallel``: every rank holds the whole model and optimizer;
    gradients are averaged across ranks (bucketed all-reduce) during backward."""

    def __init__(self, modules: Mapping[str, Any], world: World, device: Any):
        super().__init__()
        from torch.nn.parallel import DistributedDataParallel as DDP

        self.wrappers: list[Any] = []
        self.params = []
        for module in modules.values():
            if not _trainable(module):
                continue
            holder = _method_module(module)
            ids = [device.index] if getattr(device, "type", "cpu") == "cuda" else None
            ddp = DDP(holder, device_ids=ids, forward_sync_buffers=False)
            self.wrappers.append(ddp)
            self.params += [p for p in module.parameters() if p.requires_grad]
            self._install(module, holder, ddp)

    @contextlib.contextmanager
    def no_sync(self, skip: bool) -> Iterator[None]:
        """Inside, backward accumulates gradients locally (when ``skip``)."""
        with contextlib.ExitStack() as stack:
            if skip:
                for ddp in self.wrappers:
                    stack.enter_context(ddp.no_sync())
            yield


class FSDPRoutes(Parallel):
    """FSDP (``torch.distributed.fsdp.fully_shard``): parameters, gradients and
    optimizer state are split across the ranks and gathered layer by layer for each
    call. Every ``nn.ModuleList`` entry (a transformer block) is its own shard unit,
    the rest of the module one more.

    The shards live in a copy of each trainable module; the original's parameter
    storage is released while training (its methods are routed to the copy) and the
    gathered weights are put back by :meth:`remove`. Checkpoints hold the gathered,
    unsharded tensors, so they load in any number of processes.
    """

    def __init__(self, modules: Mapping[str, Any], world: World, device: Any):
        super().__init__()
        import warnings

        import torch
        from torch.distributed.fsdp import fully_shard

        # GPT-2 blocks also return their (key, value) views for the KV cache; nothing
        # modifies them in place, which is what this warning is about.
        warnings.filterwarnings("ignore", message="FSDP2-wrapped module .* returned a view")
        self.container = torch.nn.ModuleDict()
        self.originals: dict[str, Any] = {}
        self.fqns: list[str] = []
        self.params = []
        for name, module in modules.items():
            if not _trainable(module):
                continue
            twin = copy.deepcopy(module)
            holder = _method_module(twin)
            for sub in list(twin.modules()):
                if isinstance(sub, torch.nn.ModuleList):
                    for block in sub:
                        if _trainable(block):
                            fully_shard(block)
            fully_shard(holder)
            self.container[name] = holder
            self.originals[name] = module
            for pname, p in twin.named_parameters():
                if p.requires_grad:
                    self.fqns.append(f"{name}.inner.{pname}")
                    self.params.append(p)
            self._install(module, holder, holder)
            with torch.no_grad():  # the copy holds the values now: free the original's
                for p in module.parameters():
                    p.data = torch.empty(0, dtype=p.dtype, device=p.device)

    @contextlib.contextmanager
    def no_sync(self, skip: bool) -> Iterator[None]:
        for holder in self.container.values():
            holder.set_requires_gradient_sync(not skip)
        try:
            yield
        finally:
            for holder in self.container.values():
                holder.set_requires_gradient_sync(True)

    def _full_weights(self, everywhere: bool) -> dict[str, dict[str, Any]]:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, \
            get_model_state_dict

        full = get_model_state_dict(self.container, options=StateDictOptions(
            full_state_dict=True, cpu_offload=not everywhere))
        out: dict[str, dict[str, Any]] = {}
        for name in self.originals:
            prefix = f"{name}.inner."
            out[name] = {k[len(prefix):]: v for k, v in full.items() if k.startswith(prefix)}
        return out

    def gather(self, optimizer: Any) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, \
            get_optimizer_state_dict

        weights = self._full_weights(everywhere=False)
        osd = get_optimizer_state_dict(self.container, optimizer, options=StateDictOptions(
            full_state_dict=True, cpu_offload=True))
        index = {fqn: i for i, fqn in enumerate(self.fqns)}
        state = {index[k]: v for k, v in osd.get("state", {}).items() if k in index}
        groups = [{**g, "params": [index[k] for k in g["params"]]}
                  for g in osd.get("param_groups", [])]
        return weights, {"state": state, "param_groups": groups}

    def load_optimizer(self, optimizer: Any, state: dict[str, Any]) -> None:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, \
            set_optimizer_state_dict

        named = {"state": {self.fqns[int(i)]: v for i, v in state["state"].items()},
                 "param_groups": [{**g, "params": [self.fqns[int(i)] for i in g["params"]]}
                                  for g in state["param_groups"]]}
        set_optimizer_state_dict(self.container, optimizer, optim_state_dict=named,
                                 options=StateDictOptions(full_state_dict=True))

    def remove(self) -> None:
        import torch

        full = self._full_weights(everywhere=True)
        for name, module in self.originals.items():
            with torch.no_grad():
                for pname, p in module.named_parameters():
                    p.data = full[name][pname].to(device=p.device, dtype=p.dtype)
        self._uninstall()


def make_parallel(strategy: str, modules: Mapping[str, Any], world: World,
                  device: Any) -> Parallel:
    """The :class:`Parallel` for ``train.parallel`` (``"ddp"`` or ``"fsdp"``)."""
    if strategy == "fsdp":
        return FSDPRoutes(modules, world, device)
    return DDPRoutes(modules, world, device)
