"""``ppo``: rollouts score the sampled tokens, the per-token reward puts the score on the
last real token, the loss matches a float64 reference, PPO-ptx adds exactly its NLL
term, the adaptive KL controller follows Ziegler's rule, and a resumed run (β
included) is bit-identical."""

from __future__ import annotations

import json

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import gaf
from gaf.errors import BadConfig
from gaf.launch import execute
from gaf.plugins.rlhf.advantages import explained_variance, gae, token_rewards
from gaf.plugins.rlhf.kl_control import KLController
from gaf.plugins.rlhf.ppo import PPO
from gaf.runs import RunContext
from gaf.spec import resolve

TINY = ["policy.n_layer=1", "policy.d_model=32", "policy.n_head=2", "device=\"cpu\"",
        "progress=false", "objective.sft_steps=0", "objective.max_new_tokens=6",
        "objective.eval_prompts=3", "objective.eval_samples=1", "train.batch_size=4",
        "objective.num_mini_batches=2", "objective.ppo_epochs=2", "train.steps=8"]


def build(tmp_path, *sets, reward=None):
    components = {"reward": reward} if reward else {}
    spec = resolve(objective="ppo", components=components, sets=[*TINY, *sets])
    obj = PPO(spec.objective_config)
    torch.manual_seed(spec.seed)  # as the trainer does: the same models every time
    obj.setup(RunContext(spec, tmp_path))
    return obj


# ------------------------------------------------------------------ per-token reward


@st.composite
def padded(draw):
    lengths = draw(st.lists(st.integers(0, 6), min_size=1, max_size=5))
    T = max(max(lengths), 1) + draw(st.integers(0, 3))
    mask = torch.tensor([[t < n for t in range(T)] for n in lengths])
    kl = torch.tensor([[draw(st.floats(-3, 3)) for _ in range(T)] for _ in lengths],
                      dtype=torch.float64)
    scores = torch.tensor([draw(st.floats(-5, 5)) for _ in lengths], dtype=torch.float64)
    return scores, kl, mask, lengths


@settings(max_examples=80, deadline=None)
@given(padded(), st.floats(0, 2))
def test_the_score_lands_on_the_last_real_token(case, beta):
    scores, kl, mask, lengths = case
    r = token_rewards(scores, kl, mask, beta)
    for b, n in enumerate(lengths):
        for t in range(r.shape[1]):
            want = 0.0 if t >= n else -beta * float(kl[b, t]) + (float(scores[b]) if t == n - 1
                                                                   else 0.0)
            assert abs(float(r[b, t]) - want) < 1e-9, (b, t)
    # nothing lost, nothing on a pad: the row sums to score − β Σ k over real tokens
    has = torch.tensor([n > 0 for n in lengths], dtype=torch.float64)
    want_sum = scores * has - beta * (kl * mask).sum(1)
    assert torch.allclose(r.sum(1), want_sum, atol=1e-9)


def test_rollout_rewards_use_the_right_padded_policy_layout(tmp_path):
    """On a policy's right-padded batch (rows of different lengths, some ending in a
    sampled EOS, some cut short), the score sits at each row's last scored position:
    the EOS when there is one, the last sampled token otherwise; never on a pad."""
    from gaf.plugins.lm.batching import batch_from_ids

    obj = build(tmp_path)
    tok = obj.policy.tokenizer
    rows = [([tok.bos_id, 40, 41], [50, 51, tok.eos_id]),       # ended, 3 scored
            ([tok.bos_id, 40], [52]),                            # cut short, 1 scored
            ([tok.bos_id, 40, 41, 42, 43], [53, 54, 55, 56, 57, tok.eos_id])]
    batch = batch_from_ids([(p + c, len(p)) for p, c in rows], tok.pad_id)
    mask = obj.policy.completion_logprobs(batch).mask
    assert mask.sum(1).tolist() == [3, 1, 6]
    r = token_rewards(torch.tensor([1.0, 2.0, 3.0]), torch.zeros(mask.shape), mask, 0.5)
    for b, (_, completion) in enumerate(rows):
        last = len(completion) - 1
        assert float(r[b, last]) == b + 1 and float(r[b].abs().sum()) == b + 1
        # the scored position is the output that predicts the row's final real token
        pos = int(batch.completion_mask[b].nonzero()[-1])
        assert int(batch.target_ids[b, pos]) == completion[-1]
        assert int(batch.input_ids[b, pos + 1]) == completion[-1]


