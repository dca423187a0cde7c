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
#: objective named by ``OBJECTIVE`` (with the components ``COMPONENTS``) with the ``--set``
#: items of ``argv[2]`` into ``argv[1]/run`` and saves every module's weights as
#: ``argv[1]/rank{R}.safetensors``; with ``argv[3] == "merge"`` one process trains on what
#: ranks 0 and 1 of 2 would draw, put together (tensors concatenated, lists joined). The
#: line ``# SETUP`` takes a test's own code, run before training with ``spec``, ``obj``,
#: ``out`` and ``record`` (a dict) in scope; a non-empty ``record`` is saved after
#: training as ``argv[1]/record{R}.json``.
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
    spec = resolve(objective=OBJECTIVE, components=COMPONENTS, sets=sets)
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
    record = {}
    # SETUP
    (out / "run").mkdir(parents=True, exist_ok=True)
    ctx = RunContext(spec, out / "run")
    train(obj, ctx)
    state = {f"{name}.{k}": v.detach().contiguous()
             for name, mod in obj.modules().items() for k, v in mod.state_dict().items()}
    save_file(state, str(out / f"rank{ctx.world.rank}.safetensors"))
    if record:
        (out / f"record{ctx.world.rank}.json").write_text(json.dumps(record))
    if ctx.world.enabled:
        from gaf.distributed import _leave
        _leave()
''')


def merged_run_script(objective: str, components: Mapping[str, str] | None = None,
                      setup: str = "") -> str:
    """:data:`_MERGED_RUN` for ``objective`` (an ``ldm``-like objective whose
    ``train_batch`` is a dict of tensors and lists), resolved with ``components`` and
    running the (dedented) code ``setup`` before training."""
    return (_MERGED_RUN.replace("OBJECTIVE", repr(objective))
            .replace("COMPONENTS", repr(dict(components or {})))
            .replace("# SETUP\n", textwrap.dedent(setup).strip("\n") + "\n" if setup else ""))


def train_ranks(objective: str, sets: Sequence[str], folder: Path, name: str, nproc: int, *,
                merge: bool = False, components: Mapping[str, str] | None = None,
                setup: str = "") -> list[dict]:
    """Train ``objective`` with ``sets`` as ``nproc`` processes (torchrun ranks when 2 or
    more) into ``folder/name`` with :func:`merged_run_script`, one process on the two
    ranks' batches put together when ``merge``; returns each rank's weights by
    ``module.parameter``. The launch must exit 0 (its stderr is in ``folder/name.log``)."""
    import json

    from safetensors.torch import load_file

    script = folder / f"{objective}_{name}_script.py"
    script.write_text(merged_run_script(objective, components, setup))
    done = run_script(script, [str(folder / name), json.dumps(list(sets)),
                               "merge" if merge else "plain"], nproc,
                      env={"OMP_NUM_THREADS": "1"}, log=folder / f"{name}.log")
    assert done.returncode == 0, done.stderr[-3000:]
    return [load_file(str(folder / name / f"rank{r}.safetensors")) for r in range(nproc)]


def two_ranks_and_merged(objective: str, sets: Sequence[str], folder: Path, *,
                         merge: bool = True, components: Mapping[str, str] | None = None,
                         setup: str = "") -> tuple[dict, dict, dict]:
    """Train ``objective`` with ``sets`` as 2 torchrun ranks (``folder/two``) and as one
    process (``folder/one``) on the two ranks' batches put together (``merge``, see
    :data:`_MERGED_RUN`) or, without ``merge``, on the same global batches as a plain
    1-process run; returns the weights ``(rank 0, rank 1, one)`` by
    ``module.parameter``. ``components`` and ``setup`` go to :func:`merged_run_script`.
    Each launch must exit 0 (its stderr is in ``folder/*.log``)."""
    r0, r1 = train_ranks(objective, sets, folder, "two", 2, components=components,
                         setup=setup)
    (one,) = train_ranks(objective, sets, folder, "one", 1, merge=merge,
                         components=components, setup=setup)
    return r0, r1, one


def assert_two_ranks_equal_merged(weights: tuple[dict, dict, dict], folder: Path,
                                  modules: set[str], steps: list[int],
                                  log_keys: Sequence[str] = ("loss",)) -> None:
    """What :func:`two_ranks_and_merged`'s ``(rank 0, rank 1, merged)`` weights must
    satisfy: exactly the ``modules``, the ranks bit-identical, the merged process within
    ``1e-5`` of them, and both runs' ``metrics.jsonl`` logging ``steps`` with every one
    of ``log_keys`` within ``1e-5``."""
    import json

    import torch

    r0, r1, one = weights
    assert {k.split(".")[0] for k in r0} == modules
    for key in r0:
        assert torch.equal(r0[key], r1[key]), key
        torch.testing.assert_close(r0[key], one[key], rtol=0, atol=1e-5, msg=key)
    logs = [[json.loads(x) for x in (folder / n / "run" / "metrics.jsonl").read_text()
             .splitlines()] for n in ("two", "one")]
    assert [r["step"] for r in logs[0]] == [r["step"] for r in logs[1]] == steps
    for a, b in zip(*logs):
        for key in log_keys:
            assert abs(a[key] - b[key]) < 1e-5, (key, a[key], b[key])
