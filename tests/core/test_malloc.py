"""gaf.malloc: the glibc thresholds the gaf command fixes, and the page faults they spare."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest
from click.testing import CliRunner

from gaf.cli import main
from gaf.errors import BadConfig
from gaf.malloc import MMAP_THRESHOLD, TRIM_THRESHOLD, _glibc, tune_malloc

glibc = pytest.mark.skipif(_glibc() is None, reason="glibc's mallopt only")

# A fresh process (ctypes only, no torch) frees a 20 MiB block, which glibc had mapped:
# its mmap threshold rises to 20 MiB and its trim threshold to 40 MiB. Then three 15 MiB
# blocks are taken from the heap, written and freed, ten times: 45 MiB free at the top of
# the heap exceeds 40 MiB, so glibc returns it each time and the next cycle page-faults
# every page again. With the thresholds fixed nothing is returned.
PROBE = textwrap.dedent("""
    import ctypes, json, resource, sys
    from gaf.malloc import tune_malloc
    libc = ctypes.CDLL(None)
    libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]
    applied = tune_malloc() if sys.argv[1] == "tuned" else None
    MB = 1 << 20
    def cycle(sizes):
        blocks = [libc.malloc(s) for s in sizes]
        for p, s in zip(blocks, sizes):
            ctypes.memset(p, 1, s)
        for p in blocks:
            libc.free(p)
    cycle([20 * MB])
    cycle([15 * MB] * 3)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(10):
        cycle([15 * MB] * 3)
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
    print(json.dumps({"applied": applied, "faults": faults}))
""")
PAGES = 10 * 45 * (1 << 20) // 4096  # the pages the ten cycles write


def probe(mode: str) -> dict:
    out = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True,
                         check=True, env={"PATH": "/usr/bin:/bin"})
    return json.loads(out.stdout)


@glibc
def test_fixed_thresholds_spare_the_page_faults_glibc_takes():
    default, tuned = probe("default"), probe("tuned")
    assert default["applied"] is None
    assert default["faults"] > PAGES // 2        # glibc returned the memory each cycle
    assert tuned["applied"] == {"mmap_threshold": MMAP_THRESHOLD,
                                "trim_threshold": TRIM_THRESHOLD}
    assert tuned["faults"] < PAGES // 100        # the memory stayed with the process


@glibc
def test_tune_malloc_applies_and_is_idempotent():
    assert tune_malloc({}) == {"mmap_threshold": 32 << 20, "trim_threshold": 1 << 30}
    assert tune_malloc({"GAF_MALLOC": "gaf"}) == tune_malloc({})


def test_system_keeps_glibc_behaviour():
    assert tune_malloc({"GAF_MALLOC": "system"}) is None
    assert tune_malloc({"GAF_MALLOC": " System "}) is None


def test_an_unknown_setting_is_a_usage_error():
    with pytest.raises(BadConfig, match=r"GAF_MALLOC='jemalloc'.*'system'.*'gaf'"):
        tune_malloc({"GAF_MALLOC": "jemalloc"})
    out = CliRunner().invoke(main, ["list", "noise-model"], env={"GAF_MALLOC": "jemalloc"})
    assert out.exit_code == 2
    assert "GAF_MALLOC='jemalloc'" in out.output
