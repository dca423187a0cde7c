"""What the benchmark scripts' tests share about their cost pass (benchmarks/step_cost.py):
recording each ``step_cost.measure`` call, counting the timed work's FLOPs up to the
first of them, and reading a cost line."""

from __future__ import annotations

import contextlib
from typing import Any

from torch.utils.flop_counter import FlopCounterMode


class CostPass:
    """Patches ``module.step_cost.measure`` for the test: each call's keyword arguments go
    to ``calls`` and its result to ``costs``. Used as a context manager around the run, it
    also counts every FLOP until the first cost pass starts (the cost pass runs after all
    the timed work, so ``timed_flops`` is the timed work's count, warm-ups included)."""

    def __init__(self, monkeypatch: Any, module: Any) -> None:
        self.calls: list[dict] = []
        self.costs: list[dict] = []
        self.timed_flops: float | None = None
        self._counter: FlopCounterMode | None = None
        self._measure = module.step_cost.measure
        self._counting = contextlib.ExitStack()
        monkeypatch.setattr(module.step_cost, "measure", self._record)

    def __enter__(self) -> CostPass:
        self._counter = self._counting.enter_context(FlopCounterMode(display=False))
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop()

    def flops(self) -> float:
        """The FLOPs counted so far (inside the ``with`` block, before the cost pass)."""
        return float(self._counter.get_total_flops())

    def _stop(self) -> None:
        if self.timed_flops is None and self._counter is not None:
            self.timed_flops = float(self._counter.get_total_flops())
            self._counting.close()

    def _record(self, unit: Any, **kw: Any) -> dict:
        self._stop()  # the cost pass is not timed work
        self.calls.append(kw)
        self.costs.append(self._measure(unit, **kw))
        return self.costs[-1]

    def counted_flops(self) -> float:
        """``Σ units × gflop_per_unit`` over the recorded passes, in FLOPs."""
        return sum(c["units"] * r["gflop_per_unit"] * 1e9
                   for c, r in zip(self.calls, self.costs))


def cost_fields(line: str) -> tuple[str, dict[str, str]]:
    """``(name, {field: value})`` of a ``<name> key=value ...`` line."""
    name, *fields = line.split()
    return name, dict(f.split("=", 1) for f in fields)


def checked_cost_line(line: str, name: str, unit: str, categories: Any) -> dict[str, str]:
    """The fields of the cost line ``line`` after what every cost line must show: the
    ``name`` and ``unit``, a share for each of ``categories`` (``step_cost.CATEGORIES``),
    and a positive FLOP count and rate."""
    head, fields = cost_fields(line)
    assert head == name and fields["unit"] == unit, line
    assert set(categories) <= fields.keys(), line
    assert float(fields["gflop_per_unit"]) > 0 and float(fields["achieved_gflops"]) > 0, line
    return fields


def count_each_call(monkeypatch: Any, module: Any, name: str, cost: CostPass,
                    prepare: Any = None) -> list[int]:
    """Patch ``module.<name>`` so that each call outside ``cost``'s pass has its FLOPs
    counted alone (``prepare(*args)`` first, if given); returns the list the counts go
    to, one per call in order."""
    flops: list[int] = []
    original = getattr(module, name)

    def counted(*args: Any, **kwargs: Any) -> Any:
        if cost.calls:  # the cost pass: counted by its own measure
            return original(*args, **kwargs)
        if prepare is not None:
            prepare(*args)
        with FlopCounterMode(display=False) as counter:
            out = original(*args, **kwargs)
        flops.append(counter.get_total_flops())
        return out

    monkeypatch.setattr(module, name, counted)
    return flops
