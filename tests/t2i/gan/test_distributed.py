"""``gan-int-cls-modern`` under ``torchrun --nproc_per_node 2`` (gloo, CPU).

Rank ``r`` takes its contiguous half of each global batch; the generator and the
spectral-norm projection discriminator run under DDP, with DF-GAN's matching-aware
gradient penalty (a double backward through the DDP-wrapped discriminator) and the
generator's loss through the discriminator's detached weights (outside DDP). Both
ranks must end with identical weights: every parameter of both players and of the
generator's EMA copy, and the discriminator's spectral-norm vectors. (The generator's
BatchNorm statistics are each rank's own: gaf's DDP does not synchronise buffers.)
"""

from __future__ import annotations

import json
import textwrap

import pytest
import torch
from safetensors.torch import load_file

from torchrun_launch import run_script  # tests/ is on sys.path (conftest)

pytestmark = pytest.mark.slow

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
    out, sets = Path(sys.argv[1]), json.loads(sys.argv[2])
    spec = resolve(objective="gan-int-cls-modern", sets=sets)
    obj = REGISTRY.get("objective", "gan-int-cls-modern")(spec.objective_config)
    (out / "run").mkdir(parents=True, exist_ok=True)
    ctx = RunContext(spec, out / "run")
    summary = train(obj, ctx)
    state = {}
    for name, mod in obj.modules().items():
        for k, v in mod.state_dict().items():
            state[f"{name}.{k}"] = v.detach().contiguous()
    save_file(state, str(out / f"rank{ctx.world.rank}.safetensors"))
    (out / f"summary{ctx.world.rank}.json").write_text(json.dumps(summary))
    if ctx.world.enabled:
        from gaf.distributed import _leave
        _leave()
''')


def test_two_ranks_end_with_the_same_weights(tmp_path, tiny_clip):
    sets = [f"conditioner.clip={json.dumps(str(tiny_clip))}", "dataset.resolution=16",
            "dataset.size=64", "generator.resolution=16", "generator.width=8",
            "generator.text_dim=16", "discriminator.resolution=16", "discriminator.width=8",
            "discriminator.text_dim=16", "objective.ma_gp=2.0", "train.steps=4",
            "train.batch_size=8",
            "train.log_every=1", "objective.eval_images=0", "device=\"cpu\"",
            "progress=false"]
    script = tmp_path / "gan_script.py"
    script.write_text(SCRIPT)
    out = run_script(script, [str(tmp_path / "two"), json.dumps(sets)], 2,
                     env={"OMP_NUM_THREADS": "1"}, log=tmp_path / "two.log")
    assert out.returncode == 0, out.stderr[-3000:]
    r0, r1 = (load_file(str(tmp_path / "two" / f"rank{r}.safetensors")) for r in (0, 1))
    assert r0.keys() == r1.keys()
    compared = 0
    for key in r0:
        if "running_" in key or "num_batches_tracked" in key:  # the generator's BatchNorm
            continue
        torch.testing.assert_close(r0[key], r1[key], rtol=0, atol=0, msg=key)
        compared += 1
    assert any(k.startswith("discriminator.") and "_u" in k for k in r0)  # spectral norm
    assert any(k.startswith("generator_ema.") for k in r0) and compared > 20
    # the generator moved (its EMA copy lags behind it), so the equality is not that of
    # two untouched copies
    moved = [k for k in r0 if k.startswith("generator.") and "running_" not in k
             and "num_batches" not in k
             and not torch.equal(r0[k], r0["generator_ema." + k[len("generator."):]])]
    assert moved
    log = [json.loads(x) for x in (tmp_path / "two" / "run" / "metrics.jsonl")
           .read_text().splitlines()]
    assert len(log) == 4 and all(x["ma_gp"] >= 0 for x in log)
    assert all(torch.isfinite(torch.tensor(x["loss"])) for x in log)