def test_gae_with_no_kl_and_unit_gamma_lambda_is_reward_to_go_minus_value(tmp_path):
    obj = build(tmp_path, "objective.beta=0", "objective.gamma=1", "objective.lam=1")
    buf = obj.make_rollout(0)
    scores = obj.rewards_of(obj.train_prompts[:len(buf.mask)], buf.rollout, "cpu")
    # with β = 0 every token's return is the sequence's score
    assert torch.allclose(buf.returns, scores[:, None] * buf.mask, atol=1e-5)
    raw, _ = gae(token_rewards(scores, torch.zeros_like(buf.values), buf.mask, 0.0),
                 buf.values, buf.mask, 1.0, 1.0)
    assert torch.allclose(raw, (scores[:, None] - buf.values) * buf.mask, atol=1e-5)


# ------------------------------------------------------------------- rollouts


def test_rollout_batch_scores_exactly_the_sampled_tokens(tmp_path):
    obj = build(tmp_path, "objective.max_new_tokens=5")
    policy, tok = obj.policy, obj.policy.tokenizer
    prompts = obj.train_prompts[:6]
    rollout = obj.sample(prompts, 3)
    from gaf.plugins.lm.batching import prompt_ids

    gen = obj.ctx.generator("rollouts", 3, 0)  # draw 3 on rank 0
    drawn = policy.generate_ids([prompt_ids(tok, p, policy.context_length) for p in prompts],
                                sampler=obj.sampler, max_new_tokens=5, generator=gen)
    lp = policy.completion_logprobs(rollout.batch)
    for b, new in enumerate(drawn):
        batch = rollout.batch
        row = batch.input_ids[b][batch.attention_mask[b]].tolist()
        assert row[-len(new):] == new  # no EOS appended, nothing re-tokenised
        assert int(lp.mask[b].sum()) == len(new)
        assert bool(rollout.ended[b]) == (new[-1] == tok.eos_id)
    assert not bool(rollout.ended.all())  # 5 new tokens: some rows ran out


def test_rollouts_are_a_pure_function_of_their_number(tmp_path):
    obj = build(tmp_path)
    a, b, c = obj.make_rollout(2), obj.make_rollout(2), obj.make_rollout(3)
    assert torch.equal(a.rollout.batch.input_ids, b.rollout.batch.input_ids)
    assert torch.equal(a.advantages, b.advantages)
    assert not torch.equal(a.rollout.batch.input_ids, c.rollout.batch.input_ids)


def test_advantages_are_whitened_and_kl_starts_at_zero(tmp_path):
    obj = build(tmp_path, "objective.beta=1")
    buf = obj.make_rollout(0)
    real = buf.advantages[buf.mask]
    assert abs(float(real.mean())) < 1e-5 and abs(float(real.std(unbiased=False)) - 1) < 1e-3
    assert float(buf.advantages[~buf.mask].abs().sum()) == 0
    assert abs(buf.metrics["objective/kl"]) < 1e-5
    assert abs(buf.metrics["objective/rlhf_reward"] - buf.metrics["objective/scores"]) < 1e-5


# ------------------------------------------------------------------------ loss


