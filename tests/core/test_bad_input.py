"""Bad input and interrupted work, through the command line as a user meets them: every
case ends in one ``error:`` line and exit code 2 (3 or 130 where documented), and
nothing a user had is lost or half-written (docs/cli.md, "Exit codes" and "Resume").

One test (or group) per point of the robustness review: weights that must exist,
resume that never restarts over a run, ``--set`` on resume, finished runs, Ctrl-C
before the first checkpoint, two writers, values checked up front, outputs and
launchers checked first, messages that help, the Python API, and the last-resort
handler.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

import gaf
from gaf.cli import main
from gaf.errors import BadConfig, BadData, GafError

TINY = ["--set", "policy.n_layer=1", "--set", "policy.d_model=32", "--set",
        "objective.samples=2", "--set", "objective.eval_examples=8", "--set",
        "objective.max_new_tokens=4"]


def gaf_cli(args, cwd, timeout=300, **kw):
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE")}
    return subprocess.run([sys.executable, "-m", "gaf", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=timeout, env=env, **kw)


def one_error_line(out, code=2):
    """The run failed with ``code`` and said so in exactly one ``error:`` line, with no
    traceback."""
    assert out.returncode == code, out.stderr[-2000:]
    errors = [line for line in out.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, out.stderr[-2000:]
    assert "Traceback" not in out.stderr, out.stderr[-2000:]
    return errors[0]


def digest(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` and the SHA-256 of its bytes (but the run lock,
    which a refused command holds while it checks)."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and p.name != ".lock"}


def said(out, text):
    """Whether the command's stderr holds ``text`` (whitespace ignored: the console wraps
    long lines)."""
    return "".join(text.split()) in "".join(out.stderr.split())


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished 4-step SFT run with checkpoints at steps 2 and 4, every step logged."""
    root = tmp_path_factory.mktemp("finished")
    out = gaf_cli(["run", "--objective", "sft", "-q", "--out", "runs", "--name", "base",
                   *TINY, "--set", "train.steps=4", "--set", "train.save_every=2",
                   "--set", "train.log_every=1"], root)
    assert out.returncode == 0, out.stderr[-2000:]
    return root / "runs" / "base"


@pytest.fixture
def run_copy(finished, tmp_path):
    dest = tmp_path / "run"
    shutil.copytree(finished, dest)
    (dest / ".lock").unlink(missing_ok=True)
    return dest


# ------------------------------------------------------ 1. weights must all be there


def test_a_component_without_its_weights_is_refused_naming_the_file(run_copy, tmp_path):
    (run_copy / "policy" / "model.safetensors").unlink()
    out = gaf_cli(["sample", "--policy", str(run_copy), "--prompt", "The film"], tmp_path)
    line = one_error_line(out)
    assert "policy/model.safetensors: missing" in line
    assert out.stdout == ""  # no completion from a random model
    with pytest.raises(BadData, match="model.safetensors: missing"):
        gaf.load("policy", run_copy)
    # --init takes the same path: a DPO run would not start from a random policy
    out = gaf_cli(["run", "--objective", "dpo", "--init", str(run_copy / "policy"), "-q",
                   "--out", "runs"], tmp_path)
    assert "policy/model.safetensors: missing" in one_error_line(out)
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


# --------------------------------------------- 2. resume never restarts over a run


