"""A tiny saved GPT-2 over ``shapes-bpe`` (2 layers, 16 wide), the language model of the
``lm-text`` tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

import gaf


def save_tiny_lm(directory: Path) -> tuple[Path, Any]:
    """Save a seeded untrained tiny GPT-2 policy in ``directory/policy``; return the path
    and the policy (eval mode)."""
    torch.manual_seed(0)
    policy = gaf.create("policy", "gpt2-tiny", n_layer=2, n_head=2, d_model=16,
                        n_positions=32, tokenizer="shapes-bpe")
    path = directory / "policy"
    gaf.save(policy, path)
    return path, policy.eval()
