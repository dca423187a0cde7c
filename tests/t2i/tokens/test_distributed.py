"""``dalle`` and ``parti`` under ``torchrun --nproc_per_node 2`` (gloo, CPU): each rank trains on its
half of every global batch (its own captions dropped to the null caption), both ranks
end with identical weights, and those equal a one-process run on the same global
batches within round-off."""

from __future__ import annotations

import json
import textwrap

import pytest
import torch
from safetensors.torch import load_file

import gaf

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
    name = sys.argv[3]
    spec = resolve(objective=name, sets=sets)
    obj = REGISTRY.get("objective", name)(spec.objective_config)
    (out / "run").mkdir(parents=True, exist_ok=True)
    ctx = RunContext(spec, out / "run")
    train(obj, ctx)
    state = {k: v.detach().contiguous() for k, v in obj.model.state_dict().items()}
    save_file(state, str(out / f"rank{ctx.world.rank}.safetensors"))
    if ctx.world.enabled:
        from gaf.distributed import _leave
        _leave()
''')


@pytest.mark.parametrize("objective", ["dalle", "parti"])
def test_two_ranks_match_each_other_and_one_process(tmp_path, objective):
    vq, _ = gaf.run("autoencoder", autoencoder="vqgan", sets=[
        f"out_dir={json.dumps(str(tmp_path))}", "name=\"vq\"", "dataset.resolution=16",
        "dataset.size=64", "autoencoder.base_channels=8", "autoencoder.num_groups=4",
        "autoencoder.n_embed=16", "autoencoder.attention=false", "train.steps=2",
        "train.batch_size=8", "objective.eval_images=8"])
    sets = [f"autoencoder.name={json.dumps(str(vq))}", "dataset.resolution=16",
            "dataset.size=64",
            "token-model.rows=4", "token-model.cols=4", "token-model.codebook=16",
            "token-model.d_model=32", "token-model.n_layer=1", "token-model.n_head=2",
            *(["token-model.encoder_layers=1"] if objective == "parti" else []),
            "objective.p_uncond=0.5", "train.steps=3", "train.batch_size=8",
            "train.log_every=1", "train.warmup_steps=0", "objective.eval_images=0",
            "device=\"cpu\"",
            "progress=false"]
    script = tmp_path / "dalle_script.py"
    script.write_text(SCRIPT)
    for name, nproc in (("two", 2), ("one", 1)):
        out = run_script(script, [str(tmp_path / name), json.dumps(sets), objective], nproc,
                         env={"OMP_NUM_THREADS": "1"}, log=tmp_path / f"{name}.log")
        assert out.returncode == 0, out.stderr[-3000:]
    r0, r1, one = (load_file(str(tmp_path / d / f"rank{r}.safetensors"))
                   for d, r in (("two", 0), ("two", 1), ("one", 0)))
    for key in r0:
        torch.testing.assert_close(r0[key], r1[key], rtol=0, atol=0, msg=key)
        torch.testing.assert_close(r0[key], one[key], rtol=1e-5, atol=1e-5, msg=key)
    log = [json.loads(x) for x in (tmp_path / "two" / "run" / "metrics.jsonl")
           .read_text().splitlines()]
    assert len(log) == 3 and all(0 <= x["dropped"] <= 1 for x in log)
    assert all(x["grad_norm"] > 0 and x["lr"] > 0 for x in log)  # the weights moved
