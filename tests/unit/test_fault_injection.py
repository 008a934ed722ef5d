"""Fault injection at every write a training run makes (config, metrics, checkpoints, adapter, summary, report,
MLflow): a full disk (OSError) and a kill (SIGKILL) at each. Then `--resume` (or a rerun, when no run began) ends
`completed` with nothing lost — every step's metrics once, complete checkpoints, an adapter peft loads — and
nothing half-written left behind as if complete."""

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from _fault_sites import SITES, disk_full, inject

from conftest import tiny_run_config
from trainforge.config import dump_config
from trainforge.pipeline import train
from trainforge.tracking.rundir import RunDir, checkpoint_problem, read_json, safetensors_problem

HERE = Path(__file__).parent
STEPS = 6


def _config(runs_dir):
    return tiny_run_config(
        runs_dir,
        name="f",
        training={"max_steps": STEPS, "save_steps": 2},
        evaluation={"before_after": False, "generation": False},
        tracking={"mlflow": True, "report": True},
    )


def _recover_and_check(runs_dir, config) -> RunDir:
    run = RunDir(runs_dir / "f")
    began = (run.path / "run.json").is_file()
    if not began or run.status != "completed":
        run = train(config, resume=began)
    assert run.status == "completed"
    logged = [row["step"] for row in run.metrics() if "loss" in row]
    assert logged == list(range(1, STEPS + 1))  # every step once: none lost, none repeated
    for checkpoint in run.checkpoints.glob("checkpoint-*"):
        assert checkpoint_problem(checkpoint) is None
    assert safetensors_problem(run.path / "adapter" / "adapter_model.safetensors") is None
    leftovers = [p.name for p in [*runs_dir.iterdir(), *run.path.rglob("*")] if p.name.startswith(".")]
    assert leftovers == [] or leftovers == [".cache"]
    summary = read_json(run.file("summary.json"))
    assert summary["steps"] == STEPS and (run.path / "report.html").is_file()
    return run


def _loads_with_peft(run: RunDir) -> None:
    from peft import PeftModel

    from trainforge.models import load_causal_lm

    PeftModel.from_pretrained(load_causal_lm("tiny-llama"), run.path / "adapter")


@pytest.mark.parametrize("site", list(SITES))
def test_a_full_disk_at_each_write_then_resume_loses_nothing(runs_dir, monkeypatch, site):
    config = _config(runs_dir)
    inject(site, disk_full, monkeypatch.setattr)
    if site == "mlflow":  # the run trained and is saved: the store's failure is recorded, not fatal
        run = train(config)
        assert run.status == "completed" and "No space left" in run.info()["mlflow_error"]
    else:
        with pytest.raises(Exception, match="disk space|No space left|Cannot create run directory"):
            train(config)
        if site != "config":
            assert RunDir(runs_dir / "f").status == "failed"
        else:
            assert not (runs_dir / "f").exists()
    monkeypatch.undo()
    run = _recover_and_check(runs_dir, config)
    if site == "checkpoint":
        _loads_with_peft(run)


@pytest.mark.parametrize("site", list(SITES))
def test_a_kill_at_each_write_then_resume_loses_nothing(runs_dir, tmp_path, site):
    config = _config(runs_dir)
    config_file = tmp_path / "f.yaml"
    config_file.write_text(dump_config(config))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE), str(HERE.parents[1] / "src")])}
    killed = subprocess.run(
        [sys.executable, str(HERE / "_fault_sites.py"), site, str(config_file)], env=env, capture_output=True
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr.decode()[-2000:]
    if (runs_dir / "f" / "run.json").is_file():
        assert RunDir(runs_dir / "f").status == "interrupted"  # its process is gone
    _recover_and_check(runs_dir, config)
