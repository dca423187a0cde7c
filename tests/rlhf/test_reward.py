"""The reward model and the ``reward`` objective: the K-ranked loss against float64
references, the score read at the last real token, K forwards per ranking, and a
trained model that loads back as ``--reward RUN_DIR``."""

from __future__ import annotations

import json
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import gaf
from gaf.components import create_or_load
from gaf.errors import BadConfig
from gaf.plugins.rlhf.losses import ranked_reward_loss
from gaf.plugins.rlhf.reward_model import RewardModel

TINY = ["policy.n_layer=1", "policy.d_model=32", "policy.n_head=2", "device=\"cpu\"",
        "progress=false"]
finite = st.floats(-30, 30, allow_nan=False)


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(finite, finite), min_size=1, max_size=8))
def test_k2_is_the_pairwise_loss(pairs):
    rw = torch.tensor([a for a, _ in pairs], dtype=torch.float64)
    rl = torch.tensor([b for _, b in pairs], dtype=torch.float64)
    got = ranked_reward_loss(rw, rl, torch.arange(len(pairs)), len(pairs))
    want = sum(-math.log(1 / (1 + math.exp(-(a - b)))) if a - b > -30 else b - a
               for a, b in pairs) / len(pairs)
    assert abs(float(got) - want) < 1e-9 * max(1.0, abs(want))


@settings(max_examples=50, deadline=None)
@given(st.lists(st.lists(finite, min_size=2, max_size=9), min_size=1, max_size=5),
       st.floats(0, 2))
def test_k_ranked_loss_is_the_mean_over_prompts_of_the_mean_over_pairs(rankings, margin):
    """Rewards listed best first: every i < j is a pair (C(K, 2) per prompt)."""
    rw, rl, group, want = [], [], [], 0.0
    for g, r in enumerate(rankings):
        terms = []
        for i in range(len(r)):
            for j in range(i + 1, len(r)):
                rw.append(r[i])
                rl.append(r[j])
                group.append(g)
                x = r[i] - r[j] - margin
                terms.append(math.log1p(math.exp(-x)) if x > -30 else -x)
        want += sum(terms) / len(terms)
    want /= len(rankings)
    got = ranked_reward_loss(torch.tensor(rw, dtype=torch.float64),
                             torch.tensor(rl, dtype=torch.float64), torch.tensor(group),
                             len(rankings), margin)
    assert abs(float(got) - want) < 1e-9 * max(1.0, want)


def tiny_model(seed=0):
    torch.manual_seed(seed)
    return gaf.create("reward", "gpt2-reward", n_layer=1, d_model=32, n_head=2)


def test_head_starts_small_and_centred():
    rm = tiny_model()
    assert float(rm.score.bias.detach().abs().max()) == 0.0
    assert abs(float(rm.score.weight.detach().std()) - 1 / math.sqrt(33)) < 0.07
    with torch.no_grad():
        scores = rm(["The film"] * 3, [" was a joy.", " was dull.", " ok."])
    assert float(scores.abs().max()) < 3


def test_score_is_read_at_the_last_real_token_never_a_pad():
    rm = tiny_model().eval()
    prompts = ["The film", "I saw it and", "Honestly,"]
    completions = [" was a joy.", " it was dull and far too long for me.", " weak."]
    with torch.no_grad():
        together = rm(prompts, completions)  # right-padded to the longest row
        alone = torch.stack([rm([p], [c])[0] for p, c in zip(prompts, completions)])
        batch = rm.prepare(prompts, completions)
        hidden = rm.body(batch.input_ids)
        eos = [len(rm.tokenizer.encode(p)) + len(rm.tokenizer.encode(c)) + 1
               for p, c in zip(prompts, completions)]  # index of EOS after BOS p c
        direct = rm.score(hidden[torch.arange(3), torch.tensor(eos)]).squeeze(-1)
    assert torch.allclose(together, alone, atol=1e-5)
    assert torch.allclose(together, direct, atol=1e-6)
    assert batch.input_ids[2, eos[2] + 1:].eq(rm.tokenizer.pad_id).all()  # pads after it


def ranked_data(tmp_path):
    rows = []
    for i in range(12):
        rows.append({"prompt": f"Review {i}:", "responses": [" great fun.", " fine.", " dull.",
                                                             " awful mess."],
                     "ranking": [0, 1, 2, 3]})
    path = tmp_path / "ranked.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_one_ranking_costs_k_forwards_and_its_pairs_come_from_them(tmp_path):
    from gaf.plugins.rlhf.reward_training import RewardTraining
    from gaf.runs import RunContext
    from gaf.spec import resolve

    data = ranked_data(tmp_path)
    spec = resolve(objective="reward", components={"task": "jsonl", "policy": "gpt2-tiny"},
                   sets=[f"task.path={json.dumps(str(data))}", *TINY,
                         "objective.sft_steps=0", "train.batch_size=3"])
    obj = RewardTraining(spec.objective_config)
    obj.setup(RunContext(spec, tmp_path / "run"))
    scored, lm = obj.train_batch(0)
    assert lm.input_ids.shape[0] == 3 * 4  # K = 4 sequences per ranking, not 2 * C(4, 2)
    assert sum(len(pairs) for _, pairs in scored.units) == 3 * 6
    loss, metrics = obj.loss((scored, lm))
    assert torch.isfinite(loss) and 0 <= metrics["accuracy"] <= 1


def test_reward_run_trains_and_loads_back_as_a_reward(tmp_path):
    data = ranked_data(tmp_path)
    run_dir, summary = gaf.run("reward", policy="gpt2-tiny", task="jsonl", sets=[
        f"task.path={json.dumps(str(data))}", f"out_dir={json.dumps(str(tmp_path))}", *TINY,
        "objective.sft_steps=0", "train.steps=40", "train.batch_size=4", "train.lr=3e-3",
        "task.eval_fraction=0.25"])
    assert summary["accuracy"] == 1.0  # held-out rankings, ordered as labelled
    assert summary["final"]["loss"] < math.log(2)
    rm = gaf.load("reward", run_dir)
    assert isinstance(rm, RewardModel)
    scores = rm(["Review 99:"] * 2, [" great fun.", " awful mess."])
    assert scores.shape == (2,) and scores[0] > scores[1]
    same = create_or_load(gaf.REGISTRY, "reward", str(run_dir))  # what --reward RUN_DIR does
    assert torch.equal(same(["x"], [" fine."]), rm(["x"], [" fine."]))


def test_bad_options():
    from gaf.plugins.rlhf.reward_training import RewardConfig

    with pytest.raises(BadConfig, match="margin"):
        RewardConfig(margin=-1.0)
