"""Rows of a classification table whose label is likely wrong: cleanlab's confident learning over out-of-fold
predicted probabilities of the config's own pipeline (each row is predicted by a model that never saw it), ranked
by how little probability the model gives the row's label."""

from __future__ import annotations

import numpy as np

from trainforge.classical.prepare import Prepared, prepare
from trainforge.config import RunConfig
from trainforge.errors import ConfigError

SHOWN = 50  # ranked rows kept in the report


def out_of_fold_probabilities(prep: Prepared, folds: int = 5) -> np.ndarray:
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    splitter = StratifiedKFold(folds, shuffle=True, random_state=prep.config.training.seed)
    return cross_val_predict(prep.pipeline(), prep.X, prep.y, cv=splitter, method="predict_proba")


def ranked_label_issues(prep: Prepared, folds: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """Row positions (of `prep.X`) with a likely wrong label, most likely first; and the out-of-fold
    probabilities."""
    from cleanlab.filter import find_label_issues

    probabilities = out_of_fold_probabilities(prep, folds)
    return np.asarray(
        find_label_issues(prep.y, probabilities, return_indices_ranked_by="self_confidence")
    ), probabilities


def label_issues(config: RunConfig, folds: int = 5) -> dict:
    """The report of `trainforge data audit CONFIG --label-issues` for a tabular classification config."""
    if config.task != "classification":
        raise ConfigError(f"--label-issues needs a classification config; this one's task is {config.task!r}.")
    prep = prepare(config)
    if not hasattr(prep.pipeline(), "predict_proba"):
        raise ConfigError(f"Model {config.model.name!r} gives no probabilities; use e.g. logistic_regression.")
    ranked, probabilities = ranked_label_issues(prep, folds)
    shown = []
    for position in ranked[:SHOWN]:
        given = int(prep.y[position])
        source, row = prep.table.locate(int(position))
        shown.append(
            {
                "source": source,
                "row": row,
                "label": prep.classes[given],
                "predicted": prep.classes[int(np.argmax(probabilities[position]))],
                "probability_of_label": round(float(probabilities[position, given]), 4),
            }
        )
    return {"rows": len(prep.y), "issues": len(ranked), "model": config.model.name, "folds": folds, "ranked": shown}
