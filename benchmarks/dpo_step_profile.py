"""Where a DPO training step's time goes, and its achieved FLOP/s against the matmul peak.

    python benchmarks/dpo_step_profile.py [STEPS]        (default 40)

The objective, data and hyper-parameters are those of ``benchmarks/dpo_throughput.py``
(the peer benchmark's shape: gpt2-tiny with the byte vocabulary, 8 pairs a step,
AdamW, fp32, 2 threads). It builds the ``dpo`` objective directly and runs the
trainer's step by hand, timing its phases:

* ``batch``: ``train_batch`` (units, tokenisation, packing);
* ``forward``: ``loss`` (policy forward, log-probs at completion positions, the
  cached reference, the DPO loss, the metrics including ``entropy``);
* ``backward``; ``clip`` (gradient-norm clipping); ``optimizer`` (fused AdamW).

FLOPs are counted analytically from each step's actual batch (what the kernels
execute, padding included): the dense layers ``2 · 12·d²·n_layer`` per token, the
attention scores and values ``4 · T² · d`` per row and layer (SDPA with a mask
computes every query–key pair), and the LM head ``2 · d · V`` per scored completion
position; the backward pass counts twice the forward. Then a ``torch.profiler`` pass
gives the self CPU time by operator, grouped. Prints ``dpo_step …`` lines.
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import torch

import gaf
from gaf.runs import RunContext
from gaf.spec import resolve
from gaf.train import make_optimizer

sys.path.insert(0, str(Path(__file__).resolve().parent))
from dpo_throughput import BATCH, peer_rows  # noqa: E402

GROUPS = {  # profiler op name fragments → group, first match wins
    "matmul (mm, addmm, bmm, linear)": ("mm", "addmm", "bmm", "linear", "matmul"),
    "attention (SDPA)": ("scaled_dot_product", "_flash_attention", "_efficient_attention"),
    "softmax / logsumexp / gather": ("logsumexp", "softmax", "gather", "log_softmax"),
    "optimizer (fused AdamW)": ("_fused_adamw", "adamw"),
    "layer norm": ("layer_norm",),
    "gelu": ("gelu",),
    "indexing / copies / cat": ("index", "copy_", "cat", "nonzero", "clone", "contiguous",
                                "to", "select", "slice", "view", "reshape", "stack",
                                "embedding", "cumsum", "masked", "where", "zeros", "empty",
                                "fill", "full", "arange", "ones"),
    "elementwise (add, mul, div, …)": ("add", "mul", "div", "sub", "neg", "exp", "log",
                                       "sum", "mean", "pow", "sqrt", "sigmoid", "clamp",
                                       "norm", "abs", "max", "min", "rsub"),
}


def build(steps: int, tmp: str):
    data = Path(tmp) / "pairs.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in peer_rows(steps)))
    spec = resolve(objective="dpo", components={"task": "jsonl"}, sets=[
        f"task.path={json.dumps(str(data))}", "task.eval_fraction=0.001", "device=\"cpu\"",
        "progress=false", "policy.tokenizer=\"byte\"", "objective.sft_steps=0",
        "objective.beta=0.1", f"train.batch_size={BATCH}", "train.lr=1e-4",
        "train.max_grad_norm=1.0"])
    torch.manual_seed(0)
    obj = gaf.REGISTRY.get("objective", "dpo")(spec.objective_config)
    obj.setup(RunContext(spec, Path(tmp)))
    obj.policy.train()
    return obj, spec


def step_flops(policy, lm_batch) -> float:
    cfg = policy.config
    d, layers = cfg.d_model, cfg.n_layer
    rows, T = lm_batch.input_ids.shape
    tokens = rows * T
    dense = 2 * (4 + 2 * cfg.mlp_ratio) * d * d * layers * tokens
    attention = 4 * rows * T * T * d * layers
    scored = int(lm_batch.score_index.numel()) if lm_batch.packed else int(
        lm_batch.completion_mask.sum())
    head = 2 * d * cfg.vocab_size * scored
    return 3.0 * (dense + attention + head)  # forward + backward (2×)


def main(steps: int = 40) -> None:
    torch.set_num_threads(2)
    with tempfile.TemporaryDirectory() as tmp:
        obj, spec = build(steps + 10, tmp)
        params = [p for p in obj.policy.parameters() if p.requires_grad]
        opt = make_optimizer(spec.train, params)
        phases: dict[str, list[float]] = defaultdict(list)
        flops: list[float] = []

        def one(i: int) -> None:
            t0 = time.perf_counter()
            batch = obj.train_batch(i)
            t1 = time.perf_counter()
            loss, _ = obj.loss(batch)
            t2 = time.perf_counter()
            loss.backward()
            t3 = time.perf_counter()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            t4 = time.perf_counter()
            opt.step()
            opt.zero_grad(set_to_none=True)
            t5 = time.perf_counter()
            for name, dt in (("batch", t1 - t0), ("forward", t2 - t1), ("backward", t3 - t2),
                             ("clip", t4 - t3), ("optimizer", t5 - t4), ("step", t5 - t0)):
                phases[name].append(dt)
            flops.append(step_flops(obj.policy, batch[1]))

        for i in range(5):  # warm-up
            one(i)
        phases.clear()
        flops.clear()
        for i in range(5, 5 + steps):
            one(i)
        step = statistics.median(phases["step"])
        for name in ("batch", "forward", "backward", "clip", "optimizer", "step"):
            med = statistics.median(phases[name])
            print(f"dpo_step phase={name} median_ms={1e3 * med:.2f} share={med / step:.3f}")
        achieved = statistics.median(f / s for f, s in zip(flops, phases["step"]))
        compute = statistics.median(f / (a + b) for f, a, b in
                                    zip(flops, phases["forward"], phases["backward"]))
        print(f"dpo_step gflop_per_step={statistics.median(flops) / 1e9:.3f} "
              f"achieved_gflops={achieved / 1e9:.1f} "
              f"forward_backward_gflops={compute / 1e9:.1f} "
              f"pairs_per_s={BATCH / step:.1f}")

        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for i in range(5 + steps, 15 + steps):
                one(i)
        total = 0.0
        grouped: dict[str, float] = defaultdict(float)
        for ev in prof.key_averages():
            t = ev.self_cpu_time_total
            total += t
            name = ev.key.lower().removeprefix("aten::")
            for group, keys in GROUPS.items():
                if any(k in name for k in keys):
                    grouped[group] += t
                    break
            else:
                grouped["other (autograd, Python ops)"] += t
        for group, t in sorted(grouped.items(), key=lambda kv: -kv[1]):
            print(f"dpo_step op_group=\"{group}\" self_cpu_share={t / total:.3f}")


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:2]))
