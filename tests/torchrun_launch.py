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
