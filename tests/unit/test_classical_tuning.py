"""Search: beats the defaults where that is known, shares one study between workers without duplicates, records
nested MLflow runs, and writes a best config that reproduces the best score."""

import numpy as np
import optuna
import pytest
from optuna.trial import TrialState

from _classical import tabular_config
from trainforge.classical.prepare import fold_scores, prepare
from trainforge.config import load_config
from trainforge.tracking.rundir import read_json
from trainforge.tuning.run import tune
from trainforge.tuning.study import storage_url


def _study(config):
    return optuna.load_study(study_name=config.tuning.study_name or config.name, storage=storage_url(config))


def test_search_beats_default_hyperparameters_and_best_yaml_reproduces_it(runs_dir):
    # An unpruned regression tree overfits diabetes badly (CV RMSE ~80); depth / leaf-size search fixes that (~61).
    config = tabular_config(
        runs_dir,
        name="dt",
        task="regression",
        model={"name": "decision_tree"},
        data={"dataset": "diabetes", "split": {"strategy": "random"}},
        tuning={"strategy": "bayes", "trials": 12, "startup_trials": 5},
    )
    default = float(np.mean(fold_scores(prepare(config))))
    run = tune(config)
    summary = read_json(run.file("summary.json"))
    assert summary["direction"] == "minimize" and summary["trials"] == 12
    assert summary["complete"] + summary["pruned"] == 12
    assert default > 75 and summary["best.rmse"] < 65 and summary["best.rmse"] < default - 10
    best = load_config(run.file("best.yaml"))
    assert best.name == "dt-best" and best.model.params == {
        k.split(".")[-1]: v for k, v in summary["best_params"].items()
    }
    assert float(np.mean(fold_scores(prepare(best)))) == pytest.approx(summary["best.rmse"], rel=1e-12)
    rows = run.metrics()
    assert [r["trial"] for r in rows] == list(range(12)) and all(r["state"] in ("complete", "pruned") for r in rows)


def test_two_workers_share_one_sqlite_study_without_duplicates(runs_dir):
    space = {
        "C": {"type": "float", "low": 0.01, "high": 100, "log": True, "grid": [0.01, 0.1, 1, 10, 100]},
        "preprocessing.scale": ["standard", "minmax"],
    }
    config = tabular_config(
        runs_dir,
        name="shared",
        model={"name": "logistic_regression"},
        cv={"folds": 3},
        tuning={"strategy": "grid", "trials": 50, "space": space, "replace_space": True, "pruning": False},
    )
    run = tune(config, workers=2)
    trials = _study(config).get_trials()
    real = [t for t in trials if not t.user_attrs.get("skipped")]
    assert len(real) == 10  # the whole 5 x 2 grid, capped below the 50 asked for
    assert all(t.state == TrialState.COMPLETE for t in real)
    assert sorted(t.number for t in real) == list(range(10))
    combos = {(t.params["model.params.C"], t.params["preprocessing.scale"]) for t in real}
    assert len(combos) == 10
    assert {t.user_attrs["worker"].rsplit("/", 1)[1] for t in real} <= {"0", "1"}
    assert read_json(run.file("summary.json"))["trials"] == 10


def test_concurrent_workers_split_the_grid_between_them(runs_dir):
    """Two workers asking at the same moment (threads: no process start-up in between) share out the grid."""
    import threading

    from trainforge.tuning.study import create_study, objective_for, plan, run_worker

    config = tabular_config(
        runs_dir,
        name="threads",
        model={"name": "ridge"},
        cv={"folds": 2},
        tuning={"strategy": "grid", "trials": 100, "pruning": False, "grid_points": 24},
    )
    p = plan(config, "threads", objective_for(config))
    create_study(p)
    threads = [threading.Thread(target=run_worker, args=(p, i, f"t/{i}")) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    real = [t for t in _study(config).get_trials() if not t.user_attrs.get("skipped")]
    assert len(real) == 24 and sorted(t.number for t in real) == list(range(24))
    assert len({t.params["model.params.alpha"] for t in real}) == 24
    done_by = [t.user_attrs["worker"] for t in real]
    assert done_by.count("t/0") >= 1 and done_by.count("t/1") >= 1 and len(done_by) == 24


def test_random_search_with_two_workers_keeps_the_trial_budget(runs_dir):
    config = tabular_config(
        runs_dir,
        name="rnd",
        model={"name": "naive_bayes"},
        data={"dataset": "wine"},
        cv={"folds": 3},
        tuning={"strategy": "random", "trials": 9, "pruning": False},
    )
    tune(config, workers=2)
    real = [t for t in _study(config).get_trials() if not t.user_attrs.get("skipped")]
    assert len(real) == 9 and len({t.number for t in real}) == 9
    assert len({t.params["model.params.var_smoothing"] for t in real}) == 9


def test_pruning_stops_weak_trials_and_mlflow_nests_every_trial(runs_dir):
    import mlflow

    config = tabular_config(
        runs_dir,
        name="pruned",
        model={"name": "svm"},
        cv={"folds": 5},
        tuning={"strategy": "random", "trials": 14, "startup_trials": 6},
        tracking={"mlflow": True},
    )
    run = tune(config)
    summary = read_json(run.file("summary.json"))
    trials = _study(config).get_trials()
    pruned = [t for t in trials if t.state == TrialState.PRUNED]
    assert summary["pruned"] == len(pruned) >= 1
    assert all(len(t.intermediate_values) < 5 for t in pruned)  # stopped before the last fold
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{runs_dir.resolve() / 'mlflow.db'}")
    parent = client.get_run(summary["mlflow_run_id"])
    children = client.search_runs(
        [parent.info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'", max_results=100
    )
    assert len(children) == 14
    done = {int(c.data.tags["trainforge.trial"]): c for c in children}
    for t in trials:
        if t.state == TrialState.COMPLETE:
            assert done[t.number].data.metrics["accuracy"] == pytest.approx(t.value)
            assert done[t.number].data.params["model.params.C"] == str(t.params["model.params.C"])
        else:
            assert done[t.number].info.status == "KILLED"
    assert parent.data.metrics["final.best.accuracy"] == pytest.approx(summary["best.accuracy"])
