"""The DPO family end to end: step-0 sanity, shared scoring, data paths, bad input, runs."""

from __future__ import annotations

import json
import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import gaf
from gaf.errors import BadData, NonFiniteLoss
from gaf.interfaces import PreferenceGroup
from gaf.plugins.preference import losses
from gaf.plugins.preference.labelling import label_group, read_groups, write_groups
from gaf.plugins.preference.units import UnitOrder, assemble
from gaf.runs import RunContext
from gaf.spec import resolve

TINY = ["policy.n_layer=1", "policy.d_model=32", "policy.n_head=2"]
FAST = [*TINY, "objective.sft_steps=0", "device=cpu", "progress=false"]
PAIRS = [{"prompt": f"{start} ({n})", "chosen": chosen, "rejected": rejected}
         for n in range(4)
         for start, chosen, rejected in [("The film was", " great fun.", " dull."),
                                         ("I think it", " is lovely.", " is awful and slow."),
                                         ("Honestly,", " a joy.", " a mess."),
                                         ("The cast", " shines.", " is wooden.")]]
RANKED = [row for n in range(4) for row in (
    {"prompt": f"The film ({n}) was", "responses": [" bad.", " great.", " fine."],
     "ranking": [1, 2, 0]},
    {"prompt": f"I think ({n}) it", "responses": [" is lovely.", " is awful."],
     "ranking": [0, 1]})]


def write(tmp_path, rows, name="prefs.jsonl"):
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / name
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def context(tmp_path, objective, rows, *sets):
    data = write(tmp_path, rows)
    spec = resolve(objective=objective, components={"task": "jsonl"},
                   sets=[f"task.path={json.dumps(str(data))}", *FAST, *sets])
    return RunContext(spec, tmp_path)


def build(tmp_path, objective, rows=PAIRS, *sets):
    torch.manual_seed(0)
    ctx = context(tmp_path, objective, rows, *sets)
    obj = gaf.REGISTRY.get("objective", objective)(ctx.spec.objective_config)
    obj.setup(ctx)
    return obj


# ------------------------------------------------------------------ step 0


@pytest.mark.parametrize("objective", ["dpo", "ranking-dpo"])
def test_step_zero_loss_is_ln2_and_rewards_are_zero(tmp_path, objective):
    obj = build(tmp_path, objective, PAIRS if objective == "dpo" else RANKED,
                "train.batch_size=8")
    batch = obj.train_batch(0)
    loss, metrics = obj.loss(batch)
    # a ranking of K costs log K! at π = π_ref (log 2 for a pair)
    expected = sum(math.log(math.factorial(len(obj.responses_of(u)))) for _, u in batch[0].units)
    assert abs(loss.item() - expected / len(batch[0].units)) < 1e-5
    for key in ("rewards/chosen", "rewards/rejected", "rewards/margins"):
        assert abs(metrics[key]) < 1e-5, key
    assert metrics["rewards/accuracies"] == 0.0  # strict >: ties are not correct
    assert metrics["logps/chosen"] < 0 and metrics["logps/rejected"] < 0


def test_logged_metrics_use_trl_names(tmp_path):
    obj = build(tmp_path, "dpo", PAIRS, "train.batch_size=4")
    _, metrics = obj.loss(obj.train_batch(0))
    assert set(metrics) == {"rewards/chosen", "rewards/rejected", "rewards/margins",
                            "rewards/accuracies", "logps/chosen", "logps/rejected", "entropy"}


