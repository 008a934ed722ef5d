"""Holdout splits (random, stratified, grouped, time-ordered) and cross-validation folds, seeded. Time-ordered
splits keep row order: training rows always come before the rows they are scored on."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Callable

import numpy as np

from trainforge.config.schema import CVConfig, SplitFractions
from trainforge.errors import DataError


@dataclass
class Holdout:
    train: np.ndarray  # positions in Table.frame
    validation: np.ndarray
    test: np.ndarray

    def sizes(self) -> dict[str, int]:
        return {"train": len(self.train), "validation": len(self.validation), "test": len(self.test)}

    def parts(self) -> dict[str, np.ndarray]:
        return {k: getattr(self, k) for k in ("train", "validation", "test")}

    def to_json(self) -> dict[str, list[int]]:
        return {k: at.tolist() for k, at in self.parts().items()}


def _counts(n: int, split: SplitFractions) -> tuple[int, int]:
    n_train = int(round(n * split.train))
    n_val = int(round(n * split.validation))
    return n_train, min(n_val, n - n_train)


def holdout(n: int, split: SplitFractions, seed: int, y=None, groups=None) -> Holdout:
    """Positions 0..n-1 into train / validation / test by `split.strategy`. For `time` the rows are already in time
    order, so the latest rows are the test split and the ones before them validation."""
    n_train, n_val = _counts(n, split)
    strategy = split.strategy
    if strategy == "time":
        order = np.arange(n)
    elif strategy == "random":
        order = np.random.default_rng(seed).permutation(n)
    elif strategy == "group":
        groups = np.asarray(groups)
        unique = np.random.default_rng(seed).permutation(np.unique(groups))
        sizes = np.array([np.sum(groups == g) for g in unique])
        middle = np.cumsum(sizes) - sizes / 2  # a group goes where the middle of its rows falls: whole groups only
        part = dict(zip(unique.tolist(), np.where(middle < n_train, 0, np.where(middle < n_train + n_val, 1, 2))))
        rows = np.array([part[g] for g in groups.tolist()])
        if not (rows == 0).any():
            raise DataError(
                f"A group split of {len(unique)} groups leaves no group for training; add groups or raise "
                "`data.split.train`."
            )
        return Holdout(*(np.flatnonzero(rows == i) for i in range(3)))
    else:  # stratified
        from sklearn.model_selection import train_test_split

        positions = np.arange(n)
        y = np.asarray(y)
        try:
            train, rest = (
                train_test_split(positions, train_size=n_train, stratify=y, random_state=seed)
                if n_train < n
                else (positions, positions[:0])
            )
            if len(rest) and n_val and n_val < len(rest):
                val, test = train_test_split(rest, train_size=n_val, stratify=y[rest], random_state=seed)
            else:
                val, test = (rest, rest[:0]) if n_val else (rest[:0], rest)
        except ValueError as err:
            raise DataError(
                f"A stratified split is impossible for this target: {err} Use `data.split.strategy: random` "
                "or more rows per class."
            ) from None
        return Holdout(np.sort(train), np.sort(val), np.sort(test))
    return Holdout(
        np.sort(order[:n_train]), np.sort(order[n_train : n_train + n_val]), np.sort(order[n_train + n_val :])
    )


def cv_strategy(cv: CVConfig, split: SplitFractions, task: str) -> str:
    if cv.strategy != "auto":
        return cv.strategy
    if task == "clustering":
        return "none"
    mapped = {"random": "kfold", "stratified": "stratified", "group": "group", "time": "time"}[split.strategy]
    return "stratified" if mapped == "kfold" and task == "classification" else mapped


def cv_splitter(strategy: str, folds: int, shuffle: bool, seed: int):
    from sklearn.model_selection import GroupKFold, KFold, StratifiedKFold, TimeSeriesSplit

    if strategy == "kfold":
        return KFold(folds, shuffle=shuffle, random_state=seed if shuffle else None)
    if strategy == "stratified":
        return StratifiedKFold(folds, shuffle=shuffle, random_state=seed if shuffle else None)
    if strategy == "group":
        return GroupKFold(folds)
    if strategy == "time":
        return TimeSeriesSplit(folds)  # rows are in time order: each fold trains on the past only
    raise ValueError(f"no folds for cv strategy {strategy!r}")


def cross_validate(
    pipeline,
    X,
    y,
    splitter,
    groups,
    scorer: Callable,
    on_fold: Callable | None = None,
    fold_features: dict | None = None,
    source: str = "The data",
) -> list[float]:
    """Fit a clone per fold and score it: the same fits and scores as `cross_val_score`, one fold at a time so that
    `on_fold(index, score, scores_so_far)` can report progress (and prune a tuning trial).

    `fold_features`, a dict kept across calls whose pipelines share their preprocessing (tuning trials that only
    change estimator parameters), holds each fold's transformed rows: the preprocessing is fitted once per fold and
    only the estimator is refitted, with the same scores."""
    from sklearn.base import clone

    scores: list[float] = []
    try:
        folds = list(splitter.split(X, y, groups))
    except ValueError as err:
        raise DataError(
            f"{source}: cross-validation cannot split the training rows ({err}); lower `cv.folds` or add rows."
        ) from None
    for index, (train, valid) in enumerate(folds):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # unseen categories in a fold are expected
            if fold_features is None:
                model, fit_rows, valid_rows = clone(pipeline), X.iloc[train], X.iloc[valid]
            else:
                if index not in fold_features:
                    preprocess = clone(pipeline[:-1])
                    fold_features[index] = (
                        preprocess.fit_transform(X.iloc[train], y[train]),
                        preprocess.transform(X.iloc[valid]),
                    )
                model, (fit_rows, valid_rows) = clone(pipeline[-1]), fold_features[index]
            scores.append(scorer(model.fit(fit_rows, y[train]), valid_rows, y[valid]))
        if on_fold is not None:
            on_fold(index, scores[-1], scores)
    return scores
