"""The ``autoencoder`` objective under ``torchrun --nproc_per_node 2`` (gloo, CPU).

What must hold, and what the objective promises against one process:

* both ranks end with identical weights (autoencoder and discriminator), also once
  the GAN is on: the adaptive weight λ is computed from each rank's own gradients
  (a per-rank scalar), but only the averaged gradient is stepped;
* a deterministic configuration (``vqgan`` with the codebook learned by its loss, no
  EMA, no restarts; GAN off) equals the one-process run with the same global batch:
  every loss term is a mean over the batch and the ranks' shares are equal. With the
  KL autoencoder the posterior sample ``z = μ + σ ε`` draws ``ε`` from each rank's own
  generator (seeded per rank), and once the GAN is on λ is a per-shard value, so those
  runs are not the one-process run, only self-consistent across ranks;
* ``vqgan``'s default codebook does NOT stay identical across ranks: its EMA updates and
  dead-code restarts happen in ``forward`` from the rank's own batch (and restarts
  draw from the rank's own RNG), outside the gradient all-reduce. A known bug, kept as
  a strict xfail until the quantizer all-reduces its statistics.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from safetensors.torch import load_file

pytestmark = pytest.mark.slow

BASE = ["dataset.resolution=16", "dataset.size=32", "autoencoder.base_channels=8",
        "autoencoder.num_groups=4", "autoencoder.num_res_blocks=0",
        "objective.disc_channels=8", "objective.disc_layers=1", "train.batch_size=8",
        "train.log_every=1", "train.warmup_steps=0", "device=\"cpu\"", "progress=false"]

# Trains the autoencoder objective in OUT/run without the final evaluation (not what is
# tested here) and saves every rank's final modules to OUT/rank<r>.safetensors.
SCRIPT = textwrap.dedent('''
    import json, sys
    from pathlib import Path
    import torch
    from safetensors.torch import save_file
    from gaf.registry import REGISTRY
    from gaf.runs import RunContext
    from gaf.spec import resolve
    from gaf.train import train

    torch.set_num_threads(1)
    out, first_stage, sets = Path(sys.argv[1]), sys.argv[2], json.loads(sys.argv[3])
    spec = resolve(objective="autoencoder", components={"autoencoder": first_stage},
                   sets=sets)
    obj = REGISTRY.get("objective", "autoencoder")(spec.objective_config)
    obj.evaluate = lambda ctx: {}
    (out / "run").mkdir(parents=True, exist_ok=True)
    ctx = RunContext(spec, out / "run")
    train(obj, ctx)
    state = {f"{name}.{k}": v.detach().contiguous()
             for name, mod in obj.modules().items() for k, v in mod.state_dict().items()}
    save_file(state, str(out / f"rank{ctx.world.rank}.safetensors"))
    if ctx.world.enabled:
        from gaf.distributed import _leave
        _leave()
''')


def launch(tmp_path, name, first_stage, sets, nproc):
    script = tmp_path / "ae_script.py"
    script.write_text(SCRIPT)
    prefix = ([sys.executable, "-m", "torch.distributed.run", "--standalone",
               f"--nproc_per_node={nproc}"] if nproc > 1 else [sys.executable])
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE")}
    env["OMP_NUM_THREADS"] = "1"
    env["MKL_CBWR"] = "AUTO,STRICT"  # see tests/core/test_distributed.py
    out = subprocess.run([*prefix, str(script), str(tmp_path / name), first_stage,
                          json.dumps([*BASE, *sets])],
                         capture_output=True, text=True, timeout=300, env=env)
    (tmp_path / f"{name}.log").write_text(out.stderr)
    if out.returncode:  # (not an AssertionError: the xfail below expects only those)
        raise RuntimeError(out.stderr[-3000:])
    return [load_file(str(tmp_path / name / f"rank{r}.safetensors")) for r in range(nproc)]


def metrics(tmp_path, name):
    path = tmp_path / name / "run" / "metrics.jsonl"
    return [json.loads(x) for x in path.read_text().splitlines()]


def assert_same(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), (k, float((a[k].float() - b[k].float()).abs().max()))


def test_kl_ranks_agree_with_the_gan_on(tmp_path):
    r0, r1 = launch(tmp_path, "two", "kl-vae", ["train.steps=3", "objective.disc_start=1"], 2)
    assert {k.split(".")[0] for k in r0} == {"autoencoder", "discriminator"}
    assert_same(r0, r1)
    log = metrics(tmp_path, "two")
    assert "d_loss" not in log[0] and "d_loss" in log[-1]  # the GAN switched on at step 2


@pytest.mark.xfail(strict=True, raises=AssertionError, reason="vqgan's EMA codebook and dead-code restarts update "
                                       "in forward from each rank's own batch, outside the "
                                       "gradient all-reduce, so the ranks' codebooks drift "
                                       "apart (issue 15 §7 report)")
def test_vq_ema_codebook_ranks_agree(tmp_path):
    r0, r1 = launch(tmp_path, "two", "vqgan", ["train.steps=2", "objective.disc_start=100",
                                               "autoencoder.n_embed=64",
                                               "autoencoder.restart_after=1"], 2)
    key = "autoencoder.quantizer.embedding"
    assert torch.equal(r0[key], r1[key])


# ``unused_steps`` counts, per code, the rank's own forward passes since the code was last
# assigned: bookkeeping for restarts, which are off here, so it differs without effect
BOOKKEEPING = "autoencoder.quantizer.unused_steps"


def test_deterministic_vq_equals_one_process_with_the_same_global_batch(tmp_path):
    sets = ["train.steps=3", "objective.disc_start=100", "autoencoder.ema=false",
            "autoencoder.restart_after=0", "train.lr=1e-3"]
    r0, r1 = launch(tmp_path, "two", "vqgan", sets, 2)
    (single,) = launch(tmp_path, "one", "vqgan", sets, 1)
    for state in (r0, r1, single):
        del state[BOOKKEEPING]
    assert_same(r0, r1)
    for k in r0:
        assert torch.allclose(r0[k].float(), single[k].float(), atol=1e-5, rtol=0), \
            (k, float((r0[k].float() - single[k].float()).abs().max()))
    two, one = metrics(tmp_path, "two"), metrics(tmp_path, "one")
    for a, b in zip(two, one):
        assert abs(a["loss"] - b["loss"]) < 1e-5, (a, b)
    assert one[0]["loss"] != one[-1]["loss"]  # it trained
