"""This machine's fp32 matmul and convolution peak, at large shapes and at the shapes the
default models run.

    python benchmarks/machine_peak.py [--threads 2] [--repeats 7] [--bf16] [--json]

Prints one line per measurement, the median of ``--repeats`` timings after a warm-up
(each timing repeats the op to about 2 GFLOP, so that small shapes time well):

* ``matmul``: ``torch.mm`` on square matrices (512 to 4,096): the sgemm peak, which
  the ``peak_gflops`` line reports (the best square size);
* ``conv``: ``torch.nn.functional.conv2d`` (3x3, padding 1, channels-last input, as the
  UNet keeps its maps) at large channel counts, and at 3x3 convolution shapes of the
  default UNets' steps (each level's width, and a decoder concatenation or two): the ``ldm`` benchmark UNet's training step (batch 64,
  latents 4x8x8, channels 64/128) and sampling step (batch 32), and the ``imagen``
  cascade's base (100 rows, 16x16 pixels, channels 32/64/128) and super-resolution
  stage (100 rows, 32x32, channels 32/48/64), forward only;
* ``conv_peak_gflops``: the best of the conv lines;
* with ``--bf16``, ``matmul_bf16`` lines too: the same square products in bfloat16 (what
  ``train.precision=bf16`` hands its matrix products to; docs/benchmarks.md § bf16
  autocast). They are not part of either peak, which stay float32.

FLOPs: ``2·m·k·n`` for a matmul, ``2·N·C_out·H_out·W_out·C_in·9`` for a 3x3 conv. The
``DPO`` step's own GEMM shapes (forward and both gradients) are in
``benchmarks/matmul_peak.py``; ``benchmarks/step_profile.py`` sets each default step's
achieved FLOP/s against the peaks printed here. Measure on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

SQUARE = (512, 1024, 2048, 4096)
#: (name, batch, C_in, C_out, H=W): large convs, then the default UNets' 3x3 shapes
CONVS = (
    ("large", 64, 256, 256, 32), ("large", 64, 128, 128, 64),
    ("ldm-train", 64, 64, 64, 8), ("ldm-train", 64, 128, 128, 4),
    ("ldm-train", 64, 192, 64, 8), ("ldm-sample", 32, 64, 64, 8),
    ("ldm-sample", 32, 128, 128, 4),
    ("imagen-base", 100, 32, 32, 16), ("imagen-base", 100, 64, 64, 8),
    ("imagen-base", 100, 128, 128, 4), ("imagen-base", 100, 256, 128, 4),
    ("imagen-sr", 100, 32, 32, 32), ("imagen-sr", 100, 48, 48, 16),
    ("imagen-sr", 100, 64, 64, 8), ("imagen-sr", 100, 80, 32, 32),
)


def median_seconds(fn: Callable[[], object], flops: float, repeats: int) -> float:
    """Median seconds of one ``fn()`` (each timing runs it enough times for ~2 GFLOP)."""
    inner = max(1, int(2e9 / flops))
    for _ in range(2):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(inner):
            fn()
        times.append((time.perf_counter() - t0) / inner)
    return statistics.median(times)


def matmul(size: int, repeats: int, dtype: torch.dtype = torch.float32) -> dict:
    a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
    flops = 2.0 * size ** 3
    s = median_seconds(lambda: torch.mm(a, b), flops, repeats)
    op = "matmul" if dtype == torch.float32 else "matmul_bf16"
    return {"op": op, "shape": f"m=k=n={size}", "gflops": flops / s / 1e9}


def conv(name: str, batch: int, c_in: int, c_out: int, size: int, repeats: int) -> dict:
    x = torch.randn(batch, c_in, size, size).contiguous(memory_format=torch.channels_last)
    w = torch.randn(c_out, c_in, 3, 3)
    b = torch.randn(c_out)
    flops = 2.0 * batch * c_out * size * size * c_in * 9
    s = median_seconds(lambda: F.conv2d(x, w, b, padding=1), flops, repeats)
    return {"op": "conv", "model": name,
            "shape": f"batch={batch} c_in={c_in} c_out={c_out} hw={size}",
            "gflops": flops / s / 1e9}


def main(argv: Sequence[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--bf16", action="store_true", help="also bfloat16 square matmuls")
    p.add_argument("--json", action="store_true", help="one JSON object instead of lines")
    p.add_argument("--quick", action="store_true", help=argparse.SUPPRESS)  # tests
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    squares = SQUARE[:1] if args.quick else SQUARE
    convs = CONVS[2:3] if args.quick else CONVS
    with torch.inference_mode():
        rows = [matmul(s, args.repeats) for s in squares]
        rows += [conv(*c, args.repeats) for c in convs]
        if args.bf16:
            rows += [matmul(s, args.repeats, torch.bfloat16) for s in squares]
    result = {"threads": torch.get_num_threads(), "torch": torch.__version__, "rows": rows,
              "peak_gflops": max(r["gflops"] for r in rows if r["op"] == "matmul"),
              "conv_peak_gflops": max(r["gflops"] for r in rows if r["op"] == "conv")}
    if args.json:
        print(json.dumps(result))
    else:
        for r in rows:
            model = f" model={r['model']}" if "model" in r else ""
            print(f"{r['op']} threads={result['threads']}{model} {r['shape']} "
                  f"gflops={r['gflops']:.1f}")
        print(f"peak_gflops={result['peak_gflops']:.1f} "
              f"conv_peak_gflops={result['conv_peak_gflops']:.1f}")
    return result


if __name__ == "__main__":
    main()
