"""torchrun / DDP: two gloo processes on this machine train like one with the same
global batch, every rank ends with the same weights, and killed runs resume."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from safetensors.torch import load_file

from gaf.distributed import World
from gaf.errors import BadConfig
from torchrun_launch import run_script  # tests/ is on sys.path (conftest)

TINY = ["policy.n_layer=1", "policy.d_model=32", "policy.n_head=2", "device=\"cpu\"",
        "progress=false"]

# Trains one objective on a jsonl task in OUT/run (resuming when asked); every rank
# saves its final weights to OUT/rank<r>.safetensors. With KILL_AT, the rank KILL_RANK
# SIGKILLs itself after that step: a crash that leaves no chance to clean up.
SCRIPT = textwrap.dedent('''
    import json, os, signal, sys
    from pathlib import Path
    from safetensors.torch import save_file
    import gaf
    from gaf.registry import REGISTRY
    from gaf.runs import RunContext
    from gaf.spec import resolve
    from gaf.train import train

    out, objective, sets = Path(sys.argv[1]), sys.argv[2], json.loads(sys.argv[3])
    resume = sys.argv[4] == "1"
    kill_at, kill_rank = int(os.environ.get("KILL_AT", "0")), int(os.environ.get("KILL_RANK", "0"))

    class Killer:
        @gaf.hookimpl
        def gaf_step_end(self, ctx, step, metrics):
            if step == kill_at and ctx.world.rank == kill_rank:
                os.kill(os.getpid(), signal.SIGKILL)

    gaf.hooks.register(Killer())
    if os.environ.get("UNROUTED"):  # an objective whose module calls bypass DDP
        import gaf.distributed
        gaf.distributed.DDP_METHODS = ()
    spec = resolve(objective=objective, components={"task": "jsonl"}, sets=sets)
    obj = REGISTRY.get("objective", objective)(spec.objective_config)
    (out / "run").mkdir(parents=True, exist_ok=True)
    ctx = RunContext(spec, out / "run")
    train(obj, ctx, resume=resume)
    state = {k: v.detach().contiguous() for k, v in obj.modules()["policy"].state_dict().items()}
    save_file(state, str(out / f"rank{ctx.world.rank}.safetensors"))
    if ctx.world.enabled:  # leaving frees the group, so no gloo thread outlives Python
        import weakref
        import torch.distributed as dist
        from gaf.distributed import _leave
        group = weakref.ref(dist.group.WORLD)
        _leave()
        assert group() is None, "the process group outlived _leave"
''')

SFT_ROWS = [{"prompt": "The film", "completion": " was great."},
            {"prompt": "I saw it and", "completion": " it was dull and far too long."},
            {"text": "A fine cast."}, {"prompt": "Honestly,", "completion": " weak."}] * 4
PAIRS = [{"prompt": f"The film {i}", "chosen": " was a joy.", "rejected": " was dull."}
         for i in range(8)] + [{"prompt": "I saw it and", "chosen": " loved it.",
                                "rejected": " left early, bored and cold."}] * 4


def sft_sets(tmp_path):
    data = tmp_path / "sft.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in SFT_ROWS))
    # uneven token counts per rank: the loss must be the global token mean
    return [f"task.path={json.dumps(str(data))}", *TINY, "train.steps=6",
            "train.batch_size=4", "train.grad_accum=2", "train.lr=1e-3",
            "train.warmup_steps=0", "objective.samples=0", "train.log_every=1"]


def dpo_sets(tmp_path):
    data = tmp_path / "pairs.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in PAIRS))
    return [f"task.path={json.dumps(str(data))}", *TINY, "objective.sft_steps=0",
            "objective.eval_prompts=2", "objective.eval_samples=1",
            "objective.max_new_tokens=4", "train.steps=5", "train.batch_size=4",
            "train.lr=1e-3", "train.log_every=1"]


def launch(tmp_path, name, objective, sets, nproc=1, resume=False, env=None):
    script = tmp_path / "train_script.py"
    script.write_text(SCRIPT)
    args = [str(script), str(tmp_path / name), objective, json.dumps(sets),
            "1" if resume else "0"]
    return run_script(args[0], args[1:], nproc, env=env, log=tmp_path / f"{name}.log")


def final_weights(tmp_path, name, rank=0):
    return load_file(str(tmp_path / name / f"rank{rank}.safetensors"))


def metrics(tmp_path, name):
    path = tmp_path / name / "run" / "metrics.jsonl"
    return [json.loads(x) for x in path.read_text().splitlines()]


# Every objective x parallel pair is a check; two of them run as benchmarks to keep the
# suite's time: dpo under ddp is also test_dpo_pipeline_with_sft_stage_on_two_processes's,
# sft under fsdp test_fsdp_checkpoint_resumes_in_one_process's.
LONG = pytest.mark.benchmark


@pytest.mark.parametrize("objective, make_sets, parallel", [
    ("sft", sft_sets, "ddp"), ("dpo", dpo_sets, "fsdp"),
    pytest.param("sft", sft_sets, "fsdp", marks=LONG),
    pytest.param("dpo", dpo_sets, "ddp", marks=LONG)])
def test_two_processes_match_one_with_the_same_global_batch(tmp_path, objective, make_sets,
                                                            parallel):
    sets = make_sets(tmp_path)
    two = launch(tmp_path, "two", objective, [*sets, f"train.parallel={parallel}"], nproc=2)
    assert two.returncode == 0, two.stderr[-3000:]
    one = launch(tmp_path, "one", objective, sets)
    assert one.returncode == 0, one.stderr[-3000:]
    r0, r1 = final_weights(tmp_path, "two", 0), final_weights(tmp_path, "two", 1)
    for k in r0:  # DDP keeps the ranks in lockstep: identical weights
        assert torch.equal(r0[k], r1[k]), k
    single = final_weights(tmp_path, "one")
    # (a small lr: Adam turns round-off in near-zero gradients into lr-sized steps)
    for k in r0:
        assert torch.allclose(r0[k], single[k], atol=1e-5, rtol=0), \
            (k, float((r0[k] - single[k]).abs().max()))
    summary = json.loads((tmp_path / "two" / "run" / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["status"] == "completed"
    # only rank 0 logs, and the logged losses are the single-process ones
    log2, log1 = metrics(tmp_path, "two"), metrics(tmp_path, "one")
    assert [r["step"] for r in log2] == [r["step"] for r in log1] == list(range(1, 7))[
        :len(log1)]
    for a, b in zip(log2, log1):
        assert abs(a["loss"] - b["loss"]) < 1e-5 and abs(a["grad_norm"] - b["grad_norm"]) < 1e-4
    assert log1[0]["loss"] != log1[-1]["loss"]  # it trained


def test_sigkilled_single_process_run_resumes_bit_identically(tmp_path):
    sets = [*sft_sets(tmp_path), "train.steps=12", "train.save_every=4"]
    whole = launch(tmp_path, "whole", "sft", sets)
    assert whole.returncode == 0, whole.stderr[-3000:]
    killed = launch(tmp_path, "cut", "sft", sets, env={"KILL_AT": "6"})
    assert killed.returncode == -9  # SIGKILL: no cleanup ran
    ckpts = sorted(p.name for p in (tmp_path / "cut" / "run" / "checkpoints").glob("step-*"))
    assert ckpts == ["step-00000004"]
    again = launch(tmp_path, "cut", "sft", sets, resume=True)
    assert again.returncode == 0, again.stderr[-3000:]
    a, b = final_weights(tmp_path, "whole"), final_weights(tmp_path, "cut")
    for k in a:
        assert torch.equal(a[k], b[k]), k
    strip = [{k: v for k, v in r.items() if not k.endswith("_per_s") and k != "elapsed_s"}
             for r in metrics(tmp_path, "whole")]
    assert strip == [{k: v for k, v in r.items() if not k.endswith("_per_s")
                      and k != "elapsed_s"} for r in metrics(tmp_path, "cut")]


@pytest.mark.parametrize("parallel", ["ddp", pytest.param("fsdp", marks=LONG)])
def test_sigkilled_rank_stops_the_run_and_two_processes_resume(tmp_path, parallel):
    sets = [*dpo_sets(tmp_path), "train.steps=10", "train.save_every=4",
            f"train.parallel={parallel}"]
    whole = launch(tmp_path, "whole", "dpo", sets, nproc=2)
    assert whole.returncode == 0, whole.stderr[-3000:]
    killed = launch(tmp_path, "cut", "dpo", sets, nproc=2, env={"KILL_AT": "6", "KILL_RANK": "1"})
    assert killed.returncode != 0  # torchrun stops the surviving rank too
    latest = json.loads((tmp_path / "cut" / "run" / "checkpoints" / "latest.json").read_text())
    assert latest["step"] == 4
    again = launch(tmp_path, "cut", "dpo", sets, nproc=2, resume=True)
    assert again.returncode == 0, again.stderr[-3000:]
    log_whole, log_cut = metrics(tmp_path, "whole"), metrics(tmp_path, "cut")
    assert [r["step"] for r in log_cut] == [r["step"] for r in log_whole]
    for a, b in zip(log_whole, log_cut):
        for key in ("loss", "grad_norm", "lr", "rewards/margins"):
            assert abs(a[key] - b[key]) < 1e-6, (a["step"], key)


def test_fsdp_checkpoint_resumes_in_one_process(tmp_path):
    """FSDP checkpoints hold gathered tensors and plain optimizer state: a sharded run
    stopped at step 4 finishes in a single process like an unsharded one would."""
    sets = [*sft_sets(tmp_path), "train.steps=8", "train.save_every=4"]
    cut = launch(tmp_path, "cut", "sft", [*sets, "train.parallel=fsdp"], nproc=2,
                 env={"KILL_AT": "5", "KILL_RANK": "0"})
    assert cut.returncode != 0
    whole = launch(tmp_path, "whole", "sft", [*sets, "train.parallel=fsdp"], nproc=2)
    assert whole.returncode == 0, whole.stderr[-3000:]
    again = launch(tmp_path, "cut", "sft", sets, resume=True)
    assert again.returncode == 0, again.stderr[-3000:]
    a, b = final_weights(tmp_path, "whole"), final_weights(tmp_path, "cut")
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-5, rtol=0), k


def test_world_shards_and_means():
    w = World(rank=1, size=2)
    assert w.shard(8, 4) == (10, 2)
    with pytest.raises(BadConfig, match="multiple of the number of processes"):
        w.shard(0, 5)
    one = World()
    assert one.shard(8, 4) == (8, 4) and not one.enabled and one.is_main
    assert float(one.mean(torch.tensor(6.0), torch.tensor(3))) == 2.0
    assert one.mean_metrics({"loss": 1.5}) == {"loss": 1.5}


def gaf_cli(args, cwd, timeout=300, **kw):
    clean = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE")}
    return subprocess.run([sys.executable, "-m", "gaf", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=timeout, env=clean, **kw)


def test_gaf_run_nproc_launches_torchrun(tmp_path):
    data = tmp_path / "sft.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in SFT_ROWS))
    def args(name, batch):
        return ["run", "--nproc", "2", "--objective", "sft", "--data", str(data), "-q",
                "--out", "runs", "--name", name, *[a for s in TINY for a in ("--set", s)],
                "--set", "train.steps=3", "--set", f"train.batch_size={batch}",
                "--set", "objective.samples=0"]

    out = gaf_cli(args("two", 4), tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.count("run directory:") == 1  # rank 0 speaks for the run
    summary = json.loads((tmp_path / "runs" / "two" / "summary.json").read_text())
    assert summary["world_size"] == 2
    # a batch that does not split into equal shards stops every rank with a clear error
    bad = gaf_cli(args("bad", 5), tmp_path)
    assert bad.returncode != 0
    assert "multiple of the number of processes (2)" in bad.stderr


def test_sigterm_stops_a_run_that_then_resumes(tmp_path):
    import signal
    import time

    data = tmp_path / "sft.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in SFT_ROWS))
    clean = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE")}
    cmd = [sys.executable, "-m", "gaf", "run", "--objective", "sft", "--data", str(data), "-q",
           "--out", "runs", "--name", "r", *[a for s in TINY for a in ("--set", s)],
           "--set", "train.steps=100000", "--set", "train.save_every=5",
           "--set", "train.batch_size=2", "--set", "objective.samples=0"]
    proc = subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=clean)
    latest = tmp_path / "runs" / "r" / "checkpoints" / "latest.json"
    deadline = time.monotonic() + 120
    while not latest.is_file() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err[-2000:]
    assert "gaf run --resume" in err
    step = json.loads(latest.read_text())["step"]
    assert step >= 5
    again = gaf_cli(["run", "--resume", "runs/r", "-q", "--set", f"train.steps={step + 3}"],
                    tmp_path)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "resuming from" in again.stderr


def test_dpo_pipeline_with_sft_stage_on_two_processes(tmp_path):
    """The whole default DPO path (SFT sub-run, sampled pairs, DPO, evaluation) under
    torchrun: the SFT stage runs distributed too, and rank 0 writes each stage once."""
    args = ["run", "--nproc", "2", "--objective", "dpo", "-q", "--out", "runs", "--name", "d",
            *[a for s in TINY for a in ("--set", s)], "--set", "objective.sft_steps=4",
            "--set", "objective.prompts=8", "--set", "objective.max_new_tokens=8",
            "--set", "objective.eval_prompts=4", "--set", "train.steps=3",
            "--set", "train.batch_size=4", "--set", "train.parallel=fsdp"]
    out = gaf_cli(args, tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    run = tmp_path / "runs" / "d"
    sft = json.loads((run / "sft" / "summary.json").read_text())
    assert sft["world_size"] == 2 and sft["steps"] == 4
    assert "parallel = \"fsdp\"" in (run / "sft" / "config.toml").read_text()
    assert len((run / "data" / "preferences.jsonl").read_text().splitlines()) == 8
    summary = json.loads((run / "summary.json").read_text())
    assert summary["world_size"] == 2 and "win_rate" in summary


def test_two_launchers_meet_at_a_rendezvous_like_two_machines(tmp_path):
    """The several-machines command of docs/distributed.md, with both "machines" on
    this one: two torchrun launchers of one process each, c10d rendezvous."""
    import socket

    with socket.socket() as s:
        s.bind(("localhost", 0))
        port = s.getsockname()[1]
    clean = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE")}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2",
           "--nproc_per_node", "1", "--rdzv_backend", "c10d",
           "--rdzv_endpoint", f"localhost:{port}", "--rdzv_id", "test-job",
           "-m", "gaf", "run", "--objective", "sft", "-q", "--out", "shared", "--name", "job",
           *[a for s in TINY for a in ("--set", s)], "--set", "train.steps=3",
           "--set", "train.batch_size=4", "--set", "objective.samples=0"]
    nodes = [subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, env=clean) for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in nodes]
    for p, (_, err) in zip(nodes, outs):
        assert p.returncode == 0, err[-3000:]
    assert sum(o.count("run directory:") for o, _ in outs) == 1
    summary = json.loads((tmp_path / "shared" / "job" / "summary.json").read_text())
    assert summary["world_size"] == 2


def test_gradients_that_bypass_ddp_stop_the_run_with_a_clear_error(tmp_path):
    """If an objective calls a method of its module that is not routed through DDP,
    gradients are not averaged and the ranks would drift apart silently: the first
    step compares the gradient norms across ranks and stops."""
    out = launch(tmp_path, "bad", "sft", sft_sets(tmp_path), nproc=2, env={"UNROUTED": "1"})
    assert out.returncode != 0
    assert "gaf_ddp_methods" in out.stderr and "not routed through DDP" in out.stderr


def test_ppo_with_critic_and_ptx_keeps_two_ranks_in_lockstep(tmp_path):
    """PPO trains two modules (policy and critic, whose ``values`` goes through DDP)
    on per-rank rollouts, with globally whitened advantages and the ptx term: both
    ranks end identical, and β adapts the same way on both."""
    data = tmp_path / "sft.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in SFT_ROWS))
    sets = [f"task.path={json.dumps(str(data))}", *TINY, "objective.sft_steps=0",
            "objective.eval_prompts=2", "objective.eval_samples=1",
            "objective.max_new_tokens=4", "objective.ppo_epochs=2", "objective.ptx_coef=0.5",
            "objective.target_kl=0.01", "objective.kl_horizon=8", "train.steps=4",
            "train.batch_size=4", "train.lr=1e-3", "train.log_every=1"]
    out = launch(tmp_path, "ppo", "ppo", [*sets, "train.parallel=ddp"], nproc=2)
    assert out.returncode == 0, out.stderr[-3000:]
    r0, r1 = final_weights(tmp_path, "ppo", 0), final_weights(tmp_path, "ppo", 1)
    for k in r0:
        assert torch.equal(r0[k], r1[k]), k
    summary = json.loads((tmp_path / "ppo" / "run" / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["beta_final"] != 0.05
    log = metrics(tmp_path, "ppo")
    assert "loss/ptx" in log[-1] and "value/explained_variance" in log[-1]
