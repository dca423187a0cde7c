"""Tiny ``image-to-image`` runs shared by this directory's tests, trained once each."""

from __future__ import annotations

import json

import pytest

import gaf
from tiny_i2i import TINY  # tests/ is on sys.path (conftest)

#: each task's extra options in the tiny runs
TASK_SETS = {"inpainting": [], "uncropping": [],
             "super-resolution": ["objective.low_resolution=4"],
             "colourisation": ["objective.grey_levels=4"]}


@pytest.fixture(scope="session")
def i2i_run(tmp_path_factory):
    """``i2i_run(task)``: the directory of a tiny run of ``task``, trained on first use."""
    done: dict[str, object] = {}

    def get(task: str):
        if task not in done:
            out = tmp_path_factory.mktemp(f"i2i-{task}")
            done[task], _ = gaf.run("image-to-image", sets=[
                f"out_dir={json.dumps(str(out))}", f"name=\"{task}\"", *TINY,
                f"objective.task=\"{task}\"", *TASK_SETS[task]])
        return done[task]

    return get


@pytest.fixture(scope="session")
def tiny_pixel_ldm(tmp_path_factory):
    """A tiny pixel-space ``ldm`` run at 16 px (no evaluation): a generator that never saw
    a hole, for RePaint."""
    from tiny_ldm import tiny_ldm_sets

    out = tmp_path_factory.mktemp("pixel-ldm")
    run_dir, _ = gaf.run("ldm", autoencoder="none", sets=[
        f"out_dir={json.dumps(str(out))}", "name=\"ldm\"",
        *tiny_ldm_sets(objective__eval_images="0"), "progress=false"])
    return run_dir
