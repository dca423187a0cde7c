"""benchmarks/tuned_malloc.py gives a peer's script gaf's glibc thresholds: the same
values as gaf.malloc, and the script runs as __main__ with its own arguments."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from gaf import malloc
from malloc_probe import CYCLES, PAGES  # tests/ is on sys.path (conftest)
from script_module import ROOT, load_script

wrapper = load_script("benchmarks/tuned_malloc.py")


def test_the_values_are_gafs():
    assert (wrapper.MMAP_THRESHOLD, wrapper.TRIM_THRESHOLD) == (malloc.MMAP_THRESHOLD,
                                                                malloc.TRIM_THRESHOLD)
    assert (wrapper.M_MMAP_THRESHOLD, wrapper.M_TRIM_THRESHOLD) == (
        malloc._M_MMAP_THRESHOLD, malloc._M_TRIM_THRESHOLD)


@pytest.mark.skipif(malloc._glibc() is None, reason="glibc's mallopt only")
def test_it_runs_the_script_as_main_under_gafs_thresholds(tmp_path):
    script = tmp_path / "peer.py"  # a stand-in peer script: the probe's cycles, no gaf
    script.write_text(CYCLES)
    env = {"PATH": "/usr/bin:/bin"}
    plain = subprocess.run([sys.executable, str(script), "--batch", "3"],
                           capture_output=True, text=True, check=True, env=env)
    wrapped = subprocess.run([sys.executable, str(ROOT / "benchmarks/tuned_malloc.py"),
                              str(script), "--batch", "3"], capture_output=True, text=True,
                             check=True, env=env)
    plain, wrapped = json.loads(plain.stdout), json.loads(wrapped.stdout)
    assert plain["argv"] == wrapped["argv"] == ["--batch", "3"]
    assert plain["faults"] > PAGES // 2 and wrapped["faults"] < PAGES // 100
