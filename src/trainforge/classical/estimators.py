"""Estimator aliases for tabular tasks, each with a default search space.

This module imports nothing heavy: the config validates `model.name` against it, and the LM side must not pay
for scikit-learn on start-up. Classes are named by import path and loaded only when an estimator is built.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any

from trainforge.errors import ConfigError

TABULAR_TASKS = ("classification", "regression", "clustering")


def _f(low, high, log=False):
    return {"type": "float", "low": low, "high": high, "log": log}


def _i(low, high, log=False, step=1):
    return {"type": "int", "low": low, "high": high, "log": log, "step": step}


def _c(*choices):
    return {"type": "categorical", "choices": list(choices)}


@dataclass(frozen=True)
class Estimator:
    name: str
    description: str
    classes: dict[str, str]  # task -> "module:Class"
    space: dict[str, dict] = field(default_factory=dict)  # param -> search spec (same shape as `tuning.space`)
    defaults: dict[str, Any] = field(default_factory=dict)  # library defaults we change
    scale: bool = True  # does `preprocessing.scale: auto` standardize numeric inputs for it

    def class_for(self, task: str):
        module, _, cls = self.classes[task].partition(":")
        return getattr(importlib.import_module(module), cls)


_TREE_SPACE = {"max_depth": _i(2, 16), "min_samples_leaf": _i(1, 20, log=True)}
ESTIMATORS: dict[str, Estimator] = {
    e.name: e
    for e in [
        Estimator(
            "linear_regression",
            "ordinary least squares",
            {"regression": "sklearn.linear_model:LinearRegression"},
            {"fit_intercept": _c(True, False)},
        ),
        Estimator(
            "ridge",
            "L2-regularized linear model",
            {"regression": "sklearn.linear_model:Ridge", "classification": "sklearn.linear_model:RidgeClassifier"},
            {"alpha": _f(1e-3, 1e3, log=True)},
        ),
        Estimator(
            "lasso",
            "L1-regularized linear regression",
            {"regression": "sklearn.linear_model:Lasso"},
            {"alpha": _f(1e-4, 10.0, log=True)},
            {"max_iter": 10000},
        ),
        Estimator(
            "logistic_regression",
            "linear classifier with a logistic loss",
            {"classification": "sklearn.linear_model:LogisticRegression"},
            {"C": _f(1e-3, 1e3, log=True)},
            {"max_iter": 5000},
        ),
        Estimator(
            "svm",
            "support vector machine, RBF kernel by default",
            {"classification": "sklearn.svm:SVC", "regression": "sklearn.svm:SVR"},
            {"C": _f(1e-2, 1e3, log=True), "gamma": _f(1e-4, 1.0, log=True)},
        ),
        Estimator(
            "decision_tree",
            "a single CART tree",
            {
                "classification": "sklearn.tree:DecisionTreeClassifier",
                "regression": "sklearn.tree:DecisionTreeRegressor",
            },
            dict(_TREE_SPACE),
            scale=False,
        ),
        Estimator(
            "random_forest",
            "bagged CART trees",
            {
                "classification": "sklearn.ensemble:RandomForestClassifier",
                "regression": "sklearn.ensemble:RandomForestRegressor",
            },
            {"n_estimators": _i(50, 400, step=50), **_TREE_SPACE, "max_features": _c("sqrt", "log2", 1.0)},
            scale=False,
        ),
        Estimator(
            "lightgbm",
            "LightGBM gradient-boosted trees",
            {"classification": "lightgbm:LGBMClassifier", "regression": "lightgbm:LGBMRegressor"},
            {
                "n_estimators": _i(50, 500, step=50),
                "learning_rate": _f(0.01, 0.3, log=True),
                "num_leaves": _i(4, 128, log=True),
                "min_child_samples": _i(5, 50, log=True),
                "colsample_bytree": _f(0.5, 1.0),
                "reg_lambda": _f(1e-3, 10.0, log=True),
            },
            {"verbose": -1, "n_jobs": 1},
            scale=False,
        ),  # one thread: fast on small tables, no oversubscription
        # when tuning workers run side by side; override per run
        Estimator(
            "xgboost",
            "XGBoost gradient-boosted trees",
            {"classification": "xgboost:XGBClassifier", "regression": "xgboost:XGBRegressor"},
            {
                "n_estimators": _i(50, 500, step=50),
                "learning_rate": _f(0.01, 0.3, log=True),
                "max_depth": _i(2, 10),
                "min_child_weight": _f(0.5, 10.0, log=True),
                "subsample": _f(0.5, 1.0),
                "colsample_bytree": _f(0.5, 1.0),
            },
            {"n_jobs": 1},
            scale=False,
        ),
        Estimator(
            "naive_bayes",
            "Gaussian naive Bayes",
            {"classification": "sklearn.naive_bayes:GaussianNB"},
            {"var_smoothing": _f(1e-12, 1e-3, log=True)},
            scale=False,
        ),
        Estimator(
            "mlp",
            "multi-layer perceptron (a small feed-forward ANN)",
            {
                "classification": "sklearn.neural_network:MLPClassifier",
                "regression": "sklearn.neural_network:MLPRegressor",
            },
            {
                "hidden_layer_sizes": _c("64", "128", "64,32", "128,64"),
                "alpha": _f(1e-6, 1e-1, log=True),
                "learning_rate_init": _f(1e-4, 1e-1, log=True),
            },
            {"max_iter": 500},
        ),
        Estimator(
            "kmeans",
            "k-means clustering",
            {"clustering": "sklearn.cluster:KMeans"},
            {"n_clusters": _i(2, 10)},
            {"n_init": 10},
        ),
        Estimator(
            "agglomerative",
            "agglomerative (hierarchical) clustering",
            {"clustering": "sklearn.cluster:AgglomerativeClustering"},
            {"n_clusters": _i(2, 10), "linkage": _c("ward", "complete", "average")},
        ),
        Estimator(
            "dbscan",
            "density-based clustering (DBSCAN)",
            {"clustering": "sklearn.cluster:DBSCAN"},
            {"eps": _f(0.1, 10.0, log=True), "min_samples": _i(2, 20)},
        ),
    ]
}

DEFAULT_ESTIMATOR = {"classification": "random_forest", "regression": "random_forest", "clustering": "kmeans"}


def estimator_names(task: str | None = None) -> list[str]:
    return sorted(n for n, e in ESTIMATORS.items() if task is None or task in e.classes)


def get_estimator(name: str, task: str) -> Estimator:
    entry = ESTIMATORS.get(name)
    if entry is None or task not in entry.classes:
        raise ConfigError(
            f"Key `model.name` = {name!r} is not an estimator for task {task}; "
            f"expected one of {', '.join(estimator_names(task))}."
        )
    return entry


def _convert(name: str, value: Any) -> Any:
    """Search spaces hold scalars only; turn the string forms back into what the estimator takes."""
    if name == "hidden_layer_sizes" and isinstance(value, (str, int)):
        return tuple(int(v) for v in str(value).split(",") if v.strip())
    if name == "hidden_layer_sizes" and isinstance(value, list):
        return tuple(value)
    return value


def build_estimator(name: str, task: str, params: dict[str, Any], seed: int):
    """A fresh, unfitted estimator: our defaults, then `model.params`; unknown params name the key."""
    entry = get_estimator(name, task)
    cls = entry.class_for(task)
    est = cls()
    valid = est.get_params()
    settings = dict(entry.defaults)
    if "random_state" in valid:
        settings["random_state"] = seed
    for key, value in params.items():
        if key not in valid:
            raise ConfigError(
                f"Key `model.params.{key}` is not a parameter of {cls.__name__} ({name}); "
                f"expected one of {', '.join(sorted(valid))}."
            )
        settings[key] = _convert(key, value)
    try:
        return est.set_params(**settings)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"Key `model.params` = {params!r} does not fit {cls.__name__}: {err}") from None
