"""One tabular run, end to end: check config and table → run dir → CV fold scores → fit on the training split →
validation / test metrics → save the pipeline (skops) → plots + report → MLflow. Same run directory as LM runs."""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np
import pandas as pd
from rich.console import Console
from rich.table import Table as RichTable

from trainforge.classical.data import Table, load_table
from trainforge.classical.estimators import Estimator, build_estimator, get_estimator
from trainforge.classical.metrics import Metric, clustering_scores, resolve, score, supervised_scores
from trainforge.classical.preprocessing import TableColumns, build_pipeline, detect_kinds
from trainforge.classical.splits import Holdout, cross_validate, cv_splitter, cv_strategy, holdout
from trainforge.config import RunConfig, dump_config
from trainforge.errors import RunError
from trainforge.tracking.faults import resource_errors
from trainforge.tracking.rundir import RunDir, atomic_write_json

console = Console(stderr=True)


@dataclass
class Prepared:
    """Everything checked before a run directory exists; `pipeline(config)` builds a fresh unfitted pipeline."""

    config: RunConfig
    entry: Estimator
    table: Table
    X: pd.DataFrame  # feature columns of every row
    y: np.ndarray | None  # encoded labels (classification), numbers (regression), None (clustering)
    truth: np.ndarray | None  # clustering: the known labels, if the table has a target, for adjusted Rand
    classes: list | None
    groups: np.ndarray | None
    kinds: dict[str, str]
    split: Holdout
    metric: Metric
    cv: str

    @property
    def task(self) -> str:
        return self.config.task

    @property
    def n_classes(self) -> int:
        return len(self.classes) if self.classes else 0

    def pipeline(self, config: RunConfig | None = None):
        config = config or self.config
        estimator = build_estimator(config.model.name, config.task, config.model.params, config.training.seed)
        return build_pipeline(self.kinds, self.X, config.preprocessing, self.entry.scale, estimator)

    def rows(self, part: str):
        at = getattr(self.split, part)
        return self.X.iloc[at], (self.y[at] if self.y is not None else None)

    def scorer(self, metric: Metric | None = None) -> Callable:
        metric = metric or self.metric
        return lambda model, X, y: score(metric, model, X, y, self.n_classes)


def prepare(config: RunConfig) -> Prepared:
    data, pre = config.data, config.preprocessing
    entry = get_estimator(config.model.name, config.task)
    extra = {"`preprocessing.numeric`": pre.numeric, "`preprocessing.categorical`": pre.categorical,
             "`preprocessing.dates`": pre.dates}
    table = load_table(data, config.task, extra)
    frame = table.frame
    not_features = {data.target, data.group_column, *data.drop_columns} - {None}
    features = [c for c in frame.columns if c not in not_features]
    kinds = detect_kinds(frame, features, pre, table.source)
    TableColumns(kinds).check(frame, table.source)  # every value fits its column's kind, or the error names it
    y = truth = classes = None
    if config.task == "classification":
        from sklearn.preprocessing import LabelEncoder

        encoder = LabelEncoder().fit(frame[data.target])
        y, classes = encoder.transform(frame[data.target]), encoder.classes_.tolist()
    elif config.task == "regression":
        y = pd.to_numeric(frame[data.target]).to_numpy(dtype=float)
    elif data.target:
        truth = frame[data.target].to_numpy()
    groups = frame[data.group_column].to_numpy() if data.group_column else None
    if table.parts:
        parts = table.parts
        empty = np.array([], dtype=int)
        split = Holdout(parts["train"], parts.get("validation", empty), parts.get("test", empty))
    else:
        split = holdout(len(frame), data.split, config.training.seed, y, groups)
    prep = Prepared(config, entry, table, frame[features], y, truth, classes, groups, kinds, split,
                    resolve(config.cv.metric, config.task), cv_strategy(config.cv, data.split, config.task))
    prep.pipeline()  # unknown `model.params` fail here, before anything is written
    return prep


