"""Measured figures live in docs/results.md and docs/benchmarks.md, next to the commands
that produced them, not in docstrings and comments, where they go stale (issue 14 §6).

This catches the forms that have gone stale before: timings (``~90 s``, ``0.68 ms``,
``about 3 minutes``), speed ratios (``1.3x faster``), throughputs (``300 GFLOP/s``,
``images/s``) and "on a 2-core CPU" measurement notes. Code states contracts (shapes
such as 3x3 and 32×32, defaults, tolerances its tests enforce, paper constants),
which these patterns leave alone. Accuracy, FD or reward values are not matched:
a regex cannot tell them from constants; reviewers can.
"""

from __future__ import annotations

import ast
import io
import re
import tokenize
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TREES = ("core", "plugins", "examples")

FIGURE = re.compile(
    r"(?:~|≈|about |takes |took |in )\d[\d,]*(?:\.\d+)? ?(?:s|ms|µs|us|min|minutes|seconds|hours?)\b"
    r"|\b\d[\d,]*(?:\.\d+)? ?(?:ms|µs)\b"
    r"|\b\d+(?:\.\d+)?(?:[-–]\d+(?:\.\d+)?)? ?[×x] (?:faster|slower|speed-?up)"
    r"|\d ?[GT]FLOP/s|\d ?(?:images|tokens|samples|examples|steps|it)/s\b"
    r"|\b(?:on|with) (?:an? )?(?:idle |otherwise idle )?\d+[- ](?:core|CPU)", re.I)


def _prose(path: Path) -> Iterator[tuple[int, str]]:
    """``(line, text)`` of every comment and docstring line of a Python file."""
    source = path.read_text()
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT:
            yield tok.start[0], tok.string
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            doc = ast.get_docstring(node, clean=False)
            if doc:
                for i, line in enumerate(doc.splitlines()):
                    yield node.body[0].lineno + i, line


def _figures(path: Path) -> list[str]:
    rel = path.relative_to(ROOT).as_posix()
    return [f"{rel}:{line}: {text.strip()}" for line, text in _prose(path)
            if FIGURE.search(text)]


def test_the_pattern_finds_what_went_stale_and_spares_contracts():
    stale = ["# Measured on an idle 2-core CPU: 854 s for the 4,000 steps",
             "took 0.68 ms where the hand-written one took 3.0 ms",
             "sampling forward (batch 32) is ~1.3-1.4x faster", "(~300 GFLOP/s)",
             "steps each run takes about 3 minutes on a 2-core CPU."]
    contracts = ["conv3×3(C→w) → [conv3×3 stride 2 → conv3×3] × 2 stages",
                 "Gaussian 11×11 window, σ = 1.5", "β from 1e-4 to 0.02 over 1000 steps",
                 "32x32 shapes, f=4, c=3, 2000 steps of 16 images",
                 "exact (tests hold it to >= 98%)", "β=0.1 as in the DPO paper"]
    assert all(FIGURE.search(t) for t in stale)
    assert not any(FIGURE.search(t) for t in contracts)


def test_no_measured_figures_in_docstrings_or_comments():
    found = [hit for tree in TREES for path in sorted((ROOT / tree).rglob("*.py"))
             if "build" not in path.parts for hit in _figures(path)]
    assert not found, ("measured figures belong in docs/results.md or docs/benchmarks.md "
                       "(with their command); state the contract here instead:\n"
                       + "\n".join(found))
