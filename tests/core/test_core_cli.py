"""The CLI through click's runner, plus the torch-free start-up check in a subprocess."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest
from click.testing import CliRunner

import gaf
from gaf.cli import main


def invoke(*args: str):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


@pytest.mark.parametrize("argv", [["--help"], ["list"], ["list", "sampler"], ["run", "--help"]])
def test_help_and_list_do_not_import_torch(argv):
    code = textwrap.dedent(f"""
        import sys
        from gaf.cli import main
        try:
            main({argv!r})
        except SystemExit as exc:
            assert not exc.code, exc.code
        assert "torch" not in sys.modules, "torch was imported"
        print("TORCH-FREE")
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "TORCH-FREE" in out.stdout


def test_version():
    result = invoke("--version")
    assert result.exit_code == 0 and gaf.__version__ in result.output


def test_list_shows_names_summaries_and_packages():
    result = invoke("list")
    assert result.exit_code == 0
    for name in ("gpt2-tiny", "top-p", "sentiment", "sft"):
        assert name in result.output
    result = invoke("list", "policy", "gpt2*", "--json")
    rows = [json.loads(line) for line in result.output.splitlines()]
    assert [r["name"] for r in rows] == ["gpt2", "gpt2-tiny"]
    assert all(r["package"] == "gaf" and r["summary"] for r in rows)


def test_show_lists_config_fields_with_named_defaults():
    result = invoke("show", "policy", "gpt2-tiny")
    assert result.exit_code == 0, result.output
    assert "n_layer" in result.output and "d_model" in result.output
    assert "128" in result.output  # gpt2-tiny's width, not the class default
    result = invoke("show", "objective", "sft")
    assert "train defaults" in result.output and "uses: policy" in result.output


