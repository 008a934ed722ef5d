"""A run killed with SIGKILL (no cleanup code runs) and resumed ends exactly where an uninterrupted run ends:
LoRA SFT and LoRA DPO through `trainforge train --resume`, and a tuning study through `trainforge tune --resume`."""

import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time

import pytest
from safetensors.torch import load_file

from _classical import tabular_config
from conftest import tiny_run_config
from trainforge.config import dump_config
from trainforge.pipeline import train
from trainforge.tracking.rundir import RunDir, checkpoint_problem, read_json

# Loaded by the child through PYTHONPATH: slows each training step / trial so the test can kill it mid-run.
# It only sleeps, so the numbers are those of a normal run.
SLOWDOWN = """
import os, time
delay = float(os.environ.get("TRAINFORGE_TEST_DELAY", "0"))
if delay:
    import transformers
    from trainforge.classical import objective

    step, call = transformers.Trainer.training_step, objective.ClassicalObjective.__call__

    def training_step(self, *a, **k):
        time.sleep(delay)
        return step(self, *a, **k)

    def trial(self, *a, **k):
        time.sleep(delay)
        return call(self, *a, **k)

    transformers.Trainer.training_step, objective.ClassicalObjective.__call__ = training_step, trial
"""


def _cli(tmp_path, *args, delay=0.0):
    hooks = tmp_path / "hooks"
    hooks.mkdir(exist_ok=True)
    (hooks / "sitecustomize.py").write_text(SLOWDOWN)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(hooks), *sys.path]), "TRAINFORGE_TEST_DELAY": str(delay)}
    return subprocess.Popen(
        [sys.executable, "-m", "trainforge.cli", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _kill_when(proc, ready, timeout=300):
    deadline = time.time() + timeout
    while not ready():
        assert proc.poll() is None, f"the run ended before it could be killed:\n{proc.stderr.read()[-3000:]}"
        assert time.time() < deadline, "timed out waiting for the run"
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    proc.stdout.close()
    proc.stderr.close()


def _finish(proc):
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-3000:]
    return out + err


def _step_rows(run):
    """The numbers of each logged training step (no timings)."""
    return [(m["step"], m["loss"], m.get("grad_norm"), m.get("learning_rate")) for m in run.metrics() if "loss" in m]


# LoRA SFT, and DPO on preference pairs (its reference log-probs are recomputed on resume, so they must be identical).
# One thread in both the in-process and the CLI run: float sums split over another thread count round differently.
RESUMABLE_RUNS = {
    "lora-sft": {"method": {"lora": {"dropout": 0.1}}, "training": {"max_steps": 24, "save_steps": 4, "threads": 1}},
    "lora-dpo": {
        "data": {"task": "constrained-answers", "format": "preference", "task_size": 48},
        "method": {"lora": {"dropout": 0.1}},
        "training": {"objective": "dpo", "max_steps": 12, "save_steps": 4, "max_length": 96, "threads": 1},
    },
}


@pytest.mark.parametrize("kind", RESUMABLE_RUNS)
def test_run_killed_by_sigkill_resumes_to_identical_weights_and_metrics(runs_dir, tmp_path, kind):
    sections = {**RESUMABLE_RUNS[kind], "evaluation": {"before_after": False, "generation": False}}
    steps = sections["training"]["max_steps"]
    straight = train(tiny_run_config(runs_dir, name="straight", **sections))

    cfg = tmp_path / "run.yaml"
    cfg.write_text(dump_config(tiny_run_config(runs_dir, name="killed", **sections)))
    run = RunDir(runs_dir / "killed")
    checkpoint = run.checkpoints / "checkpoint-4"
    _kill_when(
        _cli(tmp_path, "train", str(cfg), delay=0.25),
        lambda: checkpoint.is_dir() and checkpoint_problem(checkpoint) is None,
    )
    assert run.status == "interrupted"  # run.json still says running, but its process is gone
    assert not (run.path / "adapter").exists()
    killed_at = max(m["step"] for m in run.metrics())
    assert 4 <= killed_at < steps

    log = _finish(_cli(tmp_path, "train", str(cfg), "--resume"))
    assert "resuming" in log and run.status == "completed"
    a = load_file(straight.path / "adapter" / "adapter_model.safetensors")
    b = load_file(run.path / "adapter" / "adapter_model.safetensors")
    assert a.keys() == b.keys() and all((a[k] == b[k]).all() for k in a), "weights differ from the uninterrupted run"
    assert _step_rows(run) == _step_rows(straight)  # bitwise: every step's loss, grad norm and learning rate
    assert [r[0] for r in _step_rows(run)] == list(range(1, steps + 1))


def _complete_trials(db):
    if not db.is_file():
        return 0
    try:
        with sqlite3.connect(db, timeout=1) as conn:
            return conn.execute("select count(*) from trials where state = 'COMPLETE'").fetchone()[0]
    except sqlite3.OperationalError:  # tables not created yet
        return 0


def test_tuning_study_killed_by_sigkill_resumes_to_its_budget_without_losing_or_repeating_trials(runs_dir, tmp_path):
    config = tabular_config(
        runs_dir, name="study", tuning={"strategy": "random", "trials": 8, "pruning": False}, cv={"folds": 3}
    )
    cfg = tmp_path / "tune.yaml"
    cfg.write_text(dump_config(config))
    _kill_when(_cli(tmp_path, "tune", str(cfg), delay=1.0), lambda: _complete_trials(runs_dir / "optuna.db") >= 3)
    assert RunDir(runs_dir / "study").status == "interrupted"
    listed = subprocess.run(
        [sys.executable, "-m", "trainforge.cli", "runs", "list", "--runs-dir", str(runs_dir)],
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "200"},
    )
    assert any(line.split("│")[1:3] == [" study ", " interrupted "] for line in listed.stdout.splitlines()), (
        listed.stdout
    )

    import optuna

    storage = f"sqlite:///{runs_dir / 'optuna.db'}"
    before = {
        t.number: (t.params, t.value)
        for t in optuna.load_study(study_name="study", storage=storage).trials
        if t.state.name == "COMPLETE"
    }
    log = _finish(_cli(tmp_path, "tune", str(cfg), "--resume"))
    assert "resuming" in log

    trials = optuna.load_study(study_name="study", storage=storage).trials
    complete = [t for t in trials if t.state.name == "COMPLETE"]
    interrupted = [t for t in trials if t.user_attrs.get("interrupted")]
    assert len(complete) == 8  # the budget, with the interrupted trial re-run in its place
    assert {t.number: (t.params, t.value) for t in complete if t.number in before} == before  # none lost
    params = [tuple(sorted(t.params.items())) for t in complete]
    assert len(set(params)) == 8 and not any("duplicate_of" in t.user_attrs for t in complete)  # none repeated
    for t in interrupted:  # each interrupted trial that had drawn its point ran again once, with that point
        retries = [r.params for r in complete if r.user_attrs.get("retry_of") == t.number]
        assert retries == ([t.params] if t.params else [])
    summary = read_json(runs_dir / "study" / "summary.json")
    assert summary["trials"] == 8 and summary["complete"] == 8 and summary["interrupted"] == len(interrupted)
    assert [r["trial"] for r in RunDir(runs_dir / "study").metrics()] == sorted(t.number for t in complete)