@pytest.mark.parametrize("tokenizer", ["byte", "sentiment-bpe"])
def test_dpo_loss_matches_a_float64_reference(tmp_path, tokenizer):
    """The objective's loss equals −log σ(β h) computed from float64 sequence log-probs
    of each (prompt, completion) scored on its own, after the policy moved."""
    obj = build(tmp_path, "dpo", PAIRS, "train.batch_size=6", "objective.beta=0.5",
                f"policy.tokenizer={tokenizer}")
    with torch.no_grad():
        for p in obj.policy.parameters():
            p.add_(0.05 * torch.randn_like(p))
    batch = obj.train_batch(1)
    loss, _ = obj.loss(batch)
    scored, _ = batch
    pol, ref = obj.policy.double(), obj.reference.double()

    tok = pol.tokenizer

    def seq_logp(model, prompt, completion):
        ids = [tok.bos_id, *tok.encode(prompt), *tok.encode(completion), tok.eos_id]
        with torch.no_grad():
            logp = torch.log_softmax(model.logits(model(torch.tensor([ids[:-1]]))), -1)[0]
        start = 1 + len(tok.encode(prompt))
        return sum(float(logp[t - 1, ids[t]]) for t in range(start, len(ids)))

    total = 0.0
    for g, (i, j) in scored.units:
        group = obj.groups[g]
        h = ((seq_logp(pol, group.prompt, group.responses[i])
              - seq_logp(ref, group.prompt, group.responses[i]))
             - (seq_logp(pol, group.prompt, group.responses[j])
                - seq_logp(ref, group.prompt, group.responses[j])))
        total += math.log1p(math.exp(-0.5 * h))
    assert abs(loss.item() - total / len(scored.units)) < 1e-4


def test_rpo_alpha_adds_the_chosen_token_mean_nll(tmp_path):
    obj = build(tmp_path, "dpo", PAIRS, "train.batch_size=4", "objective.rpo_alpha=0.5")
    batch = obj.train_batch(0)
    loss, metrics = obj.loss(batch)
    scored, _ = batch
    rows = [scored.local[(g, i)] for g, (i, _) in scored.units]
    lp = obj.policy.completion_logprobs(obj.policy.prepare(
        [scored.prompts[r] for r in rows], [scored.completions[r] for r in rows]))
    nll = float(-lp.token_logps.detach().sum() / lp.mask.sum())
    assert abs(metrics["nll_loss"] - nll) < 1e-5
    assert abs(loss.item() - (math.log(2) + 0.5 * nll)) < 1e-5


def test_ranking_dpo_with_two_responses_equals_dpo(tmp_path):
    a = build(tmp_path / "a", "dpo", PAIRS, "train.batch_size=4")
    b = build(tmp_path / "b", "ranking-dpo", PAIRS, "train.batch_size=4")
    with torch.no_grad():
        for pa, pb in zip(a.policy.parameters(), b.policy.parameters()):
            noise = 0.05 * torch.randn_like(pa)
            pa.add_(noise)
            pb.add_(noise)
    la, _ = a.loss(a.train_batch(0))
    lb, _ = b.loss(b.train_batch(0))
    assert abs(la.item() - lb.item()) < 1e-5


def test_each_response_is_scored_once_per_batch(tmp_path):
    """A ranking of 3 implies 3 pairs but needs 3 scored completions, not 6."""
    obj = build(tmp_path, "dpo", RANKED, "train.batch_size=3")
    scored, _ = obj.train_batch(0)
    assert len(scored.completions) == len(set(zip(scored.prompts, scored.completions)))
    assert len(scored.completions) < 2 * len(scored.units)


# -------------------------------------------------------------- units, data


@given(counts=st.lists(st.integers(0, 6), min_size=1, max_size=12).filter(lambda c: sum(c) > 0),
       seed=st.integers(0, 1000), epoch=st.integers(0, 3))
def test_unit_order_covers_each_unit_once_per_epoch_with_groups_together(counts, seed, epoch):
    order = UnitOrder(counts, seed)
    total = sum(counts)
    picks = order.slice(epoch * total, total)
    assert sorted(picks) == sorted((g, u) for g, c in enumerate(counts) for u in range(c))
    groups = [g for g, _ in picks]
    seen = []
    for g in groups:  # each group's units are contiguous
        if not seen or seen[-1] != g:
            assert g not in seen
            seen.append(g)
    assert UnitOrder(counts, seed).slice(epoch * total, total) == picks