def fold_scores(prep: Prepared, config: RunConfig | None = None, on_fold: Callable | None = None,
                fold_features: dict | None = None) -> list[float]:
    """The CV scores of a config on the training split (clustering: one score of a fit on every row).
    `fold_features`: see `cross_validate`."""
    config = config or prep.config
    if prep.task == "clustering":
        labels, features = cluster(prep.pipeline(config), prep.X)
        value = clustering_scores(features, labels, prep.truth)[prep.metric.name]
        if on_fold:
            on_fold(0, value, [value])
        return [value]
    if prep.cv == "none":
        return []
    X, y = prep.rows("train")
    groups = prep.groups[prep.split.train] if prep.groups is not None else None
    splitter = cv_splitter(prep.cv, config.cv.folds, config.cv.shuffle, config.training.seed)
    return cross_validate(prep.pipeline(config), X, y, splitter, groups, prep.scorer(), on_fold, fold_features,
                          prep.table.source)


def cluster(pipeline, X: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    labels = pipeline.fit_predict(X)
    return np.asarray(labels), pipeline[:-1].transform(X)


def _mean_std(scores: list[float]) -> tuple[float, float]:
    return float(np.mean(scores)), float(statistics.pstdev(scores)) if len(scores) > 1 else 0.0


def train_classical(config: RunConfig) -> RunDir:
    """Train, evaluate, save and record one tabular run; returns its run directory."""
    prep = prepare(config)
    console.print(f"[bold]data:[/] {prep.table.source} → {prep.split.sizes() if prep.task != 'clustering' else len(prep.X)} "
                  f"rows; {len(prep.kinds)} features "
                  f"({', '.join(f'{k}: {list(prep.kinds.values()).count(k)}' for k in sorted(set(prep.kinds.values())))})")
    name = config.name or f"{config.model.name}-{config.task}-{time.strftime('%Y%m%d-%H%M%S')}"
    config = config.model_copy(update={"name": name})
    prep.config = config
    run = RunDir.create(config.tracking.runs_dir, name, dump_config(config))
    with run.failing_on_error(), resource_errors(run):
        summary, figures, tables = _fit_and_score(prep, run)
        if config.tracking.report:
            from trainforge.tracking.report import write_report

            write_report(run, summary, None, dump_config(config), figures=figures, tables=tables)
        if config.tracking.mlflow:
            from trainforge.tracking.mlflow_log import log_run, tracking_uri

            files = [run.file(n) for n in ("config.yaml", "metrics.jsonl", "summary.json", "report.html",
                                           "schema.json", "model.skops", "model.joblib")]
            summary["mlflow_run_id"] = log_run(run, config.model_dump(mode="json"), summary,
                                               tracking_uri(config.tracking.runs_dir, config.tracking.tracking_uri),
                                               config.tracking.experiment, files)
            atomic_write_json(run.file("summary.json"), summary)
        run.set_status("completed", finished=time.time(), mlflow_run_id=summary.get("mlflow_run_id"))
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
        summary.update({"cv": prep.cv, "cv.folds": len(scores), f"cv.{metric.name}.mean": mean,
                        f"cv.{metric.name}.std": std, "cv.fold_scores": [round(s, 6) for s in scores]})
        tables.append(("Cross-validation folds", [[i + 1, f"{s:.4f}"] for i, s in enumerate(scores)]
                       + [["mean ± std", f"{mean:.4f} ± {std:.4f}"]], ["fold", metric.name]))
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
    atomic_write_json(run.file("schema.json"), {
        "task": config.task, "target": config.data.target, "features": prep.kinds, "classes": prep.classes,
        "estimator": config.model.name, "estimator_class": type(pipeline[-1]).__name__, "metric": metric.name})
    atomic_write_json(run.file("splits.json"), prep.split.to_json())
    atomic_write_json(run.file("summary.json"), summary)
    return summary, [f for f in figures if f[1] is not None], tables


def print_summary(run: RunDir, summary: dict) -> None:
    from trainforge.pipeline import fmt

    out = Console()
    table = RichTable(title=f"run {run.name}")
    table.add_column("key")
    table.add_column("value")
    for key, value in summary.items():
        if key == "cv.fold_scores":
            value = " ".join(f"{v:.4f}" for v in value)
        elif key.endswith(".mean") and f"{key[:-5]}.std" in summary:
            value = f"{value:.4f} ± {summary[key[:-5] + '.std']:.4f}"
        elif key.endswith(".std"):
            continue
        table.add_row(key, fmt(value))
    out.print(table)
    out.print(f"run directory: [bold]{run.path.resolve()}[/]")


def refuse_resume() -> None:
    raise RunError("Tabular runs do not resume (they hold no checkpoints and train in seconds to minutes); "
                   "start the run again without --resume.")
