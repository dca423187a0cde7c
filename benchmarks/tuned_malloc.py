"""Run a peer's benchmark script with the glibc thresholds that gaf's processes use.

    /tmp/gaf-peers/bin/python benchmarks/tuned_malloc.py SCRIPT [ARGS ...]

``gaf.tune_malloc()`` (which the ``gaf`` command and gaf's throughput benchmarks apply at
start) fixes glibc's mmap threshold at 32 MiB and its trim threshold at 1 GiB, so that
a loop's freed activations are reused instead of being returned to the system and
page-faulted again (``gaf.malloc``'s module docs). A peer measured without them runs
under a setting gaf does not, so like-for-like comparisons run the peer through this
wrapper: it makes the same two ``mallopt`` calls (repeated here, since it runs in the
peer venv without gaf; ``tests/benchmarks/test_tuned_malloc.py`` checks the values
against ``gaf.malloc``), then runs ``SCRIPT`` as ``__main__`` with ``ARGS``. Nothing
else changes: the same interpreter, the same script, the same arguments.
"""

from __future__ import annotations

import ctypes
import runpy
import sys

MMAP_THRESHOLD = 32 << 20   # gaf.malloc.MMAP_THRESHOLD
TRIM_THRESHOLD = 1 << 30    # gaf.malloc.TRIM_THRESHOLD
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's malloc.h


def tune() -> None:
    libc = ctypes.CDLL(None)
    libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    if not (libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)
            and libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD)):
        sys.exit("tuned_malloc: mallopt refused the thresholds (not glibc?)")


def main(argv: list[str]) -> None:
    if not argv or argv[0] in ("-h", "--help"):
        sys.exit(__doc__)
    tune()
    sys.argv = list(argv)
    runpy.run_path(argv[0], run_name="__main__")


if __name__ == "__main__":
    main(sys.argv[1:])