def test_assemble_lists_each_response_once():
    groups = [PreferenceGroup("p", ("a", "b", "c"), ((0, 1), (0, 2), (1, 2)), ranked=True),
              PreferenceGroup("q", ("d", "e"), ((1, 0),))]
    batch = assemble(groups, [0, 3], [(0, (0, 1)), (0, (1, 2)), (1, (1, 0))], lambda u: u)
    assert batch.completions == ["a", "b", "c", "d", "e"]
    assert batch.prompts == ["p", "p", "p", "q", "q"]
    assert batch.response_ids == [0, 1, 2, 3, 4]
    assert batch.local[(1, 1)] == 4


@given(rewards=st.lists(st.floats(0, 1), min_size=2, max_size=6))
def test_order_labels_prefer_strictly_higher_rewards(rewards):
    responses = [f"r{i}" for i in range(len(rewards))]
    group = label_group("x", responses, rewards, rule="order")
    by_text = dict(zip(responses, rewards))
    r = [by_text[t] for t in group.responses]
    assert r == sorted(r, reverse=True)
    expected = {(i, j) for i in range(len(r)) for j in range(len(r)) if r[i] > r[j]}
    assert set(group.pairs) == expected
    assert group.ranked == (len(set(rewards)) == len(rewards))


def test_plackett_luce_labels_give_consistent_full_rankings():
    gen = torch.Generator().manual_seed(0)
    group = label_group("x", ["a", "b", "c", "d"], [0.9, 0.1, 0.5, 0.3], rule="plackett-luce",
                        temperature=0.1, generator=gen)
    assert group.ranked and len(group.pairs) == 6
    assert all(i < j for i, j in group.pairs)


def test_bradley_terry_labels_follow_the_logistic_probability():
    gen = torch.Generator().manual_seed(0)
    wins = sum(label_group("x", ["a", "b"], [0.6, 0.5], rule="bradley-terry", temperature=0.1,
                           generator=gen).pairs[0] == (0, 1) for _ in range(4000))
    expected = 1 / (1 + math.exp(-1.0))  # σ((0.6 − 0.5) / 0.1)
    assert abs(wins / 4000 - expected) < 0.03


def test_identical_samples_are_kept_once():
    group = label_group("x", ["a", "a", "b"], [0.2, 0.2, 0.7])
    assert group.responses == ("b", "a") and group.pairs == ((0, 1),)


def test_generated_groups_round_trip(tmp_path):
    groups = [label_group("x", ["a", "b", "c"], [0.1, 0.9, 0.5]),
              label_group("y", ["d", "e"], [0.4, 0.4])]
    write_groups(tmp_path / "g.jsonl", groups, [[0.9, 0.5, 0.1], [0.4, 0.4]])
    back, rewards = read_groups(tmp_path / "g.jsonl")
    assert [(g.prompt, g.responses, g.pairs, g.ranked) for g in back] == \
        [(g.prompt, g.responses, g.pairs, g.ranked) for g in groups]
    assert rewards[0] == [0.9, 0.5, 0.1]


# --------------------------------------------------------------- bad input


def test_too_long_examples_are_skipped_with_a_count(tmp_path):
    # three records share the long prompt, so the held-out splits (one record each)
    # never take them
    long = {"prompt": "x" * 300, "chosen": " a.", "rejected": " b."}
    rows = [*PAIRS, long, long, long]
    with pytest.warns(UserWarning, match=r"skipped 3 preference group.*prefs.jsonl:17"):
        obj = build(tmp_path, "dpo", rows, "train.batch_size=4")
    assert obj.skipped == 3 and len(obj.groups) == 14  # of the 16 others, 1 eval, 1 validation


def test_too_long_examples_can_stop_the_run_naming_file_and_line(tmp_path):
    long = {"prompt": "x" * 300, "chosen": " a.", "rejected": " b."}
    rows = [long, long, *PAIRS]
    with pytest.raises(BadData, match=r"prefs.jsonl:1: .*longer than the policy's context"):
        build(tmp_path, "dpo", rows, "objective.too_long=raise")


