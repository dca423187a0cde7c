"""benchmarks/tuned_malloc.py gives a peer's script gaf's glibc thresholds: the same
values as gaf.malloc, and the script runs as __main__ with its own arguments."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from gaf import malloc
from script_module import ROOT, load_script  # tests/ is on sys.path (conftest)

wrapper = load_script("benchmarks/tuned_malloc.py")


def test_the_values_are_gafs():
    assert (wrapper.MMAP_THRESHOLD, wrapper.TRIM_THRESHOLD) == (malloc.MMAP_THRESHOLD,
                                                                malloc.TRIM_THRESHOLD)
    assert (wrapper.M_MMAP_THRESHOLD, wrapper.M_TRIM_THRESHOLD) == (
        malloc._M_MMAP_THRESHOLD, malloc._M_TRIM_THRESHOLD)


# A stand-in peer script (no gaf): the allocation cycles of tests/core/test_malloc.py,
# which page-fault on every cycle under glibc's own thresholds and not under gaf's.
PEER = textwrap.dedent("""
    import ctypes, json, resource, sys
    libc = ctypes.CDLL(None)
    libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]
    MB = 1 << 20
    def cycle(sizes):
        blocks = [libc.malloc(s) for s in sizes]
        for p, s in zip(blocks, sizes):
            ctypes.memset(p, 1, s)
        for p in blocks:
            libc.free(p)
    if __name__ == "__main__":
        cycle([20 * MB])
        cycle([15 * MB] * 3)
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        for _ in range(10):
            cycle([15 * MB] * 3)
        faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
        print(json.dumps({"argv": sys.argv[1:], "faults": faults}))
""")
PAGES = 10 * 45 * (1 << 20) // 4096


@pytest.mark.skipif(malloc._glibc() is None, reason="glibc's mallopt only")
def test_it_runs_the_script_as_main_under_gafs_thresholds(tmp_path):
    script = tmp_path / "peer.py"
    script.write_text(PEER)
    env = {"PATH": "/usr/bin:/bin"}
    plain = subprocess.run([sys.executable, str(script), "--batch", "3"],
                           capture_output=True, text=True, check=True, env=env)
    wrapped = subprocess.run([sys.executable, str(ROOT / "benchmarks/tuned_malloc.py"),
                              str(script), "--batch", "3"], capture_output=True, text=True,
                             check=True, env=env)
    plain, wrapped = json.loads(plain.stdout), json.loads(wrapped.stdout)
    assert plain["argv"] == wrapped["argv"] == ["--batch", "3"]
    assert plain["faults"] > PAGES // 2 and wrapped["faults"] < PAGES // 100
