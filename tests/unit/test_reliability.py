"""Runs started together, full disks and broken weights: every run ends with a clear status, nothing collides,
nothing half-written is left as if complete."""

import errno
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import TrainerCallback

from _classical import tabular_config
from conftest import tiny_run_config
from trainforge.config import dump_config
from trainforge.errors import RunError
from trainforge.pipeline import train
from trainforge.tracking.callbacks import FiniteLossGuard
from trainforge.tracking.rundir import RunDir, list_runs

SRC = Path(__file__).parents[2] / "src"


def test_runs_started_together_all_complete_under_distinct_names_and_all_reach_mlflow(runs_dir, tmp_path):
    import mlflow

    config = tmp_path / "tab.yaml"
    config.write_text(dump_config(tabular_config(runs_dir, tracking={"mlflow": True})))  # no name: generated
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    processes = [
        subprocess.Popen(
            [sys.executable, "-m", "trainforge", "train", str(config)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    errors = [p.communicate(timeout=600)[1] for p in processes]
    assert [p.returncode for p in processes] == [0] * 4, errors
    runs = list_runs(runs_dir)
    assert len({r.name for r in runs}) == 4 and all(r.status == "completed" for r in runs)
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{runs_dir.resolve() / 'mlflow.db'}")
    recorded = {client.get_run(r.info()["mlflow_run_id"]).info.run_name for r in runs}
    assert recorded == {r.name for r in runs}


def test_generated_names_take_a_number_and_chosen_names_are_never_shared(tmp_path):
    name = "logreg-20261206-120000"
    first = RunDir.create(tmp_path, name, "a: 1\n", numbered=True)
    second = RunDir.create(tmp_path, name, "a: 2\n", numbered=True)
    assert (first.name, second.name) == (name, f"{name}-2")
    assert first.file("config.yaml").read_text() == "a: 1\n" and first.status == "running"
    with pytest.raises(RunError, match="already exists"):
        RunDir.create(tmp_path, name, "a: 3\n")
    (tmp_path / "killed-before-it-began").mkdir()  # an empty folder: a run never started there
    assert RunDir.create(tmp_path, "killed-before-it-began", "a: 4\n").status == "running"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([name, f"{name}-2", "killed-before-it-began"])


def test_a_tracking_store_failure_does_not_fail_a_trained_run(runs_dir, monkeypatch, capfd):
    from trainforge.tracking import mlflow_log

    def broken_store(*args, **kwargs):
        raise RuntimeError("(sqlite3.OperationalError) database disk image is malformed")

    monkeypatch.setattr(mlflow_log, "log_run", broken_store)
    run = train(tabular_config(runs_dir, name="tracked", tracking={"mlflow": True}))
    assert run.status == "completed" and "malformed" in run.info()["mlflow_error"]
    err = " ".join(capfd.readouterr().err.split())
    assert "tracking run tracked in MLflow failed" in err and "the run itself is unaffected" in err


def test_full_disk_in_a_native_library_ends_the_run_failed_with_partial_checkpoints_removed(runs_dir, monkeypatch):
    from trainforge.methods.lora import PeftMethod
    from trainforge.tracking import rundir

    def full_disk(self, model, tokenizer, out):  # tokenizers' Rust code raises a plain Exception
        (runs_dir / "full" / "checkpoints" / "checkpoint-99").mkdir(parents=True)  # a half-written one
        raise Exception("No space left on device (os error 28)")

    monkeypatch.setattr(PeftMethod, "save", full_disk, raising=False)
    write = rundir.atomic_write_bytes

    def no_new_files(path, data):  # the disk is full: not even run.json's temp file can be made
        if path.name == "run.json" and b'"failed"' in data:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        return write(path, data)

    monkeypatch.setattr(rundir, "atomic_write_bytes", no_new_files)
    config = tiny_run_config(runs_dir, name="full", training={"max_steps": 4, "save_steps": 2})
    with pytest.raises(RunError, match="Out of disk space") as err:
        train(config)
    run = RunDir(runs_dir / "full")
    assert "checkpoint-99 was removed" in str(err.value) and "checkpoint-4" in str(err.value)
    assert not (run.checkpoints / "checkpoint-99").exists() and run.last_checkpoint().name == "checkpoint-4"
    assert run.status == "failed" and "Out of disk space" in run.info()["error"]  # written in place
    assert not (run.path / "adapter").exists()


class _BreakWeights(TrainerCallback):
    """After the last logged step, a weight turns NaN: the loss guard never sees it."""

    def on_train_end(self, args, state, control, model=None, **kwargs):
        with torch.no_grad():
            next(p for p in model.parameters() if p.requires_grad).fill_(float("nan"))


def test_a_run_never_completes_with_non_finite_weights(runs_dir):
    config = tiny_run_config(runs_dir, name="nan", training={"max_steps": 2})
    with pytest.raises(RunError, match=r"weights trained to step 2 hold NaN or infinite values \(1 tensors"):
        train(config, callbacks=[_BreakWeights()])
    run = RunDir(runs_dir / "nan")
    assert run.status == "failed" and not (run.path / "adapter").exists()


def test_loss_guard_names_the_step_and_the_last_finite_loss():
    class State:
        global_step = 7

    guard = FiniteLossGuard()
    guard.on_log(None, type("S", (), {"global_step": 6})(), None, logs={"loss": 1.25, "grad_norm": 3.0})
    with pytest.raises(RunError, match=r"step 7: grad_norm is inf \(the last finite loss was 1.25 at step 6\)"):
        guard.on_log(None, State(), None, logs={"loss": 1.5, "grad_norm": float("inf")})


def test_hidden_folders_of_runs_killed_before_they_began_are_cleared(tmp_path):
    import json
    import socket
    import time

    dead = tmp_path / ".tab.dead1"  # killed after its run.json: its process (a pid above pid_max) is gone
    dead.mkdir()
    (dead / "run.json").write_text(json.dumps({"status": "running", "pid": 2**22 + 7, "host": socket.gethostname()}))
    empty = tmp_path / ".tab.empty1"  # killed before its first write
    empty.mkdir()
    os.utime(empty, (time.time() - 120, time.time() - 120))
    starting = tmp_path / ".tab.live1"  # another process, writing into it right now
    starting.mkdir()
    RunDir.create(tmp_path, "tab", "a: 1\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == [".tab.live1", "tab"]


@pytest.fixture
def small_disk(tmp_path):
    """A 64 MB tmpfs, when this machine lets the test mount one (root in a container usually can)."""
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(disk)], capture_output=True)
    if mounted.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    yield disk
    subprocess.run(["umount", "-l", str(disk)], check=False)


def test_a_really_full_disk_ends_the_run_failed_and_resume_completes_once_space_is_freed(
    small_disk, tmp_path, monkeypatch, capfd
):
    from test_faults import _cli_main

    from trainforge.tracking.rundir import checkpoint_problem

    def config(runs_dir):
        sections = {"training": {"max_steps": 8, "save_steps": 2}, "evaluation": {"before_after": False}}
        return tiny_run_config(runs_dir, name="full", **sections)

    train(config(small_disk / "probe"))  # how much a whole run writes
    needs = sum(p.stat().st_size for p in (small_disk / "probe").rglob("*") if p.is_file())
    shutil.rmtree(small_disk / "probe")
    free = os.statvfs(small_disk).f_bavail * os.statvfs(small_disk).f_frsize
    ballast = small_disk / "ballast"
    with open(ballast, "wb") as f:  # leave room for about 60% of the run
        f.write(b"\0" * (free - int(0.6 * needs)))

    config_file = tmp_path / "full.yaml"
    config_file.write_text(dump_config(config(small_disk / "runs")))
    status, err = _cli_main(monkeypatch, capfd, "train", str(config_file))
    flat = " ".join(err.split())
    assert status == 2 and "Traceback" not in err and "space" in flat, err[-2000:]
    run = RunDir(small_disk / "runs" / "full")
    began = (run.path / "run.json").is_file()
    if began:
        assert run.status == "failed" and "disk space" in run.info()["error"]
        assert all(checkpoint_problem(c) is None for c in run.checkpoints.glob("checkpoint-*"))  # none half-written
    ballast.unlink()
    resumed = train(config(small_disk / "runs"), resume=began)
    assert resumed.status == "completed"
    assert [row["step"] for row in resumed.metrics() if "loss" in row] == list(range(1, 9))