@pytest.mark.parametrize("damage", ["latest.json deleted", "the step it names deleted"])
def test_resume_after_damage_continues_from_the_newest_complete_checkpoint(run_copy, tmp_path,
                                                                           damage):
    ckpts = run_copy / "checkpoints"
    if damage == "latest.json deleted":
        (ckpts / "latest.json").unlink()
        want = "step-00000004"
    else:
        shutil.rmtree(ckpts / "step-00000004")
        want = "step-00000002"
    before = {p.name: digest(p) for p in ckpts.iterdir() if p.is_dir()}
    out = gaf_cli(["run", "--resume", str(run_copy), "-q", "--set", "train.steps=6",
                   "--set", "train.keep_checkpoints=5"], tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    assert said(out, f"using the newest complete checkpoint, {want}"), out.stderr
    assert said(out, f"resuming from {ckpts / want}"), out.stderr
    for name, files in before.items():  # every checkpoint that was there, byte for byte
        assert digest(ckpts / name) == files, name
    steps = [json.loads(line)["step"] for line in
             (run_copy / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4, 5, 6]  # the log up to the checkpoint kept, then continued


def test_resume_without_a_complete_checkpoint_stops_and_changes_nothing(run_copy, tmp_path):
    for state in (run_copy / "checkpoints").glob("step-*/state.json"):
        state.unlink()
    before = digest(run_copy)
    out = gaf_cli(["run", "--resume", str(run_copy), "-q", "--set", "train.steps=6"], tmp_path)
    assert "no complete checkpoint to resume from" in one_error_line(out)
    assert digest(run_copy) == before


def test_pruning_never_deletes_a_later_checkpoint(tmp_path):
    """A run resumed from an older checkpoint keeps the newer ones it did not supersede."""
    import torch

    from gaf import checkpoint

    lin = torch.nn.Linear(2, 2)
    opt = torch.optim.SGD(lin.parameters(), lr=0.1)
    for step in (2, 4, 6):
        checkpoint.save_training_state(tmp_path, step, {"m": lin}, opt, None, keep=2)
    assert sorted(p.name for p in tmp_path.glob("step-*")) == ["step-00000004", "step-00000006"]
    checkpoint.save_training_state(tmp_path, 5, {"m": lin}, opt, None, keep=2)
    assert sorted(p.name for p in tmp_path.glob("step-*")) == [
        "step-00000004", "step-00000005", "step-00000006"]  # 6 is not superseded by 5
    checkpoint.save_training_state(tmp_path, 7, {"m": lin}, opt, None, keep=2)
    assert sorted(p.name for p in tmp_path.glob("step-*")) == ["step-00000006", "step-00000007"]


# ------------------------------------------------------- 3. --set on resume is honest


def test_resume_applies_a_new_learning_rate_and_says_so(run_copy, tmp_path):
    out = gaf_cli(["run", "--resume", str(run_copy), "-q", "--set", "train.steps=6",
                   "--set", "train.lr=0.02"], tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    assert said(out, "resume: train.lr 0.004 -> 0.02") and said(out, "resume: train.steps 4 -> 6")
    state = json.loads((run_copy / "checkpoints" / "step-00000006" / "state.json").read_text())
    assert state["optimizer"]["param_groups"][0]["initial_lr"] == 0.02
    assert "lr = 0.02" in (run_copy / "config.toml").read_text()


def test_resume_refuses_a_change_the_checkpoint_cannot_take_before_writing(run_copy, tmp_path):
    before = digest(run_copy)
    out = gaf_cli(["run", "--resume", str(run_copy), "-q", "--set", "train.steps=6",
                   "--set", "policy.n_layer=2"], tmp_path)
    line = one_error_line(out)
    assert "policy.n_layer (1 -> 2)" in line and "only these may change" in line
    assert digest(run_copy) == before  # config.toml included: the run still resumes


# ------------------------------------------------------------ 4. a finished run


def test_resuming_a_finished_run_is_refused_and_keeps_its_summary(run_copy, tmp_path):
    before = digest(run_copy)
    out = gaf_cli(["run", "--resume", str(run_copy), "-q"], tmp_path)
    line = one_error_line(out)
    assert "is finished (4 steps)" in line and "train.steps=8" in line
    assert digest(run_copy) == before
    out = gaf_cli(["run", "--resume", str(run_copy), "-q", "--set", "train.steps=3"], tmp_path)
    assert "its checkpoint is at step 4" in one_error_line(out)


# ---------------------------------- 5. and 6. Ctrl-C before any save; two writers


def test_ctrl_c_before_the_first_checkpoint_saves_one_and_a_second_writer_is_refused(tmp_path):
    cmd = [sys.executable, "-m", "gaf", "run", "--objective", "sft", "-q", "--out", "runs",
           "--name", "long", *TINY, "--set", "train.steps=100000", "--set",
           "train.log_every=1", "--set", "train.batch_size=2"]
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE")}
    proc = subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env,  # Ctrl-C as a terminal sends it
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    run = tmp_path / "runs" / "long"
    deadline = time.monotonic() + 120
    while proc.poll() is None and time.monotonic() < deadline and not (
            (run / "metrics.jsonl").is_file() and (run / "metrics.jsonl").stat().st_size):
        time.sleep(0.05)
    try:
        second = gaf_cli(["run", "--resume", str(run), "-q", "--set", "train.steps=9"],
                         tmp_path)
        assert "is in use by another gaf process" in one_error_line(second)
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-2000:]
    flat = "".join(err.split())
    assert "checkpointstep-" in flat and "continuewith:gafrun--resumeruns/long" in flat, err
    step = json.loads((run / "checkpoints" / "latest.json").read_text())["step"]
    assert step >= 1
    again = gaf_cli(["run", "--resume", str(run), "-q", "--set", f"train.steps={step + 2}"],
                    tmp_path)
    assert again.returncode == 0, again.stderr[-2000:]


# ------------------------------------------------------ 7. values checked up front


@pytest.mark.parametrize("args, says", [
    (["--set", "train.lr=nan"], "lr must be > 0, got nan"),
    (["--set", "train.lr=inf"], "lr must be finite"),
    (["--set", "train.betas=[0.9]"], "betas must be two numbers"),
    (["--set", "train.betas=[0.9, 1.5]"], "betas must be in [0, 1)"),
    (["--seed", "-1"], "seed must be in [0, "),
    (["--seed", str(2**64)], "seed must be in [0, "),
    (["--set", "train.steps=1e100"], "steps must be in [1, 1000000000], got 1e+100"),
    (["--config", "section.toml"], "section.toml: [train] must be a table"),
    (["--config", "name.toml"], "name.toml: [policy] name must be a registered name"),
    (["--config", "bytes.toml"], "bytes.toml:2: not UTF-8 text"),
    (["--out", "a-file"], "--out 'a-file' cannot hold run directories: a-file is a file"),
    (["--name", "../escaped"], "--name '../escaped' must be a plain directory name"),
    (["--data", "bad.jsonl"], "bad.jsonl:1: field 'completion'"),
])
def test_a_bad_value_stops_the_run_and_leaves_nothing_behind(tmp_path, args, says):
    (tmp_path / "section.toml").write_text("train = 3\n")
    (tmp_path / "name.toml").write_text("[policy]\nname = 3\n")
    (tmp_path / "bytes.toml").write_bytes(b"[train]\n# \xff\xfe\n")
    (tmp_path / "a-file").write_text("")
    (tmp_path / "bad.jsonl").write_text('{"prompt": "a", "completion": ""}\n')
    runs = tmp_path / "runs"
    (runs / "good").mkdir(parents=True)
    (runs / "latest").symlink_to("good", target_is_directory=True)
    out = gaf_cli(["run", "--objective", "sft", "-q", "--out", "runs", *TINY, *args], tmp_path)
    assert says in one_error_line(out)
    assert sorted(p.name for p in runs.iterdir()) == ["good", "latest"]
    assert os.readlink(runs / "latest") == "good"
    assert not (tmp_path / "escaped").exists()


# ------------------------------------------- 8. outputs and launchers checked first


def test_gaf_sample_checks_its_output_before_any_work(tmp_path):
    (tmp_path / "a-file").write_text("")
    for out_path, says in [("a-file/grid.png", "a-file is a file, not a directory"),
                           ("grid.jpg", "give a file name ending in .png")]:
        out = gaf_cli(["sample", "--pipeline", "no-such-run", "--prompt", "x", "--out",
                       out_path], tmp_path)
        assert says in one_error_line(out)
    out = gaf_cli(["sample", "--pipeline", "no-such-run", "--prompt", "x", "--guidance",
                   "inf"], tmp_path)
    assert "must be a finite number >= 0" in one_error_line(out)


def test_nproc_checks_the_batch_first_and_passes_a_workers_error_through(tmp_path):
    out = gaf_cli(["run", "--nproc", "2", "--objective", "sft", "-q", "--out", "runs", *TINY,
                   "--set", "train.batch_size=5"], tmp_path)
    assert "must be a multiple of the number of processes (2)" in one_error_line(out)
    assert not (tmp_path / "runs").exists()
    (tmp_path / "bad.jsonl").write_text('{"prompt": "a", "completion": ""}\n')
    out = gaf_cli(["run", "--nproc", "2", "--objective", "sft", "-q", "--out", "runs", *TINY,
                   "--data", "bad.jsonl", "--set", "train.batch_size=4"], tmp_path)
    assert "bad.jsonl:1: field 'completion'" in one_error_line(out)
    assert "ChildFailedError" not in out.stderr


# ------------------------------------------------------- 9. messages that help


def test_a_wrong_kind_of_run_directory_says_what_it_is(finished, tmp_path):
    with pytest.raises(BadConfig, match="a run directory of objective 'sft' holding policy "
                                        "but no reward"):
        gaf.load("reward", finished)
    out = gaf_cli(["run", "--objective", "ppo", "--reward", str(finished), "-q", "--out",
                   "runs"], tmp_path)
    assert "run directory of objective 'sft'" in one_error_line(out)


def test_a_bad_value_in_a_saved_gaf_json_names_the_file(run_copy, tmp_path):
    meta = run_copy / "policy" / "gaf.json"
    data = json.loads(meta.read_text())
    data["config"]["n_layer"] = "two"
    meta.write_text(json.dumps(data))
    out = gaf_cli(["sample", "--policy", str(run_copy), "--prompt", "x"], tmp_path)
    line = one_error_line(out)
    assert "policy/gaf.json" in line and "n_layer" in line


def test_warnings_are_one_line_of_gafs_own(tmp_path):
    (tmp_path / "data.jsonl").write_text('{"text": "a fine film"}\n{"prompt": 3}\n' * 8)
    out = gaf_cli(["run", "--objective", "sft", "-q", "--out", "runs", *TINY, "--data",
                   "data.jsonl", "--set", "task.on_error=skip", "--set", "train.steps=1",
                   "--set", "train.batch_size=4"], tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    warned = [line for line in out.stderr.splitlines() if "skipped" in line]
    assert len(warned) == 1 and warned[0].startswith("warning: data.jsonl: skipped 8 bad")
    assert ".py:" not in out.stderr


def test_options_of_the_other_sample_mode_are_refused(tmp_path):
    out = gaf_cli(["sample", "--policy", "gpt2-tiny", "--prompt", "x", "--steps", "3"], tmp_path)
    assert "--steps applies to --pipeline (images), not to --policy (text)" in one_error_line(out)
    out = gaf_cli(["sample", "--pipeline", "r", "--prompt", "x", "--json",
                   "--max-new-tokens", "3"], tmp_path)
    assert "--max-new-tokens, --json apply to --policy (text)" in one_error_line(out)


# ------------------------------------------------------------ 10. the Python API


def test_the_python_api_gives_gaf_errors(tmp_path):
    with pytest.raises(BadConfig, match="sets must be a list of 'KEY=VALUE' strings"):
        gaf.run("sft", sets="train.steps=1")
    with pytest.raises(BadConfig, match="a kind must be a string, got 3"):
        gaf.create(3, "gpt2-tiny")
    with pytest.raises(BadConfig, match="a policy name must be a string"):
        gaf.create("policy", None)
    with pytest.raises(BadConfig, match="config must be a run file's path or a dict"):
        gaf.run("sft", config=5)
    with pytest.raises(BadConfig, match=r"\[train\] must be a table"):
        gaf.run("sft", config={"train": 3})
    with pytest.raises(BadConfig, match="expected a path"):
        gaf.load("policy", 3)
    run_dir, summary = gaf.run("sft", config={"train": {"steps": 1}, "out_dir": str(tmp_path)},
                               sets=[s for s in TINY if s != "--set"])
    assert summary["steps"] == 1 and run_dir.parent == tmp_path


# ------------------------------------------------------- the last-resort handler


def test_an_unexpected_error_is_one_line_and_traceback_shows_it():
    @main.command("explode")
    def explode():
        raise ValueError("a bug\nover two lines")

    try:
        out = CliRunner().invoke(main, ["explode"])
        assert out.exit_code == 1
        lines = [line for line in out.output.splitlines() if line]
        assert len(lines) == 1 and lines[0].startswith(
            "error: gaf explode: ValueError: a bug over two lines")
        assert "gaf --traceback explode" in lines[0]
        shown = CliRunner().invoke(main, ["--traceback", "explode"])
        assert isinstance(shown.exception, ValueError)
    finally:
        main.commands.pop("explode")


def test_a_gaf_error_keeps_its_exit_code_through_the_handler():
    @main.command("refuse")
    def refuse():
        raise GafError("no")

    try:
        out = CliRunner().invoke(main, ["refuse"])
        assert out.exit_code == 2 and out.output.strip() == "error: no"
    finally:
        main.commands.pop("refuse")
