"""glibc ``malloc`` settings for tensor work on the CPU (no torch import).

PyTorch's CPU tensors come from the C library's ``malloc``. glibc serves blocks above its
*mmap threshold* (128 KiB at start) with a fresh ``mmap`` and gives them back with
``munmap`` on free, and it returns the free memory at the top of its heap to the system
whenever that exceeds the *trim threshold*. Both thresholds move on their own (each
freed ``mmap`` block raises the mmap threshold to its size, up to 32 MiB, and the trim
threshold to twice that). A sampling or training loop allocates and frees the same few
MB-sized activations thousands of times; whenever the moving thresholds send them back to
the system, the next allocation of that memory page-faults every 4 KiB page again and
the kernel zeroes it. How often that happens depends on the order of the allocations, so
the same run can be fast or markedly slower (docs/benchmarks.md § Imagen counts the page
faults and times the cascade with and without these settings).

:func:`tune_malloc` fixes both thresholds with ``mallopt``:

* ``M_MMAP_THRESHOLD`` = :data:`MMAP_THRESHOLD` (32 MiB, glibc's largest): blocks up to
  it come from the heap and are reused, larger ones are still mapped and returned at
  once;
* ``M_TRIM_THRESHOLD`` = :data:`TRIM_THRESHOLD` (1 GiB): up to that much free memory at
  the top of the heap stays with the process for the next step instead of going back.

The cost is memory: a process may keep up to 1 GiB of freed heap that glibc would have
returned (the peak resident memory with and without is in docs/benchmarks.md).

The ``gaf`` command applies it at start in every command (torchrun's workers run
``gaf run`` too). A Python program that uses gaf's components calls it once itself,
before allocating tensors; ``import gaf`` never changes the allocator. Set the
environment variable ``GAF_MALLOC=system`` to keep glibc's own behaviour. Elsewhere than
glibc on Linux (macOS, Windows, musl) it does nothing and returns ``None``.
"""

from __future__ import annotations

import ctypes
import os
import sys
from collections.abc import Mapping

__all__ = ["tune_malloc", "MMAP_THRESHOLD", "TRIM_THRESHOLD", "ENV"]

MMAP_THRESHOLD = 32 << 20
TRIM_THRESHOLD = 1 << 30
ENV = "GAF_MALLOC"

# glibc's malloc.h
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3


def _glibc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None)
        libc.gnu_get_libc_version  # glibc only (musl has no such function)
        return libc
    except (OSError, AttributeError):
        return None


def tune_malloc(environ: Mapping[str, str] | None = None) -> dict[str, int] | None:
    """Fix glibc's mmap and trim thresholds for this process (see the module docs).

    Returns the settings applied, ``{"mmap_threshold": ..., "trim_threshold": ...}``, or
    ``None`` where nothing was changed: not glibc, or ``GAF_MALLOC=system`` in
    ``environ`` (``os.environ`` by default). Calling it again is harmless.
    """
    env = os.environ if environ is None else environ
    choice = env.get(ENV, "").strip().lower()
    if choice == "system":
        return None
    if choice not in ("", "gaf"):
        from .errors import BadConfig

        raise BadConfig(f"{ENV}={env[ENV]!r}: expected 'system' (glibc's own thresholds) "
                        f"or 'gaf' (the default)")
    libc = _glibc()
    if libc is None:
        return None
    mallopt = libc.mallopt
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    if not (mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)
            and mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD)):
        return None
    return {"mmap_threshold": MMAP_THRESHOLD, "trim_threshold": TRIM_THRESHOLD}
