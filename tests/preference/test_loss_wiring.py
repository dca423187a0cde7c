"""Every DPO-family objective's loss, end to end, against a float64 hand formula.

The loss functions have their own float64 tests (test_losses.py); these check the
wiring around them: which rows are chosen and rejected, which reference log-probs go
with them, sums against per-token means, the batch mean, KTO's unpairing and the
implicit reward each objective ranks held-out pairs by. Each completion is scored on
its own, in float64, from the token ids, after the policy has moved away from the
reference."""

from __future__ import annotations

import json
import math

import pytest
import torch

import gaf
from gaf.interfaces import PreferenceGroup
from gaf.runs import RunContext
from gaf.spec import resolve

FAST = ["policy.n_layer=1", "policy.d_model=32", "policy.n_head=2", "objective.sft_steps=0",
        "device=cpu", "progress=false"]
PAIRS = [{"prompt": f"{start} ({n})", "chosen": chosen, "rejected": rejected}
         for n in range(3)
         for start, chosen, rejected in [("The film was", " great fun.", " dull."),
                                         ("I think it", " is lovely.", " is awful and slow."),
                                         ("Honestly,", " a joy.", " a mess.")]]
RANKED = [{"prompt": f"The film ({n}) was", "responses": [" bad.", " great.", " fine to me."],
           "ranking": [1, 2, 0]} for n in range(4)]
BETA, EPS, GAMMA = 0.7, 0.2, 0.3


def build(tmp_path, objective, rows, *sets):
    path = tmp_path / "data.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    spec = resolve(objective=objective, components={"task": "jsonl"},
                   sets=[f"task.path={json.dumps(str(path))}", "task.eval_fraction=0.3",
                         *FAST, *sets])
    torch.manual_seed(0)
    obj = gaf.REGISTRY.get("objective", objective)(spec.objective_config)
    obj.setup(RunContext(spec, tmp_path))
    torch.manual_seed(1)
    with torch.no_grad():
        for p in obj.policy.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return obj


def seq(model, prompt, completion):
    """(sum, count) of log π(completion | prompt) in float64, scored on its own."""
    tok = model.tokenizer
    m = model.double()
    ids = [tok.bos_id, *tok.encode(prompt), *tok.encode(completion), tok.eos_id]
    with torch.no_grad():
        logp = torch.log_softmax(m.logits(m(torch.tensor([ids[:-1]]))), -1)[0]
    start = 1 + len(tok.encode(prompt))
    return sum(float(logp[t - 1, ids[t]]) for t in range(start, len(ids))), len(ids) - start


def logsig(x):
    return -math.log1p(math.exp(-x)) if x > -30 else x


def sigmoid(x):
    return 1 / (1 + math.exp(-x))


def pair_terms(obj, g, i, j):
    grp = obj.groups[g]
    (pw, nw), (pl, nl) = seq(obj.policy, grp.prompt, grp.responses[i]), seq(obj.policy, grp.prompt,
                                                                             grp.responses[j])
    (rw, _), (rl, _) = seq(obj.reference, grp.prompt, grp.responses[i]), seq(obj.reference,
                                                                             grp.prompt,
                                                                             grp.responses[j])
    return pw, nw, pl, nl, rw, rl


def hand_pair_loss(name, pw, nw, pl, nl, rw, rl):
    h = (pw - rw) - (pl - rl)
    if name == "dpo":
        return -logsig(BETA * h)
    if name == "cdpo":
        return -(1 - EPS) * logsig(BETA * h) - EPS * logsig(-BETA * h)
    if name == "robust":
        return (-(1 - EPS) * logsig(BETA * h) + EPS * logsig(-BETA * h)) / (1 - 2 * EPS)
    if name == "ipo":
        h_mean = (pw / nw - rw / nw) - (pl / nl - rl / nl)
        return (h_mean - 1 / (2 * BETA)) ** 2
    if name == "hinge":
        return max(0.0, 1 - BETA * h)
    if name == "simpo":
        return -logsig(BETA * pw / nw - BETA * pl / nl - GAMMA)
    if name == "orpo":
        odds = [m - math.log1p(-math.exp(m)) for m in (pw / nw, pl / nl)]
        return -pw / nw - BETA * logsig(odds[0] - odds[1])
    raise AssertionError(name)


OPTIONS = {"cdpo": [f"objective.label_smoothing={EPS}"],
           "robust": [f"objective.label_smoothing={EPS}"],
           "simpo": [f"objective.gamma={GAMMA}"]}