def test_ranking_dpo_without_rankings_says_what_to_do(tmp_path):
    rows = [{"prompt": "p", "completion": " a.", "label": True},
            {"prompt": "q", "completion": " b.", "label": False}] * 4
    with pytest.raises(BadData, match="needs full rankings"):
        build(tmp_path, "ranking-dpo", rows)


@pytest.mark.parametrize("extreme", [1e4, -1e4])
def test_losses_stay_finite_for_extreme_log_probs(extreme):
    h = torch.tensor([extreme, -extreme, 0.0])
    for value in (losses.dpo_loss(h, 0.1), losses.ipo_loss(h, 0.1), losses.hinge_loss(h, 0.1),
                  losses.plackett_luce_loss(torch.stack([h, -h], 1), 0.1)):
        assert torch.isfinite(value).all()


# -------------------------------------------------------------- whole runs


OBJECTIVES = ["dpo", "cdpo", "robust", "ipo", "hinge", "simpo", "orpo", "kto", "ranking-dpo"]


@pytest.mark.parametrize("objective", OBJECTIVES)
def test_every_objective_trains_and_evaluates(tmp_path, objective):
    data = write(tmp_path, RANKED if objective == "ranking-dpo" else PAIRS)
    run_dir, summary = gaf.run(objective, task="jsonl", sets=[
        f"task.path={json.dumps(str(data))}", f"out_dir={json.dumps(str(tmp_path / 'runs'))}",
        *FAST, "train.steps=4", "train.batch_size=4", "train.log_every=1",
        "objective.max_new_tokens=8"])
    assert summary["status"] == "completed"
    records = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert len(records) == 4 and all(math.isfinite(r["loss"]) for r in records)
    assert "rewards/chosen" in records[-1] and "logps/chosen" in records[-1]
    assert math.isfinite(summary["kl"]) and "eval_accuracy" in summary
    assert summary[f"train_{gaf.REGISTRY.get('objective', objective).unit}_per_s"] > 0
    assert (run_dir / "samples" / "samples.jsonl").is_file()
    assert (run_dir / "plots" / "training.png").is_file()


def test_sampled_pipeline_with_sft_stage_and_win_rate(tmp_path):
    """The default path, shrunk: SFT sub-run, sampled and labelled pairs, win rate."""
    run_dir, summary = gaf.run("dpo", sets=[
        f"out_dir={json.dumps(str(tmp_path))}", *TINY, "device=cpu", "progress=false",
        # barely trained, the policy's samples mostly tie at reward 0: label ties by coin flip
        "objective.sft_steps=3", "objective.prompts=6", "objective.max_new_tokens=12",
        "objective.labels=bradley-terry",
        "objective.eval_prompts=5", "train.steps=2", "train.batch_size=4"])
    assert (run_dir / "sft" / "policy" / "gaf.json").is_file()
    groups, rewards = read_groups(run_dir / "data" / "preferences.jsonl")
    assert len(groups) == 6 and all(r == sorted(r, reverse=True) for r in rewards)
    for key in ("win_rate", "mean_reward", "reference_mean_reward", "kl", "train_pairs_per_s",
                "wall_s"):
        assert key in summary, key
    assert 0.0 <= summary["win_rate"] <= 1.0
    rows = [json.loads(x) for x in (run_dir / "samples" / "samples.jsonl").read_text().splitlines()]
    # 4 completions of each held-out prompt from each policy (eval_samples), in pairs
    assert len(rows) == 20 and summary["eval_samples"] == 20 and summary["eval_prompts"] == 5
    assert [r["prompt"] for r in rows[:4]] == [rows[0]["prompt"]] * 4
    assert {"reward", "reference_reward", "log_ratio"} <= set(rows[0])
    wins = [1.0 if r["reward"] > r["reference_reward"] else
            0.5 if r["reward"] == r["reference_reward"] else 0.0 for r in rows]
    assert abs(summary["win_rate"] - sum(wins) / 20) < 1e-9
    assert abs(summary["mean_reward"] - sum(r["reward"] for r in rows) / 20) < 1e-5
    # the default sampler (top-p) truncates, so KL comes from separate ancestral samples
    assert "kl_sample" in rows[0]


