"""The peer side of ``op_floor.py``: the floor of diffusers' steps of the same shapes.

    /tmp/gaf-peers/bin/python benchmarks/op_floor_diffusers_peer.py [CASE ...]
        [--steps 10] [--calls 9] [--threads 2] [--ops N] [--json]

Imports only torch and diffusers (it runs in the peer venv). The cases, each the step of
a peer script:

* ``ldm-train``, ``ldm-sample``: ``compile_probe_diffusers_peer.py``'s steps (the UNet of
  ``/work/shared/peers/diffusers_ldm_bench.py``: a training step on batch 64, one guided
  DDIM step on 32 rows);
* ``imagen-cascade``: one call of ``imagen_diffusers_peer.py``'s cascade on 50 captions
  with 5 DDIM steps per stage instead of 25 (``step_profile.py``'s gaf case).

glibc's thresholds are set as gaf's processes set them (``tuned_malloc.tune``). The
recording, the replay and the output are ``op_floor.py``'s, prefixed ``op_floor_peer``.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import op_floor  # noqa: E402 (torch only)
import tuned_malloc  # noqa: E402

CASES = ("ldm-train", "ldm-sample", "imagen-cascade")


def build_step(name: str, tiny: bool) -> tuple[Callable[[], None], str]:
    if name.startswith("ldm-"):
        import compile_probe_diffusers_peer as ldm

        torch.manual_seed(0)
        unet = ldm.build()
        if name == "ldm-train":
            return ldm.train_step(unet), "diffusers UNet train, batch 64"
        return ldm.sample_step(unet), "diffusers UNet DDIM+CFG step, batch 16 (x2 rows)"
    import imagen_diffusers_peer as imagen

    batch, steps = (2, 2) if tiny else (50, 5)
    base, sr = imagen.build()
    run = (base, sr, imagen.scheduler(), imagen.scheduler(), imagen.text_states(batch),
           steps, steps)

    def step() -> None:
        imagen.cascade(*run)

    return step, f"diffusers imagen cascade, {batch} captions, DDIM {steps}+{steps}"


def main(argv: Sequence[str] | None = None) -> list[dict]:
    p = op_floor.arguments(__doc__.splitlines()[0], CASES)
    args = p.parse_args(argv)
    for name in args.cases:
        if name not in CASES:
            p.error(f"unknown case {name!r}; the cases are {', '.join(CASES)}")
    torch.set_num_threads(args.threads)
    tuned_malloc.tune()
    rows = []
    for name in args.cases or CASES:
        step, what = build_step(name, args.tiny)
        row = op_floor.floor_of(step, name != "ldm-train", args.steps, args.calls, args.ops)
        rows.append({"case": name, **row})
        op_floor.print_row("op_floor_peer", name, what, row, args.json)
    return rows


if __name__ == "__main__":
    main()
