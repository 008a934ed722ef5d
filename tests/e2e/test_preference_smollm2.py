"""End-to-end on the real SmolLM2-135M-Instruct: a few DPO steps with LoRA on the bundled constrained-answers pairs
widen DPO's reward margin, and every before/after measure is reported."""

import json

import pytest

from conftest import tiny_run_config
from trainforge.pipeline import train

pytestmark = pytest.mark.e2e


def test_smollm2_dpo_widens_the_margin(runs_dir):
    config = tiny_run_config(
        runs_dir,
        model={"name": "smollm2-135m-instruct"},
        data={"task": "constrained-answers", "format": "preference", "task_size": 80},
        method={"lora": {"r": 8, "alpha": 16}},
        training={
            "objective": "dpo",
            "max_steps": 6,
            "batch_size": 4,
            "learning_rate": 5e-4,
            "max_length": 128,
            "save_steps": 100,
        },
        evaluation={"max_samples": 6, "max_new_tokens": 32},
    )
    run = train(config)
    margins = [m["rewards/margins"] for m in run.metrics() if "rewards/margins" in m]
    assert margins[0] == pytest.approx(0.0, abs=1e-3)  # policy == reference at the first step
    assert sum(margins[-2:]) / 2 > 0.1, margins
    summary = json.loads(run.file("summary.json").read_text())
    for key in (
        "before.margin",
        "after.margin",
        "before.constraint_rate",
        "after.constraint_rate",
        "train.rewards/margins",
    ):
        assert key in summary
    assert summary["after.margin"] > summary["before.margin"]
