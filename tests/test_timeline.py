"""examples/timeline.py: which objectives are baselines, the table and timeline.json it
writes between the markers of docs/results.md, and one end-to-end pass on a tiny
reused ``ldm`` run into a temporary copy of the docs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

import gaf
from script_module import load_script  # tests/ is on sys.path (conftest)
from tiny_ldm import tiny_ldm_sets
from gaf.errors import BadConfig, BadData
from gaf.registry import Registry

ROOT = Path(__file__).resolve().parents[1]


timeline = load_script("examples/timeline.py")


class _Later:
    timeline = {"year": 2016, "method": "text-conditional GAN"}


class _NotABaseline:
    """An objective without a timeline attribute."""


class _Broken:
    timeline = {"method": "no year"}


def test_baselines_are_the_objectives_that_declare_a_timeline_in_year_order():
    reg = Registry(catalogue=None, autoload=False)
    reg.add("objective", "gan", _Later)
    reg.add("objective", "sft-like", _NotABaseline)
    reg.add("objective", "ldm", gaf.REGISTRY.get("objective", "ldm"))
    found = timeline.baselines(reg)
    assert list(found) == ["gan", "ldm"]  # 2016 before 2021; sft-like is no baseline
    assert found["ldm"]["year"] == 2021 and found["ldm"]["method"] == "latent diffusion"
    reg.add("objective", "broken", _Broken)
    with pytest.raises(BadConfig, match="'broken': its timeline attribute must be a dict"):
        timeline.baselines(reg)


def test_the_built_in_registry_has_the_ldm_row():
    assert "ldm" in timeline.baselines()


def _entry(**metrics):
    base = {"unseen_colour": 0.9, "unseen_colour_se": 0.02, "unseen_exact": 0.25,
            "unseen_exact_se": 0.030619, "fd": 41.23, "kid": 0.0123, "kid_se": 0.002, "images_per_s": 512.34,
            "evaluations_per_image": 101, "diversity_position": 1.5, "diversity_size": 0.5,
            "trainable_parameters": 1_234_567, "frozen_parameters": 2500,
            "train_wall_s": 4000,
            "floor_exact": 0.01, "ceiling_exact": 1.0, "fd_floor": 17.0, "kid_floor": 0.0005,
            "kid_floor_se": 0.0001, "diversity_position_real": 3.1, "diversity_size_real": 1.0,
            "g3_exact": 0.25, "eval_on_train": True}
    base.update(metrics)
    return timeline.entry("ldm", {"year": 2021, "method": "latent diffusion", "paper": "R"},
                          base, None, run_dir="runs/x", command="python examples/timeline.py",
                          run_command="gaf eval runs/x", commit="abc1234")


def test_entry_splits_figures_from_floors_and_keeps_the_commands():
    e = _entry()
    assert set(e["floors"]) == {"floor_exact", "ceiling_exact", "fd_floor", "kid_floor",
                                "kid_floor_se", "diversity_position_real",
                                "diversity_size_real"}
    assert "fd" in e["metrics"] and "g3_exact" in e["metrics"]
    assert not set(e["metrics"]) & set(e["floors"])
    assert "eval_on_train" not in e["metrics"]  # a flag, not a figure
    assert (e["train_s"], e["trainable_parameters"], e["paper"]) == (4000.0, 1234567.0, "R")
    assert e["command"] == "python examples/timeline.py" and e["run_command"] == "gaf eval runs/x"


def test_training_time_falls_back_to_the_run_summary():
    metrics = {"unseen_exact": 0.5}
    e = timeline.entry("x", {"year": 2020, "method": "m"}, metrics,
                       {"setup_s": 12.5, "train_s": 100.0}, run_dir="r", command="c",
                       run_command="g", commit=None)
    assert e["train_s"] == 112.5


def test_table_row_formats_every_column():
    text = timeline.table({"ldm": _entry()})
    header, rule, row = text.splitlines()
    assert header.count("|") == rule.count("|") == row.count("|")
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[:6] == ["latent diffusion (`ldm`)", "2021", "1.23M / 2.5k", "1.1 h", "101",
                         "512.3"]
    assert cells[6] == "0.90 ± 0.02" and cells[12] == "0.25 ± 0.03"
    assert cells[8] == "–"  # size was not measured
    assert cells[13] == "41.23 (17.00)"
    assert cells[14] == "12.3 ± 2.0 (0.5 ± 0.1)"  # KID × 10³ ± SE
    assert cells[15] == "1.50 / 0.50 (3.10 / 1.00)"


def _docs(tmp_path: Path) -> Path:
    docs = tmp_path / "docs"
    docs.mkdir()
    shutil.copy(ROOT / "docs" / "results.md", docs / "results.md")
    return docs


def _outside(text: str) -> tuple[str, str]:
    head, rest = text.split(timeline.START, 1)
    return head, rest.split(timeline.END, 1)[1]


def test_write_docs_replaces_only_the_marked_part_and_merges_the_json(tmp_path):
    docs = _docs(tmp_path)
    before = (docs / "results.md").read_text(encoding="utf-8")
    other = {**_entry(), "method": "text-conditional GAN", "year": 2016}
    (docs / "timeline.json").write_text(json.dumps({"gan": other}), encoding="utf-8")
    for _ in range(2):  # rewriting is idempotent: one row per method, not appended
        merged = timeline.write_docs(docs, {"ldm": _entry()})
    after = (docs / "results.md").read_text(encoding="utf-8")
    assert _outside(after) == _outside(before)
    assert after.count("latent diffusion (`ldm`)") == 1
    marked = after.split(timeline.START)[1].split(timeline.END)[0]
    rows = [line for line in marked.splitlines() if line.startswith("| ")]
    assert [r.split("|")[1].strip() for r in rows[1:]] == [  # after the header, by year
        "text-conditional GAN (`gan`)", "latent diffusion (`ldm`)"]
    stored = json.loads((docs / "timeline.json").read_text(encoding="utf-8"))
    assert set(stored) == set(merged) == {"gan", "ldm"}
    assert stored["ldm"]["metrics"]["unseen_exact"] == 0.25


def test_write_docs_needs_exactly_one_pair_of_markers(tmp_path):
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "results.md").write_text("# Results\n", encoding="utf-8")
    with pytest.raises(BadData, match="timeline"):
        timeline.write_docs(docs, {"ldm": _entry()})


def test_reuse_and_only_name_baselines(tmp_path):
    with pytest.raises(BadConfig, match="did you mean 'ldm'"):
        timeline.main(["--reuse", "lmd=runs/x", "--docs", str(tmp_path)])
    with pytest.raises(BadConfig, match="OBJECTIVE=RUN_DIR"):
        timeline.main(["--reuse", "ldm", "--docs", str(tmp_path)])
    with pytest.raises(BadConfig, match="not a timeline baseline"):
        timeline.main(["--only", "sft", "--docs", str(tmp_path)])
    with pytest.raises(BadConfig, match="not a run directory"):  # before any training
        timeline.main(["--reuse", f"ldm={tmp_path}", "--docs", str(tmp_path)])
    with pytest.raises(BadData, match="no such file"):
        timeline.main(["--only", "ldm", "--docs", str(tmp_path)])


def test_per_objective_sets_go_to_their_objective_only():
    sets = ["train.steps=3", "ldm:objective.eval_images=4", "gan:train.lr=1"]
    assert timeline._sets_for("ldm", sets) == ["train.steps=3", "objective.eval_images=4"]
    assert timeline._sets_for("gan", sets) == ["train.steps=3", "train.lr=1"]


def test_a_fine_tuning_baseline_is_given_the_run_it_fine_tunes(tmp_path):
    meta = {"year": 2023, "method": "m", "init_run": "ldm"}
    made = {"ldm": tmp_path / "trained-now"}
    assert timeline.init_run("dpo", meta, made, tmp_path) == (tmp_path / "trained-now").resolve()
    with pytest.raises(BadConfig, match=r"'dpo' fine-tunes a 'ldm' run.*--reuse ldm=RUN_DIR"):
        timeline.init_run("dpo", meta, {}, tmp_path)
    previous = tmp_path / "timeline-ldm"
    previous.mkdir()
    (previous / "pipeline.json").write_text("{}", encoding="utf-8")
    assert timeline.init_run("dpo", meta, {}, tmp_path) == previous.resolve()


def test_main_trains_diffusion_dpo_from_the_ldm_run_it_made(tmp_path, monkeypatch):
    assert timeline.baselines()["diffusion-dpo"]["init_run"] == "ldm"
    calls = []

    def fake_run(name, *, reuse, sets, runs_dir, device):
        calls.append((name, reuse, sets))
        return {}, None, runs_dir / f"timeline-{name}", f"gaf run --objective {name}"

    monkeypatch.setattr(timeline, "run_baseline", fake_run)
    monkeypatch.setattr(timeline, "check_docs", lambda docs: None)
    monkeypatch.setattr(timeline, "write_docs", lambda docs, new: new)
    timeline.main(["--only", "diffusion-dpo", "--only", "ldm", "--runs-dir", str(tmp_path),
                   "--set", "train.steps=3"])
    assert [c[0] for c in calls] == ["ldm", "diffusion-dpo"]  # the base first (by year)
    base = json.dumps(str((tmp_path / "timeline-ldm").resolve()))
    assert calls[0][2] == ["train.steps=3"]
    assert calls[1][2] == [f"objective.init_run={base}", "train.steps=3"]
    calls.clear()  # a reused fine-tuned run is only re-evaluated: no init_run is set
    reused = tmp_path / "dpo"
    reused.mkdir()
    (reused / "config.toml").write_text("", encoding="utf-8")
    timeline.main(["--only", "diffusion-dpo", "--reuse", f"diffusion-dpo={reused}",
                   "--runs-dir", str(tmp_path / "none")])
    assert calls == [("diffusion-dpo", reused, [])]


TINY = tiny_ldm_sets()


@pytest.mark.slow
def test_end_to_end_on_a_tiny_reused_run(tmp_path):
    run_dir, summary = gaf.run("ldm", autoencoder="none",
                               sets=[f"out_dir={json.dumps(str(tmp_path))}", "name=tiny",
                                     *TINY])
    docs = _docs(tmp_path)
    before = (docs / "results.md").read_text(encoding="utf-8")
    merged = timeline.main(["--reuse", f"ldm={run_dir}", "--only", "ldm", "--docs",
                            str(docs), "--set", "objective.eval_steps=2"])
    e = merged["ldm"]
    assert e["year"] == 2021 and e["run_dir"] == str(run_dir)
    assert e["command"].startswith("python examples/timeline.py --reuse ldm=")
    assert e["run_command"] == f"gaf eval {run_dir} --set objective.eval_steps=2"
    # the re-evaluation of the same weights with the same seeds gives the run's figures
    for key in ("unseen_exact", "g3_colour", "swapped_pair_binding"):
        assert e["metrics"][key] == summary[key], key
    assert e["floors"]["ceiling_exact"] == summary["ceiling_exact"]
    # 2 guided steps (the CFG pair counts 2) + the text encoder; pixel space: no decoder
    assert e["metrics"]["evaluations_per_image"] == 2 * 2 + 1
    assert e["trainable_parameters"] > 0 and e["train_s"] > 0
    after = (docs / "results.md").read_text(encoding="utf-8")
    assert _outside(after) == _outside(before)
    assert "latent diffusion (`ldm`) | 2021 |" in after
    assert json.loads((docs / "timeline.json").read_text(encoding="utf-8")) == merged
