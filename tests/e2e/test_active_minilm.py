"""End-to-end on the real all-MiniLM-L6-v2: active learning on the bundled support tickets, simulated (margin
sampling beats random at equal labels) and one interactive round through to_label.csv."""

import json

import pandas as pd
import pytest

from conftest import load_config
from trainforge.active.run import TO_LABEL, continue_interactive, load_pool, run_active

pytestmark = pytest.mark.e2e


def ticket_config(runs_dir, **active):
    return load_config(
        base={
            "name": "al-tickets",
            "task": "text-classification",
            "model": {"name": "minilm-l6"},
            "data": {
                "task": "support-tickets",
                "task_size": 300,
                "split": {"train": 0.7, "validation": 0.1, "test": 0.2},
            },
            "method": {"name": "feature-extraction", "features": {"estimator": "logistic_regression"}},
            "training": {"max_length": 48},
            "evaluation": {"batch_size": 64},
            "active": {
                "strategies": ["margin", "random"],
                "initial": 8,
                "batch_size": 4,
                "rounds": 6,
                "repeats": 2,
                **active,
            },
            "tracking": {"runs_dir": str(runs_dir), "mlflow": False, "report": False},
        }
    )


def test_minilm_margin_sampling_beats_random(runs_dir):
    run = run_active(ticket_config(runs_dir))
    curves = json.loads(run.file("curves.json").read_text())
    margin, random = curves["margin"], curves["random"]
    print(f"margin {margin['accuracy']} area {margin['auc']:.3f}; random {random['accuracy']} area {random['auc']:.3f}")
    assert margin["labels"] == random["labels"] and margin["labels"][-1] == 32
    # Measured: margin 0.49 → 0.96, random 0.49 → 0.83 at 32 labels. Margin's cold start (8 labels, 4 classes)
    # costs it the first rounds here, so the check is the budget's second half, not the whole area.
    assert margin["final"] > random["final"] + 0.05 and margin["final"] > 0.8
    assert sum(margin["accuracy"][-3:]) > sum(random["accuracy"][-3:]) + 0.15


def test_minilm_interactive_round(runs_dir):
    config = ticket_config(runs_dir, mode="interactive", rounds=1)
    run = run_active(config)
    to_label = run.file(TO_LABEL)
    data = load_pool(config)
    frame = pd.read_csv(to_label)
    assert list(frame.columns) == ["row", "text", "label"] and len(frame) == 8
    frame["label"] = [data.classes[data.pool_labels[r]] for r in frame["row"]]
    frame.to_csv(to_label, index=False)
    continue_interactive(config, to_label)
    assert len(pd.read_csv(to_label)) == 4 and run.metrics()[-1]["accuracy"] > 0.25
