"""How much of a caption a frozen text encoder's states still hold: an attention probe.

``lm-text`` hands a causal language model's final states to the noise model's
cross-attention. This script asks what such an attention can read from them: for every
attribute a ``shapes`` caption states (colour, shape, size, position; the first
object's), a probe with ``--heads`` learned queries attends over the caption's token
states (pads masked), concatenates what each head read and classifies the attribute
linearly. Trained on the dataset's first 80% of captions stating the attribute, scored
on the other 20% (accuracy, one seed). Readouts compared:

* ``final``: the LM's ``ln_f`` states, ``lm-text`` with ``embeddings=false``;
* ``final+embeddings``: plus the layer-normed input token embeddings, ``lm-text``'s
  default;
* ``embeddings``: the input token embeddings alone (layer-normed), what a bag of words
  gives;
* ``block k``: block ``k``'s output, layer-normed.

    python benchmarks/text_encoder_probe.py --lm runs/imagen/text_encoder

Prints one JSON line per readout (accuracy per attribute).
"""

from __future__ import annotations

import argparse
import json

import torch
from torch import Tensor, nn
from torch.nn import functional as F

ATTRIBUTES = ("colour", "shape", "size", "position")


def labelled_captions(size: int) -> tuple[list[str], dict[str, list[str | None]]]:
    """The ``shapes`` training captions and, per attribute, what each one states."""
    from gaf.plugins.images.shapes_eval import parse_caption
    from gaf.registry import create

    dataset = create("dataset", "shapes", size=size)
    captions = [dataset.caption(i) for i in range(len(dataset))]
    parsed = [parse_caption(c) for c in captions]
    return captions, {a: [p.get(a) for p in parsed] for a in ATTRIBUTES}


def readouts(lm_dir: str, captions: list[str], batch: int = 500) -> tuple[dict[str, Tensor],
                                                                           Tensor]:
    """Each readout's ``(N, L, d)`` states (zero at the pads) and the ``(N, L)`` mask."""
    from gaf.plugins.conditioners.frozen_lm import FrozenLMText, FrozenLMTextConfig

    cond = FrozenLMText(FrozenLMTextConfig(lm=lm_dir, embeddings=False))
    blocks = cond.lm.transformer.h
    caught: dict[int, Tensor] = {}
    hooks = [blk.register_forward_hook(
        lambda mod, args, out, k=k: caught.__setitem__(k, out[0] if isinstance(out, tuple)
                                                       else out))
        for k, blk in enumerate(blocks)]
    parts: dict[str, list[Tensor]] = {}
    masks = []
    try:
        for start in range(0, len(captions), batch):
            chunk = captions[start:start + batch]
            ids, mask = cond.tokenize(chunk)
            keep = mask[..., None].float()
            with torch.no_grad():
                final = cond(chunk)
                words = F.layer_norm(cond.wte(ids), (cond.width,)) * keep
            found = {"final": final, "final+embeddings": final + words, "embeddings": words}
            for k in range(len(blocks)):
                found[f"block {k}"] = F.layer_norm(caught[k], (cond.width,)) * keep
            for name, states in found.items():
                parts.setdefault(name, []).append(states)
            masks.append(mask)
    finally:
        for h in hooks:
            h.remove()
    return {name: torch.cat(v) for name, v in parts.items()}, torch.cat(masks)


class AttentionProbe(nn.Module):
    """``heads`` learned queries over the token states, their reads concatenated, then a
    linear classifier."""

    def __init__(self, width: int, heads: int, classes: int):
        super().__init__()
        self.keys = nn.Linear(width, width)
        self.queries = nn.Parameter(torch.randn(width, heads) * 0.1)
        self.out = nn.Linear(width * heads, classes)

    def forward(self, states: Tensor, mask: Tensor) -> Tensor:
        scores = self.keys(states) @ self.queries                       # (B, L, heads)
        weights = scores.masked_fill(~mask[..., None], float("-inf")).softmax(1)
        return self.out(torch.einsum("blh,bld->bhd", weights, states).flatten(1))


def probe_accuracy(states: Tensor, mask: Tensor, labels: list[str | None], heads: int,
                   steps: int, seed: int) -> float:
    """Held-out accuracy of an :class:`AttentionProbe` trained on the first 80%."""
    rows = [i for i, lab in enumerate(labels) if lab is not None]
    classes = sorted({labels[i] for i in rows})
    y = torch.tensor([classes.index(labels[i]) for i in rows])
    x, m = states[rows], mask[rows].bool()
    n_train = int(0.8 * len(rows))
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    probe = AttentionProbe(x.shape[-1], heads, len(classes))
    opt = torch.optim.Adam(probe.parameters(), lr=1e-2)
    for _ in range(steps):
        pick = torch.randint(0, n_train, (256,), generator=gen)
        loss = F.cross_entropy(probe(x[pick], m[pick]), y[pick])
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        guess = probe(x[n_train:], m[n_train:]).argmax(-1)
    return float((guess == y[n_train:]).float().mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lm", required=True, help="the text encoder: an sft run directory")
    parser.add_argument("--captions", type=int, default=10000, help="shapes dataset size")
    parser.add_argument("--heads", type=int, default=4, help="probe queries (the base "
                                                            "UNet's cross-attention heads)")
    parser.add_argument("--steps", type=int, default=600, help="probe training steps")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(2)
    captions, labels = labelled_captions(args.captions)
    states, mask = readouts(args.lm, captions)
    for name, x in states.items():
        row = {"readout": name, "heads": args.heads}
        for attr in ATTRIBUTES:
            row[attr] = round(probe_accuracy(x, mask, labels[attr], args.heads, args.steps,
                                             args.seed), 3)
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
