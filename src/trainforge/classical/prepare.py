"""A tabular run's inputs, checked before anything is written: the table, its feature kinds, labels, the holdout
split and CV strategy, and a fresh pipeline per config; `fold_scores` scores a config by CV on the training split.
The tabular task, tuning and active learning build on these."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import pandas as pd

from trainforge.classical.data import Table, load_table
from trainforge.classical.estimators import Estimator, build_estimator, get_estimator
from trainforge.classical.metrics import Metric, clustering_scores, resolve, score
from trainforge.classical.preprocessing import TableColumns, build_pipeline, detect_kinds
from trainforge.classical.splits import Holdout, cross_validate, cv_splitter, cv_strategy, holdout
from trainforge.config import RunConfig
from trainforge.errors import DataError


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
    extra = {
        "`preprocessing.numeric`": pre.numeric,
        "`preprocessing.categorical`": pre.categorical,
        "`preprocessing.dates`": pre.dates,
    }
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
        if config.task == "classification":
            check_split_labels(table, data.target)
    else:
        split = holdout(len(frame), data.split, config.training.seed, y, groups)
    prep = Prepared(
        config,
        entry,
        table,
        frame[features],
        y,
        truth,
        classes,
        groups,
        kinds,
        split,
        resolve(config.cv.metric, config.task),
        cv_strategy(config.cv, data.split, config.task),
    )
    prep.pipeline()  # unknown `model.params` fail here, before anything is written
    return prep


def check_split_labels(table: Table, target: str) -> None:
    """Split files: every validation / test label must occur in training, else the model cannot score it (the
    encoder is fitted on every row, so an unseen label would only fail later, deep in scoring)."""
    labels = table.frame[target]
    seen = set(labels.iloc[table.parts["train"]].tolist())
    for part in ("validation", "test"):
        at = table.parts.get(part, np.array([], dtype=int))
        new = at[~labels.iloc[at].isin(seen).to_numpy()]
        if len(new):
            name, row = table.locate(int(new[0]))
            known = sorted(seen, key=str)
            known = ", ".join(map(repr, known[:20])) + (f", ... ({len(known)} in all)" if len(known) > 20 else "")
            raise DataError(
                f"{name}, column {target!r} (the target): row {row} holds the label {labels.iloc[new[0]]!r}, which the "
                f"training file {table.source.removeprefix('Data file ')} never has; a {part} label must be one "
                f"the model trains on. Training has: {known}. Add rows with it to the training file, or drop "
                f"it from the {part} file."
            )


def fold_scores(
    prep: Prepared, config: RunConfig | None = None, on_fold: Callable | None = None, fold_features: dict | None = None
) -> list[float]:
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
    return cross_validate(
        prep.pipeline(config), X, y, splitter, groups, prep.scorer(), on_fold, fold_features, prep.table.source
    )


def cluster(pipeline, X: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    labels = pipeline.fit_predict(X)
    return np.asarray(labels), pipeline[:-1].transform(X)
