"""What commands print: no library noise users cannot act on, and tables that keep what identifies a row."""

import os
import subprocess
import sys

from _classical import tabular_config
from trainforge.pipeline import train


def test_importing_trainforge_with_its_libraries_prints_nothing():
    code = "import trainforge, bitsandbytes, peft, transformers"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stderr == "" and done.stdout == ""


def test_runs_list_keeps_whole_run_names_in_an_80_column_terminal(runs_dir):
    name = "lora-smollm2-135m-instruct-sft-20261206-0912"
    train(tabular_config(runs_dir, name=name, cv={"strategy": "none"}))
    env = {**os.environ, "COLUMNS": "80"}
    listed = subprocess.run(
        [sys.executable, "-m", "trainforge.cli", "runs", "list", "--runs-dir", str(runs_dir)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert listed.returncode == 0, listed.stderr
    assert name in listed.stdout and max(map(len, listed.stdout.splitlines())) <= 80
    assert "not shown (too narrow)" in listed.stdout and "runs show RUN" in listed.stdout
