"""A tabular run end to end: run directory, metrics, report, saved pipeline, predict, MLflow, CLI."""

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from _classical import tabular_config
from trainforge.classical.data import bundled
from trainforge.classical.predict import evaluate_file, evaluate_test_split, predict_file
from trainforge.pipeline import train
from trainforge.tracking.rundir import read_json


def test_run_writes_the_run_dir_and_predict_reproduces_test_metrics(tmp_path, runs_dir):
    config = tabular_config(
        runs_dir, name="rf", model={"name": "random_forest", "params": {"n_estimators": 40}}, tracking={"report": True}
    )
    run = train(config)
    assert run.status == "completed"
    for name in (
        "config.yaml",
        "run.json",
        "metrics.jsonl",
        "summary.json",
        "report.html",
        "schema.json",
        "splits.json",
        "model.skops",
    ):
        assert run.file(name).is_file(), name
    summary = read_json(run.file("summary.json"))
    folds = [m["accuracy"] for m in run.metrics() if "fold" in m]
    assert len(folds) == 5 and summary["cv.fold_scores"] == pytest.approx(folds, abs=1e-6)
    assert summary["cv.accuracy.mean"] == pytest.approx(np.mean(folds))
    assert summary["cv.accuracy.std"] == pytest.approx(np.std(folds))
    assert summary["test.accuracy"] > 0.9 and summary["test.roc_auc"] > 0.95 and summary["test_rows"] == 57
    html = run.file("report.html").read_text()
    for section in ("Confusion matrix", "ROC curve", "Feature importance", "Cross-validation folds"):
        assert section in html
    assert html.count("data:image/png;base64") == 3

    # the test rows, written as a file without labels, through the saved pipeline: the same metrics
    frame = bundled("breast_cancer").iloc[read_json(run.file("splits.json"))["test"]]
    frame.drop(columns="target").to_csv(tmp_path / "new.csv", index=False)
    out = predict_file(run, str(tmp_path / "new.csv"), str(tmp_path / "preds.csv"))
    preds = pd.read_csv(out)
    assert len(preds) == 57
    assert (preds["prediction"].to_numpy() == frame["target"].to_numpy()).mean() == pytest.approx(
        summary["test.accuracy"]
    )
    frame.to_parquet(tmp_path / "labelled.parquet")
    scores = evaluate_file(run, str(tmp_path / "labelled.parquet"))
    for key in ("accuracy", "f1", "roc_auc", "log_loss"):
        assert scores[key] == pytest.approx(summary[f"test.{key}"], rel=1e-9)
    assert evaluate_test_split(run)["log_loss"] == pytest.approx(summary["test.log_loss"], rel=1e-9)


def test_regression_and_clustering_runs(runs_dir):
    reg = train(
        tabular_config(
            runs_dir,
            name="reg",
            task="regression",
            model={"name": "lightgbm", "params": {"n_estimators": 60, "num_leaves": 8}},
            data={"dataset": "diabetes", "split": {"strategy": "random"}},
            tracking={"report": True},
        )
    )
    summary = read_json(reg.file("summary.json"))
    assert (
        40 < summary["test.rmse"] < 75 and summary["test.mae"] < summary["test.rmse"] and 0.2 < summary["test.r2"] < 0.7
    )
    assert "Residuals" in reg.file("report.html").read_text()
    km = train(
        tabular_config(
            runs_dir,
            name="km",
            task="clustering",
            model={"name": "kmeans", "params": {"n_clusters": 3}},
            data={"dataset": "iris", "split": {"strategy": "random"}},
        )
    )
    summary = read_json(km.file("summary.json"))
    assert summary["n_clusters"] == 3 and summary["adjusted_rand"] > 0.6 and 0.4 < summary["silhouette"] < 0.6
    agg = train(
        tabular_config(
            runs_dir,
            name="agg",
            task="clustering",
            model={"name": "agglomerative", "params": {"n_clusters": 3}},
            data={"dataset": "iris", "split": {"strategy": "random"}},
        )
    )
    assert read_json(agg.file("summary.json"))["adjusted_rand"] > 0.5


@pytest.mark.parametrize("model", ["svm", "decision_tree", "xgboost", "naive_bayes", "mlp"])
def test_each_classifier_trains_saves_and_scores(runs_dir, model):
    params = {"mlp": {"hidden_layer_sizes": "32", "max_iter": 300}, "xgboost": {"n_estimators": 30}}.get(model, {})
    run = train(
        tabular_config(
            runs_dir, name=model, model={"name": model, "params": params}, data={"dataset": "wine"}, cv={"folds": 3}
        )
    )
    summary = read_json(run.file("summary.json"))
    floor = 0.75 if model == "decision_tree" else 0.85  # one unpruned tree on 142 rows is the weakest of the five
    assert (
        summary["cv.accuracy.mean"] > floor
        and summary["test.accuracy"] > floor
        and summary["artifact"] == "model.skops"
    )


def test_mlflow_records_the_run(runs_dir):
    import mlflow

    run = train(tabular_config(runs_dir, name="tracked", tracking={"mlflow": True}))
    summary = read_json(run.file("summary.json"))
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{runs_dir.resolve() / 'mlflow.db'}")
    recorded = client.get_run(summary["mlflow_run_id"])
    assert recorded.data.metrics["final.test.accuracy"] == pytest.approx(summary["test.accuracy"])
    assert recorded.data.params["model.name"] == "logistic_regression"


def _cli(*args, cwd):
    import os
    from pathlib import Path

    import trainforge

    src = str(Path(trainforge.__file__).resolve().parents[1])  # the package under test, whatever the cwd
    env = {**os.environ, "COLUMNS": "250", "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")])}
    return subprocess.run(
        [sys.executable, "-m", "trainforge.cli", *args], capture_output=True, text=True, cwd=cwd, env=env
    )


def test_cli_train_predict_runs_list_and_bad_table(tmp_path):
    table = bundled("wine")
    table.to_csv(tmp_path / "wine.csv", index=False)
    (tmp_path / "run.yaml").write_text(
        "task: classification\nmodel: {name: naive_bayes}\n"
        f"data: {{path: {tmp_path / 'wine.csv'}, target: target, split: {{strategy: stratified}}}}\n"
        "tracking: {mlflow: false}\n"
    )
    trained = _cli("train", "run.yaml", "name=nb", cwd=tmp_path)
    assert trained.returncode == 0, trained.stderr
    assert "cv.accuracy.mean" in trained.stdout and "run directory" in trained.stdout
    table.drop(columns=["target", "alcohol"]).to_csv(tmp_path / "bad.csv", index=False)
    bad = _cli("predict", "nb", "--data", "bad.csv", cwd=tmp_path)
    assert (
        bad.returncode == 2 and "bad.csv lacks the column(s) 'alcohol'" in bad.stderr and "Traceback" not in bad.stderr
    )
    table.drop(columns="target").head(7).to_csv(tmp_path / "new.csv", index=False)
    ok = _cli("predict", "nb", "--data", "new.csv", "--out", "preds.csv", cwd=tmp_path)
    assert ok.returncode == 0, ok.stderr
    assert list(pd.read_csv(tmp_path / "preds.csv")["prediction"]) == list(table["target"].head(7))
    listed = _cli("runs", "list", cwd=tmp_path)
    assert listed.returncode == 0 and "nb" in listed.stdout and "classical" in listed.stdout
