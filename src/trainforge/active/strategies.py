"""Query strategies: score each pool row from the model's class probabilities; the highest scores are queried.

Each scorer maps `proba` (rows × classes, rows summing to 1) to one informativeness value per row.
"""

from __future__ import annotations

import numpy as np


def least_confidence(proba: np.ndarray) -> np.ndarray:
    """1 − the top class probability: rows the model is least sure of."""
    return 1.0 - proba.max(axis=1)


def margin(proba: np.ndarray) -> np.ndarray:
    """Minus the gap between the two most likely classes: a small gap means the row sits on a boundary."""
    top2 = np.sort(proba, axis=1)[:, -2:]
    return -(top2[:, 1] - top2[:, 0])


def entropy(proba: np.ndarray) -> np.ndarray:
    """Shannon entropy of the predicted distribution (0·log 0 taken as 0)."""
    p = np.clip(proba, 1e-12, 1.0)
    return -(proba * np.log(p)).sum(axis=1)


SCORERS = {"least_confidence": least_confidence, "margin": margin, "entropy": entropy}
STRATEGIES = (*SCORERS, "random")


def select(
    strategy: str, proba: np.ndarray | None, k: int, rng: np.random.Generator, n: int | None = None
) -> np.ndarray:
    """Positions (into the candidate rows) of the `k` rows to query. `random` needs only `n`, the candidate count.

    Ties break at random (seeded), so equal scores do not always favour the first rows of the file.
    """
    n = len(proba) if proba is not None else n
    k = min(k, n)
    if strategy == "random":
        return rng.choice(n, size=k, replace=False)
    scores = SCORERS[strategy](proba)
    order = np.lexsort((rng.random(n), -scores))  # by score descending, random among equals
    return order[:k]
