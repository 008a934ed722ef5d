"""End-to-end on the real bundled all-MiniLM-L6-v2: one shared encoder learns the ticket topic, its urgency and
the hours to resolve it (bundled `support-tickets-triage`) in one short run, and the saved run reloads exactly."""

import json

import numpy as np
import pytest

from conftest import load_config, merge
from trainforge.pipeline import train

pytestmark = pytest.mark.e2e


def test_minilm_learns_three_tasks_at_once(runs_dir):
    config = load_config(
        base=merge(
            {
                "task": "multi-task",
                "model": {"name": "minilm-l6"},
                "data": {
                    "task": "support-tickets-triage",
                    "task_size": 300,
                    "split": {"train": 0.7, "validation": 0.1, "test": 0.2},
                },
                "multitask": {
                    "tasks": [
                        {"name": "topic", "target": "label"},
                        {"name": "urgency"},
                        {"name": "hours", "type": "regression", "weight": 0.5},
                    ]
                },
                "training": {
                    "epochs": 3,
                    "batch_size": 16,
                    "learning_rate": 1e-4,
                    "max_length": 48,
                    "logging_steps": 5,
                    "save_steps": 1000,
                    "precision": "fp32",
                },
                "evaluation": {"batch_size": 64},
                "tracking": {"runs_dir": str(runs_dir), "mlflow": False, "report": False},
            },
            {},
        )
    )
    run = train(config)
    s = json.loads(run.file("summary.json").read_text())
    print({k: round(v, 3) for k, v in s.items() if k.startswith(("before.", "after."))}, s["train_seconds"], "s")
    assert s["after.topic.accuracy"] >= 0.8 and s["after.urgency.accuracy"] >= 0.8, s  # chance 0.25 / 0.33
    assert s["after.hours.r2"] >= 0.5 and s["after.hours.rmse"] < 0.6 * s["before.hours.rmse"], s

    from trainforge.tasks.multi_task.task import evaluate as evaluate_multitask_run

    assert evaluate_multitask_run(run) == pytest.approx(json.loads(run.file("eval_after.json").read_text())["scores"])
    assert np.isfinite([v for k, v in s.items() if k.startswith("after.")]).all()
