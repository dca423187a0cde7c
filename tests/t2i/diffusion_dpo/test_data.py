"""Pair files for ``diffusion-dpo``: a good file reads (relative paths, each image once);
every bad row is one line naming the file, the line and the field (and a missing
image's path); ``gaf run --data`` exits with code 2 and that line."""

from __future__ import annotations

import json
import math

import pytest
import torch
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from gaf.cli import main
from gaf.errors import BadData
from gaf.plugins.t2i.diffusion_dpo import data as D
from gaf.plugins.t2i.diffusion_dpo.data import read_preferences

SHAPE = (3, 16, 16)


def test_a_good_file_reads_relative_paths_once(pair_file, files, tmp_path):
    with pair_file.open("a") as f:  # the same images again, with rewards, in a ranked list
        f.write(json.dumps({"prompt": "x", "chosen": "img/w0.png", "rejected": "img/l0.png",
                            "chosen_reward": 0.5, "rejected_reward": 0.25}) + "\n")
        f.write(json.dumps({"prompt": "y", "responses": ["img/w1.png", "img/l1.png",
                                                         "img/w2.png"],
                            "ranking": [2, 0, 1]}) + "\n")
    pairs = read_preferences(pair_file, SHAPE)
    assert len(pairs) == 4 + 1 + 3 and pairs.images.shape == (8, *SHAPE)
    assert pairs.prompts[:5] == ["a red circle 0", "a red circle 1", "a red circle 2",
                                 "a red circle 3", "x"]
    assert pairs.chosen[4] == pairs.chosen[0] and pairs.rejected[4] == pairs.rejected[0]
    assert pairs.reward_margin[4] == 0.25 and math.isnan(pairs.reward_margin[0])
    # the ranked list: w2 > w1 > l1, every ordered pair
    w1, l1, w2 = pairs.chosen[1], pairs.rejected[1], pairs.chosen[2]
    assert list(zip(pairs.chosen[5:], pairs.rejected[5:])) == [(w2, w1), (w2, l1), (w1, l1)]
    assert float(pairs.images.min()) >= -1 and float(pairs.images.max()) <= 1
    # each image's file, absolute, in the images' order
    assert pairs.paths[pairs.chosen[0]] == tmp_path / "img" / "w0.png"
    assert pairs.paths[pairs.rejected[3]] == tmp_path / "img" / "l3.png"
    assert len(pairs.paths) == 8 and len(set(pairs.paths)) == 8
    two = pairs.select([4, 1])
    assert (two.prompts, two.chosen, two.rejected) == (["x", "a red circle 1"],
                                                        [pairs.chosen[4], w1], [pairs.rejected[4], l1])
    assert two.images is pairs.images and two.paths == pairs.paths
    assert not torch.equal(pairs.images[pairs.chosen[0]], pairs.images[pairs.rejected[0]])


def test_a_missing_image_names_the_line_the_field_and_the_path(pair_file, tmp_path):
    lines = pair_file.read_text().splitlines()
    row = json.loads(lines[2])
    row["rejected"] = "img/nowhere.png"
    lines[2] = json.dumps(row)
    pair_file.write_text("\n".join(lines) + "\n")
    with pytest.raises(BadData) as err:
        read_preferences(pair_file, SHAPE)
    msg = str(err.value)
    assert msg.startswith(f"{pair_file}:3: field 'rejected': image not found: ")
    assert str(tmp_path / "img" / "nowhere.png") in msg and "\n" not in msg


@pytest.mark.parametrize("row, line_field", [
    ('{"prompt": "a", "chosen": "img/w0.png"}', "field 'rejected'"),
    ('{"prompt": "a", "chosen": 3, "rejected": "img/l0.png"}', "field 'chosen'"),
    ('{"prompt": "a", "completion": "img/w0.png", "label": true}', "field 'label'"),
    ('{"prompt": "a", "chosen": "img/w0.png", "rejected": "img/l0.png"', ""),
])
def test_a_malformed_row_names_the_line_and_field(pair_file, row, line_field):
    pair_file.write_text(pair_file.read_text() + row + "\n")
    with pytest.raises(BadData) as err:
        read_preferences(pair_file, SHAPE)
    assert str(err.value).startswith(f"{pair_file}:5: {line_field}")


def test_a_wrongly_sized_image_names_its_row(pair_file, files, tmp_path):
    files.write_png(tmp_path / "img" / "big.png", 9, size=20)
    pair_file.write_text(pair_file.read_text().replace("img/w1.png", "img/big.png"))
    with pytest.raises(BadData, match=r":2: field 'chosen': .*big.png.*20x20.*16x16"):
        read_preferences(pair_file, SHAPE)


