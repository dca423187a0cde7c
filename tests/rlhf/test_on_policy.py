"""On-policy means on-policy: reinforce, rloo and ppo refuse samplers whose
distribution they cannot score, score samples drawn at temperature T under
``softmax(logits / T)`` (policy and reference alike, as TRL), PPO logs the KL of its
configured estimator and the policy's entropy, and the held-out KL is scored on the
very tokens drawn."""

from __future__ import annotations

import pytest
import torch

from gaf.errors import BadConfig
from gaf.interfaces import PreferenceGroup
from gaf.plugins.alignment.evaluation import policy_evaluation
from gaf.plugins.rlhf.advantages import kl_k3
from gaf.plugins.rlhf.policy_gradient import RLOO, Reinforce
from gaf.plugins.rlhf.ppo import PPO
from gaf.runs import RunContext
from gaf.spec import resolve

TINY = ["policy.n_layer=1", "policy.d_model=32", "policy.n_head=2", "device=\"cpu\"",
        "progress=false", "objective.sft_steps=0", "objective.max_new_tokens=6",
        "objective.eval_prompts=3", "objective.eval_samples=2", "train.batch_size=2"]
NAMES = {RLOO: "rloo", Reinforce: "reinforce", PPO: "ppo"}


def build(tmp_path, cls, *sets, sampler=None):
    components = {"sampler": sampler} if sampler else {}
    extra = ["objective.num_mini_batches=1", "objective.ppo_epochs=1",
             "train.steps=1"] if cls is PPO else []
    spec = resolve(objective=NAMES[cls], components=components, sets=[*TINY, *extra, *sets])
    obj = cls(spec.objective_config)
    torch.manual_seed(0)
    obj.setup(RunContext(spec, tmp_path))
    return obj


def _perturb(model, scale=0.05):
    torch.manual_seed(5)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(scale * torch.randn_like(p))


@pytest.mark.parametrize("cls", [Reinforce, RLOO, PPO])
@pytest.mark.parametrize("sampler", ["top-p", "top-k", "greedy"])
def test_truncating_samplers_are_refused_with_a_clear_error(tmp_path, cls, sampler):
    with pytest.raises(BadConfig, match=f"sampler '{sampler}'.*--sampler temperature"):
        build(tmp_path, cls, sampler=sampler)


def test_top_p_without_truncation_is_accepted_at_its_temperature(tmp_path):
    obj = build(tmp_path, Reinforce, "sampler.p=1.0", "sampler.temperature=0.8",
                sampler="top-p")
    assert obj.temperature == 0.8


def test_samples_drawn_at_a_temperature_are_scored_at_it(tmp_path):
    T, beta = 0.5, 0.5
    obj = build(tmp_path, RLOO, f"sampler.temperature={T}", f"objective.beta={beta}",
                sampler="temperature")
    _perturb(obj.policy)
    batch = obj.train_batch(0)
    loss, _ = obj.loss(batch)
    pol, ref = obj.policy.double(), obj.reference.double()
    with torch.no_grad():
        logp = pol.completion_logprobs(batch["batch"], temperature=T).sequence().sum
        ref_logp = ref.completion_logprobs(batch["batch"], temperature=T).sequence().sum
        untempered = pol.completion_logprobs(batch["batch"]).sequence().sum
    kl = logp - ref_logp
    assert torch.allclose(batch["kl"].double(), kl, atol=1e-4)
    assert float((untempered - logp).abs().max()) > 1e-2  # T matters here
    k = obj.config.samples_per_prompt
    R = (batch["scores"].double() - beta * kl).view(-1, k)
    adv = torch.stack([R[:, i] - (R.sum(1) - R[:, i]) / (k - 1) for i in range(k)], 1).flatten()
    assert abs(float(loss.detach()) - float(-(adv * logp).mean())) < 1e-4
    assert abs(float(loss.detach()) - float(-(adv * untempered).mean())) > 1e-3


def test_ppo_scores_rollouts_at_the_sampler_temperature(tmp_path):
    T = 0.7
    obj = build(tmp_path, PPO, f"sampler.temperature={T}", sampler="temperature")
    buf = obj.make_rollout(0)
    with torch.no_grad():
        want = obj.policy.completion_logprobs(buf.rollout.batch, temperature=T).token_logps
    assert torch.allclose(buf.logprobs[buf.mask], want.float()[buf.mask], atol=1e-6)


def test_ppo_logs_the_configured_kl_estimator_and_the_entropy(tmp_path):
    obj = build(tmp_path, PPO, "objective.kl_estimator=\"k3\"")
    _perturb(obj.policy)
    buf = obj.make_rollout(0)
    with torch.no_grad():
        ref = obj.reference.completion_logprobs(buf.rollout.batch).token_logps.double()
    k3 = (kl_k3(buf.logprobs.double(), ref) * buf.mask).sum(1)
    assert float(k3.mean()) > 1e-4
    assert abs(buf.metrics["objective/kl"] - float(k3.mean())) < 1e-5
    obj.buffer = buf
    _, metrics = obj.loss(obj.train_batch(0))
    rows = obj.train_batch(0)["rows"]
    with torch.no_grad():
        lp = obj.policy.completion_logprobs(buf.rollout.batch.select(rows), entropy=True)
    assert abs(metrics["policy/entropy_avg"] - lp.mean_entropy()) < 1e-5
    assert metrics["policy/entropy_avg"] > 0


def test_heldout_kl_is_scored_on_the_drawn_tokens(tmp_path):
    """With 2 new tokens nearly every completion is cut short: scored as drawn it has no
    EOS; re-tokenised text with an EOS appended (the old way) gives another number."""
    obj = build(tmp_path, Reinforce, "objective.max_new_tokens=2")
    _perturb(obj.policy, 0.2)
    ctx = obj.ctx
    prompts = obj.heldout_prompts()
    out = policy_evaluation(obj, ctx, prompts)
    drawn = [p for p in prompts for _ in range(obj.config.eval_samples)]
    with torch.no_grad():
        rollout = obj.policy.rollout(drawn, sampler=obj.sampler, max_new_tokens=2,
                                     generator=ctx.generator("eval-policy-samples"))
        want = (obj.policy.completion_logprobs(rollout.batch).sequence().sum
                - obj.reference.completion_logprobs(rollout.batch).sequence().sum)
    assert not bool(rollout.ended.all())
    assert abs(out["kl"] - float(want.double().mean())) < 1e-5
    groups = [PreferenceGroup(p, (y,)) for p, y in zip(drawn, rollout.completions)]
    retokenised = obj.score(obj.policy, groups)[:, 0] - obj.score(obj.reference, groups)[:, 0]
    assert abs(out["kl"] - float(retokenised.mean())) > 1e-3
