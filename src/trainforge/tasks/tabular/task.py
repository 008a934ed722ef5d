"""Task tabular (classification, regression, clustering with a classical estimator): check config and table →
run dir → CV fold scores → fit on the training split → validation / test metrics → save the pipeline (skops) →
plots + report → MLflow. The tabular library is trainforge.classical."""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import numpy as np
from rich.console import Console

from trainforge.classical.metrics import clustering_scores, supervised_scores
from trainforge.classical.prepare import Prepared, cluster, fold_scores, prepare
from trainforge.config import RunConfig
from trainforge.data.versioning import of_table
from trainforge.run.finish import finish_run, print_summary
from trainforge.tasks.registry import open_task_run
from trainforge.tracking.faults import resource_errors
from trainforge.tracking.rundir import RunDir, atomic_write_json

console = Console(stderr=True)


def _mean_std(scores: list[float]) -> tuple[float, float]:
    return float(np.mean(scores)), float(statistics.pstdev(scores)) if len(scores) > 1 else 0.0


def train(config: RunConfig, resume: bool = False, callbacks: list | None = None) -> RunDir:
    """Train, evaluate, save and record one tabular run (it holds no checkpoints: the registry refuses --resume);
    returns its run directory."""
    prep = prepare(config)
    kinds = list(prep.kinds.values())
    console.print(
        f"[bold]data:[/] {prep.table.source} → "
        f"{prep.split.sizes() if prep.task != 'clustering' else len(prep.X)} rows; {len(kinds)} features "
        f"({', '.join(f'{k}: {kinds.count(k)}' for k in sorted(set(kinds)))})"
    )
    parts = {"train": np.arange(len(prep.X))} if prep.task == "clustering" else prep.split.parts()  # what fits
    config, run = open_task_run("tabular", config, False, of_table(prep.table, parts))
    prep.config = config
    with run.failing_on_error(), resource_errors(run):
        summary, figures, tables = _fit_and_score(prep, run)
        finish_run(
            run,
            config,
            summary,
            figures=figures,
            tables=tables,
            artifacts=[run.file(n) for n in ("schema.json", "model.skops", "model.joblib")],
        )
    print_summary(run, summary)
    return run


def _fit_and_score(prep: Prepared, run: RunDir) -> tuple[dict, list, list]:
    from trainforge.classical import plots
    from trainforge.classical.artifacts import save_model

    config, metric = prep.config, prep.metric
    summary: dict = {"task": config.task, "model": config.model.name, "method": "classical", "metric": metric.name}
    tables = []

    def log_fold(index, value, _):
        run.append_metrics({"step": index, "fold": index, metric.name: value})
        console.print(f"  fold {index + 1}: {metric.name} {value:.4f}")

    started = time.perf_counter()
    if prep.task != "clustering" and prep.cv != "none":
        console.print(f"[bold]cv:[/] {prep.cv}, {config.cv.folds} folds on the training split")
    scores = fold_scores(prep, on_fold=log_fold if prep.task != "clustering" else None)
    if scores and prep.task != "clustering":
        mean, std = _mean_std(scores)
        run.append_metrics({"step": len(scores), f"cv.{metric.name}.mean": mean, f"cv.{metric.name}.std": std})
        summary.update(
            {
                "cv": prep.cv,
                "cv.folds": len(scores),
                f"cv.{metric.name}.mean": mean,
                f"cv.{metric.name}.std": std,
                "cv.fold_scores": [round(s, 6) for s in scores],
            }
        )
        tables.append(
            (
                "Cross-validation folds",
                [[i + 1, f"{s:.4f}"] for i, s in enumerate(scores)] + [["mean ± std", f"{mean:.4f} ± {std:.4f}"]],
                ["fold", metric.name],
            )
        )
    pipeline = prep.pipeline()
    if prep.task == "clustering":
        labels, features = cluster(pipeline, prep.X)
        scores_all = clustering_scores(features, labels, prep.truth)
        summary.update({"rows": len(prep.X), **scores_all})
        figures = [("Clusters (first two principal components)", plots.clusters_png(features, labels))]
        eval_X, eval_y = prep.X, None
    else:
        X, y = prep.rows("train")
        pipeline.fit(X, y)
        summary.update({f"{p}_rows": len(getattr(prep.split, p)) for p in ("train", "validation", "test")})
        for part in ("validation", "test"):
            if len(getattr(prep.split, part)):
                for key, value in supervised_scores(prep.task, pipeline, *prep.rows(part), prep.n_classes).items():
                    summary[f"{'val' if part == 'validation' else 'test'}.{key}"] = value
        shown = "test" if len(prep.split.test) else ("validation" if len(prep.split.validation) else "train")
        eval_X, eval_y = prep.rows(shown)
        figures = plots.supervised_figures(prep.task, pipeline, eval_X, eval_y, prep.classes, shown)
    summary["fit_seconds"] = round(time.perf_counter() - started, 3)
    figures += plots.importance_figure(pipeline, eval_X, eval_y, prep.scorer() if eval_y is not None else None)
    artifact = save_model(pipeline, run.path)
    summary["artifact"] = artifact.name
    atomic_write_json(
        run.file("schema.json"),
        {
            "task": config.task,
            "target": config.data.target,
            "features": prep.kinds,
            "classes": prep.classes,
            "estimator": config.model.name,
            "estimator_class": type(pipeline[-1]).__name__,
            "metric": metric.name,
        },
    )
    atomic_write_json(run.file("splits.json"), prep.split.to_json())
    return summary, [f for f in figures if f[1] is not None], tables


def evaluate(run: RunDir, data: str | None = None, **options) -> dict[str, float]:
    """Task metrics of the saved pipeline on the run's own test rows, or on every row of a table."""
    from trainforge.classical.predict import evaluate_file, evaluate_test_split

    return evaluate_file(run, data) if data else evaluate_test_split(run)


def predict(run: RunDir, data: str, out: str | None = None, **options) -> Path:
    """A prediction column (and class probabilities) beside every row of a table, CSV or Parquet out."""
    from trainforge.classical.predict import predict_file

    return predict_file(run, data, out)


def backend(run: RunDir):
    """Rows ({column: value}) in, predictions (and class probabilities) out."""
    from trainforge.classical.predict import load, predict_answers
    from trainforge.inference.backends import Predictor

    pipeline, schema = load(run)
    return Predictor(
        lambda rows: predict_answers(pipeline, schema, rows),
        dict,
        "a row object {column: value} or a list of them",
        "tabular",
    )


def tuning_objective(config: RunConfig):
    from trainforge.classical.objective import ClassicalObjective

    return ClassicalObjective(config)
