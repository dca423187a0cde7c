"""The example third-party package (examples/gaf-min-p) installs and plugs in through an
entry point: it shows in `gaf list sampler` and works with `gaf sample --sampler min-p`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import gaf
from example_install import gaf_cli, install  # tests/ is on sys.path (conftest)

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    return install(ROOT / "examples" / "gaf-min-p", tmp_path_factory.mktemp("site"))


def test_plugin_appears_in_list(site):
    out = gaf_cli(site, "list", "sampler", "--json")
    assert out.returncode == 0, out.stderr
    rows = {r["name"]: r for r in map(json.loads, out.stdout.splitlines())}
    assert rows["min-p"]["package"] == "gaf-min-p"
    assert "min-p" in rows["min-p"]["summary"]
    shown = gaf_cli(site, "show", "sampler", "min-p")
    assert shown.returncode == 0 and "min_p" in shown.stdout
    assert "in [0, 1]" in shown.stdout  # the declared rule, in the allowed column


def test_plugin_samples_from_a_trained_run(site, tmp_path):
    run_dir, _ = gaf.run("sft", policy="gpt2-tiny", sets=[
        f"out_dir={json.dumps(str(tmp_path))}", "train.steps=2", "objective.samples=2",
        "objective.eval_examples=4", "objective.max_new_tokens=4", "policy.n_layer=1",
        "policy.d_model=32"])
    out = gaf_cli(site, "sample", "--policy", str(run_dir), "--prompt", "The film",
                  "--sampler", "min-p", "--set", "min_p=0.2", "--max-new-tokens", "6", "--json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.splitlines()[-1])["prompt"] == "The film"
    bad = gaf_cli(site, "sample", "--policy", str(run_dir), "--prompt", "x", "--sampler", "min-p",
                  "--set", "min_p=3")
    assert bad.returncode == 2, bad.stderr
    assert "sampler min-p: min_p must be in [0, 1], got 3" in bad.stderr
