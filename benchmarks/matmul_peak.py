"""This machine's fp32 matmul throughput: the ceiling a CPU training step is held against.

    python benchmarks/matmul_peak.py [THREADS ...]      (default: 1 2)

For each thread count it times ``torch.mm`` on large square matrices (the sgemm peak)
and on the shapes one gpt2-tiny DPO step of ``benchmarks/dpo_throughput.py`` uses
(about 8 pairs × 2 completions × ~60 byte tokens ≈ 1,000 tokens, d = 128, MLP 512,
vocabulary 259 or 1,122), and prints one line per shape::

    matmul threads=2 m=4096 k=4096 n=4096 gflops=…

with the median of 7 repeats after a warm-up. FLOPs are ``2·m·k·n``.
"""

from __future__ import annotations

import statistics
import sys
import time

import torch

SQUARE = (512, 1024, 2048, 4096)
#: (m, k, n) of the dense layers of a ~1,000-token gpt2-tiny step: qkv, attention
#: projection, MLP in, MLP out, and the LM head on ~500 completion tokens
STEP_SHAPES = ((1024, 128, 384), (1024, 128, 128), (1024, 128, 512), (1024, 512, 128),
               (512, 128, 259), (512, 128, 1122))


def gflops(m: int, k: int, n: int, repeats: int = 7) -> float:
    a, b = torch.randn(m, k), torch.randn(k, n)
    flops = 2.0 * m * k * n
    inner = max(1, int(2e9 / flops))  # ~2 GFLOP per timing, so small shapes time well
    for _ in range(2):
        torch.mm(a, b)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(inner):
            torch.mm(a, b)
        times.append((time.perf_counter() - t0) / inner)
    return flops / statistics.median(times) / 1e9


def main(threads: list[int]) -> None:
    for t in threads:
        torch.set_num_threads(t)
        for s in SQUARE:
            print(f"matmul threads={t} m={s} k={s} n={s} gflops={gflops(s, s, s):.1f}")
        for m, k, n in STEP_SHAPES:
            print(f"matmul threads={t} m={m} k={k} n={n} gflops={gflops(m, k, n):.1f}")


if __name__ == "__main__":
    main([int(a) for a in sys.argv[1:]] or [1, 2])
