"""Data-parallel training: `trainforge train --nproc 2` over gloo follows the one-process loss curve at the same
global batch, and only rank 0 writes the run directory."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import trainforge
from _classical import tabular_config
from conftest import tiny_run_config, train_losses
from trainforge.config import dump_config
from trainforge.errors import ConfigError
from trainforge.pipeline import train
from trainforge.tracking.rundir import list_runs

STEPS = 3
# fp32: bf16 autocast rounds the two runs' different reduction orders apart (about 1e-3 by step 3)
TRAINING = {"max_steps": STEPS, "precision": "fp32"}
EVALUATION = {"before_after": False, "generation": False}


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    src = str(Path(trainforge.__file__).parents[1])
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")])}
    return subprocess.run(
        [sys.executable, "-m", "trainforge.cli", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600
    )


def test_two_gloo_processes_follow_the_one_process_loss_curve(tmp_path):
    one = train(
        tiny_run_config(tmp_path / "one", name="one", training={**TRAINING, "batch_size": 4}, evaluation=EVALUATION)
    )
    config = tiny_run_config(
        tmp_path / "two", name="two", training={**TRAINING, "batch_size": 2}, evaluation=EVALUATION
    )
    (tmp_path / "run.yaml").write_text(dump_config(config))

    done = run_cli("train", "run.yaml", "--nproc", "2", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]

    [two] = list_runs(tmp_path / "two")  # one directory, written by rank 0 alone
    assert two.status == "completed" and two.name == "two"
    expected, got = train_losses(one), train_losses(two)
    assert len(got) == len(expected) == STEPS
    # same global batch of 4, split 2 + 2: the losses agree to float32 rounding (tokens averaged across ranks)
    assert got == pytest.approx(expected, abs=1e-5)  # measured: 1e-6
    assert expected[-1] < expected[0]
    rows = [m for m in two.metrics() if "loss" in m]
    assert [m["step"] for m in rows] == list(range(1, STEPS + 1))  # one metrics row per step, not one per rank
    assert (two.path / "adapter" / "adapter_config.json").is_file()
    assert sorted(p.name for p in (two.checkpoints / f"checkpoint-{STEPS}").glob("rng_state_*.pth")) == [
        "rng_state_0.pth",
        "rng_state_1.pth",
    ]  # each rank's RNG, for --resume


def test_nproc_refuses_runs_that_train_in_one_process(tmp_path):
    config = tiny_run_config(tmp_path / "runs", training={"objective": "grpo"}, reward={"function": "math:fabs"})
    (tmp_path / "run.yaml").write_text(dump_config(config))
    done = run_cli("train", "run.yaml", "--nproc", "2", cwd=tmp_path)
    assert done.returncode == 2 and "runs its own RL loop" in done.stderr
    assert not (tmp_path / "runs").exists()


def test_a_worker_of_an_unsupported_run_stops_before_the_run_directory(tmp_path, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")  # as under torchrun / accelerate launch
    config = tabular_config(tmp_path / "runs")
    with pytest.raises(ConfigError, match="trains in one process"):
        train(config)
    assert not (tmp_path / "runs").exists()


def test_fsdp_or_deepspeed_refuse_methods_whose_weights_they_cannot_gather(monkeypatch):
    from trainforge.config import load_config
    from trainforge.pipeline import check_data_parallel as check_supported

    examples = Path(__file__).parents[2] / "examples"
    adapter, lora = load_config(examples / "textcls-adapter.yaml"), load_config(examples / "lora-sft.yaml")
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")  # what `accelerate launch --config_file fsdp.yaml` sets
    check_supported(adapter)  # without a GPU accelerate ignores it and runs DDP: nothing is sharded
    monkeypatch.setattr(torch.accelerator, "is_available", lambda: True)
    with pytest.raises(ConfigError, match="FSDP / DeepSpeed cannot gather"):
        check_supported(adapter)
    check_supported(lora)  # peft / full models: the Trainer gathers them
    monkeypatch.setattr(torch.accelerator, "is_available", lambda: False)
    monkeypatch.setenv("ACCELERATE_USE_DEEPSPEED", "true")  # accelerate starts DeepSpeed on CPUs too
    with pytest.raises(ConfigError, match="FSDP / DeepSpeed cannot gather"):
        check_supported(adapter)
