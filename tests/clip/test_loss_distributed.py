"""The CLIP loss under ``torchrun --nproc_per_node 2`` (gloo, CPU): with
:func:`gather_with_grad` every rank's loss sees the negatives of both ranks, and after
DDP's gradient averaging every parameter (both towers and the temperature) has the
gradient of one process on the global batch, duplicate captions across ranks
included."""

from __future__ import annotations

import json
import textwrap

import pytest

from torchrun_launch import run_script  # tests/ is on sys.path (conftest)

SCRIPT = textwrap.dedent('''
    import json, sys
    import torch
    import torch.distributed as dist
    from gaf.plugins.clip.loss import clip_loss, duplicate_mask, gather_with_grad

    class Towers(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.image = torch.nn.Linear(6, 4)
            self.text = torch.nn.Embedding(5, 4)
            self.log_scale = torch.nn.Parameter(torch.tensor(2.0))

        def forward(self, x, ids):  # the temperature goes through forward: DDP syncs it
            return self.image(x), self.text(ids), self.log_scale

    torch.manual_seed(0)
    towers = Towers().double()
    g = torch.Generator().manual_seed(1)
    x = torch.randn(8, 6, generator=g, dtype=torch.float64)
    ids = torch.tensor([0, 1, 2, 0, 3, 1, 4, 0])  # duplicates within and across halves
    if len(sys.argv) > 2:  # a rank: its half of the global batch, under DDP
        dist.init_process_group("gloo")
        rank = dist.get_rank()
        model = torch.nn.parallel.DistributedDataParallel(towers)
        part = slice(4 * rank, 4 * rank + 4)
        img, txt, s = model(x[part], ids[part])
        img, txt, keys = gather_with_grad(img), gather_with_grad(txt), gather_with_grad(ids[part])
    else:
        rank = 0
        img, txt, s = towers(x, ids)
        keys = ids
    loss = clip_loss(img, txt, s, duplicate_mask(keys))
    loss.backward()
    out = {"loss": loss.item(), "n": len(keys),
           "grads": {k: p.grad.flatten().tolist() for k, p in towers.named_parameters()}}
    with open(f"{sys.argv[1]}.{rank}.json", "w") as f:
        json.dump(out, f)
    if len(sys.argv) > 2:  # free the group before exit (see gaf.distributed._leave)
        import gc
        dist.barrier()
        del model, img, txt, s, loss
        gc.collect()
        dist.destroy_process_group()
        gc.collect()
''')


@pytest.mark.slow
def test_two_ranks_have_the_gradient_of_one_process_on_the_global_batch(tmp_path):
    script = tmp_path / "clip_ddp.py"
    script.write_text(SCRIPT)
    one = run_script(script, [str(tmp_path / "single")], 1, log=tmp_path / "single.log")
    assert one.returncode == 0, one.stderr
    two = run_script(script, [str(tmp_path / "ddp"), "ranks"], 2, log=tmp_path / "ddp.log")
    assert two.returncode == 0, two.stderr
    single = json.loads((tmp_path / "single.0.json").read_text())
    for rank in (0, 1):
        got = json.loads((tmp_path / f"ddp.{rank}.json").read_text())
        assert got["n"] == 8  # the loss saw both ranks' pairs
        assert got["loss"] == pytest.approx(single["loss"], rel=1e-12)
        for name, grad in single["grads"].items():
            assert got["grads"][name] == pytest.approx(grad, rel=1e-9, abs=1e-12), name
