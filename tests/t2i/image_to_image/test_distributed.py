"""``image-to-image`` under ``torchrun --nproc_per_node 2`` (gloo, CPU): both ranks end
with identical weights, equal to one process trained on the two ranks' batches put
together (each rank draws its own noise, drops and masks from its first position)."""

from __future__ import annotations

import pytest

from tiny_i2i import TINY  # tests/ is on sys.path (conftest)
from torchrun_launch import assert_two_ranks_equal_merged, two_ranks_and_merged

pytestmark = pytest.mark.slow


def test_two_ranks_agree_and_equal_one_merged_process(tmp_path):
    sets = [*TINY, "train.lr=1e-3", "objective.eval_images=0", "objective.ema_decay=0.9",
            "objective.p_uncond=0.5", "device=\"cpu\""]
    assert_two_ranks_equal_merged(
        two_ranks_and_merged("image-to-image", sets, tmp_path), tmp_path,
        {"noise_model", "conditioner", "noise_model_ema", "conditioner_ema"}, [1, 2, 3],
        ("loss",))