def test_resume_requeues_a_trial_whose_worker_died_before_tagging_it(runs_dir, monkeypatch):
    """A kill between `ask` and the worker tag leaves a running trial with no owner: the resume must still mark it
    interrupted (its slot is re-run) or the study ends one trial short of its budget; its point is queued again if
    it had drawn one. A tagged trial of a live worker is left running."""
    import optuna

    from trainforge.tuning import study as study_module

    config = tabular_config(runs_dir, name="orphan", tuning={"strategy": "random", "trials": 4, "pruning": False})
    p = study_module.plan(config, "orphan", study_module.objective_for(config))
    study = study_module.create_study(p)
    orphan = study.ask({"model.params.C": optuna.distributions.FloatDistribution(1e-3, 1e3, log=True)})
    bare = study.ask()  # killed before drawing any point
    live = study.ask()
    live.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
    monkeypatch.setattr(study_module, "ORPHAN_GRACE_SECONDS", 0.0)

    assert study_module.retry_interrupted(p, socket.gethostname()) == 2
    trials = {t.number: t for t in study.get_trials()}
    for dead in (orphan, bare):
        assert trials[dead.number].state.name == "FAIL" and trials[dead.number].user_attrs["interrupted"]
    assert trials[live.number].state.name == "RUNNING"
    queued = [t for t in trials.values() if t.state.name == "WAITING"]
    assert [(t.system_attrs["fixed_params"], t.user_attrs["retry_of"]) for t in queued] == [
        (trials[orphan.number].params, orphan.number)
    ]