def test_loss_matches_a_float64_reference(tmp_path):
    torch.manual_seed(0)
    obj = build(tmp_path, "objective.beta=0.3", "objective.vf_coef=0.7",
                "objective.cliprange=0.1", "objective.cliprange_value=0.05")
    batch = obj.train_batch(0)
    with torch.no_grad():  # move away from the rollout's policy and critic
        for p in [*obj.policy.parameters(), *obj.critic.parameters()]:
            p.add_(0.05 * torch.randn_like(p))
    loss, metrics = obj.loss(batch)
    buf, rows = batch["buffer"], batch["rows"]
    sub = buf.rollout.batch.select(rows)
    with torch.no_grad():
        lp = obj.policy.double().completion_logprobs(sub)
        v = obj.critic.double().values(sub).double()
    L = lp.mask.shape[1]
    m = lp.mask.double()
    old, adv = buf.logprobs[rows, :L].double(), buf.advantages[rows, :L].double()
    old_v, ret = buf.values[rows, :L].double(), buf.returns[rows, :L].double()
    ratio = torch.exp(lp.token_logps - old)
    assert float(((ratio - 1).abs() * m).max()) > 1e-3  # the ratio is not trivially 1
    pg = torch.maximum(-adv * ratio, -adv * ratio.clamp(0.9, 1.1))
    vc = old_v + (v - old_v).clamp(-0.05, 0.05)
    vf = 0.5 * torch.maximum((v - ret) ** 2, (vc - ret) ** 2)
    want_pg = float((pg * m).sum() / m.sum())
    want_vf = float((vf * m).sum() / m.sum())
    assert abs(metrics["loss/policy"] - want_pg) < 1e-4
    assert abs(metrics["loss/value"] - want_vf) < 1e-4
    assert abs(float(loss.detach()) - (want_pg + 0.7 * want_vf)) < 1e-4
    want_clip = float((((-adv * ratio.clamp(0.9, 1.1)) > (-adv * ratio)).double() * m).sum()
                      / m.sum())
    assert abs(metrics["policy/clipfrac"] - want_clip) < 1e-6
    want_approx = float((0.5 * (lp.token_logps - old) ** 2 * m).sum() / m.sum())
    assert abs(metrics["policy/approxkl"] - want_approx) < 1e-6


def test_first_update_of_a_rollout_starts_inside_the_trust_region(tmp_path):
    obj = build(tmp_path)
    _, metrics = obj.loss(obj.train_batch(0))
    assert metrics["policy/approxkl"] < 1e-10 and metrics["policy/clipfrac"] == 0.0


def test_ptx_adds_its_coefficient_times_the_sft_nll(tmp_path):
    plain = build(tmp_path / "a")
    mixed = build(tmp_path / "b", "objective.ptx_coef=2.5", "objective.ptx_batch_size=3")
    a, b = plain.train_batch(0), mixed.train_batch(0)
    loss_a, _ = plain.loss(a)
    loss_b, metrics = mixed.loss(b)
    lp = mixed.policy.completion_logprobs(b["ptx"])
    nll = float(-lp.token_logps.sum().detach() / lp.mask.sum())
    assert len(b["ptx"]) == 3 and abs(metrics["loss/ptx"] - nll) < 1e-6
    assert abs(float(loss_b.detach()) - float(loss_a.detach()) - 2.5 * nll) < 1e-5


def test_explained_variance_is_one_for_a_perfect_critic_and_zero_for_the_mean():
    ret = torch.tensor([[1.0, 2.0, 0.0], [3.0, 0.0, 0.0]])
    mask = torch.tensor([[True, True, False], [True, False, False]])
    assert float(explained_variance(ret, ret, mask)) == pytest.approx(1.0)
    mean = torch.full_like(ret, 2.0)
    assert float(explained_variance(mean, ret, mask)) == pytest.approx(0.0, abs=1e-6)


# ------------------------------------------------------------------ KL controller


@settings(max_examples=60, deadline=None)
@given(st.floats(0.001, 2), st.floats(0.1, 20), st.floats(0, 50), st.integers(1, 512),
       st.integers(1, 20_000))
def test_adaptive_kl_controller_follows_ziegler(beta, target, kl, n, horizon):
    ctl = KLController(beta, target, horizon)
    error = min(max(kl / target - 1, -0.2), 0.2)
    assert ctl.update(kl, n) == pytest.approx(beta * (1 + error * n / horizon), rel=1e-12)
    if kl > target:
        assert ctl.beta >= beta
    elif kl < target:
        assert ctl.beta <= beta
    fixed = KLController(beta)
    assert fixed.update(kl, n) == beta


# ------------------------------------------------------------------- the run


