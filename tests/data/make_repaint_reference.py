"""Record diffusers' RePaint time schedules into ``repaint_reference.json`` (beside this file).

gaf does not depend on diffusers; ``tests/diffusion/test_repaint.py`` compares
:func:`gaf.plugins.diffusion.repaint.jump_schedule` with this fixture. Regenerate it with
the peer venv (diffusers + torch; ``bash /work/shared/peers/setup.sh`` creates it)::

    /tmp/gaf-peers/bin/python tests/data/make_repaint_reference.py

Each case is ``RePaintScheduler(num_train_timesteps=1000).set_timesteps(steps,
jump_length, jump_n_sample)``'s ``timesteps``: RePaint's jump schedule in grid positions
times ``1000 // steps``, without the paper's final −1. The cases cover the paper's
setting (250, 10, 10), gaf's defaults (50, 2, 10), no resampling (r = 1), a jump as long
as the grid (no jump points), jump length 1, and grids that the jump length does not
divide.
"""

from __future__ import annotations

import json
from pathlib import Path

import diffusers
import torch
from diffusers import RePaintScheduler

OUT = Path(__file__).with_name("repaint_reference.json")
T = 1000
CASES = [(250, 10, 10), (50, 2, 10), (50, 10, 10), (100, 10, 5), (20, 3, 4), (13, 4, 2),
         (10, 1, 3), (10, 10, 10), (10, 9, 3), (7, 2, 1), (1, 1, 1), (2, 1, 2), (37, 5, 3)]


def main() -> None:
    cases = []
    for steps, jump_length, jump_n_sample in CASES:
        s = RePaintScheduler(num_train_timesteps=T)
        s.set_timesteps(steps, jump_length=jump_length, jump_n_sample=jump_n_sample)
        cases.append({"steps": steps, "jump_length": jump_length,
                      "jump_n_sample": jump_n_sample, "timesteps": s.timesteps.tolist()})
    data = {"diffusers": diffusers.__version__, "torch": torch.__version__,
            "num_train_timesteps": T, "cases": cases}
    OUT.write_text(json.dumps(data, separators=(",", ":")) + "\n")
    print(f"wrote {len(cases)} cases to {OUT}")


if __name__ == "__main__":
    main()
