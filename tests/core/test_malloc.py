"""gaf.malloc: the glibc thresholds the gaf command fixes, and the page faults they spare."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from click.testing import CliRunner

from gaf.cli import main
from gaf.errors import BadConfig
from gaf.malloc import MMAP_THRESHOLD, TRIM_THRESHOLD, _glibc, tune_malloc
from malloc_probe import CYCLES, PAGES  # tests/ is on sys.path (conftest)

glibc = pytest.mark.skipif(_glibc() is None, reason="glibc's mallopt only")

# gaf.tune_malloc() first (or not), then the allocation cycles of tests/malloc_probe.py
PROBE = ("import json, sys\nfrom gaf.malloc import tune_malloc\n"
         "print(json.dumps(tune_malloc() if sys.argv[1] == 'tuned' else None))\n" + CYCLES)


def probe(mode: str) -> dict:
    out = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True,
                         check=True, env={"PATH": "/usr/bin:/bin"})
    applied, line = out.stdout.splitlines()
    return {"applied": json.loads(applied), **json.loads(line)}


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
