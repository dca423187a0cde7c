"""``reinforce`` and ``rloo``: the loss is the likelihood-ratio estimator with the
right baseline and KL penalty, rollouts are a pure function of the step, and both
train end to end against the true reward or a learned reward model."""

from __future__ import annotations

import json

import torch
from hypothesis import given
from hypothesis import strategies as st

import gaf
from gaf.plugins.rlhf.policy_gradient import RLOO, Reinforce
from gaf.runs import RunContext
from gaf.spec import resolve

TINY = ["policy.n_layer=1", "policy.d_model=32", "policy.n_head=2", "device=\"cpu\"",
        "progress=false", "objective.sft_steps=0", "objective.max_new_tokens=6",
        "objective.eval_prompts=3", "objective.eval_samples=1", "train.batch_size=2"]


def build(tmp_path, cls, *sets, reward=None):
    components = {"reward": reward} if reward else {}
    spec = resolve(objective="rloo" if cls is RLOO else "reinforce", components=components,
                   sets=[*TINY, *sets])
    obj = cls(spec.objective_config)
    obj.setup(RunContext(spec, tmp_path))
    return obj


@given(st.lists(st.lists(st.floats(-5, 5), min_size=2, max_size=5), min_size=1, max_size=4)
       .filter(lambda rows: len({len(r) for r in rows}) == 1))
def test_baselines_center_the_advantages(rows):
    from types import SimpleNamespace

    from gaf.distributed import World

    r = torch.tensor(rows, dtype=torch.float64)
    one = SimpleNamespace(ctx=SimpleNamespace(world=World()))
    assert abs(float(RLOO.baseline(one, r).sum(-1).abs().max())) < 1e-9  # per prompt
    assert abs(float(Reinforce.baseline(one, r).sum())) < 1e-9  # over the batch


def test_loss_is_the_likelihood_ratio_estimator(tmp_path):
    torch.manual_seed(0)
    beta = 0.5
    obj = build(tmp_path, RLOO, f"objective.beta={beta}")
    with torch.no_grad():
        for p in obj.policy.parameters():  # move away from the reference: KL ≠ 0
            p.add_(0.05 * torch.randn_like(p))
    batch = obj.train_batch(0)
    loss, metrics = obj.loss(batch)
    # float64 reference: R = r − β·(log π − log π_ref), A_i = R_i − mean_{j≠i} R_j
    pol, ref = obj.policy.double(), obj.reference.double()
    with torch.no_grad():
        logp = pol.completion_logprobs(batch["batch"]).sequence().sum
        ref_logp = ref.completion_logprobs(batch["batch"]).sequence().sum
    kl = logp - ref_logp
    assert float(kl.abs().max()) > 1e-3 and torch.allclose(batch["kl"].double(), kl, atol=1e-4)
    k = obj.config.samples_per_prompt
    R = (batch["scores"].double() - beta * kl).view(-1, k)
    want_adv = torch.stack([R[:, i] - (R.sum(1) - R[:, i]) / (k - 1) for i in range(k)], 1)
    assert torch.allclose(batch["advantages"].double(), want_adv.flatten(), atol=1e-4)
    assert abs(metrics["objective/rlhf_reward"] - float(R.mean())) < 1e-4
    want = -(want_adv.flatten() * logp).mean()
    assert abs(float(loss.detach()) - float(want)) < 1e-4


def test_rollouts_are_a_pure_function_of_the_step(tmp_path):
    obj = build(tmp_path, Reinforce)
    a, b, c = obj.train_batch(3), obj.train_batch(3), obj.train_batch(4)
    assert torch.equal(a["batch"].input_ids, b["batch"].input_ids)
    assert torch.equal(a["advantages"], b["advantages"])
    assert not torch.equal(a["batch"].input_ids, c["batch"].input_ids)


def test_kl_starts_at_zero(tmp_path):
    obj = build(tmp_path, RLOO, "objective.beta=1.0")
    metrics = obj.train_batch(0)["metrics"]
    assert abs(metrics["objective/kl"]) < 1e-5
    assert abs(metrics["objective/rlhf_reward"] - metrics["objective/scores"]) < 1e-5


def test_rloo_trains_against_a_learned_reward_model(tmp_path):
    torch.manual_seed(0)
    rm = gaf.create("reward", "gpt2-reward", n_layer=1, d_model=32, n_head=2)
    gaf.save(rm, tmp_path / "rm")
    run_dir, summary = gaf.run("rloo", reward=str(tmp_path / "rm"), sets=[
        *TINY, f"out_dir={json.dumps(str(tmp_path))}", "train.steps=3"])
    for key in ("win_rate", "mean_reward", "reference_mean_reward", "kl"):
        assert key in summary, key
    assert "objective/scores" in summary["final"]
    assert (run_dir / "policy" / "gaf.json").is_file()
