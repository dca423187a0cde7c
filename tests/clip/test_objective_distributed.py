"""The ``clip`` objective under ``torchrun --nproc_per_node 2`` (gloo, CPU).

Rank ``r`` takes its contiguous half of each global batch, both towers run under DDP,
the features of both ranks are all-gathered with their gradients and the temperature
is clamped after every step. The objective draws nothing per rank (no noise, no
dropout), so two ranks must end where one process ends with the same global batch: the
same weights (both towers and the temperature) and the same logged losses, to float32
round-off. Duplicate captions within and across the ranks' halves are common on
``shapes`` (64 scenes, batch 16), so the duplicate-aware loss is exercised across ranks.
"""

from __future__ import annotations

import json
import textwrap

import pytest
import torch
from safetensors.torch import load_file

from torchrun_launch import run_script  # tests/ is on sys.path (conftest)

pytestmark = pytest.mark.slow

LR = 1e-3
SETS = ["dataset.resolution=16", "dataset.size=64", "encoder.resolution=16",
        "encoder.embed_dim=16", "encoder.image_width=8", "encoder.image_heads=2",
        "encoder.text_width=16", "encoder.text_layers=1", "encoder.text_heads=2",
        "train.steps=4", "train.batch_size=16", "train.log_every=1",
        "train.warmup_steps=0", f"train.lr={LR}", "objective.eval_pairs=0",
        "device=\"cpu\"", "progress=false"]

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
    spec = resolve(objective="clip", sets=sets)
    obj = REGISTRY.get("objective", "clip")(spec.objective_config)
    grads = {}
    after = obj.after_step
    def recording_after_step(step):  # the gradient of the first step
        if not grads:
            grads.update({n: p.grad.detach().clone() for n, p in obj.model.named_parameters()
                          if p.grad is not None})
        after(step)
    obj.after_step = recording_after_step
    (out / "run").mkdir(parents=True, exist_ok=True)
    ctx = RunContext(spec, out / "run")
    train(obj, ctx)
    state = {k: v.detach().contiguous() for k, v in obj.model.state_dict().items()}
    save_file(state, str(out / f"rank{ctx.world.rank}.safetensors"))
    save_file(grads, str(out / f"grads{ctx.world.rank}.safetensors"))
    if ctx.world.enabled:
        from gaf.distributed import _leave
        _leave()
''')


def launch(tmp_path, name, nproc, sets=SETS):
    script = tmp_path / "clip_script.py"
    script.write_text(SCRIPT)
    return run_script(script, [str(tmp_path / name), json.dumps(sets)], nproc,
                      env={"OMP_NUM_THREADS": "1"}, log=tmp_path / f"{name}.log")


def test_two_ranks_equal_one_process_with_the_same_global_batch(tmp_path):
    two = launch(tmp_path, "two", nproc=2)
    assert two.returncode == 0, two.stderr[-3000:]
    one = launch(tmp_path, "one", nproc=1)
    assert one.returncode == 0, one.stderr[-3000:]
    r0, r1, single = (load_file(str(tmp_path / n / f"rank{r}.safetensors"))
                      for n, r in (("two", 0), ("two", 1), ("one", 0)))
    grads = load_file(str(tmp_path / "one" / "grads0.safetensors"))
    counts = [0, 0]  # elements with a gradient below 1e-6, all elements
    for k in r0:
        assert torch.equal(r0[k], r1[k]), k
        # Some gradients are zero but for round-off (a conv bias in front of a GroupNorm
        # of one channel per group, the attention's key bias), which Adam turns into
        # steps of up to lr of either sign; the rest must agree to round-off.
        if k not in grads:  # the text tower's unused null states: frozen
            assert torch.equal(r0[k], single[k]), k
            continue
        noise_only = grads[k].abs() < 1e-6
        counts[0] += int(noise_only.sum())
        counts[1] += noise_only.numel()
        diff = (r0[k] - single[k]).abs()
        assert (diff[~noise_only] < 2e-6).all(), (k, float(diff.max()))
        assert (diff[noise_only] <= 4 * LR * 1.01).all(), k
    # (the rest includes the embeddings of tokens absent from every batch: exactly 0)
    assert counts[0] < 0.25 * counts[1], counts  # most weights are checked to round-off
    assert float(r0["log_scale"]) != pytest.approx(2.659260036932778, abs=1e-6)  # it trained
    logs = [[json.loads(x) for x in (tmp_path / n / "run" / "metrics.jsonl")
             .read_text().splitlines()] for n in ("two", "one")]
    assert [r["step"] for r in logs[0]] == [r["step"] for r in logs[1]] == [1, 2, 3, 4]
    for a, b in zip(*logs):
        assert abs(a["loss"] - b["loss"]) < 1e-5, (a["loss"], b["loss"])
        assert a["batch_accuracy"] == b["batch_accuracy"]
        assert abs(a["temperature"] - b["temperature"]) < 1e-5
        assert abs(a["grad_norm"] - b["grad_norm"]) < 1e-4
