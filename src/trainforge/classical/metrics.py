"""Metrics for tabular tasks. Scores come from scikit-learn scorers, so a fold score here is exactly what
`cross_val_score(..., scoring=<scorer>)` gives; "lower is better" metrics are reported positive (rmse, not -rmse)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Metric:
    name: str
    task: str
    greater_is_better: bool
    scorer: str  # scikit-learn scorer name ("{multi}" is filled for multiclass problems)
    multiclass_scorer: str | None = None
    needs_scores: bool = False  # needs predict_proba / decision_function

    def sklearn_name(self, n_classes: int = 2) -> str:
        return self.multiclass_scorer if n_classes > 2 and self.multiclass_scorer else self.scorer

    @property
    def direction(self) -> str:
        return "maximize" if self.greater_is_better else "minimize"


METRICS = {
    m.name: m
    for m in [
        Metric("accuracy", "classification", True, "accuracy"),
        Metric("f1", "classification", True, "f1", "f1_macro"),
        Metric("roc_auc", "classification", True, "roc_auc", "roc_auc_ovr", needs_scores=True),
        Metric("log_loss", "classification", False, "neg_log_loss", needs_scores=True),
        Metric("rmse", "regression", False, "neg_root_mean_squared_error"),
        Metric("mae", "regression", False, "neg_mean_absolute_error"),
        Metric("r2", "regression", True, "r2"),
        Metric("silhouette", "clustering", True, ""),
        Metric("adjusted_rand", "clustering", True, ""),
    ]
}
DEFAULT_METRIC = {"classification": "accuracy", "regression": "rmse", "clustering": "silhouette"}


def check_metric(name: str, task: str) -> str:
    if name == "auto":
        return DEFAULT_METRIC[task]
    if name not in METRICS or METRICS[name].task != task:
        fits = [m for m, spec in METRICS.items() if spec.task == task]
        raise ValueError(
            f"key `cv.metric` = {name!r} is not a {task} metric; expected auto or one of {', '.join(fits)}"
        )
    return name


def resolve(name: str, task: str) -> Metric:
    return METRICS[check_metric(name, task)]


def score(metric: Metric, model, X, y, n_classes: int = 2) -> float:
    """One score of a fitted supervised pipeline, sign-corrected; NaN when the model cannot give one."""
    from sklearn.metrics import get_scorer

    value = get_scorer(metric.sklearn_name(n_classes))(model, X, y)
    return float(value if metric.greater_is_better or not metric.scorer.startswith("neg_") else -value)


def _has_scores(model) -> bool:
    return hasattr(model, "predict_proba") or hasattr(model, "decision_function")


def supervised_scores(task: str, model, X, y, n_classes: int = 2) -> dict[str, float]:
    """Every metric of the task on one labelled table (log loss only for models with probabilities)."""
    out = {}
    for metric in METRICS.values():
        if metric.task != task:
            continue
        if metric.needs_scores and not _has_scores(model):
            continue
        if metric.name == "log_loss" and not hasattr(model, "predict_proba"):
            continue
        try:
            out[metric.name] = score(metric, model, X, y, n_classes)
        except (ValueError, AttributeError):  # e.g. one class only in a tiny split
            continue
    return out


def clustering_scores(features: np.ndarray, labels: np.ndarray, truth=None) -> dict[str, float]:
    from sklearn.metrics import adjusted_rand_score, silhouette_score

    found = set(labels.tolist()) - {-1}  # DBSCAN marks noise with -1
    out = {"n_clusters": float(len(found))}
    n = len(labels)
    if 2 <= len(set(labels.tolist())) < n:
        out["silhouette"] = float(silhouette_score(features, labels, sample_size=min(n, 5000), random_state=0))
    else:
        out["silhouette"] = -1.0  # one cluster (or one per row) carries no structure: the worst silhouette
    if truth is not None:
        out["adjusted_rand"] = float(adjusted_rand_score(truth, labels))
    return out