def test_show_prints_each_options_declared_rule():
    result = CliRunner().invoke(main, ["show", "policy", "gpt2-tiny"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "allowed" in result.output
    rows = {line.split()[0]: line for line in result.output.splitlines() if line.strip()}
    assert "in [0, 1)" in rows["dropout"] and "> 0" in rows["layer_norm_eps"]
    assert ">= 1" in rows["n_layer"]


@pytest.mark.parametrize("args, message", [
    (["run", "--objective", "sft", "--policy", "gpt2-tyni"],
     "unknown policy 'gpt2-tyni'; did you mean 'gpt2-tiny'"),
    (["run", "--objective", "stf"], "unknown objective 'stf'; did you mean 'sft'"),
    (["run", "--objective", "sft", "--set", "train.lrr=1"], "valid keys: steps"),
    (["run", "--objective", "sft", "--set", "nonsense=1"], "valid keys:"),
    (["show", "polcy", "gpt2"], "unknown kind 'polcy'; did you mean 'policy'"),
    (["run", "--objective", "sft", "--config", "/no/such/run.toml"], "cannot read config"),
    (["sample", "--policy", "/no/such/dir", "--prompt", "x"], "no such file or directory"),
    (["sample", "--policy", "gpt2-tiny", "--prompt", "x", "--sampler", "top-q"], "did you mean 'top-p'"),
    (["sample", "--policy", "gpt2-tiny", "--prompt", "x", "--set", "p=2"], "p must be"),
    (["run", "--objective", "sft", "--policy", "gpt2-tiny", "--set", "train.lr=nan"],
     "train: lr must be > 0, got nan"),
    (["run", "--objective", "sft", "--set", "train.max_grad_norm=inf"],
     "train: max_grad_norm must be finite, got inf"),
    (["run", "--objective", "dpo", "--set", "objective.beta=-1"],
     "objective dpo: beta must be > 0, got -1"),
])
def test_user_errors_exit_2_without_traceback(args, message):
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert "Traceback" not in result.output


def test_bad_config_file_names_file_and_line(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text('[objective]\nname = "sft"\n[train]\nlr = \n')
    result = CliRunner().invoke(main, ["run", "--config", str(path)])
    assert result.exit_code == 2 and "run.toml" in result.output and "line 4" in result.output


def test_run_then_sample_end_to_end(tmp_path):
    """A few SFT steps through the CLI, then `gaf sample` and `gaf.load` on the result."""
    result = CliRunner().invoke(main, [
        "run", "--objective", "sft", "--policy", "gpt2-tiny", "--out", str(tmp_path), "-q",
        "--set", "train.steps=4", "--set", "objective.samples=4", "--set", "objective.eval_examples=8",
        "--set", "policy.n_layer=1", "--set", "policy.d_model=32", "--set", "objective.max_new_tokens=8"])
    assert result.exit_code == 0, result.output
    (run_dir,) = [p for p in tmp_path.iterdir() if not p.is_symlink()]
    assert f"run directory: {run_dir}" in result.output
    assert (tmp_path / "latest").resolve() == run_dir.resolve()
    for name in ("config.toml", "metrics.jsonl", "summary.json", "policy/gaf.json",
                 "policy/model.safetensors", "samples/samples.jsonl", "plots/training.png"):
        assert (run_dir / name).is_file(), name
    summary = json.loads((run_dir / "summary.json").read_text())
    assert {"eval_loss", "mean_reward", "wall_s"} <= summary.keys()
    sample = CliRunner().invoke(main, ["sample", "--policy", str(run_dir), "--prompt", "The film",
                                       "--sampler", "greedy", "--max-new-tokens", "5", "--json"])
    assert sample.exit_code == 0, sample.output
    row = json.loads(sample.output.splitlines()[-1])
    assert row["prompt"] == "The film" and isinstance(row["completion"], str)
    policy = gaf.load("policy", run_dir)
    assert policy.config.n_layer == 1 and policy.config.d_model == 32


def test_resume_from_the_cli(tmp_path):
    args = ["run", "--objective", "sft", "--out", str(tmp_path), "-q", "--set", "train.steps=2",
            "--set", "objective.samples=2", "--set", "objective.eval_examples=4",
            "--set", "policy.n_layer=1", "--set", "policy.d_model=32",
            "--set", "objective.max_new_tokens=4"]
    assert CliRunner().invoke(main, args).exit_code == 0
    run_dir = (tmp_path / "latest").resolve()
    result = CliRunner().invoke(main, ["run", "--resume", str(run_dir), "-q", "--set",
                                       "train.steps=3"])
    assert result.exit_code == 0, result.output
    assert json.loads((run_dir / "summary.json").read_text())["steps"] == 3
    refused = CliRunner().invoke(main, ["run", "--resume", str(run_dir), "--seed", "3"])
    assert refused.exit_code == 2 and "only --set" in refused.output


def test_shell_completion_of_component_names():
    env = {**__import__("os").environ, "_GAF_COMPLETE": "bash_complete",
           "COMP_WORDS": "gaf run --policy gpt2", "COMP_CWORD": "3"}
    out = subprocess.run([sys.executable, "-m", "gaf"], capture_output=True, text=True, env=env,
                         timeout=60)
    names = {line.split(",", 1)[1] for line in out.stdout.splitlines() if "," in line}
    assert names == {"gpt2", "gpt2-tiny"}, out.stdout + out.stderr


def test_importing_the_cli_discovers_nothing():
    code = "import gaf, gaf.cli; assert not gaf.REGISTRY._discovered; print('LAZY')"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "LAZY" in out.stdout, out.stderr


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="checks the no-GPU message")
def test_cuda_without_a_gpu_is_a_clear_error(tmp_path):
    result = CliRunner().invoke(main, ["run", "--objective", "sft", "--device", "cuda",
                                       "--out", str(tmp_path)])
    assert result.exit_code == 2 and "CUDA is not available" in result.output
    assert not any(tmp_path.iterdir())  # nothing was created


def test_device_option_accepts_what_the_run_spec_accepts(tmp_path):
    from gaf.device import is_device_name
    for name in ("auto", "cpu", "cuda", "cuda:0", "cuda:1"):
        assert is_device_name(name)
    # cuda:1 passes parsing; what fails next is the missing run directory, not --device
    result = CliRunner().invoke(main, ["eval", str(tmp_path / "none"), "--device", "cuda:1"])
    assert "--device" not in result.output
    assert "not a run directory" in result.output


@pytest.mark.parametrize("device", ["tpu", "cuda:", "cuda:x", "cuda:-1", "mps"])
@pytest.mark.parametrize("command", [["eval", "somewhere"], ["run"]])
def test_bad_device_exits_2_naming_the_forms(command, device):
    from gaf.device import is_device_name
    assert not is_device_name(device)
    result = CliRunner().invoke(main, [*command, "--device", device])
    assert result.exit_code == 2
    assert "auto, cpu, cuda, cuda:N" in result.output and repr(device) in result.output


@pytest.mark.parametrize("command", ["run", "sample", "eval"])
def test_help_shows_the_device_forms_as_typed(command):
    result = CliRunner().invoke(main, [command, "--help"])
    assert "--device [auto|cpu|cuda|cuda:N]" in result.output


def test_the_run_spec_rejects_a_bad_device_like_the_cli():
    from gaf.errors import BadConfig
    from gaf.spec import resolve
    with pytest.raises(BadConfig, match="cuda:N, got 'cuda:x'"):
        resolve(objective="sft", sets=['device="cuda:x"'])