@pytest.mark.slow
def test_gaf_run_data_with_a_missing_image_exits_2(base_run, pair_file, tmp_path):
    pair_file.write_text(pair_file.read_text().replace("img/l3.png", "img/gone.png"))
    out = tmp_path / "runs"
    res = CliRunner().invoke(main, ["run", "--objective", "diffusion-dpo", "--data",
                                    str(pair_file), "--set",
                                    f"objective.init_run={json.dumps(str(base_run))}",
                                    "--out", str(out), "-q"])
    assert res.exit_code == 2, res.output
    error = [x for x in res.output.splitlines() if x.startswith("error")]
    assert len(error) == 1, res.output
    assert f"{pair_file}:4: field 'rejected': image not found: " in error[0]
    assert str(tmp_path / "img" / "gone.png") in error[0]
    assert not any(out.glob("*-diffusion-dpo-*"))  # nothing kept


@pytest.mark.slow
def test_gaf_run_data_trains_on_the_file(base_run, pair_file, tmp_path):
    out = tmp_path / "runs"
    res = CliRunner().invoke(main, ["run", "--objective", "diffusion-dpo", "--data",
                                    str(pair_file), "--set",
                                    f"objective.init_run={json.dumps(str(base_run))}",
                                    "--set", "objective.eval_images=0", "--set",
                                    "train.steps=2", "--set", "train.batch_size=2", "--set", "train.log_every=1",
                                    "--out", str(out), "--name", "file", "-q"])
    assert res.exit_code == 0, res.output
    log = [json.loads(x) for x in (out / "file" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log if "loss" in r] == [1, 2]
    assert all("reward_margin" not in r for r in log)  # the file has no rewards
    assert not (out / "file" / "data").exists() and not (out / "file" / "reward_clip").exists()


@settings(max_examples=60, deadline=None)
@given(st.lists(st.lists(st.integers(0, 20), min_size=2, max_size=5), min_size=1, max_size=4))
def test_widest_pairs_keep_the_best_against_the_worst_of_each_prompt(groups):
    """From every ordered pair of each prompt's scored images (as a sampled file holds
    them), best-worst keeps one pair per prompt: its highest reward against its lowest."""
    prompts, chosen, rejected, margins, offset, expected = [], [], [], [], 0, {}
    for g, rewards in enumerate(groups):
        for w, lo in D.ordered_pairs(rewards):
            prompts.append(f"p{g}")
            chosen.append(offset + w)
            rejected.append(offset + lo)
            margins.append(float(rewards[w] - rewards[lo]))
        if max(rewards) > min(rewards):
            expected[f"p{g}"] = (max(rewards), min(rewards))
        offset += len(rewards)
    flat = [float(r) for rewards in groups for r in rewards]
    pairs = D.PreferencePairs(torch.zeros(len(flat), 3, 2, 2), prompts, chosen, rejected,
                              margins)
    if not prompts:
        return
    kept = D.widest_pairs(pairs)
    assert kept.prompts == list(expected)  # one per prompt with a strict order, in order
    for prompt, w, lo, m in zip(kept.prompts, kept.chosen, kept.rejected, kept.reward_margin):
        assert (flat[w], flat[lo]) == expected[prompt] and m == flat[w] - flat[lo]
    assert kept.images is pairs.images


def test_widest_pairs_need_rewards():
    pairs = D.PreferencePairs(torch.zeros(2, 3, 2, 2), ["a"], [0], [1], [float("nan")])
    with pytest.raises(BadData, match=r"pair 0 \('a'\) has no reward margin"):
        D.widest_pairs(pairs)


@pytest.mark.slow
def test_best_worst_trains_on_each_prompts_widest_pair(base_run, files, tmp_path):
    rows = []
    for i in range(4):
        files.write_png(tmp_path / "img" / f"w{i}.png", 2 * i)
        files.write_png(tmp_path / "img" / f"l{i}.png", 2 * i + 1)
        rows.append({"prompt": f"a red circle {i // 2}", "chosen": f"img/w{i}.png",
                     "rejected": f"img/l{i}.png", "chosen_reward": 0.5 + 0.1 * i,
                     "rejected_reward": 0.1})
    path = files.write_pairs(tmp_path, rows)
    out = tmp_path / "runs"
    args = ["run", "--objective", "diffusion-dpo", "--data", str(path), "--set",
            f"objective.init_run={json.dumps(str(base_run))}", "--set",
            "objective.eval_images=0", "--set", "train.steps=1", "--set",
            "train.batch_size=2", "--out", str(out)]
    res = CliRunner().invoke(main, [*args, "--name", "bw", "--set",
                                    'objective.pairs="best-worst"'])
    assert res.exit_code == 0, res.output
    assert "diffusion-dpo: 2 pairs over 8 images" in res.output  # rows 2 and 4 of 4
    files.write_pairs(tmp_path, [{k: v for k, v in r.items() if "reward" not in k}
                                 for r in rows])
    res = CliRunner().invoke(main, [*args, "--name", "none", "--set",
                                    'objective.pairs="best-worst"'])
    assert res.exit_code == 2 and "has no reward margin" in res.output, res.output