def test_steps_must_fall_between_rollouts(tmp_path):
    with pytest.raises(BadConfig, match="multiple of ppo_epochs"):
        build(tmp_path, "train.steps=6")
    with pytest.raises(BadConfig, match="save_every"):
        build(tmp_path, "train.save_every=3")


def test_value_init_reward_copies_the_reward_model(tmp_path):
    torch.manual_seed(0)
    rm = gaf.create("reward", "gpt2-reward", n_layer=1, d_model=32, n_head=2,
                    tokenizer="sentiment-bpe")
    gaf.save(rm, tmp_path / "rm")
    obj = build(tmp_path / "run", "objective.value_init=reward", reward=str(tmp_path / "rm"))
    for (name, a), b in zip(obj.critic.state_dict().items(), rm.state_dict().values()):
        assert torch.equal(a, b), name
    assert obj.critic.score.weight.requires_grad and obj.critic is not obj.reward_fn
    with pytest.raises(BadConfig, match="value_init='reward'"):
        build(tmp_path / "oracle", "objective.value_init=reward")


class _Crash(Exception):
    """Raised by :class:`_CrashAt` to simulate a crash after a step."""


class _CrashAt:
    def __init__(self, step):
        self.step = step

    @gaf.hookimpl
    def gaf_step_end(self, step):
        if step == self.step:
            raise _Crash(step)


def test_resumed_run_with_adaptive_kl_is_bit_identical(tmp_path):
    from gaf import checkpoint
    from gaf.atomic import load_tensors

    def spec(out):
        return resolve(objective="ppo", sets=[
            *TINY, f"out_dir={json.dumps(str(out))}", "objective.target_kl=0.01",
            "objective.kl_horizon=8", "train.save_every=4", "objective.ptx_coef=0.5"])

    full, summary = execute(spec(tmp_path / "a"))
    crasher = _CrashAt(6)
    gaf.hooks.register(crasher)
    try:
        with pytest.raises(_Crash):
            execute(spec(tmp_path / "b"))
    finally:
        gaf.hooks.unregister(crasher)
    (broken,) = [p for p in (tmp_path / "b").iterdir() if not p.is_symlink()]
    _, resumed = execute(spec(tmp_path / "b"), resume=broken)
    assert summary["beta_final"] != 0.05  # the controller moved β ...
    assert resumed["beta_final"] == summary["beta_final"]  # ... and resume restored it
    a = load_tensors(checkpoint.latest_checkpoint(full / "checkpoints")
                     / "modules.safetensors")
    b = load_tensors(checkpoint.latest_checkpoint(broken / "checkpoints")
                     / "modules.safetensors")
    assert a.keys() == b.keys() and any(k.startswith("critic.") for k in a)
    for key in a:
        assert torch.equal(a[key], b[key]), key
    rows = [json.loads(x) for x in (full / "metrics.jsonl").read_text().splitlines()]
    again = [json.loads(x) for x in (broken / "metrics.jsonl").read_text().splitlines()]
    strip = ("elapsed_s", "sequences_per_s")
    assert ([{k: v for k, v in r.items() if k not in strip} for r in rows]
            == [{k: v for k, v in r.items() if k not in strip} for r in again])
    for key in ("objective/kl", "objective/scores", "objective/rlhf_reward", "policy/clipfrac",
                "policy/approxkl", "loss/policy", "loss/value", "value/explained_variance",
                "loss/ptx", "objective/beta"):
        assert key in rows[-1], key


def test_ppo_trains_against_a_learned_reward_model_end_to_end(tmp_path):
    torch.manual_seed(0)
    rm = gaf.create("reward", "gpt2-reward", n_layer=1, d_model=32, n_head=2,
                    tokenizer="sentiment-bpe")
    gaf.save(rm, tmp_path / "rm")
    run_dir, summary = gaf.run("ppo", reward=str(tmp_path / "rm"), sets=[
        *TINY, f"out_dir={json.dumps(str(tmp_path))}", "train.steps=4"])
    for key in ("win_rate", "mean_reward", "reference_mean_reward", "kl", "beta_final"):
        assert key in summary, key
    assert (run_dir / "policy" / "gaf.json").is_file()
