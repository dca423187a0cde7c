"""The UNet's two inference-only kernels, and the schedulers' thresholding quantile,
against the PyTorch ops they replace, per shape.

    python benchmarks/unet_kernels.py [--threads 2] [--repeats 3] [--calls 15]
        [--only group_norm|attention|quantile ...]

* **GroupNorm** on a channels-last float32 map ``(B, C, H, W)`` with 16 groups:
  ``F.group_norm`` (PyTorch's channels-last CPU kernel, and, for reference, its kernel
  on the same values laid out NCHW) against ``group_norm_from_sums`` of
  ``gaf.plugins.diffusion.unet.group_norm``, over batch 100 and 16, channels per group
  ``D`` in 2, 3, 4, 6, 8, 12, 16 and sides 4, 8, 16, 24, 32. Each row also says whether
  ``GroupNorm32`` takes the sums path at that shape (``uses_sums``).
* **Attention** ``softmax(q k^T / sqrt(hd)) v`` on ``(B, heads, N, hd)`` head views of a
  projection (strided, as the UNet's ``Attention`` passes them), to the heads side by
  side ``(B, N, heads * hd)``: the fused ``F.scaled_dot_product_attention`` (and the
  copy of its output into that layout) against the GEMMs per head of
  ``gaf.plugins.diffusion.unet.attention.attend`` (forced on whatever the size), over the
  imagen and ldm UNets' self- and cross-attention shapes and longer ones, with whether
  ``attend`` takes the GEMMs at that shape (``taken``).
* **Thresholding quantile**: the ``0.995`` quantile of each row of ``|x̂0|`` (dynamic
  thresholding, every sampling step of the ``imagen`` stages): ``torch.quantile`` (a
  sort per row) against ``row_quantile`` of ``gaf.plugins.diffusion.schedule_math`` (a
  top-k selection, the same values), over the cascade's shapes: 50 images of 3x16x16
  and of 3x32x32.

Every figure is the minimum over ``--repeats`` of the median of ``--calls`` timed calls
(after 3 untimed), in microseconds, under ``torch.inference_mode`` on ``--threads``
threads. Prints one JSON line per shape (``kind``, the shape, the times, ``ratio`` =
gaf's path over PyTorch's channels-last op, ``taken``).

Run on an otherwise idle machine; measured figures go to docs/benchmarks.md (§ GroupNorm
on channels-last maps, § Attention at short lengths) with the commit. No test asserts a
timing (tests/benchmarks/test_unet_kernels.py runs one tiny shape of each and checks
the output's form).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

import gaf.plugins.diffusion.unet.attention as attention
from gaf.plugins.diffusion.schedule_math import row_quantile
from gaf.plugins.diffusion.unet.group_norm import GroupNorm32, group_norm_from_sums

GROUPS = 16
NORM_BATCHES = (100, 16)
PER_GROUP = (2, 3, 4, 6, 8, 12, 16)
SIDES = (4, 8, 16, 24, 32)
#: (batch, heads, queries N, keys L, head_dim): the imagen base (8x8 and 4x4 maps, 64
#: channels in 4 heads, a 24-token text context) and super-resolution stage, the ldm
#: default (8x8 latents, 8 heads), then longer sequences where the fused kernel wins
ATTENTION = ((100, 4, 64, 64, 16), (100, 4, 64, 24, 16), (100, 4, 16, 16, 32),
             (100, 4, 16, 24, 32), (64, 8, 64, 64, 8), (64, 8, 64, 16, 8),
             (100, 4, 256, 24, 16), (16, 4, 1024, 24, 16), (100, 4, 128, 128, 16),
             (4, 8, 256, 256, 8), (16, 8, 256, 256, 8), (50, 4, 256, 256, 16),
             (2, 8, 1024, 1024, 8))

#: (rows, values per row): the imagen base's and super-resolution stage's x̂0 at 50 images
QUANTILE = ((50, 3 * 16 * 16), (50, 3 * 32 * 32))
QUANTILE_LEVEL = 0.995  # the schedulers' default dynamic_thresholding_ratio
KINDS = ("group_norm", "attention", "quantile")


def timed(fn: Callable[[], object], repeats: int, calls: int) -> float:
    """Microseconds: the minimum over ``repeats`` of the median of ``calls`` calls."""
    best = float("inf")
    for _ in range(repeats):
        for _ in range(3):
            fn()
        times = []
        for _ in range(calls):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        best = min(best, statistics.median(times))
    return 1e6 * best


def group_norm_rows(batches: Sequence[int], per_group: Sequence[int], sides: Sequence[int],
                    repeats: int, calls: int) -> list[dict]:
    rows = []
    for batch in batches:
        for d in per_group:
            channels = GROUPS * d
            norm = GroupNorm32(GROUPS, channels)
            for side in sides:
                x = torch.randn(batch, channels, side, side)
                cl = x.contiguous(memory_format=torch.channels_last)
                w, b = norm.weight, norm.bias
                native = timed(lambda: F.group_norm(cl, GROUPS, w, b, 1e-5), repeats, calls)
                nchw = timed(lambda: F.group_norm(x, GROUPS, w, b, 1e-5), repeats, calls)
                sums = timed(lambda: group_norm_from_sums(cl, GROUPS, w, b, 1e-5), repeats,
                             calls)
                rows.append({"kind": "group_norm", "batch": batch, "channels": channels,
                             "per_group": d, "side": side, "torch_channels_last_us": native,
                             "torch_nchw_us": nchw, "sums_us": sums, "ratio": sums / native,
                             "taken": norm.uses_sums(cl)})
                print(json.dumps(rows[-1]), flush=True)
    return rows


def attention_rows(shapes: Sequence[tuple[int, ...]], repeats: int, calls: int) -> list[dict]:
    rows = []
    for batch, heads, n, length, hd in shapes:
        q = torch.randn(batch, n, heads, hd).permute(0, 2, 1, 3)
        k, v = torch.randn(2, batch, length, heads, hd).permute(0, 1, 3, 2, 4)
        taken = (length <= attention.KEYS_MAX
                 and batch * n * length * 4 <= attention.SCORES_MAX_BYTES)
        fused = timed(lambda: F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(
            batch, n, heads * hd), repeats, calls)
        limits = attention.KEYS_MAX, attention.SCORES_MAX_BYTES
        attention.KEYS_MAX = attention.SCORES_MAX_BYTES = 1 << 62  # the GEMMs at any size
        try:
            gemms = timed(lambda: attention.attend(q, k, v), repeats, calls)
        finally:
            attention.KEYS_MAX, attention.SCORES_MAX_BYTES = limits
        rows.append({"kind": "attention", "batch": batch, "heads": heads, "queries": n,
                     "keys": length, "head_dim": hd, "sdpa_us": fused, "gemms_us": gemms,
                     "ratio": gemms / fused, "taken": taken})
        print(json.dumps(rows[-1]), flush=True)
    return rows


def quantile_rows(shapes: Sequence[tuple[int, int]], repeats: int, calls: int) -> list[dict]:
    rows = []
    for n_rows, n in shapes:
        a = torch.randn(n_rows, n).abs()
        q = QUANTILE_LEVEL
        sort = timed(lambda: torch.quantile(a, q, dim=1), repeats, calls)
        select = timed(lambda: row_quantile(a, q), repeats, calls)
        rows.append({"kind": "quantile", "rows": n_rows, "values": n, "level": q,
                     "torch_quantile_us": sort, "row_quantile_us": select,
                     "ratio": select / sort, "taken": True})
        print(json.dumps(rows[-1]), flush=True)
    return rows


def main(argv: Sequence[str] | None = None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--calls", type=int, default=15)
    p.add_argument("--only", choices=KINDS, action="append",
                   help="time this kind only (repeatable; default: every kind)")
    p.add_argument("--tiny", action="store_true", help="one small shape of each (the test)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    r, c = args.repeats, args.calls
    runs = {"group_norm": lambda: group_norm_rows(NORM_BATCHES, PER_GROUP, SIDES, r, c),
            "attention": lambda: attention_rows(ATTENTION, r, c),
            "quantile": lambda: quantile_rows(QUANTILE, r, c)}
    if args.tiny:
        runs = {"group_norm": lambda: group_norm_rows((2,), (2,), (8,), r, c),
                "attention": lambda: attention_rows(((2, 2, 16, 8, 4),), r, c),
                "quantile": lambda: quantile_rows(((2, 48),), r, c)}
    with torch.inference_mode():
        return [row for kind in KINDS if kind in (args.only or KINDS) for row in runs[kind]()]


if __name__ == "__main__":
    main()
