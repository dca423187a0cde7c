"""examples/gan_ablation.py: the eight runs it asks for and the table it writes."""

from __future__ import annotations

from script_module import load_script  # tests/ is on sys.path (conftest)

ablation = load_script("examples/gan_ablation.py")


def test_the_eight_runs_switch_exactly_the_ablated_ideas(monkeypatch, tmp_path):
    calls = []

    def fake_run(objective, sets):
        calls.append((objective, sets))
        name = next(s for s in sets if s.startswith("name=")).split("=", 1)[1].strip('"')
        run_dir = tmp_path / name
        run_dir.mkdir()
        (run_dir / "pipeline.json").write_text(
            '{"conditioner": {"options": {"clip": "/clip"}}}')
        (run_dir / "metrics.jsonl").write_text('{"d_real_acc": 0.9, "d_fake_acc": 0.8}\n')
        return run_dir, {"unseen_colour": 0.5, "unseen_colour_se": 0.03, "fd": 12.0,
                         "fd_floor": 2.0, "train_s": 360.0}

    monkeypatch.setattr(ablation.gaf, "run", fake_run)
    ablation.main([str(tmp_path)])
    assert [c[0] for c in calls] == ["gan-int-cls"] * 4 + ["gan-int-cls-modern"] * 4
    switches = [(("objective.cls=true" in s), ("objective.interpolate=true" in s))
                for _, s in calls]
    assert switches == [(False, False), (True, False), (False, True), (True, True)] * 2
    # the first run trains the text CLIP; every later one is given it
    assert not any(s.startswith("conditioner.clip=") for s in calls[0][1])
    assert all('conditioner.clip="/clip"' in s for _, s in calls[1:])
    table = (tmp_path / "ablation.md").read_text().splitlines()
    assert len(table) == 2 + 8
    assert "| original | GAN | 0.50 ± 0.03 |" in table[2]
    assert "12.0 (2.0)" in table[2] and "0.90 / 0.80" in table[2] and "6.0 min" in table[2]
