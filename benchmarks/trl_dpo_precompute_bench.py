"""The peer DPO benchmark with TRL's reference log-probs precomputed once.

    /tmp/gaf-peers/bin/python benchmarks/trl_dpo_precompute_bench.py [STEPS]

Runs ``../shared/peers/trl_dpo_bench.py`` (TRL's ``DPOTrainer`` on the gpt2-tiny shape)
unchanged except for ``precompute_ref_log_probs=True`` in its ``DPOConfig``: TRL then
scores every reference completion once at the start of ``trainer.train()`` (inside the
timed region) instead of once per step, which is what gaf's ``dpo`` does in its setup.
It prints the peer's line with ``trl_dpo_precompute`` as its name. Runs in the peers'
venv (``../shared/peers/setup.sh``); it imports nothing from gaf.
"""

from __future__ import annotations

import sys
from pathlib import Path

PEER = Path(__file__).resolve().parents[1].parent / "shared" / "peers" / "trl_dpo_bench.py"
OPTION = "max_length=128)"

source = PEER.read_text()
if source.count(OPTION) != 1:
    raise SystemExit(f"{PEER}: expected one {OPTION!r} to add precompute_ref_log_probs to")
source = source.replace(OPTION, "max_length=128, precompute_ref_log_probs=True)")
source = source.replace('print(f"trl_dpo ', 'print(f"trl_dpo_precompute ')
sys.argv = [str(PEER), *sys.argv[1:]]
exec(compile(source, str(PEER), "exec"), {"__name__": "__main__", "__file__": str(PEER)})
