import json
import subprocess
import sys


def run_cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "trainforge.cli", *args], capture_output=True, text=True, cwd=cwd)


def test_bad_config_is_one_clear_error_and_no_run_dir(tmp_path):
    cfg = tmp_path / "run.yaml"
    cfg.write_text("data:\n  task: dates-json\ntraining:\n  learning_rate: -0.1\n")
    result = run_cli("train", str(cfg), f"tracking.runs_dir={tmp_path / 'runs'}")
    assert result.returncode == 2
    assert "Invalid config" in result.stderr and "training.learning_rate" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "runs").exists()


def test_bad_data_file_stops_before_the_run_dir(tmp_path):
    data = tmp_path / "d.jsonl"
    data.write_text(
        '{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}\n{"messages": []}\n'
    )
    cfg = tmp_path / "run.yaml"
    cfg.write_text(f"model: {{name: tiny-llama}}\ndata:\n  path: {data}\ntracking: {{runs_dir: {tmp_path / 'runs'}}}\n")
    result = run_cli("train", str(cfg))
    assert result.returncode == 2 and "d.jsonl, row 2" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "runs").exists()


def test_unknown_option_is_a_usage_error_not_a_traceback(tmp_path):
    result = run_cli("train", "run.yaml", "--output-dir", str(tmp_path))
    assert result.returncode == 2
    assert "No such option: --output-dir" in result.stderr and "Traceback" not in result.stderr


def test_unknown_model_lists_aliases(tmp_path):
    cfg = tmp_path / "run.yaml"
    cfg.write_text(f"model: {{name: gpt2}}\ndata: {{task: dates-json}}\ntracking: {{runs_dir: {tmp_path / 'runs'}}}\n")
    result = run_cli("train", str(cfg))
    assert (
        result.returncode == 2 and "Unknown model 'gpt2'" in result.stderr and "smollm2-135m-instruct" in result.stderr
    )


def test_data_validate_and_inspect(tmp_path):
    data = tmp_path / "d.jsonl"
    data.write_text(
        json.dumps({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}) + "\n"
    )
    ok = run_cli("data", "validate", str(data))
    assert ok.returncode == 0 and "1 valid chat rows" in ok.stdout
    shown = run_cli("data", "inspect", str(data), "--model", "tiny-llama")
    assert shown.returncode == 0 and "p50" in shown.stdout and "<|im_start|>assistant" in shown.stdout


def test_library_start_up_noise_is_filtered():
    # peft imports torchao and bitsandbytes, whose CPU builds log kernels they cannot load on every start.
    result = subprocess.run(
        [sys.executable, "-c", "import trainforge, peft, bitsandbytes, trl"], capture_output=True, text=True
    )
    assert result.returncode == 0
    assert "Failed to load" not in result.stderr and "Enum subclass" not in result.stderr


def test_omp_num_threads_sets_the_default_thread_count(monkeypatch):
    import torch

    from trainforge.hardware import choose

    before = torch.get_num_threads()
    try:
        monkeypatch.setenv("OMP_NUM_THREADS", "1")
        assert choose().threads == 1 and torch.get_num_threads() == 1
        assert choose(threads=2).threads == 2  # the config's training.threads wins
    finally:
        torch.set_num_threads(before)


def test_a_command_exit_code_reaches_the_shell():
    # `train --nproc` ends with typer.Exit(<workers' code>); a failed worker must not exit 0
    script = (
        "import sys, typer\nfrom trainforge import cli\n\n"
        "@cli.app.command('fail-with')\ndef fail_with(code: int):\n    raise typer.Exit(code)\n\n"
        "sys.argv = ['trainforge', 'fail-with', '3']\ncli.main()\n"
    )
    assert subprocess.run([sys.executable, "-c", script], capture_output=True, text=True).returncode == 3
