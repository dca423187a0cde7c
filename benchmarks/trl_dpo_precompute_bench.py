"""The peer DPO benchmark with TRL's reference log-probs precomputed once.

    /tmp/gaf-peers/bin/python benchmarks/trl_dpo_precompute_bench.py [STEPS]
        [--without-checkpointing] [--reference-every-step]

Runs ``../shared/peers/trl_dpo_bench.py`` (TRL's ``DPOTrainer`` on the gpt2-tiny shape)
with one change to its source: ``precompute_ref_log_probs=True`` in its ``DPOConfig``.
Nothing else in the peer script is edited; its line is printed with
``trl_dpo_precompute`` as its name, and its ``pairs_per_s`` still times
``trainer.train()`` only.

Where TRL 1.16 does the precomputation: in ``DPOTrainer.__init__``
(``_precompute_ref_logps`` over the training set, batch 8), i.e. *before* the peer's
timer starts. So this script's ``pairs_per_s`` is TRL's training steps alone, with the
reference log-probs already cached, which is what gaf's ``train_only_pairs_per_s``
measures. To put the reference pass back in, the script also wraps (without changing
what they do) ``DPOTrainer.__init__`` and ``DPOTrainer._precompute_ref_logps`` in
timers and prints a second line::

    trl_dpo_precompute_setup init_s=… ref_precompute_s=… with_ref_pairs_per_s=… \
        init_and_train_pairs_per_s=…

``with_ref_pairs_per_s`` counts the reference pass plus ``train()``;
``init_and_train_pairs_per_s`` counts the whole trainer construction (tokenising the
dataset, the reference pass) plus ``train()``, the counterpart of gaf's
``setup_s + train_s``. Runs in the peers' venv (``../shared/peers/setup.sh``); it
imports nothing from gaf.

TRL 1.16's ``DPOConfig`` turns gradient checkpointing on by default
(``gradient_checkpointing=True``: each block's forward runs again in the backward), and
the shared peer script keeps TRL's defaults; gaf never recomputes activations. Two flags
make the like-for-like variants:

* ``--without-checkpointing`` adds ``gradient_checkpointing=False`` to the ``DPOConfig``
  (the line's name gains ``_nockpt``);
* ``--reference-every-step`` leaves ``precompute_ref_log_probs`` at TRL's default (a
  reference forward every step, as the shared script) and prints only the peer's line,
  named ``trl_dpo`` (+ ``_nockpt``): with ``--without-checkpointing``, the shared
  script with gradient checkpointing off and nothing else changed.
"""

from __future__ import annotations

import functools
import sys
import time
from pathlib import Path

from trl import DPOTrainer

PEER = Path(__file__).resolve().parents[1].parent / "shared" / "peers" / "trl_dpo_bench.py"
OPTION = "max_length=128)"

FLAGS = ("--without-checkpointing", "--reference-every-step")
flags = {a for a in sys.argv[1:] if a in FLAGS}
unknown = [a for a in sys.argv[1:] if a.startswith("-") and a not in FLAGS]
if unknown:
    raise SystemExit(f"unknown option {unknown[0]!r}; the options are {', '.join(FLAGS)}")
precompute = "--reference-every-step" not in flags
options = ", precompute_ref_log_probs=True" if precompute else ""
name = "trl_dpo_precompute" if precompute else "trl_dpo"
if "--without-checkpointing" in flags:
    options += ", gradient_checkpointing=False"
    name += "_nockpt"

source = PEER.read_text()
if source.count(OPTION) != 1:
    raise SystemExit(f"{PEER}: expected one {OPTION!r} to add the options to")
source = source.replace(OPTION, f"max_length=128{options})")
source = source.replace('print(f"trl_dpo ', f'print(f"{name} ')

timers = {"init_s": 0.0, "ref_precompute_s": 0.0}


def timed(name, method):
    @functools.wraps(method)
    def wrapper(*args, **kwargs):
        t0 = time.perf_counter()
        try:
            return method(*args, **kwargs)
        finally:
            timers[name] += time.perf_counter() - t0
    return wrapper


DPOTrainer.__init__ = timed("init_s", DPOTrainer.__init__)
DPOTrainer._precompute_ref_logps = timed("ref_precompute_s", DPOTrainer._precompute_ref_logps)

sys.argv = [str(PEER), *(a for a in sys.argv[1:] if a not in FLAGS)]
peer = {"__name__": "__main__", "__file__": str(PEER)}
exec(compile(source, str(PEER), "exec"), peer)
if not precompute:
    raise SystemExit(0)
if not timers["ref_precompute_s"] > 0:
    raise SystemExit("DPOTrainer._precompute_ref_logps did not run: this TRL precomputes "
                     "elsewhere; the timers above need updating")
pairs, train_s = peer["BATCH"] * peer["STEPS"], peer["dt"]
print(f"{name}_setup init_s={timers['init_s']:.2f} "
      f"ref_precompute_s={timers['ref_precompute_s']:.2f} "
      f"with_ref_pairs_per_s={pairs / (timers['ref_precompute_s'] + train_s):.2f} "
      f"init_and_train_pairs_per_s={pairs / (timers['init_s'] + train_s):.2f}")
