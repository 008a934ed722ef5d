"""`trainforge tune` over neural run configs, and the median rule that prunes trials on intermediate scores."""

import optuna
import pytest

from conftest import tiny_run_config
from trainforge.errors import ConfigError
from trainforge.tracking.rundir import read_json
from trainforge.tuning.run import tune
from trainforge.tuning.study import MedianRule


def test_tune_searches_an_lm_config_and_the_best_learning_rate_wins(runs_dir):
    config = tiny_run_config(
        runs_dir,
        name="lr-search",
        training={"max_steps": 6, "eval_steps": 3},
        tuning={
            "strategy": "grid",
            "trials": 2,
            "replace_space": True,
            "space": {"training.learning_rate": [1.0e-6, 1.0e-2]},
        },
    )
    run = tune(config)
    summary = read_json(run.file("summary.json"))
    assert summary["metric"] == "eval_loss" and summary["direction"] == "minimize"
    assert summary["best_params"] == {"training.learning_rate": 1.0e-2}
    trial_runs = sorted(p.name for p in (runs_dir / "lr-search-trials").iterdir() if not p.name.startswith("."))
    assert trial_runs == ["lr-search-trial-0", "lr-search-trial-1"]
    assert "learning_rate: 0.01" in run.file("best.yaml").read_text()


def test_neural_tuning_refuses_a_plain_key_and_data_without_validation(runs_dir):
    with pytest.raises(ConfigError, match="tuning.space.r.*written with their section"):
        tune(tiny_run_config(runs_dir, tuning={"space": {"r": [4, 8]}}))
    with pytest.raises(ConfigError, match="validation split"):
        tune(tiny_run_config(runs_dir, data={"split": {"train": 0.9, "validation": 0.0, "test": 0.1}}))
    assert not runs_dir.exists()


def test_median_rule_prunes_below_the_median_of_finished_trials_once_enough_finished():
    study = optuna.create_study(direction="maximize")
    for scores in ([0.0, 0.6], [0.0, 0.7], [0.0, 0.9]):
        trial = study.ask()
        for step, value in enumerate(scores):
            trial.report(value, step)
        study.tell(trial, scores[-1])
    rule = MedianRule(study, maximize=True, startup_trials=3)
    assert rule.should_prune(1, 0.6) and not rule.should_prune(1, 0.75)  # median at step 1: 0.7
    assert not rule.should_prune(0, -1.0)  # the first step alone never prunes
    assert not rule.should_prune(5, 0.0)  # no finished trial reached this step: nothing to compare with
    assert rule.should_prune(1, float("nan"))
    assert not MedianRule(study, maximize=True, startup_trials=4).should_prune(1, 0.1)  # too few finished yet
    assert not MedianRule(study, maximize=True, startup_trials=3, enabled=False).should_prune(1, 0.1)
    assert MedianRule(study, maximize=False, startup_trials=3).should_prune(1, 0.8)
