"""Run a test script as N processes under ``torchrun`` (gloo on the CPU), or as one plain
process when N is 1: the launcher every distributed test shares.

The environment drops any ``RANK``/``WORLD_SIZE`` of the calling process and sets
``MKL_CBWR=AUTO,STRICT``: bit-identical comparisons across processes need MKL's
conditional numerical reproducibility; without it, sgemm may take a different code path
(and round differently) when a resumed process's buffers are aligned differently. Seen
once in CI: a resumed run differed from the uninterrupted one at round-off level.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path


def run_script(script: Path, args: Sequence[str], nproc: int = 1, *,
               env: Mapping[str, str] | None = None, log: Path | None = None,
               timeout: int = 300) -> subprocess.CompletedProcess:
    """``python script *args`` as ``nproc`` torchrun ranks; stderr is also written to
    ``log`` (kept by pytest for a post-mortem) when given."""
    prefix = ([sys.executable, "-m", "torch.distributed.run", "--standalone",
               f"--nproc_per_node={nproc}"] if nproc > 1 else [sys.executable])
    clean = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE")}
    clean["MKL_CBWR"] = "AUTO,STRICT"
    out = subprocess.run([*prefix, str(script), *args], capture_output=True, text=True,
                         timeout=timeout, env={**clean, **(env or {})})
    if log is not None:
        log.write_text(out.stderr)
    return out


#: the script of an objective's "two ranks = one merged process" test: it trains the
#: objective named by ``OBJECTIVE`` with the ``--set`` items of ``argv[2]`` into
#: ``argv[1]/run`` and saves every module's weights as ``argv[1]/rank{R}.safetensors``;
#: with ``argv[3] == "merge"`` one process trains on what ranks 0 and 1 of 2 would draw,
#: put together (tensors concatenated, lists joined)
_MERGED_RUN = textwrap.dedent('''
    import json, sys
    from pathlib import Path
    import torch
    from safetensors.torch import save_file
    from gaf.distributed import World
    from gaf.registry import REGISTRY
    from gaf.runs import RunContext
    from gaf.spec import resolve
    from gaf.train import train

    torch.set_num_threads(1)
    out, sets, merge = Path(sys.argv[1]), json.loads(sys.argv[2]), sys.argv[3] == "merge"
    spec = resolve(objective=OBJECTIVE, sets=sets)
    obj = REGISTRY.get("objective", OBJECTIVE)(spec.objective_config)
    obj.evaluate = lambda ctx: {}
    if merge:  # one process trains on what ranks 0 and 1 of 2 would draw, together
        batch_of = obj.train_batch
        def merged(index):
            own, parts = obj.world, []
            for rank in (0, 1):
                obj.world = World(rank=rank, size=2)
                parts.append(batch_of(index))
            obj.world = own
            return {k: torch.cat([p[k] for p in parts]) if torch.is_tensor(v)
                    else parts[0][k] + parts[1][k] for k, v in parts[0].items()}
        obj.train_batch = merged
    (out / "run").mkdir(parents=True, exist_ok=True)
    ctx = RunContext(spec, out / "run")
    train(obj, ctx)
    state = {f"{name}.{k}": v.detach().contiguous()
             for name, mod in obj.modules().items() for k, v in mod.state_dict().items()}
    save_file(state, str(out / f"rank{ctx.world.rank}.safetensors"))
    if ctx.world.enabled:
        from gaf.distributed import _leave
        _leave()
''')


def merged_run_script(objective: str) -> str:
    """:data:`_MERGED_RUN` for ``objective`` (an ``ldm``-like objective whose
    ``train_batch`` is a dict of tensors and lists)."""
    return _MERGED_RUN.replace("OBJECTIVE", repr(objective))


def two_ranks_and_merged(objective: str, sets: Sequence[str], folder: Path) -> tuple[dict, dict, dict]:
    """Train ``objective`` with ``sets`` as 2 torchrun ranks (``folder/two``) and as one
    process on the two ranks' batches put together (``folder/one``, see
    :data:`_MERGED_RUN`); returns the weights ``(rank 0, rank 1, merged)`` by
    ``module.parameter``. Each launch must exit 0 (its stderr is in ``folder/*.log``)."""
    import json

    from safetensors.torch import load_file

    script = folder / f"{objective}_script.py"
    script.write_text(merged_run_script(objective))
    for name, nproc, mode in (("two", 2, "plain"), ("one", 1, "merge")):
        done = run_script(script, [str(folder / name), json.dumps(list(sets)), mode], nproc,
                          env={"OMP_NUM_THREADS": "1"}, log=folder / f"{name}.log")
        assert done.returncode == 0, done.stderr[-3000:]
    return tuple(load_file(str(folder / d / f"rank{r}.safetensors"))  # type: ignore[return-value]
                 for d, r in (("two", 0), ("two", 1), ("one", 0)))
