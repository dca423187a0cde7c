"""This machine's fp32 matmul throughput: the ceiling a CPU training step is held against.

    python benchmarks/matmul_peak.py [THREADS ...]      (default: 1 2)

For each thread count it times ``torch.mm`` on large square matrices (the sgemm peak)
and on the matrix products one gpt2-tiny DPO step of ``benchmarks/dpo_throughput.py``
runs (8 pairs packed into 8 rows of ~122 positions ≈ 1,000 token positions, d = 128,
MLP 512, ~660 scored completion positions, vocabulary 259 or 1,122), and prints one
line per shape::

    matmul threads=2 m=4096 k=4096 n=4096 gflops=…

with the median of 7 repeats after a warm-up (FLOPs ``2·m·k·n``). Each layer of the
step appears three times, as autograd runs it: the forward ``x·W`` (``fwd``), the
input gradient ``dy·Wᵀ`` (``dgrad``) and the weight gradient ``xᵀ·dy`` (``wgrad``,
whose inner dimension is the ~1,000 tokens), with the weight layouts of gpt2-tiny (HF
``Conv1D`` ``(in, out)``; the tied embedding ``(V, d)`` for the head) and transposes
as views, as autograd passes them. A last line per thread count gives the step's GEMM ceiling: the FLOPs of
all these products (each layer ×4, the LM head at vocabulary 259) divided by the sum
of their times.
"""

from __future__ import annotations

import statistics
import sys
import time

import torch

SQUARE = (512, 1024, 2048, 4096)
TOKENS, SCORED, D, MLP = 1024, 660, 128, 512
#: (name, m, k, n, count per step) of the forward products of one step: the four
#: layers' qkv, attention projection, MLP in and MLP out, and the LM head
LAYERS = (("qkv", TOKENS, D, 3 * D, 4), ("attn_proj", TOKENS, D, D, 4),
          ("mlp_in", TOKENS, D, MLP, 4), ("mlp_out", TOKENS, MLP, D, 4),
          ("lm_head_v259", SCORED, D, 259, 1), ("lm_head_v1122", SCORED, D, 1122, 0))


def seconds(a: torch.Tensor, b: torch.Tensor, repeats: int = 7) -> float:
    """Median seconds of one ``torch.mm(a, b)``."""
    flops = 2.0 * a.shape[0] * a.shape[1] * b.shape[1]
    inner = max(1, int(2e9 / flops))  # ~2 GFLOP per timing, so small shapes time well
    for _ in range(2):
        torch.mm(a, b)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(inner):
            torch.mm(a, b)
        times.append((time.perf_counter() - t0) / inner)
    return statistics.median(times)


def main(threads: list[int]) -> None:
    for t in threads:
        torch.set_num_threads(t)
        for s in SQUARE:
            a, b = torch.randn(s, s), torch.randn(s, s)
            print(f"matmul threads={t} m={s} k={s} n={s} "
                  f"gflops={2 * s ** 3 / seconds(a, b) / 1e9:.1f}")
        step_flops = step_seconds = 0.0
        for name, m, k, n, count in LAYERS:
            x, dy = torch.randn(m, k), torch.randn(m, n)
            if name.startswith("lm_head"):  # the tied embedding (V, d): F.linear(x, wte)
                w = torch.randn(n, k)
                products = (("fwd", x, w.t()), ("dgrad", dy, w), ("wgrad", dy.t(), x))
            else:  # HF Conv1D, weight (in, out): x @ W
                w = torch.randn(k, n)
                products = (("fwd", x, w), ("dgrad", dy, w.t()), ("wgrad", x.t(), dy))
            for kind, a, b in products:
                s = seconds(a, b)
                flops = 2.0 * m * k * n
                print(f"matmul threads={t} shape={name}/{kind} m={a.shape[0]} k={a.shape[1]} "
                      f"n={b.shape[1]} gflops={flops / s / 1e9:.1f}")
                step_flops += count * flops
                step_seconds += count * s
        print(f"matmul threads={t} step_gemm_ceiling_gflops={step_flops / step_seconds / 1e9:.1f} "
              f"step_gemm_gflop={step_flops / 1e9:.3f} step_gemm_ms={1e3 * step_seconds:.2f}")


if __name__ == "__main__":
    main([int(a) for a in sys.argv[1:]] or [1, 2])
