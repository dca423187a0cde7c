"""A tiny objective for testing the training loop without any plugin."""

from __future__ import annotations

import attrs
import torch
from torch import nn

from gaf.config import option


@attrs.define
class ToyConfig:
    n: int = option(64, "examples")
    dropout: float = option(0.05, "input dropout")
    nan_from: int = option(-1, "micro-batch index from which the loss is NaN (-1 = never)")


class Toy:
    """Linear regression with dropout (so resuming must restore the RNG)."""

    Config = ToyConfig
    uses: dict = {}
    train_defaults = {"steps": 20, "batch_size": 16, "lr": 0.2, "log_every": 1}

    def __init__(self, config: ToyConfig | None = None):
        self.config = config or ToyConfig()

    def setup(self, ctx):
        gen = torch.Generator().manual_seed(1234)
        self.x = torch.randn(self.config.n, 4, generator=gen)
        self.y = self.x @ torch.tensor([1.0, -2.0, 0.5, 3.0]) + 0.1
        self.model = nn.Sequential(nn.Dropout(self.config.dropout), nn.Linear(4, 1))
        self.bs = ctx.spec.train.batch_size

    def modules(self):
        return {"model": self.model}

    def train_batch(self, index):
        rows = (torch.arange(self.bs) + index * self.bs) % self.config.n
        return index, self.x[rows], self.y[rows]

    def loss(self, batch):
        index, x, y = batch
        loss = ((self.model(x).squeeze(-1) - y) ** 2).mean()
        if 0 <= self.config.nan_from <= index:
            loss = loss * float("nan")
        return loss, {"mse": loss.item()}

    def evaluate(self, ctx):
        return {"final_mse": float(((self.model(self.x).squeeze(-1) - self.y) ** 2).mean())}
