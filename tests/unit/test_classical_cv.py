"""CV and splits: the same numbers as scikit-learn, and no look-ahead in time-ordered splits."""

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.model_selection import GroupKFold, KFold, StratifiedKFold, TimeSeriesSplit, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from _classical import tabular_config
from trainforge.classical.prepare import fold_scores, prepare
from trainforge.classical.splits import holdout
from trainforge.config.schema import SplitFractions


@pytest.mark.parametrize(
    "model, task, dataset, metric, reference, scoring",
    [
        (
            "logistic_regression",
            "classification",
            "breast_cancer",
            "accuracy",
            make_pipeline(StandardScaler(), LogisticRegression(max_iter=5000, random_state=42)),
            "accuracy",
        ),
        (
            "random_forest",
            "classification",
            "wine",
            "f1",
            RandomForestClassifier(n_estimators=30, random_state=42),
            "f1_macro",
        ),
        (
            "ridge",
            "regression",
            "diabetes",
            "rmse",
            make_pipeline(StandardScaler(), Ridge()),
            "neg_root_mean_squared_error",
        ),
    ],
)
def test_cv_scores_equal_sklearn_cross_val_score(runs_dir, model, task, dataset, metric, reference, scoring):
    params = {"n_estimators": 30} if model == "random_forest" else {}
    split = {"strategy": "stratified" if task == "classification" else "random"}
    config = tabular_config(
        runs_dir,
        task=task,
        model={"name": model, "params": params},
        data={"dataset": dataset, "split": split},
        cv={"metric": metric, "folds": 4},
    )
    prep = prepare(config)
    ours = fold_scores(prep)
    X, y = prep.rows("train")
    folds = (StratifiedKFold if task == "classification" else KFold)(4, shuffle=True, random_state=42)
    theirs = cross_val_score(reference, X.to_numpy(), y, cv=folds, scoring=scoring)
    sign = -1 if scoring.startswith("neg_") else 1
    assert len(ours) == 4
    np.testing.assert_allclose(ours, sign * theirs, rtol=1e-10, atol=1e-12)
    # and the engine's own pipeline scores identically inside cross_val_score
    np.testing.assert_allclose(
        ours, sign * cross_val_score(prep.pipeline(), X, y, cv=folds, scoring=scoring), rtol=1e-12
    )
    # tuning trials preprocess each fold once and refit only the estimator: the same scores, filled and reused
    fold_features: dict = {}
    assert fold_scores(prep, fold_features=fold_features) == ours and len(fold_features) == 4
    assert fold_scores(prep, fold_features=fold_features) == ours


def _timed_table(tmp_path, n=120, seed=0):
    rng = np.random.default_rng(seed)
    days = pd.Timestamp("2024-01-01") + pd.to_timedelta(rng.permutation(n), unit="D")  # rows out of time order
    frame = pd.DataFrame({"when": days.strftime("%Y-%m-%d"), "x": rng.normal(size=n), "y": rng.normal(size=n)})
    path = tmp_path / "timed.csv"
    frame.to_csv(path, index=False)
    return path


def test_time_split_and_time_cv_never_train_on_later_rows(tmp_path, runs_dir):
    path = _timed_table(tmp_path)
    config = tabular_config(
        runs_dir,
        task="regression",
        model={"name": "ridge"},
        data={
            "dataset": None,
            "path": str(path),
            "target": "y",
            "time_column": "when",
            "split": {"strategy": "time", "train": 0.6, "validation": 0.2, "test": 0.2},
        },
        cv={"strategy": "time", "folds": 4, "metric": "mae"},
    )
    prep = prepare(config)
    when = pd.to_datetime(prep.table.frame["when"]).to_numpy()
    train, val, test = (when[getattr(prep.split, p)] for p in ("train", "validation", "test"))
    assert train.max() < val.min() and val.max() < test.min()
    assert prep.cv == "time" and len(fold_scores(prep)) == 4
    from trainforge.classical.splits import cv_splitter

    seen = 0
    for fit_rows, score_rows in cv_splitter("time", 4, True, 42).split(prep.rows("train")[0]):
        fit_times, score_times = when[prep.split.train][fit_rows], when[prep.split.train][score_rows]
        assert fit_times.max() < score_times.min()
        seen += 1
    assert seen == 4


@settings(max_examples=40, deadline=None)
@given(n=st.integers(20, 200), folds=st.integers(2, 6), seed=st.integers(0, 10_000))
def test_time_series_folds_only_look_back(n, folds, seed):
    rng = np.random.default_rng(seed)
    times = np.sort(rng.integers(0, 10 * n, n))  # rows in time order, as load_table leaves them
    split = holdout(n, SplitFractions(train=0.7, validation=0.1, test=0.2, strategy="time"), seed)
    assert times[split.train].max() <= times[np.concatenate([split.validation, split.test])].min()
    if n // (folds + 1) >= 1:
        for fit_rows, score_rows in TimeSeriesSplit(folds).split(np.zeros(n)):
            assert fit_rows.max() < score_rows.min()


def test_group_split_and_group_folds_keep_groups_whole(tmp_path, runs_dir):
    rng = np.random.default_rng(1)
    frame = pd.DataFrame({"patient": rng.integers(0, 30, 300), "x": rng.normal(size=300)})
    frame["label"] = np.where(frame.x + rng.normal(scale=0.5, size=300) > 0, "yes", "no")
    path = tmp_path / "groups.csv"
    frame.to_csv(path, index=False)
    config = tabular_config(
        runs_dir,
        data={
            "dataset": None,
            "path": str(path),
            "target": "label",
            "group_column": "patient",
            "split": {"strategy": "group"},
        },
    )
    prep = prepare(config)
    groups = {p: set(prep.groups[getattr(prep.split, p)]) for p in ("train", "validation", "test")}
    assert not (groups["train"] & groups["validation"]) and not (groups["train"] & groups["test"])
    assert 0.6 < len(prep.split.train) / 300 < 0.95
    assert prep.cv == "group" and "patient" not in prep.kinds
    X, y = prep.rows("train")
    train_groups = prep.groups[prep.split.train]
    ours = fold_scores(prep)
    theirs = cross_val_score(prep.pipeline(), X, y, groups=train_groups, cv=GroupKFold(5), scoring="accuracy")
    np.testing.assert_allclose(ours, theirs, rtol=1e-12)


def test_stratified_holdout_keeps_class_shares(runs_dir):
    prep = prepare(tabular_config(runs_dir, data={"dataset": "breast_cancer", "split": {"strategy": "stratified"}}))
    share = prep.y.mean()
    for part in ("train", "validation", "test"):
        assert abs(prep.y[getattr(prep.split, part)].mean() - share) < 0.02
    assert prep.split.sizes() == {"train": 455, "validation": 57, "test": 57}
