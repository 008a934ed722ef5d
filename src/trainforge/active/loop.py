"""The pool-based loop. A learner holds a fixed feature table and exposes `fit(positions, labels)` and
`predict_proba(positions)`; the loop only moves positions from the unlabelled pool to the labelled set."""

from __future__ import annotations

from typing import Callable

import numpy as np

from trainforge.active.strategies import select


class EstimatorLearner:
    """A fresh scikit-learn estimator (or pipeline) per fit on rows of `features` (a DataFrame or an array).

    `predict_proba` always returns one column per class, also when the labelled set lacks some classes so far.
    """

    def __init__(self, features, make_estimator: Callable, n_classes: int):
        self.features, self.make_estimator, self.n_classes = features, make_estimator, n_classes
        self.model = None

    def _rows(self, positions: np.ndarray):
        return self.features.iloc[positions] if hasattr(self.features, "iloc") else self.features[positions]

    def fit(self, positions: np.ndarray, labels: np.ndarray) -> "EstimatorLearner":
        self.model = self.make_estimator().fit(self._rows(positions), labels)
        return self

    def predict_proba(self, positions: np.ndarray) -> np.ndarray:
        seen = self.model.predict_proba(self._rows(positions))
        proba = np.zeros((len(positions), self.n_classes))
        proba[:, np.asarray(self.model.classes_, dtype=int)] = seen
        return proba


def accuracy(learner, positions: np.ndarray, labels: np.ndarray) -> float:
    return float((learner.predict_proba(positions).argmax(1) == labels).mean())


def query(
    learner, pool: np.ndarray, labelled: np.ndarray, strategy: str, k: int, rng: np.random.Generator
) -> np.ndarray:
    """Indices into `pool` of the next `k` rows to label. `labelled` is a bool mask over `pool`; the learner must be
    fitted on those rows already (the random strategy never looks at it)."""
    candidates = np.flatnonzero(~labelled)
    proba = learner.predict_proba(pool[candidates]) if strategy != "random" else None
    return candidates[select(strategy, proba, k, rng, len(candidates))]


def initial_positions(n_pool: int, initial: int, seed: int) -> np.ndarray:
    """The seed set, the same for every strategy at one seed so that curves start from the same point."""
    return np.random.default_rng(seed).choice(n_pool, size=min(initial, n_pool), replace=False)


def simulate(
    learner,
    pool: np.ndarray,
    pool_labels: np.ndarray,
    test: np.ndarray,
    test_labels: np.ndarray,
    strategy: str,
    initial: int,
    batch_size: int,
    rounds: int,
    seed: int,
) -> tuple[list[int], list[float]]:
    """Labels hidden in the pool, revealed when queried. Returns the learning curve: (labels used, test accuracy)
    after the seed set and after each round."""
    labelled = np.zeros(len(pool), dtype=bool)
    labelled[initial_positions(len(pool), initial, seed)] = True
    if len(np.unique(pool_labels[labelled])) < 2:
        from trainforge.errors import DataError

        raise DataError(
            f"Key `active.initial` = {initial}: the seed set drawn at seed {seed} holds one class only, "
            "so no classifier can be fitted; raise `active.initial`."
        )
    rng = np.random.default_rng(seed + 1)
    used, scores = [], []
    for round_ in range(rounds + 1):
        learner.fit(pool[labelled], pool_labels[labelled])
        used.append(int(labelled.sum()))
        scores.append(accuracy(learner, test, test_labels))
        if round_ == rounds or labelled.all():
            break
        labelled[query(learner, pool, labelled, strategy, batch_size, rng)] = True
    return used, scores


def area_under_curve(used: list[int], scores: list[float]) -> float:
    """The curve's mean height over the label budget (trapezoids): 1.0 is perfect from the first label on."""
    if len(used) < 2:
        return float(scores[0])
    return float(np.trapezoid(scores, used) / (used[-1] - used[0]))
