"""PNG training curves from ``metrics.jsonl`` (matplotlib, imported only when plotting)."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path


def read_metrics(path: Path) -> list[dict]:
    """The records of a ``metrics.jsonl`` file (an absent file gives ``[]``)."""
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def plot_metrics(records: Sequence[dict], out: Path, *, keys: Sequence[str] | None = None,
                 title: str = "") -> Path | None:
    """Plot each numeric metric against ``step``, one panel per metric; returns the PNG path."""
    if not records:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    skip = {"step", "elapsed_s"}
    if keys is None:
        keys = [k for k in records[-1] if k not in skip and isinstance(records[-1][k], (int, float))]
    keys = list(keys)[:9]
    if not keys:
        return None
    cols = min(3, len(keys))
    rows = math.ceil(len(keys) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.0 * rows), squeeze=False)
    for ax, key in zip(axes.flat, keys):
        pts = [(r["step"], r[key]) for r in records if isinstance(r.get(key), (int, float))]
        ax.plot([p[0] for p in pts], [p[1] for p in pts], lw=1.2)
        ax.set_title(key, fontsize=10)
        ax.set_xlabel("step", fontsize=8)
        ax.grid(alpha=0.3)
        ax.tick_params(labelsize=8)
    for ax in list(axes.flat)[len(keys):]:
        ax.axis("off")
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    tmp.replace(out)
    return out
