"""Where a DPO training step's time goes, and its achieved FLOP/s against the matmul peak.

    python benchmarks/dpo_step_profile.py [STEPS]        (default 40)

The objective, data and hyper-parameters are those of ``benchmarks/dpo_throughput.py``
(the peer benchmark's shape: gpt2-tiny with the byte vocabulary, 8 pairs a step, every
pair in the train split, AdamW, fp32, 2 threads). It builds the ``dpo`` objective
directly and runs the trainer's step by hand, timing its phases:

* ``batch``: ``train_batch`` (units, tokenisation, packing);
* ``forward``: ``loss`` (policy forward, log-probs at completion positions, the
  cached reference, the DPO loss, the metrics including ``entropy``);
* ``backward``; ``clip`` (gradient-norm clipping); ``optimizer`` (fused AdamW).

FLOPs are counted analytically from each step's actual batch, two ways:

* *executed* (what the kernels compute, padding included): the dense layers
  ``2 · 12·d²·n_layer`` per token position of the ``(rows, T)`` batch, the attention
  scores and values ``4 · T² · d`` per row and layer (SDPA with a mask computes every
  query–key pair), the LM head ``2 · d · V`` per scored completion position;
* *useful* (what the model needs): the dense layers on real tokens only, attention on
  the query–key pairs the mask allows (causal, within a packed row's blocks).

The backward pass counts twice the forward. Embedding look-ups, layer norms, GELU,
softmax and the optimiser are not counted (they are O(tokens·d), not O(tokens·d²)).

Then it measures the ``entropy`` metric's cost (the same batches with and without it,
alternating; and the metric's own arithmetic on one step's logits), the reference
log-prob pass of the setup (time and forward FLOP/s), and a ``torch.profiler`` pass
whose self CPU time is grouped by operator and attributed to the phases; the time of a
phase outside every operator is Python and dispatch overhead. Prints ``dpo_step …``
lines.
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

PHASES = ("batch", "forward", "backward", "clip", "optimizer")
GROUPS = {  # profiler op name fragments → group, first match wins
    "attention (SDPA)": ("scaled_dot_product", "_flash_attention", "_efficient_attention"),
    "matmul (mm, addmm, bmm)": ("mm", "addmm", "bmm", "linear", "matmul"),
    "log-softmax / logsumexp / gather": ("logsumexp", "softmax", "gather"),
    "optimizer (fused AdamW)": ("_fused_adamw", "adamw"),
    "gradient-norm clipping": ("_foreach_norm", "_foreach_mul", "linalg_vector_norm"),
    "layer norm": ("layer_norm",),
    "GELU": ("gelu",),
    "indexing / copies / cat / embedding": (
        "index", "copy_", "_to_copy", "cat", "nonzero", "clone", "contiguous", "to",
        "select", "slice", "view", "reshape", "stack", "embedding", "cumsum", "masked",
        "where", "zeros", "empty", "fill", "full", "arange", "ones", "item", "transpose",
        "permute", "expand", "unbind", "split", "chunk", "t", "as_strided", "squeeze",
        "flatten", "detach"),
    "elementwise (add, mul, sum, …)": (
        "add", "mul", "div", "sub", "neg", "exp", "log", "sum", "mean", "pow", "sqrt",
        "sigmoid", "clamp", "norm", "abs", "max", "min", "rsub", "gt", "lt", "eq", "ne",
        "softplus", "tanh"),
}


def build(steps: int, tmp: str):
    data = Path(tmp) / "pairs.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in peer_rows(steps)))
    spec = resolve(objective="dpo", components={"task": "jsonl"}, sets=[
        f"task.path={json.dumps(str(data))}", "task.eval_fraction=0",
        "task.validation_fraction=0", "device=\"cpu\"", "progress=false",
        "policy.tokenizer=\"byte\"", "objective.sft_steps=0", "objective.beta=0.1",
        f"train.batch_size={BATCH}", "train.lr=1e-4", "train.max_grad_norm=1.0"])
    torch.manual_seed(0)
    obj = gaf.REGISTRY.get("objective", "dpo")(spec.objective_config)
    t0 = time.perf_counter()
    obj.setup(RunContext(spec, Path(tmp)))
    setup_s = time.perf_counter() - t0
    obj.policy.train()
    return obj, spec, setup_s


def batch_flops(policy, lm_batch, *, useful: bool) -> float:
    """Forward FLOPs of one batch (module docstring)."""
    cfg = policy.config
    d, layers = cfg.d_model, cfg.n_layer
    rows, T = lm_batch.input_ids.shape
    if useful:
        tokens = int(lm_batch.attention_mask.sum())
        if lm_batch.attention_mask_4d is not None:
            keys = int(lm_batch.attention_mask_4d.sum())
        else:
            n = lm_batch.attention_mask.sum(1).double()
            keys = int((n * (n + 1) / 2).sum())
    else:
        tokens, keys = rows * T, rows * T * T
    dense = 2 * (4 + 2 * cfg.mlp_ratio) * d * d * layers * tokens
    attention = 4 * d * keys * layers
    scored = int(lm_batch.score_index.numel()) if lm_batch.packed else int(
        lm_batch.completion_mask.sum())
    head = 2 * d * cfg.vocab_size * scored
    return float(dense + attention + head)


def group_of(name: str) -> str:
    if not name.startswith("aten::") and ("backward" in name.lower() or "autograd" in name):
        return "other (autograd engine nodes, Python-level ops)"  # e.g. MmBackward0
    name = name.lower().removeprefix("aten::")
    for group, keys in GROUPS.items():
        if any(k == name or (len(k) > 2 and k in name) for k in keys):
            return group
    return "other (autograd engine nodes, Python-level ops)"


def main(steps: int = 40) -> None:
    torch.set_num_threads(2)
    with tempfile.TemporaryDirectory() as tmp:
        obj, spec, setup_s = build(steps + 20, tmp)
        params = [p for p in obj.policy.parameters() if p.requires_grad]
        opt = make_optimizer(spec.train, params)
        phases: dict[str, list[float]] = defaultdict(list)
        executed: list[float] = []
        useful: list[float] = []
        rec = torch.profiler.record_function

        def one(i: int, *, record: bool = True) -> float:
            t0 = time.perf_counter()
            with rec("phase::batch"):
                batch = obj.train_batch(i)
            t1 = time.perf_counter()
            with rec("phase::forward"):
                loss, _ = obj.loss(batch)
            t2 = time.perf_counter()
            with rec("phase::backward"):
                loss.backward()
            t3 = time.perf_counter()
            with rec("phase::clip"):
                torch.nn.utils.clip_grad_norm_(params, 1.0)
            t4 = time.perf_counter()
            with rec("phase::optimizer"):
                opt.step()
                opt.zero_grad(set_to_none=True)
            t5 = time.perf_counter()
            if record:
                for name, dt in zip(PHASES + ("step",),
                                    (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4, t5 - t0)):
                    phases[name].append(dt)
                executed.append(3 * batch_flops(obj.policy, batch[1], useful=False))
                useful.append(3 * batch_flops(obj.policy, batch[1], useful=True))
            return t5 - t0

        for i in range(5):  # warm-up
            one(i, record=False)
        for i in range(5, 5 + steps):
            one(i)
        step = statistics.median(phases["step"])
        for name in PHASES + ("step",):
            med = statistics.median(phases[name])
            print(f"dpo_step phase={name} median_ms={1e3 * med:.2f} share={med / step:.3f}")
        ach = statistics.median(f / s for f, s in zip(executed, phases["step"]))
        ach_useful = statistics.median(f / s for f, s in zip(useful, phases["step"]))
        fb = statistics.median(f / (a + b) for f, a, b in
                               zip(executed, phases["forward"], phases["backward"]))
        print(f"dpo_step gflop_per_step={statistics.median(executed) / 1e9:.3f} "
              f"useful_gflop_per_step={statistics.median(useful) / 1e9:.3f} "
              f"achieved_gflops={ach / 1e9:.1f} useful_gflops={ach_useful / 1e9:.1f} "
              f"forward_backward_gflops={fb / 1e9:.1f} pairs_per_s={BATCH / step:.1f}")
        b = obj.train_batch(5)[1]
        print(f"dpo_step batch rows={b.input_ids.shape[0]} T={b.input_ids.shape[1]} "
              f"real_tokens={int(b.attention_mask.sum())} packed={b.packed} "
              f"scored={int(b.score_index.numel()) if b.packed else int(b.completion_mask.sum())}")

        # ---- the entropy metric: the same batches with and without it, alternating
        with_e, without_e = [], []
        for i in range(5, 5 + steps):
            for flag, out in ((True, with_e), (False, without_e)) if i % 2 else (
                    (False, without_e), (True, with_e)):
                obj._entropy = flag  # noqa: SLF001 (the objective's switch, set in setup)
                out.append(one(i, record=False))
        obj._entropy = True  # noqa: SLF001
        diff = statistics.median(a - c for a, c in zip(with_e, without_e))
        # its own arithmetic on one step's logits (no_grad: softmax, product, row sums)
        with torch.no_grad():
            n_scored = int(b.score_index.numel()) if b.packed else int(b.completion_mask.sum())
            logits = torch.randn(n_scored, obj.policy.config.vocab_size)
            norm = logits.logsumexp(-1)
            times = []
            for _ in range(200):
                t0 = time.perf_counter()
                norm - (torch.softmax(logits, -1) * logits).sum(-1)
                times.append(time.perf_counter() - t0)
        own = statistics.median(times)
        print(f"dpo_step entropy_metric step_ms_with={1e3 * statistics.median(with_e):.2f} "
              f"step_ms_without={1e3 * statistics.median(without_e):.2f} "
              f"paired_median_diff_ms={1e3 * diff:.3f} own_ops_ms={1e3 * own:.3f} "
              f"own_share={own / step:.4f} (logits {n_scored}x{obj.policy.config.vocab_size})")

        # ---- the setup's reference pass, alone: time and forward FLOP/s
        ref_flops: list[float] = []
        ref_model = obj.reference
        inner = ref_model.completion_logprobs

        def counted(lm_batch, **kw):
            ref_flops.append(batch_flops(ref_model, lm_batch, useful=False))
            return inner(lm_batch, **kw)

        ref_model.completion_logprobs = counted
        ref_times = []
        for _ in range(3):
            ref_flops.clear()
            t0 = time.perf_counter()
            obj.score(ref_model, obj.groups)
            ref_times.append(time.perf_counter() - t0)
        del ref_model.completion_logprobs
        ref_s = statistics.median(ref_times)
        print(f"dpo_step setup_s={setup_s:.2f} reference_pass_s={ref_s:.2f} "
              f"reference_pass_gflop={sum(ref_flops) / 1e9:.2f} "
              f"reference_pass_gflops={sum(ref_flops) / ref_s / 1e9:.1f} "
              f"reference_batches={len(ref_flops)} responses={2 * len(obj.groups)}")

        # ---- the profiler: self CPU time by operator group and by phase
        from torch.profiler import ProfilerActivity, profile

        n_prof = 10
        t0 = time.perf_counter()
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for i in range(5 + steps, 5 + steps + n_prof):
                one(i, record=False)
        prof_wall = (time.perf_counter() - t0) / n_prof
        by_group: dict[str, float] = defaultdict(float)
        by_phase_ops: dict[str, float] = defaultdict(float)
        phase_wall: dict[str, float] = defaultdict(float)
        by_op: dict[str, float] = defaultdict(float)
        for ev in prof.events():
            if ev.name.startswith("phase::"):
                phase_wall[ev.name[7:]] += ev.cpu_time_total
                continue
            parent, phase = ev.cpu_parent, None
            while parent is not None:
                if parent.name.startswith("phase::"):
                    phase = parent.name[7:]
                    break
                parent = parent.cpu_parent
            t = ev.self_cpu_time_total
            by_phase_ops[phase or "none"] += t
            by_op[ev.name] += t
            group = "batch building (ops inside train_batch)" if phase == "batch" else \
                group_of(ev.name)
            by_group[group] += t
        for ph in PHASES:
            by_group[f"outside operators in {ph} (Python, dispatch)"] = max(
                0.0, phase_wall[ph] - by_phase_ops[ph])
        total_us = sum(phase_wall[ph] for ph in PHASES)
        print(f"dpo_step profiled_step_ms={1e3 * prof_wall:.2f} (unprofiled {1e3 * step:.2f}; "
              f"the profiler's own overhead is inside the 'outside operators' rows) "
              f"unattributed_op_ms={by_phase_ops['none'] / n_prof / 1e3:.2f}")
        for group, t in sorted(by_group.items(), key=lambda kv: -kv[1]):
            print(f"dpo_step op_group=\"{group}\" ms_per_step={t / n_prof / 1e3:.2f} "
                  f"self_cpu_share={t / total_us:.3f}")
        for name, t in sorted(by_op.items(), key=lambda kv: -kv[1])[:15]:
            print(f"dpo_step top_op=\"{name}\" ms_per_step={t / n_prof / 1e3:.2f} "
                  f"group=\"{group_of(name)}\"")


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:2]))
