"""Dropout off, as TRL: from a Hugging Face GPT-2 checkpoint with ``*_pdrop = 0.1`` the
step-0 DPO loss is exactly ln 2, PPO's first minibatch has ratio 1, and a loaded reward
model scores the same text identically twice. With ``disable_dropout=false`` the same
checks fail, so these tests can."""

from __future__ import annotations

import json
import math

import pytest
import torch

import gaf
from gaf.plugins.alignment.base import disable_dropout
from gaf.plugins.lm.hf_gpt2 import save_hf
from gaf.plugins.rlhf.ppo import PPO
from gaf.runs import RunContext
from gaf.spec import resolve

SMALL = {"n_layer": 1, "d_model": 32, "n_head": 2, "dropout": 0.1}
RUN = ["device=\"cpu\"", "progress=false"]
PAIRS = [{"prompt": f"The film ({n}) was", "chosen": " great fun.", "rejected": " dull."}
         for n in range(8)]


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory):
    """An HF-format GPT-2 directory whose config.json says dropout 0.1."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("hf") / "gpt2"
    save_hf(gaf.create("policy", "gpt2-tiny", **SMALL), path)
    config = json.loads((path / "config.json").read_text())
    assert config["resid_pdrop"] == config["attn_pdrop"] == config["embd_pdrop"] == 0.1
    return path


def _dpo(tmp_path, hf_dir, *sets):
    data = tmp_path / "pairs.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in PAIRS))
    spec = resolve(objective="dpo", components={"task": "jsonl", "policy": str(hf_dir)},
                   sets=[f"task.path={json.dumps(str(data))}", *RUN, "train.batch_size=8",
                         *sets])
    obj = gaf.REGISTRY.get("objective", "dpo")(spec.objective_config)
    obj.setup(RunContext(spec, tmp_path))
    obj.policy.train()  # as the trainer does before the first step
    return obj


def test_step_zero_dpo_loss_is_ln2_from_a_checkpoint_with_dropout(tmp_path, hf_dir):
    obj = _dpo(tmp_path, hf_dir)
    assert obj.policy.config.dropout == 0.1  # the checkpoint's config is kept
    torch.manual_seed(1)
    loss, metrics = obj.loss(obj.train_batch(0))
    assert abs(float(loss.detach()) - math.log(2)) < 1e-6
    assert abs(metrics["rewards/margins"]) < 1e-6
    assert metrics["rewards/accuracies"] == 0.0


def test_keeping_dropout_moves_the_step_zero_loss(tmp_path, hf_dir):
    obj = _dpo(tmp_path, hf_dir, "objective.disable_dropout=false")
    torch.manual_seed(1)
    loss, metrics = obj.loss(obj.train_batch(0))
    assert abs(float(loss.detach()) - math.log(2)) > 1e-4
    assert abs(metrics["rewards/margins"]) > 1e-4


def _ppo(tmp_path, policy, reward, *sets):
    spec = resolve(objective="ppo", components={"policy": str(policy), "reward": str(reward)},
                   sets=[*RUN, "objective.max_new_tokens=6", "objective.eval_prompts=2",
                         "objective.eval_samples=1", "train.batch_size=4",
                         "objective.num_mini_batches=1", "objective.ppo_epochs=1",
                         "train.steps=1", *sets])
    obj = PPO(spec.objective_config)
    torch.manual_seed(0)
    obj.setup(RunContext(spec, tmp_path))
    obj.policy.train()
    obj.critic.train()
    return obj


@pytest.fixture(scope="module")
def reward_dir(tmp_path_factory):
    torch.manual_seed(2)
    path = tmp_path_factory.mktemp("rm") / "rm"
    gaf.save(gaf.create("reward", "gpt2-reward", **SMALL), path)
    return path


def test_first_ppo_minibatch_has_ratio_one(tmp_path, hf_dir, reward_dir):
    obj = _ppo(tmp_path, hf_dir, reward_dir)
    torch.manual_seed(3)
    _, metrics = obj.loss(obj.train_batch(0))
    assert metrics["policy/approxkl"] < 1e-12
    assert metrics["policy/clipfrac"] == 0.0
    buf = obj.buffer
    lp = obj.logprobs(obj.policy, buf.rollout.batch)
    ratio = (lp.token_logps.float() - buf.logprobs)[buf.mask].exp()
    assert torch.allclose(ratio, torch.ones_like(ratio), atol=1e-6)


def test_with_dropout_kept_the_first_ppo_ratio_is_not_one(tmp_path, hf_dir, reward_dir):
    obj = _ppo(tmp_path, hf_dir, reward_dir, "objective.disable_dropout=false")
    torch.manual_seed(3)
    _, metrics = obj.loss(obj.train_batch(0))
    assert metrics["policy/approxkl"] > 1e-8


def test_a_loaded_reward_model_scores_the_same_text_identically(tmp_path, hf_dir, reward_dir):
    prompts, texts = ["The film was"] * 3, [" great.", " dull and slow.", " fine."]
    # in an on-policy run (frozen), with dropout kept in the policy or not
    for sets in ((), ("objective.disable_dropout=false",)):
        rm = _ppo(tmp_path / str(len(sets)), hf_dir, reward_dir, *sets).reward_fn
        assert not rm.training and not any(p.requires_grad for p in rm.parameters())
        assert torch.equal(rm(prompts, texts), rm(prompts, texts))
    # and from gaf.load, in eval mode like transformers' from_pretrained
    loaded = gaf.load("reward", reward_dir)
    assert not loaded.training
    assert torch.equal(loaded(prompts, texts), loaded(prompts, texts))
    loaded.train()  # what the old code left it in: dropout 0.1 draws differ
    assert not torch.equal(loaded(prompts, texts), loaded(prompts, texts))


def test_disable_dropout_zeroes_every_dropout_module(hf_dir):
    policy = gaf.load("policy", hf_dir)
    probabilities = [m.p for m in policy.modules() if isinstance(m, torch.nn.Dropout)]
    assert probabilities and all(p == 0.1 for p in probabilities)
    assert disable_dropout(policy) == len(probabilities)
    assert all(m.p == 0.0 for m in policy.modules() if isinstance(m, torch.nn.Dropout))
    policy.train()
    batch = policy.prepare(["The film"] * 2, [" was fine.", " was not."])
    assert torch.equal(policy.completion_logprobs(batch).token_logps,
                       policy.completion_logprobs(batch).token_logps)