def test_init_starts_from_a_trained_policy_without_an_sft_stage(tmp_path):
    from click.testing import CliRunner

    from gaf.cli import main

    data = write(tmp_path, PAIRS)
    sft_dir, _ = gaf.run("sft", task="jsonl", sets=[
        f"task.path={json.dumps(str(data))}", f"out_dir={json.dumps(str(tmp_path / 'runs'))}",
        *TINY, "device=cpu", "progress=false", "train.steps=2"])
    runner = CliRunner()
    result = runner.invoke(main, ["run", "--objective", "dpo", "--init", str(sft_dir),
                                  "--data", str(data), "--out", str(tmp_path / "runs"),
                                  "--name", "d", "-q", "--set", "train.steps=2",
                                  "--set", "objective.max_new_tokens=4",
                                  "--set", "train.log_every=1"])
    assert result.exit_code == 0, result.output
    run_dir = tmp_path / "runs" / "d"
    assert not (run_dir / "sft").exists()
    ref = gaf.load("policy", sft_dir)
    first = json.loads((run_dir / "metrics.jsonl").read_text().splitlines()[0])
    assert abs(first["loss"] - math.log(2)) < 1e-5  # the loaded policy is the reference
    assert ref.config.n_layer == 1
    bad = runner.invoke(main, ["run", "--objective", "dpo", "--init", str(sft_dir),
                               "--policy", "gpt2-tiny"])
    assert bad.exit_code == 2 and "--init" in bad.output


def test_a_non_finite_loss_stops_with_the_step_and_keeps_the_checkpoint(tmp_path, monkeypatch):
    data = write(tmp_path, PAIRS)
    real = losses.dpo_loss
    calls = {"n": 0}

    def flaky(h, beta):
        calls["n"] += 1
        out = real(h, beta)
        return out * float("nan") if calls["n"] == 3 else out

    monkeypatch.setattr(losses, "dpo_loss", flaky)
    with pytest.raises(NonFiniteLoss, match="at step 3") as err:
        gaf.run("dpo", task="jsonl", sets=[
            f"task.path={json.dumps(str(data))}", f"out_dir={json.dumps(str(tmp_path / 'r'))}",
            *FAST, "train.steps=5", "train.save_every=2", "train.batch_size=4"])
    assert "step-00000002" in str(err.value)


def test_resume_reuses_the_sft_stage_and_the_sampled_data(tmp_path, monkeypatch):
    sets = [f"out_dir={json.dumps(str(tmp_path))}", *TINY, "device=cpu", "progress=false",
            "objective.sft_steps=2", "objective.prompts=4", "objective.max_new_tokens=8",
            "objective.labels=bradley-terry",
            "objective.eval_prompts=2", "train.steps=4", "train.save_every=2",
            "train.batch_size=4", "name=r"]
    from gaf.plugins.preference import training as pipeline

    real = pipeline.PreferenceTraining.loss
    state = {"n": 0}

    def crash(self, batch):
        state["n"] += 1
        if state["n"] == 3:
            raise KeyboardInterrupt
        return real(self, batch)

    monkeypatch.setattr(pipeline.PreferenceTraining, "loss", crash)
    with pytest.raises(gaf.errors.Interrupted):
        gaf.run("dpo", sets=sets)
    data_before = (tmp_path / "r" / "data" / "preferences.jsonl").read_text()
    monkeypatch.setattr(pipeline.PreferenceTraining, "loss", real)
    sft_mtime = (tmp_path / "r" / "sft" / "policy" / "model.safetensors").stat().st_mtime
    from gaf.launch import execute, load_run_spec

    _, summary = execute(load_run_spec(tmp_path / "r"), resume=tmp_path / "r")
    assert summary["status"] == "completed"
    assert (tmp_path / "r" / "data" / "preferences.jsonl").read_text() == data_before
    assert (tmp_path / "r" / "sft" / "policy" / "model.safetensors").stat().st_mtime == sft_mtime
