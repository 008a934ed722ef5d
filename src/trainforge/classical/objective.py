"""The tuning objective of a tabular run config: the mean CV score on the training split, fold by fold."""

from __future__ import annotations

import json
from typing import Callable

import numpy as np

from trainforge.classical.prepare import Prepared, fold_scores, prepare
from trainforge.config import RunConfig
from trainforge.errors import ConfigError


def _preprocessing_key(config: RunConfig) -> str:
    """What the fitted preprocessing of a fold depends on besides the data (the estimator decides default scaling)."""
    return json.dumps(
        [_data_key(config), config.model.name, config.preprocessing.model_dump(mode="json")], sort_keys=True
    )


def _data_key(config: RunConfig) -> str:
    keys = {
        "task": config.task,
        "data": config.data.model_dump(mode="json"),
        "cv": config.cv.model_dump(mode="json"),
        "columns": [config.preprocessing.numeric, config.preprocessing.categorical, config.preprocessing.dates],
        "seed": config.training.seed,
    }
    return json.dumps(keys, sort_keys=True)


class ClassicalObjective:
    """config → (score, details). The table is read and split once per data config, and each fold preprocessed once
    per preprocessing config, not once per trial."""

    def __init__(self, config: RunConfig):
        self._cache: dict[str, Prepared] = {}
        self._fold_features: dict[str, dict] = {}
        prep = self.prepared(config)
        if prep.task != "clustering" and prep.cv == "none":
            raise ConfigError(
                "Tuning scores trials by cross-validation; `cv.strategy: none` leaves nothing to score. "
                "Use auto, kfold, stratified, group or time."
            )
        self.metric = prep.metric
        self.direction = prep.metric.direction
        self.last_step = 0 if prep.task == "clustering" else config.cv.folds - 1  # the step after which a trial is done

    sections_only = False  # a plain key is an estimator parameter (max_depth → model.params.max_depth)

    def default_space(self, config: RunConfig) -> dict[str, dict]:
        """The estimator's own search space."""
        from trainforge.classical.estimators import get_estimator

        return get_estimator(config.model.name, config.task).space

    def prepared(self, config: RunConfig) -> Prepared:
        key = _data_key(config)
        if key not in self._cache:
            self._cache[key] = prepare(config)
        prep = self._cache[key]
        prep.config = config
        return prep

    def __call__(self, config: RunConfig, report: Callable[[int, float], None]) -> tuple[float, dict]:
        prep = self.prepared(config)
        features = self._fold_features.setdefault(_preprocessing_key(config), {})
        scores = fold_scores(
            prep, config, on_fold=lambda i, _, so_far: report(i, float(np.mean(so_far))), fold_features=features
        )
        return float(np.mean(scores)), {"fold_scores": scores}
