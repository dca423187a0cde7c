"""The sft objective: completion-only NLL, deterministic batches, and it learns."""

from __future__ import annotations

import json

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import gaf
from gaf.plugins.alignment.sft import SFT
from gaf.runs import RunContext
from gaf.seeding import EpochOrder
from gaf.spec import resolve

TINY = ["policy.n_layer=1", "policy.d_model=32", "policy.n_head=2"]


def context(tmp_path, rows, *sets):
    data = tmp_path / "sft.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    spec = resolve(objective="sft", components={"task": "jsonl"},
                   sets=[f"task.path={json.dumps(str(data))}", "device=cpu", *TINY, *sets])
    return RunContext(spec, tmp_path)


ROWS = [{"prompt": "The film", "completion": " was great."},
        {"prompt": "I saw it and", "completion": " it was dull."},
        {"text": "A fine cast."},
        {"prompt": "Honestly,", "completion": " the plot is weak."}] * 3


@pytest.mark.parametrize("tokenizer", ["byte", "sentiment-bpe"])
def test_loss_is_nll_over_completion_tokens_only(tmp_path, tokenizer):
    torch.manual_seed(0)
    ctx = context(tmp_path, ROWS, "train.batch_size=4", f"policy.tokenizer={tokenizer}")
    sft = SFT()
    sft.setup(ctx)
    batch = sft.train_batch(0)
    loss, metrics = sft.loss(batch)
    # float64 reference: full log-softmax, summed over completion targets (+EOS) only
    policy = sft.policy.double()
    examples = [sft.examples[i] for i in sft.order.slice(0, 4)]
    total, count = 0.0, 0
    tokenizer = policy.tokenizer
    for ex in examples:
        prompt = [tokenizer.bos_id, *tokenizer.encode(ex.prompt)]
        completion = [*tokenizer.encode(ex.completion), tokenizer.eos_id]
        ids = torch.tensor([prompt + completion])
        with torch.no_grad():
            logp = torch.log_softmax(policy.logits(policy(ids)), -1)[0]
        for k, tok in enumerate(completion):
            total -= float(logp[len(prompt) - 1 + k, tok])
        count += len(completion)
    assert metrics["tokens"] == count
    assert abs(loss.item() - total / count) < 1e-4


def test_batches_are_a_pure_function_of_the_index(tmp_path):
    ctx = context(tmp_path, ROWS, "train.batch_size=3")
    a, b = SFT(), SFT()
    a.setup(ctx)
    b.setup(ctx)
    later = [a.train_batch(i).input_ids for i in (5, 2, 9)]
    again = [b.train_batch(i).input_ids for i in (9, 5, 2)]
    assert torch.equal(later[0], again[1]) and torch.equal(later[1], again[2])
    assert torch.equal(later[2], again[0])


@given(n=st.integers(1, 50), seed=st.integers(0, 10**6), epoch=st.integers(0, 5))
def test_each_epoch_visits_every_example_once(n, seed, epoch):
    order = EpochOrder(n, seed, "sft-order")
    assert sorted(order.slice(epoch * n, n)) == list(range(n))


def test_the_order_is_the_cores_epoch_order_on_its_own_stream(tmp_path):
    sft = SFT()
    sft.setup(context(tmp_path, ROWS, "seed=5"))
    assert isinstance(sft.order, EpochOrder)
    assert (sft.order.n, sft.order.seed, sft.order.name) == (len(sft.examples), 5, "sft-order")


def test_sft_overfits_a_tiny_dataset(tmp_path):
    data = tmp_path / "sft.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    run_dir, _ = gaf.run("sft", task="jsonl", sets=[
        f"task.path={json.dumps(str(data))}", f"out_dir={json.dumps(str(tmp_path / 'runs'))}",
        *TINY, "train.steps=60", "train.batch_size=4", "train.lr=0.01", "train.log_every=1",
        "objective.samples=2", "objective.max_new_tokens=8"])
    records = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert records[-1]["loss"] < 0.5 * records[0]["loss"], (records[0], records[-1])
    samples = [json.loads(x) for x in (run_dir / "samples" / "samples.jsonl").read_text().splitlines()]
    assert samples and "reward" not in samples[0]  # a JSONL task has no true reward