@pytest.mark.parametrize("name", ["dpo", "cdpo", "robust", "ipo", "hinge", "simpo", "orpo"])
def test_pairwise_losses_match_their_float64_formula(tmp_path, name):
    obj = build(tmp_path, name, PAIRS, "train.batch_size=5", f"objective.beta={BETA}",
                *OPTIONS.get(name, []))
    batch = obj.train_batch(1)
    loss, metrics = obj.loss(batch)
    terms = [pair_terms(obj, g, i, j) for g, (i, j) in batch[0].units]
    want = sum(hand_pair_loss(name, *t) for t in terms) / len(terms)
    assert abs(loss.item() - want) < 2e-5 * max(1.0, abs(want))
    # rewards/* are the objective's own implicit reward
    if name in ("simpo", "orpo"):
        margins = [BETA * (pw / nw - pl / nl) for pw, nw, pl, nl, _, _ in terms]
    elif name == "ipo":
        margins = [BETA * ((pw - rw) / nw - (pl - rl) / nl) for pw, nw, pl, nl, rw, rl in terms]
    else:
        margins = [BETA * ((pw - rw) - (pl - rl)) for pw, _, pl, _, rw, rl in terms]
    assert abs(metrics["rewards/margins"] - sum(margins) / len(margins)) < 2e-5


def test_kto_unpairs_as_trl_and_matches_its_float64_formula(tmp_path):
    obj = build(tmp_path, "kto", RANKED, "train.batch_size=6", f"objective.beta={BETA}",
                "objective.desirable_weight=1.5", "objective.undesirable_weight=0.5")
    # a ranking of 3 gives 3 pairs: chosen desirable, rejected undesirable, every time
    group = obj.groups[0]
    assert obj.units_of(group) == [u for i, j in group.pairs for u in ((i, True), (j, False))]
    assert len(obj.units_of(group)) == 6
    batch = obj.train_batch(0)
    loss, _ = obj.loss(batch)
    r = []
    for g, (i, good) in batch[0].units:
        grp = obj.groups[g]
        r.append((seq(obj.policy, grp.prompt, grp.responses[i])[0]
                  - seq(obj.reference, grp.prompt, grp.responses[i])[0], good))
    z0 = max(0.0, sum(x for x, _ in r) / len(r))
    want = sum(1.5 * (1 - sigmoid(BETA * (x - z0))) if good else
               0.5 * (1 - sigmoid(BETA * (z0 - x))) for x, good in r) / len(r)
    assert abs(loss.item() - want) < 2e-5


def test_kto_net_unpairing_labels_each_response_once(tmp_path):
    obj = build(tmp_path, "kto", RANKED, "train.batch_size=2", "objective.unpair=\"net\"")
    group = obj.groups[0]  # responses best first: wins 2 / 1-1 / loses 2
    assert obj.units_of(group) == [(0, True), (2, False)]


def test_ranking_dpo_matches_the_plackett_luce_float64_formula(tmp_path):
    obj = build(tmp_path, "ranking-dpo", RANKED, "train.batch_size=2", f"objective.beta={BETA}")
    batch = obj.train_batch(0)
    loss, _ = obj.loss(batch)
    total = 0.0
    for g, unit in batch[0].units:
        grp = obj.groups[g]
        h = [seq(obj.policy, grp.prompt, grp.responses[k])[0]
             - seq(obj.reference, grp.prompt, grp.responses[k])[0] for k in unit]
        total -= sum(BETA * h[k] - math.log(sum(math.exp(BETA * x) for x in h[k:]))
                     for k in range(len(h) - 1))
    assert abs(loss.item() - total / len(batch[0].units)) < 2e-5


@pytest.mark.parametrize("name", ["dpo", "ipo", "simpo", "orpo"])
def test_heldout_accuracy_ranks_by_the_objectives_own_implicit_reward(tmp_path, name):
    """Pairs built so that the summed log-ratio and the length-normalised log-prob
    disagree: a long chosen completion against a short rejected one."""
    rows = [{"prompt": f"Review {n}:", "chosen": " a long and very detailed good review here.",
             "rejected": " bad."} for n in range(12)]
    obj = build(tmp_path, name, rows, "train.batch_size=2")
    groups = obj.heldout_groups()
    assert groups
    got = obj.heldout_accuracy()
    correct = total = 0
    for g in groups:
        (pw, nw), (pl, nl) = (seq(obj.policy, g.prompt, y) for y in g.responses)
        (rw, _), (rl, _) = (seq(obj.reference, g.prompt, y) for y in g.responses)
        if name in ("simpo", "orpo"):
            better = pw / nw > pl / nl
        elif name == "ipo":
            better = (pw - rw) / nw > (pl - rl) / nl
        else:
            better = pw - rw > pl - rl
        correct += int(better)
        total += 1
    assert got == {"eval_accuracy": correct / total, "eval_pairs": float(total)}


def test_heldout_accuracy_reads_the_configured_split(tmp_path):
    obj = build(tmp_path, "dpo", PAIRS, "train.batch_size=2")
    seen = []

    class Spy:
        def preference_groups(self, split):
            seen.append(split)
            return [PreferenceGroup("p", (" a.", " b."), ((0, 1),))]

        def prompts(self, split):
            seen.append(split)
            return ["p"]

    obj.task = Spy()
    obj.config.eval_split = "validation"
    obj.heldout_accuracy()
    obj.heldout_prompts()
    assert seen == ["validation", "validation"]
